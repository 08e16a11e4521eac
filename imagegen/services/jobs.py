"""The lifecycle of every kind of job, written once: enqueue on commit, claim, heartbeat, progress,
cancel, finish, fail and recovery. A kind of job (Run, Refinement) brings only what it does on the
worker: a `perform` function that makes its images; the lifecycle stores them.

Every write a worker makes to a claimed job is fenced by the attempt it claimed
(`JobQuerySet.current_attempt`): once housekeeping has given the job to another attempt, the old
worker's progress, heartbeat, finish and failure change nothing, and its files are deleted.
"""

import base64
import json
import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django import db
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from redis import Redis
from redis.exceptions import RedisError

from .. import progress
from ..engine import EngineError, GenerationCancelled, ModelLoadError
from ..models import Job, JobStatus, job_models
from .images import OutputImage, image_row_create
from .routing import job_queue, kind_queue, model_queue_lists, stranded_model_queue_lists
from .workers import MODEL_UNAVAILABLE, model_load_failure_record

logger = logging.getLogger("imagegen.services")

QUEUE_UNAVAILABLE = "The queue is unavailable right now: your job is saved and will start when it is back."
WORKER_LOST = (
    "The worker stopped while running this job, {attempts} times in all (it may have run out of memory). "
    "Try a smaller size, fewer images or fewer steps."
)
UNEXPECTED_FAILURE = (
    "The generation failed unexpectedly ({error}). Try again; if it keeps failing, tell an administrator."
)
NOT_SAVED = "The images could not be saved: {reason}. Try again; if it keeps failing, tell an administrator."


# What a storage raises when it cannot write: the disk's OSError, and S3's botocore errors.
STORAGE_ERRORS = (OSError, BotoCoreError, ClientError)


class StorageFailedError(Exception):
    """The job's images could not be written; str() says why, in words a user reads."""


class AttemptSupersededError(Exception):
    """The job is no longer this attempt's (it was cancelled, or requeued to another attempt)."""


@dataclass
class JobOutcome:
    """What a job made: its images (not stored yet), and what to record on its row as it succeeds."""

    images: list[OutputImage]
    fields: dict[str, Any] = field(default_factory=dict)


# Does a claimed job's work on the worker: given the job and its step callback, returns the outcome.
Perform = Callable[[Any, progress.ProgressReporter], JobOutcome]
# Does the work of several claimed jobs of one kind in one go (those Job.batch_fields allow to
# share a pipeline call): given the jobs and a step callback each, returns each job's outcome, or
# the exception that ended that job alone (GenerationCancelled for one its user cancelled). An
# exception it raises ends them all.
PerformBatch = Callable[[list[Any], list[progress.ProgressReporter]], list[JobOutcome | Exception]]


def job_enqueue(*, job: Job) -> None:
    """Send the job once the row that the worker will claim is committed: to a worker holding its
    model loaded when one is alive, else to any (routing.job_queue decides, as it is sent)."""
    from ..celery import app

    model = type(job)

    def send() -> None:
        try:
            app.send_task(model.task_name, args=[str(job.pk)], queue=job_queue(job))
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


def job_execute(*, model: type[Job], job_id, worker: str, perform_batch: PerformBatch) -> None:
    """Claim the job, do its work, store the outcome and report every change of state.

    A kind that can batch (Job.batch_fields) also claims compatible jobs already waiting in the
    queue and does them all in one go; it never waits for more to arrive, so a lone job starts as
    soon as it would alone. Their own messages, delivered later, find them claimed and do nothing.
    A kind whose work is one job at a time gives `one_at_a_time(perform)`.
    """
    job = job_claim(model=model, job_id=job_id, worker=worker)
    if job is None:
        logger.info("%s %s is not queued any more; nothing to do", model._meta.verbose_name.capitalize(), job_id)
        return
    jobs = [job, *job_claim_companions(job=job)]
    if len(jobs) > 1:
        logger.info("%s %s runs in a batch of %s", model._meta.verbose_name.capitalize(), job_id, len(jobs))
    jobs_perform(jobs=jobs, perform_batch=perform_batch)


def job_claim_companions(*, job: Job, limit: int | None = None) -> list[Job]:
    """Claim for the job's worker other queued jobs of its kind that can share its pipeline call
    (equal in every one of Job.batch_fields), oldest first, while their images fit in `limit` (by
    default what batch_limit() leaves beside the job's own), each with the same conditional update
    as any claim: a job another worker takes meanwhile is simply skipped, and one too large for
    the room left waits for another call. A kind without batch_fields has none, and neither has
    nor is one of its `unbatchable` jobs."""
    model = type(job)
    if not model.batch_fields:
        return []
    if limit is None:
        from .workers import batch_limit

        limit = batch_limit() - image_count(job)
    if limit < 1:
        return []
    alike = {name: getattr(job, name) for name in model.batch_fields}
    waiting = model.objects.filter(status=JobStatus.QUEUED, **alike).exclude(pk=job.pk)
    if model.unbatchable is not None:
        if model.objects.filter(model.unbatchable, pk=job.pk).exists():
            return []
        waiting = waiting.exclude(model.unbatchable)
    # Every job makes one image at least: no more than `limit` of them can fit.
    candidates = waiting.order_by("queued_at").annotate(images=model.image_count).values_list("pk", "images")
    companions, room = [], limit
    for pk, images in candidates[:limit]:
        if images <= room and (companion := job_claim(model=model, job_id=pk, worker=job.worker)) is not None:
            companions.append(companion)
            room -= images
    return companions


def image_count(job: Job) -> int:
    """The images the job makes (Job.image_count, read from the row in hand)."""
    count = type(job).image_count
    return getattr(job, count.name) if isinstance(count, F) else count.value


def one_at_a_time(perform: Perform) -> PerformBatch:
    """The batch form of a `perform` that does one job (its batches are always of one)."""
    return lambda jobs, on_steps: [perform(job, on_step) for job, on_step in zip(jobs, on_steps, strict=True)]


def job_perform(*, job: Job, perform: Perform) -> None:
    """Do a claimed job's work and store its outcome, or fail it with a message a user can read."""
    jobs_perform(jobs=[job], perform_batch=one_at_a_time(perform))


def jobs_perform(*, jobs: list[Job], perform_batch: PerformBatch) -> None:
    """Do claimed jobs' work in one go and store each one's outcome, or fail it with a message a
    user can read. Each job keeps a life of its own: its progress, heartbeat, cancel, and its
    own finish or failure."""
    for job in jobs:
        progress.publish_status(job)
    with ExitStack() as beating:
        for job in jobs:
            beating.enter_context(Heartbeat(job))
        try:
            outcomes = perform_batch(jobs, [progress.ProgressReporter(job) for job in jobs])
        except Exception as error:
            for job in jobs:
                _job_settle(job, error)
            return
        for job, outcome in zip(jobs, outcomes, strict=True):
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                job_finish(job=job, outcome=outcome)
            except Exception as error:
                _job_settle(job, error)


def _job_settle(job: Job, error: Exception) -> None:
    """What a job's end by an exception means: nothing more for a cancel or a superseded attempt,
    otherwise a failure with a message a user can read."""
    name = f"{type(job)._meta.verbose_name.capitalize()} {job.pk}"
    if isinstance(error, GenerationCancelled):
        logger.info("%s was cancelled while running", name)
    elif isinstance(error, AttemptSupersededError):
        logger.warning(
            "%s: attempt %s was cancelled or given to another attempt; its images are discarded", name, job.attempts
        )
    elif isinstance(error, ModelLoadError):
        # The details (paths, the loader's words) are for operators; users read a short message.
        logger.error("%s failed: %s", name, error)
        model_load_failure_record(worker=job.worker, detail=str(error))
        job_fail(job=job, error=MODEL_UNAVAILABLE)
    elif isinstance(error, EngineError | StorageFailedError):
        job_fail(job=job, error=str(error))
    else:
        logger.error("%s failed", name, exc_info=error)
        job_fail(job=job, error=UNEXPECTED_FAILURE.format(error=type(error).__name__))


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
    """Store the outcome and mark the job succeeded, all or nothing.

    The files are written first, then their rows and the status change commit in one
    transaction, fenced by this attempt; if anything fails (the storage, the database, or the
    job is no longer this attempt's) every file written is deleted, so a job never has outputs
    from two attempts, nor files without rows. Raises StorageFailedError or AttemptSupersededError.
    """
    names = _write_files(job, outcome.images)
    try:
        with transaction.atomic():
            images = [
                image_row_create(owner_id=job.owner_id, name=name, image=output)
                for name, output in zip(names, outcome.images, strict=True)
            ]
            finished = (
                type(job)
                .objects.current_attempt(job)
                .update(
                    status=JobStatus.SUCCEEDED,
                    step=job.total_steps,
                    finished_at=timezone.now(),
                    **outcome.fields,
                    **job.result_fields(images),
                )
            )
            if not finished:
                raise AttemptSupersededError
    except BaseException:
        _delete_files(names)
        raise
    # Files of an earlier attempt whose worker died before its commit go now.
    _delete_leftovers(job, keep=names)
    job.refresh_from_db()
    progress.publish_status(job)
    progress.publish_result(job, images)


def _write_files(job: Job, outputs: list[OutputImage]) -> list[str]:
    """Write the images' files under names of this attempt; on failure delete those written."""
    names: list[str] = []
    try:
        for output in outputs:
            name = f"{job.output_prefix}{job.attempts}-{output.index}.{output.format.lower()}"
            names.append(default_storage.save(name, ContentFile(output.data)))
    except STORAGE_ERRORS as error:
        logger.exception("%s %s: the images could not be saved", type(job)._meta.verbose_name, job.pk)
        _delete_files(names)
        raise StorageFailedError(NOT_SAVED.format(reason=_storage_reason(error))) from error
    except BaseException:
        _delete_files(names)
        raise
    return names


def _storage_reason(error: BaseException) -> str:
    """Why a write failed, in a few words and without paths (they are in the log)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    code = (getattr(error, "response", None) or {}).get("Error", {}).get("Code")
    return f"the storage answered {code}" if code else f"the storage failed ({type(error).__name__})"


def _delete_files(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except STORAGE_ERRORS:
            logger.warning("Could not delete %s", name, exc_info=True)


def _delete_leftovers(job: Job, *, keep: list[str]) -> None:
    """Delete files under the job's output prefix that are not the given ones (an earlier attempt's)."""
    if job.attempts < 2:  # a first attempt has no earlier one's files to tidy: no listing
        return
    folder = job.output_prefix.rpartition("/")[0]
    try:
        _, files = default_storage.listdir(folder)
    except STORAGE_ERRORS:  # nothing there, or the storage cannot list: nothing to tidy
        return
    paths = (f"{folder}/{file}" for file in files)
    _delete_files([path for path in paths if path.startswith(job.output_prefix) and path not in keep])


def job_fail(*, job: Job, error: str) -> None:
    """Mark this attempt of the job failed with a message users read; nothing if it is not this attempt's."""
    if type(job).objects.current_attempt(job).update(status=JobStatus.FAILED, error=error, finished_at=timezone.now()):
        _delete_leftovers(job, keep=[])
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
        rows = type(self.job).objects.current_attempt(self.job)
        try:
            while not self.stopped.wait(settings.IMAGEGEN_HEARTBEAT_INTERVAL):
                try:
                    rows.update(heartbeat_at=timezone.now())
                except db.Error:
                    # A dropped connection or a locked database must not end the heartbeats, or
                    # housekeeping would take a live job away: try again next beat, connected afresh.
                    logger.warning("Heartbeat of %s failed; retrying", self.job.pk, exc_info=True)
                    db.connection.close()
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
    counts["resent"] += _stranded_resend()
    for model in job_models():
        for name, count in _recover(model).items():
            counts[name] += count
    return counts


def _stranded_resend() -> int:
    """Send again, wherever job_queue sends them now, the queued jobs whose message waits in a
    model queue that no live worker consumes any more (its worker died or unloaded the model),
    taking those messages out: nothing would ever read them. Returns how many were sent."""
    redis = _broker_redis()
    if redis is None:
        return 0
    kinds = {kind.task_name: kind for kind in job_models()}
    messages = []
    try:
        for queue in {kind_queue(kind) for kind in kinds.values()}:
            for name in stranded_model_queue_lists(redis, queue):
                # Read and emptied at once: a message pushed meanwhile is either taken here or stays.
                taken, _ = redis.pipeline(transaction=True).lrange(name, 0, -1).delete(name).execute()
                messages += taken
    except RedisError:
        logger.warning("Could not read the model queues; their messages are resent later", exc_info=True)
    resent = 0
    for message in messages:
        task_name, job_id = _task_of(message) or (None, None)
        kind = kinds.get(task_name)
        # A job no longer queued (claimed, done, cancelled) needs no message.
        job = kind.objects.filter(pk=job_id, status=JobStatus.QUEUED).first() if kind else None
        if job is None:
            continue
        logger.warning("%s %s waited in a queue no worker reads any more; sent again", kind._meta.verbose_name, job.pk)
        sent_before = job.sent_at
        job_enqueue(job=job)
        resent += job.sent_at != sent_before  # job_enqueue sets sent_at once sent
    return resent


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
    waiting: set[str] | None = None
    for job in model.objects.filter(unsent | long_ago, status=JobStatus.QUEUED):
        if waiting is None:
            waiting = _waiting_in_broker(model)
        if str(job.pk) in waiting:  # not lost, only behind a backlog: a second message would pile up
            continue
        job_enqueue(job=job)
        if job.sent_at is not None and job.sent_at >= now:  # set by job_enqueue once sent
            counts["resent"] += 1
    return counts


def _waiting_in_broker(model: type[Job]) -> set[str]:
    """Ids of this kind's jobs whose message the broker still holds: waiting in its queue or one of
    its model queues, or taken by a worker that has not acknowledged it yet (it acknowledges when
    the job ends).

    Read from the Redis lists and hash of kombu's Redis transport; with another broker, or when
    Redis cannot be read, nothing is known to be waiting and every candidate is resent (a
    duplicate message is harmless, only wasteful: one claim succeeds).
    """
    from ..celery import app

    redis = _broker_redis()
    if redis is None:
        return set()
    queue = kind_queue(model)
    try:
        # kombu keeps a queue's priority levels in lists named "<queue>", "<queue>\x06\x163"….
        lists = [queue, *(key.decode() for key in redis.scan_iter(match=f"{queue}\x06\x16*"))]
        lists += model_queue_lists(redis, queue)
        messages = [message for name in lists for message in redis.lrange(name, 0, -1)]
        unacked = app.conf.broker_transport_options.get("unacked_key", "unacked")
        messages += [json.dumps(json.loads(entry)[0]) for entry in redis.hvals(unacked)]
    except RedisError:
        logger.warning("Could not read the queue %s; resending what looks lost", queue, exc_info=True)
        return set()
    tasks = (_task_of(message) for message in messages)
    return {task[1] for task in tasks if task and task[0] == model.task_name}


def _broker_redis() -> Redis | None:
    """A client of the broker's Redis; None when the broker is not Redis."""
    from ..celery import app

    if not app.conf.broker_url.startswith(("redis://", "rediss://")):
        return None
    return Redis.from_url(app.conf.broker_url, socket_connect_timeout=2, socket_timeout=5)


def _task_of(message: bytes | str) -> tuple[str, str] | None:
    """The task name and job id (its first argument) a kombu message carries, or None."""
    try:
        envelope = json.loads(message)
        task_name = envelope["headers"]["task"]
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        return str(task_name), str(args[0])
    except (ValueError, KeyError, TypeError, IndexError):
        return None
