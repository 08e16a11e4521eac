"""Every write: creating runs, executing them on a worker, storing images, issuing API tokens."""

import logging
import secrets
import threading
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

from django import db
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from PIL import Image as PILImage

from . import progress
from .engine import (
    DEFAULT_SCHEDULER,
    EngineError,
    GenerationCancelled,
    GenerationRequest,
    effective_steps,
    encode_png,
    random_seed,
)
from .models import ApiToken, Image, JobStatus, LoginFailure, Run, UserQuota

if TYPE_CHECKING:
    from img2img.uploads import NormalisedImage

logger = logging.getLogger(__name__)

QUEUE_UNAVAILABLE = "The queue is unavailable right now: your job is saved and will start when it is back."
WORKER_LOST = (
    "The worker stopped while running this job, {attempts} times in all (it may have run out of memory). "
    "Try a smaller size, fewer images or fewer steps."
)
UNEXPECTED_FAILURE = (
    "The generation failed unexpectedly ({error}). Try again; if it keeps failing, tell an administrator."
)


def current_engine():
    """The warm engine of this worker process (loaded on first use, then kept)."""
    from .engine import get_engine

    return get_engine(
        settings.IMAGEGEN_MODEL,
        device=settings.IMAGEGEN_DEVICE,
        dtype=settings.IMAGEGEN_DTYPE,
        cache_dir=settings.IMAGEGEN_MODEL_CACHE,
    )


def engine_warm_up() -> None:
    """Load the model and run one tiny generation before the first job arrives.

    The first generation in a process pays for one-time set-up in torch (seconds on a CPU);
    paying it here means no user's first job waits for it.
    """
    current_engine().generate(GenerationRequest(prompt="", steps=1, width=64, height=64))


def run_enqueue(*, run: Run) -> None:
    """Send the run to the GPU queue once the row that the worker will claim is committed."""
    from .tasks import run_job

    def send() -> None:
        try:
            run_job.delay(str(run.pk))
        except BrokerError:
            # The row stays queued with no sent_at; housekeeping sends it once the broker is back.
            logger.warning("The queue is unreachable; run %s waits to be sent", run.pk)
            return
        run.sent_at = timezone.now()
        Run.objects.filter(pk=run.pk).update(sent_at=run.sent_at)

    transaction.on_commit(send)


class QuotaExceededError(Exception):
    """The user has used today's generations; str() says so in words a user reads."""


def daily_quota(*, user) -> int:
    override = UserQuota.objects.filter(user=user).values_list("daily_limit", flat=True).first()
    return settings.IMAGEGEN_DAILY_QUOTA if override is None else override


def quota_claim(*, user) -> None:
    """Count one generation against today's quota, or raise QuotaExceededError.

    Call inside the transaction that creates the run: the user's row is locked first, so two
    requests at the limit are counted one after the other and cannot both pass.
    """
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    start_of_day = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    limit = daily_quota(user=user)
    if Run.objects.filter(owner=user, queued_at__gte=start_of_day).count() >= limit:
        raise QuotaExceededError(
            f"You have used all {limit} generations of your daily quota. It renews at midnight UTC."
        )


def run_create(
    *,
    owner,
    prompt: str,
    negative_prompt: str = "",
    steps: int,
    guidance_scale: float,
    width: int | None = None,
    height: int | None = None,
    seed: int | None = None,
    scheduler: str = DEFAULT_SCHEDULER,
    batch_size: int = 1,
    init_image: Image | None = None,
    init_upload: "NormalisedImage | None" = None,
    strength: float | None = None,
) -> Run:
    """Store a queued run and send it to the workers once committed.

    With an init image (an earlier upload, or `init_upload`, stored here) the run is
    image-to-image at the init image's size, and `strength` says how far to move from it.
    Raises QuotaExceededError, storing nothing, when the user's daily quota is used up.
    """
    stored_upload: Image | None = None
    try:
        with transaction.atomic():
            quota_claim(user=owner)
            if init_upload is not None:
                init_image = stored_upload = image_store(
                    owner=owner,
                    data=init_upload.data,
                    kind=Image.Kind.UPLOAD,
                    name=f"uploads/{uuid.uuid4()}.png",
                    size=(init_upload.width, init_upload.height),
                )
            if init_image is not None:
                width, height = init_image.width, init_image.height
                strength = round(strength, 2)
            run = Run.objects.create(
                owner=owner,
                generation_type=Run.GenerationType.IMAGE_TO_IMAGE if init_image else Run.GenerationType.TEXT_TO_IMAGE,
                prompt=prompt,
                negative_prompt=negative_prompt,
                init_image=init_image,
                strength=strength,
                steps=steps,
                total_steps=effective_steps(steps, strength),
                guidance_scale=guidance_scale,
                width=width,
                height=height,
                # Always stored, so every image can be made again: draw one when none was given.
                seed=random_seed() if seed is None else seed,
                scheduler=scheduler,
                model=settings.IMAGEGEN_MODEL,
                batch_size=batch_size,
            )
            run_enqueue(run=run)
    except BaseException:
        if stored_upload is not None:
            default_storage.delete(stored_upload.file.name)
        raise
    return run


def run_variation_create(*, run: Run) -> Run:
    """The same request again (same init image and settings) with a new seed."""
    return run_create(
        owner=run.owner,
        prompt=run.prompt,
        negative_prompt=run.negative_prompt,
        steps=run.steps,
        guidance_scale=run.guidance_scale,
        width=run.width,
        height=run.height,
        scheduler=run.scheduler,
        batch_size=run.batch_size,
        init_image=run.init_image,
        strength=run.strength_float,
    )


def run_cancel(*, run: Run) -> bool:
    """Cancel a queued or running run; a running one stops at its next sampler step."""
    cancelled = Run.objects.filter(pk=run.pk, status__in=(JobStatus.QUEUED, JobStatus.RUNNING)).update(
        status=JobStatus.CANCELLED, finished_at=timezone.now()
    )
    if cancelled:
        run.refresh_from_db()
        transaction.on_commit(lambda: progress.publish_status(run))
    return bool(cancelled)


def run_claim(*, run_id, worker: str) -> Run | None:
    """Take a queued run for this worker in one conditional UPDATE; None if it is not queued.

    A redelivered message, a run already running elsewhere, or a cancelled run all fail the
    claim, so the same message can arrive twice and the work is still done once.
    """
    now = timezone.now()
    claimed = Run.objects.filter(pk=run_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING,
        attempts=F("attempts") + 1,
        worker=worker,
        step=0,
        error="",
        started_at=now,
        heartbeat_at=now,
    )
    return Run.objects.select_related("init_image").get(pk=run_id) if claimed else None


def run_execute(*, run_id, worker: str = "") -> None:
    """Claim the run, generate its images, store them and report every change of state."""
    run = run_claim(run_id=run_id, worker=worker)
    if run is None:
        logger.info("Run %s is not queued any more; nothing to do", run_id)
        return
    progress.publish_status(run)
    try:
        with Heartbeat(run):
            request = GenerationRequest(
                init_image=load_init_image(run.init_image) if run.init_image else None,
                strength=run.strength_float,
                prompt=run.prompt,
                negative_prompt=run.negative_prompt,
                steps=run.steps,
                guidance_scale=run.guidance_scale,
                width=run.width,
                height=run.height,
                seed=run.seed,
                scheduler=run.scheduler,
                batch_size=run.batch_size,
            )
            engine = current_engine()
            result = engine.generate(
                request, on_step=progress.ProgressReporter(run), preview_every=settings.IMAGEGEN_PREVIEW_EVERY
            )
    except GenerationCancelled:
        logger.info("Run %s was cancelled while running", run_id)
        return
    except EngineError as error:
        run_fail(run=run, error=str(error))
        return
    except Exception as error:
        logger.exception("Run %s failed", run_id)
        run_fail(run=run, error=UNEXPECTED_FAILURE.format(error=type(error).__name__))
        return
    run_finish(run=run, images=result.images, parameters=result.parameters, model=engine.model_name)


class Heartbeat:
    """Marks the running job's row as alive every few seconds from a thread of its own.

    The step callback cannot do it alone: loading a model or decoding a large image can take
    longer than the heartbeat timeout, and a job must not be taken from a worker that is alive.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.beat, name=f"heartbeat-{run.pk}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join()

    def beat(self) -> None:
        try:
            while not self.stopped.wait(settings.IMAGEGEN_HEARTBEAT_INTERVAL):
                Run.objects.filter(pk=self.run.pk, status=JobStatus.RUNNING).update(heartbeat_at=timezone.now())
        finally:
            db.connection.close()


def runs_recover() -> dict[str, int]:
    """Give jobs whose worker died to another worker, and send jobs whose message was lost.

    A running job with no heartbeat for IMAGEGEN_HEARTBEAT_TIMEOUT seconds is queued again, or
    failed once it has used IMAGEGEN_MAX_ATTEMPTS attempts. A queued job whose message never
    reached the broker (or reached it long ago, and the broker may have lost it) is sent again;
    a message that arrives twice is harmless, since only one claim can succeed.
    """
    now = timezone.now()
    counts = {"requeued": 0, "failed": 0, "resent": 0}
    stale = now - timedelta(seconds=settings.IMAGEGEN_HEARTBEAT_TIMEOUT)
    for run in Run.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=stale):
        unchanged = Run.objects.filter(pk=run.pk, status=JobStatus.RUNNING, heartbeat_at=run.heartbeat_at)
        if run.attempts >= settings.IMAGEGEN_MAX_ATTEMPTS:
            error = WORKER_LOST.format(attempts=run.attempts)
            if unchanged.update(status=JobStatus.FAILED, error=error, finished_at=now):
                counts["failed"] += 1
                run.refresh_from_db()
                progress.publish_status(run)
        elif unchanged.update(status=JobStatus.QUEUED, worker="", step=0, sent_at=None):
            counts["requeued"] += 1
            logger.warning("Run %s lost its worker during attempt %s; queued again", run.pk, run.attempts)
            run.refresh_from_db()
            progress.publish_status(run)
            run_enqueue(run=run)
    unsent = Q(sent_at__isnull=True, queued_at__lt=now - timedelta(seconds=2))
    long_ago = Q(sent_at__lt=now - timedelta(seconds=settings.IMAGEGEN_RESEND_QUEUED_AFTER))
    for run in Run.objects.filter(unsent | long_ago, status=JobStatus.QUEUED):
        run_enqueue(run=run)
        if run.sent_at is not None and run.sent_at >= now:  # set by run_enqueue once sent
            counts["resent"] += 1
    return counts


def load_init_image(image: Image) -> PILImage.Image:
    with image.file.open("rb") as file:
        return PILImage.open(file).convert("RGB")


def run_finish(*, run: Run, images, parameters: str, model: str) -> None:
    """Store the outputs and mark the run succeeded; a run cancelled meanwhile keeps no outputs."""
    stored = [
        image_store(
            owner=run.owner,
            data=encode_png(image, parameters),
            kind=Image.Kind.OUTPUT,
            name=f"outputs/{run.pk}/{index}.png",
            size=image.size,
            run=run,
            index=index,
        )
        for index, image in enumerate(images)
    ]
    with transaction.atomic():
        finished = Run.objects.filter(pk=run.pk, status=JobStatus.RUNNING).update(
            status=JobStatus.SUCCEEDED, step=run.total_steps, model=model, finished_at=timezone.now()
        )
        if not finished:
            for image in stored:
                image_delete(image=image)
            return
    run.refresh_from_db()
    progress.publish_status(run)
    progress.publish_result(run, stored)


def run_fail(*, run: Run, error: str) -> None:
    Run.objects.filter(pk=run.pk, status=JobStatus.RUNNING).update(
        status=JobStatus.FAILED, error=error, finished_at=timezone.now()
    )
    run.refresh_from_db()
    progress.publish_status(run)


def image_store(
    *,
    owner,
    data: bytes,
    kind: str,
    name: str,
    size: tuple[int, int],
    run: Run | None = None,
    index: int = 0,
    format: str = "PNG",
) -> Image:
    stored_name = default_storage.save(name, ContentFile(data))
    width, height = size
    return Image.objects.create(
        owner=owner,
        file=stored_name,
        width=width,
        height=height,
        format=format,
        sha256=Image.digest(data),
        kind=kind,
        run=run,
        index=index,
    )


def image_delete(*, image: Image) -> None:
    name = image.file.name
    image.delete()
    transaction.on_commit(lambda: default_storage.delete(name))


def api_token_create(*, username: str, name: str = "") -> str:
    """Create the user if missing and a new API token for them; returns the token (shown once)."""
    user, created = get_user_model().objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    key = secrets.token_urlsafe(32)
    ApiToken.objects.create(owner=user, name=name, prefix=key[:8], key_hash=ApiToken.hash_key(key))
    return key


def api_tokens_revoke(*, tokens) -> int:
    """Revoke API tokens (a queryset); they stop authenticating at once. Returns how many."""
    return tokens.filter(revoked=False).update(revoked=True)


def local_admin_create(*, username: str) -> str:
    """A superuser for a single-machine install, with a new random password (returned)."""
    password = secrets.token_urlsafe(9)
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return password


def login_failure_record(*, username: str, ip_address: str | None) -> None:
    LoginFailure.objects.create(username=username[:150], ip_address=ip_address)
    # Old failures only matter inside the lockout window.
    window = timedelta(seconds=settings.IMAGEGEN_LOGIN_LOCKOUT_SECONDS)
    LoginFailure.objects.filter(at__lt=timezone.now() - window).delete()
