"""The lifecycle of every kind of job, written once: enqueue on commit, claim, heartbeat, progress,
cancel, finish, fail and recovery. A kind of job (Run, Refinement) brings only what it does on the
worker: a `perform` function that makes and stores its images.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django import db
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from .. import progress
from ..engine import EngineError, GenerationCancelled
from ..models import Image, Job, JobStatus, job_models
from .images import image_delete

logger = logging.getLogger("imagegen.services")

QUEUE_UNAVAILABLE = "The queue is unavailable right now: your job is saved and will start when it is back."
WORKER_LOST = (
    "The worker stopped while running this job, {attempts} times in all (it may have run out of memory). "
    "Try a smaller size, fewer images or fewer steps."
)
UNEXPECTED_FAILURE = (
    "The generation failed unexpectedly ({error}). Try again; if it keeps failing, tell an administrator."
)


@dataclass
class JobOutcome:
    """What a job made: its stored images, and what to record on its row as it succeeds."""

    images: list[Image]
    fields: dict[str, Any] = field(default_factory=dict)


# Does a claimed job's work on the worker: given the job and its step callback, returns the outcome.
Perform = Callable[[Any, progress.ProgressReporter], JobOutcome]


def job_enqueue(*, job: Job) -> None:
    """Send the job to its task's queue once the row that the worker will claim is committed."""
    from ..celery import app

    model = type(job)

    def send() -> None:
        try:
            app.send_task(model.task_name, args=[str(job.pk)])
        except BrokerError:
            # The row stays queued with no sent_at; housekeeping sends it once the broker is back.
            logger.warning("The queue is unreachable; %s %s waits to be sent", model._meta.verbose_name, job.pk)
            return
        job.sent_at = timezone.now()
        model.objects.filter(pk=job.pk).update(sent_at=job.sent_at)

    transaction.on_commit(send)


def job_claim(*, model: type[Job], job_id, worker: str) -> Job | None:
    """Take a queued job for this worker in one conditional UPDATE; None if it is not queued.

    A redelivered message, a job already running elsewhere, or a cancelled job all fail the
    claim, so the same message can arrive twice and the work is still done once.
    """
    now = timezone.now()
    claimed = model.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING,
        attempts=F("attempts") + 1,
        worker=worker,
        step=0,
        error="",
        started_at=now,
        heartbeat_at=now,
    )
    return model.objects.get(pk=job_id) if claimed else None


def job_execute(*, model: type[Job], job_id, worker: str, perform: Perform) -> None:
    """Claim the job, do its work with `perform`, store the outcome and report every change of state."""
    job = job_claim(model=model, job_id=job_id, worker=worker)
    name = model._meta.verbose_name.capitalize()
    if job is None:
        logger.info("%s %s is not queued any more; nothing to do", name, job_id)
        return
    progress.publish_status(job)
    try:
        with Heartbeat(job):
            outcome = perform(job, progress.ProgressReporter(job))
    except GenerationCancelled:
        logger.info("%s %s was cancelled while running", name, job_id)
        return
    except EngineError as error:
        job_fail(job=job, error=str(error))
        return
    except Exception as error:
        logger.exception("%s %s failed", name, job_id)
        job_fail(job=job, error=UNEXPECTED_FAILURE.format(error=type(error).__name__))
        return
    job_finish(job=job, outcome=outcome)


def job_cancel(*, job: Job) -> bool:
    """Cancel a queued or running job; a running one stops at its next sampler step."""
    cancelled = (
        type(job)
        .objects.filter(pk=job.pk, status__in=(JobStatus.QUEUED, JobStatus.RUNNING))
        .update(status=JobStatus.CANCELLED, finished_at=timezone.now())
    )
    if cancelled:
        job.refresh_from_db()
        transaction.on_commit(lambda: progress.publish_status(job))
    return bool(cancelled)


def job_finish(*, job: Job, outcome: JobOutcome) -> None:
    """Mark the job succeeded with its outcome; a job cancelled meanwhile keeps no images."""
    with transaction.atomic():
        finished = (
            type(job)
            .objects.filter(pk=job.pk, status=JobStatus.RUNNING)
            .update(status=JobStatus.SUCCEEDED, step=job.total_steps, finished_at=timezone.now(), **outcome.fields)
        )
        if not finished:
            for image in outcome.images:
                image_delete(image=image)
            return
    job.refresh_from_db()
    progress.publish_status(job)
    progress.publish_result(job, outcome.images)


def job_fail(*, job: Job, error: str) -> None:
    type(job).objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
        status=JobStatus.FAILED, error=error, finished_at=timezone.now()
    )
    job.refresh_from_db()
    progress.publish_status(job)


class Heartbeat:
    """Marks the running job's row as alive every few seconds from a thread of its own.

    The step callback cannot do it alone: loading a model or decoding a large image can take
    longer than the heartbeat timeout, and a job must not be taken from a worker that is alive.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.beat, name=f"heartbeat-{job.pk}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join()

    def beat(self) -> None:
        rows = type(self.job).objects.filter(pk=self.job.pk, status=JobStatus.RUNNING)
        try:
            while not self.stopped.wait(settings.IMAGEGEN_HEARTBEAT_INTERVAL):
                rows.update(heartbeat_at=timezone.now())
        finally:
            db.connection.close()


def jobs_recover() -> dict[str, int]:
    """Give jobs of every kind whose worker died to another worker, and send jobs whose message was lost.

    A running job with no heartbeat for IMAGEGEN_HEARTBEAT_TIMEOUT seconds is queued again, or
    failed once it has used IMAGEGEN_MAX_ATTEMPTS attempts. A queued job whose message never
    reached the broker (or reached it long ago, and the broker may have lost it) is sent again;
    a message that arrives twice is harmless, since only one claim can succeed.
    """
    counts = {"requeued": 0, "failed": 0, "resent": 0}
    for model in job_models():
        for name, count in _recover(model).items():
            counts[name] += count
    return counts


def _recover(model: type[Job]) -> dict[str, int]:
    now = timezone.now()
    counts = {"requeued": 0, "failed": 0, "resent": 0}
    stale = now - timedelta(seconds=settings.IMAGEGEN_HEARTBEAT_TIMEOUT)
    for job in model.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=stale):
        unchanged = model.objects.filter(pk=job.pk, status=JobStatus.RUNNING, heartbeat_at=job.heartbeat_at)
        if job.attempts >= settings.IMAGEGEN_MAX_ATTEMPTS:
            error = WORKER_LOST.format(attempts=job.attempts)
            if unchanged.update(status=JobStatus.FAILED, error=error, finished_at=now):
                counts["failed"] += 1
                job.refresh_from_db()
                progress.publish_status(job)
        elif unchanged.update(status=JobStatus.QUEUED, worker="", step=0, sent_at=None):
            counts["requeued"] += 1
            logger.warning(
                "%s %s lost its worker during attempt %s; queued again",
                model._meta.verbose_name.capitalize(),
                job.pk,
                job.attempts,
            )
            job.refresh_from_db()
            progress.publish_status(job)
            job_enqueue(job=job)
    unsent = Q(sent_at__isnull=True, queued_at__lt=now - timedelta(seconds=2))
    long_ago = Q(sent_at__lt=now - timedelta(seconds=settings.IMAGEGEN_RESEND_QUEUED_AFTER))
    for job in model.objects.filter(unsent | long_ago, status=JobStatus.QUEUED):
        job_enqueue(job=job)
        if job.sent_at is not None and job.sent_at >= now:  # set by job_enqueue once sent
            counts["resent"] += 1
    return counts
