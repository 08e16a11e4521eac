"""The one place that publishes job events: the job's DB row and the channel-layer group `job-<id>`
(and `job-queue`, when the line of waiting jobs moves).

Workers call it while a job runs; the page and API consumers relay what it sends. Publishing is
best effort: a channel layer that is down must never fail the job it reports on.
"""

import asyncio
import base64
import io
import logging
import threading
import time
from typing import Literal, TypedDict

from channels.layers import get_channel_layer
from django.urls import reverse
from django.utils import timezone

from .engine.errors import GenerationCancelled
from .engine.requests import PROGRESS_PUSH_SECONDS
from .models import Image, Job, JobStatus

logger = logging.getLogger(__name__)

# At most this many progress pushes a second, and one progress write to the job's row a second.
PUSH_INTERVAL = PROGRESS_PUSH_SECONDS
SAVE_INTERVAL = 1.0


class StatusEvent(TypedDict):
    type: Literal["job.status"]
    job_id: str
    status: str
    error: str
    step: int
    total_steps: int


class ProgressEvent(TypedDict):
    type: Literal["job.progress"]
    job_id: str
    step: int
    total: int
    eta: float | None
    preview: str | None


class OutputJson(TypedDict):
    url: str
    width: int
    height: int


class ResultEvent(TypedDict):
    type: Literal["job.result"]
    job_id: str
    outputs: list[OutputJson]


class QueueEvent(TypedDict):
    type: Literal["queue.moved"]


# The group of the page sockets whose job is waiting: told when the line moves, so their cards
# say again where they stand ("3rd in line").
QUEUE_GROUP = "job-queue"
# The statuses a job takes as it leaves the line (it starts, or is cancelled) or joins it ahead of
# others (housekeeping requeues it with its old queued_at): each moves the jobs behind it.
LINE_MOVING_STATUSES = (JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.QUEUED)


def group_name(job_id) -> str:
    return f"job-{job_id}"


def output_json(image: Image) -> OutputJson:
    return {"url": reverse("imagegen:image_file", args=[image.id]), "width": image.width, "height": image.height}


class EventSender:
    """Sends events from synchronous code through one long-lived event loop in its own thread.

    `async_to_sync(group_send)` would start a fresh event loop per call, and channels_redis a
    fresh Redis connection with it: about 10 ms per event on the worker's hot path. Here the
    loop and its connections live as long as the process, a publish only hands the event over,
    and a lock keeps events in the order they were published.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = threading.Lock()

    def send(self, group: str, event: dict) -> None:
        asyncio.run_coroutine_threadsafe(self.group_send(group, event), self.running_loop())

    def running_loop(self) -> asyncio.AbstractEventLoop:
        with self.started:
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                threading.Thread(target=self.loop.run_forever, name="job-events", daemon=True).start()
                self.order = asyncio.Lock()
        return self.loop

    async def group_send(self, group: str, event: dict) -> None:
        async with self.order:
            try:
                await get_channel_layer().group_send(group, event)
            except Exception:
                logger.warning("Could not publish %s to %s", event["type"], group, exc_info=True)


sender = EventSender()


def publish(job_id, event: StatusEvent | ProgressEvent | ResultEvent) -> None:
    sender.send(group_name(job_id), event)


def status_event(job: Job) -> StatusEvent:
    return {
        "type": "job.status",
        "job_id": str(job.pk),
        "status": job.status,
        "error": job.error,
        "step": job.step,
        "total_steps": job.total_steps,
    }


def result_event(job: Job, images: list[Image]) -> ResultEvent:
    return {"type": "job.result", "job_id": str(job.pk), "outputs": [output_json(image) for image in images]}


def publish_status(job: Job) -> None:
    publish(job.pk, status_event(job))
    if job.status in LINE_MOVING_STATUSES:
        sender.send(QUEUE_GROUP, QueueEvent(type="queue.moved"))


def publish_result(job: Job, images: list[Image]) -> None:
    publish(job.pk, result_event(job, images))


def preview_data_url(preview) -> str:
    buffer = io.BytesIO()
    preview.save(buffer, format="JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


class ProgressReporter:
    """The engine's step callback for one job: throttled pushes, progress writes, cancellation.

    It is called on every sampler step, so it checks the row for a cancel request each time
    (one indexed read) and raises GenerationCancelled to stop the sampler at that step.
    """

    def __init__(self, job: Job, *, clock=time.monotonic) -> None:
        self.job = job
        self.clock = clock
        self.started = clock()
        self.last_push = float("-inf")
        self.last_save = self.started
        self.pending_preview: str | None = None

    def __call__(self, step: int, total: int, preview=None) -> None:
        manager = type(self.job).objects
        row = manager.filter(pk=self.job.pk).values_list("status", "attempts", "worker").first()
        # A cancelled job stops here; so does a deleted one (its user deleted the run meanwhile).
        if row is None or row[0] == JobStatus.CANCELLED:
            raise GenerationCancelled("Cancelled.")
        if row != (JobStatus.RUNNING, self.job.attempts, self.job.worker):
            # The job was given to another attempt: that one reports the progress now. This worker
            # runs to its end and its images are discarded (see job_finish).
            return
        now = self.clock()
        if preview is not None:
            self.pending_preview = preview_data_url(preview)
        if now - self.last_save >= SAVE_INTERVAL or step == total:
            # Fenced: a worker whose job was given to another attempt must not write its progress.
            manager.current_attempt(self.job).update(step=step, heartbeat_at=timezone.now())
            self.last_save = now
        if now - self.last_push >= PUSH_INTERVAL or step == total:
            elapsed = now - self.started
            publish(
                self.job.pk,
                {
                    "type": "job.progress",
                    "job_id": str(self.job.pk),
                    "step": step,
                    "total": total,
                    "eta": round(elapsed / step * (total - step), 1) if step else None,
                    "preview": self.pending_preview,
                },
            )
            self.last_push = now
            self.pending_preview = None
