"""Runs: creating a generation (text or image to image, or a variation) or an import, and performing
a generation on a worker."""

import uuid
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from ..engine import (
    DEFAULT_CLIP_SKIP,
    DEFAULT_SCHEDULER,
    GenerationCancelled,
    GenerationRequest,
    effective_steps,
    encode_png,
    random_seed,
)
from ..models import Image, JobStatus, Run
from ..progress import ProgressReporter
from .images import OutputImage, image_open_rgb, image_store
from .jobs import JobOutcome, job_cancel, job_enqueue, job_execute
from .quota import quota_claim
from .workers import current_engine

if TYPE_CHECKING:
    from img2img.uploads import NormalisedImage

    from ..engine import GenerationResult


class NothingToVaryError(ValueError):
    """An imported run has no request to repeat; str() says so, in words a user reads."""


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
    clip_skip: int = DEFAULT_CLIP_SKIP,
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
                clip_skip=clip_skip,
                model=settings.IMAGEGEN_MODEL,
                batch_size=batch_size,
            )
            job_enqueue(job=run)
    except BaseException:
        if stored_upload is not None:
            default_storage.delete(stored_upload.file.name)
        raise
    return run


def run_import(*, owner, upload: "NormalisedImage") -> Run:
    """Store an image the user brought to edit as a run that has already succeeded, the image its
    only output (v1 of its chain), so it can be refined like any result.

    Nothing is generated: no worker, no queue, and no claim on the daily quota.
    """
    name = f"uploads/{uuid.uuid4()}.png"
    try:
        with transaction.atomic():
            now = timezone.now()
            run = Run.objects.create(
                owner=owner,
                generation_type=Run.GenerationType.IMPORTED,
                prompt="",
                steps=0,
                total_steps=0,
                guidance_scale=0,
                width=upload.width,
                height=upload.height,
                seed=0,
                model="",
                status=JobStatus.SUCCEEDED,
                started_at=now,
                finished_at=now,
            )
            image_store(
                owner=owner,
                data=upload.data,
                kind=Image.Kind.UPLOAD,
                name=name,
                size=(upload.width, upload.height),
                run=run,
                index=0,
            )
    except BaseException:
        # Whatever failed (the row, the commit), no file is left without its run.
        default_storage.delete(name)
        raise
    return run


def run_variation_create(*, run: Run) -> Run:
    """The same request again (same init image and settings) with a new seed.

    Raises QuotaExceededError, or NothingToVaryError for an imported run.
    """
    if run.is_imported:
        raise NothingToVaryError("An imported image has no settings to vary; refine it instead.")
    return run_create(
        owner=run.owner,
        prompt=run.prompt,
        negative_prompt=run.negative_prompt,
        steps=run.steps,
        guidance_scale=run.guidance_scale,
        width=run.width,
        height=run.height,
        scheduler=run.scheduler,
        clip_skip=run.clip_skip,
        batch_size=run.batch_size,
        init_image=run.init_image,
        strength=run.strength_float,
    )


def run_delete(*, run: Run) -> None:
    """Delete the run and all it made: its outputs, its refinements and their results, and its init
    upload unless another run (a variation) starts from it too. Their files go once committed
    (django-cleanup).

    A queued or running job of the chain is cancelled first, so its worker stops at its next step;
    a worker that finishes anyway stores nothing (its attempt's row is gone: see job_finish).
    """
    with transaction.atomic():
        Run.objects.select_for_update().filter(pk=run.pk).first()  # no refinement is added meanwhile
        refinements = run.refinements.all()
        for job in [run, *refinements.filter(status__in=(JobStatus.QUEUED, JobStatus.RUNNING))]:
            job_cancel(job=job)
        results = list(refinements.exclude(result=None).values_list("result", flat=True))
        init_image = run.init_image
        # Versions before the images they were made from: those are RESTRICT (see Refinement.parent_image).
        refinements.delete()
        Image.objects.filter(pk__in=results).delete()
        run.delete()  # and its outputs, by cascade
        if init_image is not None and not init_image.init_for_runs.exists():
            init_image.delete()


def run_execute(*, run_id, worker: str = "") -> None:
    """Claim the run (and compatible queued runs to make in the same call), generate their images,
    store them and report every change of state."""
    job_execute(model=Run, job_id=run_id, worker=worker, perform_batch=runs_perform)


def run_perform(run: Run, on_step: ProgressReporter) -> JobOutcome:
    """Generate one run's images on this worker's engine; the lifecycle stores them as its outputs."""
    (outcome,) = runs_perform([run], [on_step])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def runs_perform(runs: list[Run], on_steps: list[ProgressReporter]) -> list[JobOutcome | Exception]:
    """Generate the images of runs that can share a pipeline call (Run.batch_fields) in one call,
    each from its own seeds. A run whose request cannot be made (its init image is gone) fails
    alone, and one its user cancels meanwhile ends with GenerationCancelled; the others go on."""
    outcomes: dict[int, JobOutcome | Exception] = {}
    requests: dict[int, GenerationRequest] = {}
    for index, run in enumerate(runs):
        try:
            requests[index] = _generation_request(run)
        except Exception as error:
            outcomes[index] = error
    if requests:
        engine = current_engine()
        results = engine.generate_batch(
            list(requests.values()),
            on_steps=[on_steps[index] for index in requests],
            preview_every=settings.IMAGEGEN_PREVIEW_EVERY,
        )
        for index, result in zip(requests, results, strict=True):
            if result is None:  # its user cancelled it during the call
                outcomes[index] = GenerationCancelled("Cancelled.")
            else:
                outcomes[index] = _outcome(runs[index], result, model=engine.model_name)
    return [outcomes[index] for index in range(len(runs))]


def _generation_request(run: Run) -> GenerationRequest:
    return GenerationRequest(
        init_image=image_open_rgb(run.init_image) if run.init_image else None,
        strength=run.strength_float,
        prompt=run.prompt,
        negative_prompt=run.negative_prompt,
        steps=run.steps,
        guidance_scale=run.guidance_scale,
        width=run.width,
        height=run.height,
        seed=run.seed,
        scheduler=run.scheduler,
        clip_skip=run.clip_skip,
        batch_size=run.batch_size,
    )


def _outcome(run: Run, result: "GenerationResult", *, model: str) -> JobOutcome:
    images = [
        OutputImage(data=encode_png(image, parameters), size=image.size, kind=Image.Kind.OUTPUT, index=index, run=run)
        for index, (image, parameters) in enumerate(zip(result.images, result.image_parameters, strict=True))
    ]
    return JobOutcome(images=images, fields={"model": model})
