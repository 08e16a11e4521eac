"""WebSocket consumers relaying a job's events: HTML fragments for htmx pages, JSON for the API.

They serve every kind of job (runs, refinements) alike. Both authenticate in connect and join the
job's group only when the user owns the job; anyone else is closed without learning whether the
job exists. They subscribe before they read the snapshot they send, so no event falls between.
"""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.http import Http404
from django.template.loader import render_to_string

from . import selectors
from .models import FINISHED_STATUSES, Job, JobStatus
from .progress import QUEUE_GROUP, group_name, result_event, status_event

# Close codes: 1000 is a normal end (the htmx extension does not reconnect); 4404 refuses;
# 4400 answers a message the API cannot read.
CLOSE_DONE = 1000
CLOSE_REFUSED = 4404
CLOSE_BAD_MESSAGE = 4400


class JobEventsMixin:
    """Connect, check ownership and join the job's group; subclasses say how events are sent."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        job_id = self.scope["url_route"]["kwargs"]["job_id"]
        self.job = None
        self.in_queue_group = False
        if user is not None and user.is_authenticated:
            self.job = await self.load_job(job_id)
        if self.job is None:
            await self.close(code=CLOSE_REFUSED)
            return
        self.group = group_name(job_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.follow_queue(self.job)
        # Read the state only now that the group is joined: an event published after the ownership
        # check and before group_add would be lost, and the snapshot read before it out of date.
        self.job = await self.reload_job()
        await self.accept()
        # A client that connects late (or reconnects) first gets where the job stands now.
        await self.send_snapshot()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if getattr(self, "in_queue_group", False):
            await self.channel_layer.group_discard(QUEUE_GROUP, self.channel_name)

    async def follow_queue(self, job: Job) -> None:
        """Nothing by default: only the page shows where a waiting job stands."""

    @database_sync_to_async
    def load_job(self, job_id) -> Job | None:
        try:
            return selectors.job_for_user(user=self.scope["user"], job_id=job_id)
        except Http404:
            return None

    async def reload_job(self) -> Job:
        # The job stays the user's, but it may have been deleted meanwhile: then keep what we had.
        return await self.load_job(self.job.pk) or self.job


class JobPageConsumer(JobEventsMixin, AsyncWebsocketConsumer):
    """Sends the job card's live parts as HTML; the htmx ws extension swaps them in by id."""

    async def send_snapshot(self) -> None:
        await self.send_live(self.job)
        if self.job.is_finished:
            await self.close(code=CLOSE_DONE)

    async def follow_queue(self, job: Job) -> None:
        """Be told when the line moves while the job waits in it (its card says "3rd in line"), and
        no longer once it has left it."""
        waiting = job.status == JobStatus.QUEUED
        if waiting and not self.in_queue_group:
            await self.channel_layer.group_add(QUEUE_GROUP, self.channel_name)
        elif not waiting and self.in_queue_group:
            await self.channel_layer.group_discard(QUEUE_GROUP, self.channel_name)
        self.in_queue_group = waiting

    async def queue_moved(self, event: dict) -> None:
        # A job ahead started or left: say where this one stands now (one COUNT). Once this job
        # has left the line, its own events tell the rest.
        job = await self.reload_job()
        await self.follow_queue(job)
        if job.status == JobStatus.QUEUED:
            self.job = job
            await self.send_live(job)

    async def send_live(self, job: Job, **extra) -> None:
        html = await database_sync_to_async(render_to_string)(job.live_template, {"job": job, "oob": True, **extra})
        await self.send(text_data=html)

    async def job_progress(self, event: dict) -> None:
        # Rendered from the event, not the row: the row is written at most once a second.
        self.job.status = JobStatus.RUNNING
        self.job.step = event["step"]
        self.job.total_steps = event["total"]
        await self.send_live(self.job, eta=event["eta"], preview=event["preview"], progress_only=True)

    async def job_status(self, event: dict) -> None:
        self.job = await self.reload_job()
        await self.follow_queue(self.job)  # it started, or housekeeping put it back in the line
        await self.send_live(self.job)
        # A succeeded job closes after its result; a failed or cancelled one ends here.
        if self.job.is_finished and self.job.status != JobStatus.SUCCEEDED:
            await self.close(code=CLOSE_DONE)

    async def job_result(self, event: dict) -> None:
        self.job = await self.reload_job()
        await self.send_live(self.job)
        await self.close(code=CLOSE_DONE)


class JobApiConsumer(JobEventsMixin, AsyncJsonWebsocketConsumer):
    """Sends every event as JSON and closes once the job has ended."""

    async def send_snapshot(self) -> None:
        job = self.job
        await self.send_json(status_event(job))
        if job.status == JobStatus.SUCCEEDED:
            images = await database_sync_to_async(job.result_images)()
            await self.send_json(result_event(job, images))
        if job.is_finished:
            await self.close(code=CLOSE_DONE)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs) -> None:
        """The API socket only sends: a JSON message is ignored; anything else closes it with the reason."""
        try:
            await self.decode_json(text_data if text_data is not None else bytes_data.decode())
        except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested deeper than the parser goes
            await self.close(
                code=CLOSE_BAD_MESSAGE, reason="Not JSON. This socket takes no messages; JSON ones are ignored."
            )

    async def job_progress(self, event: dict) -> None:
        await self.send_json(event)

    async def job_status(self, event: dict) -> None:
        await self.send_json(event)
        # A succeeded job closes after its result event; a failed or cancelled one ends here.
        if event["status"] in FINISHED_STATUSES and event["status"] != JobStatus.SUCCEEDED:
            await self.close(code=CLOSE_DONE)

    async def job_result(self, event: dict) -> None:
        await self.send_json(event)
        await self.close(code=CLOSE_DONE)
