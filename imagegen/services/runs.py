"""Runs: creating a generation (text or image to image, or a variation) or an import, and performing
a generation on a worker."""

import uuid
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from img2img.uploads import NormalisedImage, normalise_upload

from ..engine import (
    DEFAULT_CLIP_SKIP,
    DEFAULT_SCHEDULER,
    GenerationCancelled,
    GenerationRequest,
    HiresFix,
    encode_png,
    hires_size,
    random_seed,
    total_steps,
)
from ..limits import DEFAULT_HIRES_STRENGTH
from ..models import Image, JobStatus, Run
from ..progress import ProgressReporter
from ..storedfiles import open_image_file
from .catalog import default_model, model_to_reuse
from .images import OutputImage, image_open_rgb, image_store
from .jobs import JobOutcome, job_cancel, job_enqueue, job_execute
from .quota import quota_claim
from .workers import current_engine

if TYPE_CHECKING:
    from ..engine import GenerationResult


# A variation of one image: image to image from it at this strength (Fooocus' "Vary (subtle)"
# denoises 0.5 too), enough to change its details while keeping its composition.
VARIATION_STRENGTH = 0.5


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
    init_upload: NormalisedImage | None = None,
    strength: float | None = None,
    model: str | None = None,
    hires_scale: float | None = None,
    hires_strength: float = DEFAULT_HIRES_STRENGTH,
    hires_steps: int | None = None,
) -> Run:
    """Store a queued run and send it to the workers once committed.

    With an init image (an earlier upload, or `init_upload`, stored here) the run is
    image-to-image at the init image's size, and `strength` says how far to move from it.
    A text-to-image run with a `hires_scale` gets a hires fix: made at width × height, then
    upscaled and redrawn at `hires_strength` for `hires_steps` (by default `steps`); the run
    records the final size.
    Raises QuotaExceededError, storing nothing, when the user's daily quota is used up.
    """
    hires = None
    if hires_scale is not None:
        if init_image is not None or init_upload is not None:
            raise ValueError("The hires fix is for text to image.")
        # Stored with two decimals: the run's sizes are worked out from the stored values.
        hires = HiresFix(scale=round(hires_scale, 2), strength=round(hires_strength, 2), steps=hires_steps or steps)
        width, height = hires_size(width, height, hires.scale)
    stored_upload: Image | None = None
    try:
        with transaction.atomic():
            quota_claim(user=owner, images=batch_size)
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
                total_steps=total_steps(steps=steps, strength=strength, hires=hires),
                guidance_scale=guidance_scale,
                width=width,
                height=height,
                # Always stored, so every image can be made again: draw one when none was given.
                seed=random_seed() if seed is None else seed,
                scheduler=scheduler,
                clip_skip=clip_skip,
                model=model or default_model().id,
                batch_size=batch_size,
                hires_scale=hires and hires.scale,
                hires_strength=hires and hires.strength,
                hires_steps=hires and hires.steps,
            )
            job_enqueue(job=run)
    except BaseException:
        if stored_upload is not None:
            default_storage.delete(stored_upload.file.name)
        raise
    return run


def run_import(*, owner, upload: NormalisedImage) -> Run:
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


def run_variation_create(*, run: Run, image: Image | None = None) -> Run:
    """A variation of the run, or of one of its images.

    Of the run: the same request again (same init image, settings and batch size) with a new seed.
    Of one image (one of the run's outputs): "Vary (subtle)", as Fooocus calls it: a new
    image-to-image run of one image from a copy of it, with the run's prompt and settings, a new
    seed and strength VARIATION_STRENGTH, so it keeps that image's composition and changes its
    details. (The next seed of the same request would not do: it is the next image of the batch.)
    The copy is the new run's own upload, so either run can be deleted without the other.

    Raises QuotaExceededError, or NothingToVaryError for an imported run.
    """
    if run.is_imported:
        raise NothingToVaryError("An imported image has no settings to vary; refine it instead.")
    kept = run.settings() | {"owner": run.owner, "model": model_to_reuse(run.model).id}
    del kept["seed"]  # a new one
    if image is None:
        return run_create(**kept, init_image=run.init_image)
    if image.run_id != run.pk or image.kind != Image.Kind.OUTPUT:
        raise ValueError(f"Image {image.pk} is not an output of run {run.pk}.")
    # One image to image from that image: its own size, and none of the run's batch, strength or hires fix.
    for name in ("width", "height", "batch_size", "strength", "hires_scale", "hires_strength", "hires_steps"):
        kept.pop(name, None)
    return run_create(**kept, init_upload=_init_upload_from(image), strength=VARIATION_STRENGTH)


def _init_upload_from(image: Image) -> NormalisedImage:
    """A copy of a stored image as an init upload, through the rules every upload passes (which
    also leave its PNG's parameters behind: they describe the image it varies, not the variation)."""
    with open_image_file(image=image) as file:  # a file gone from storage: a 404 saying so
        return normalise_upload(file.read())


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
        engine = current_engine(runs[0].model)  # Run.batch_fields: a batch shares its model
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
    width, height = run.first_pass_size
    return GenerationRequest(
        init_image=image_open_rgb(run.init_image) if run.init_image else None,
        strength=run.strength_float,
        prompt=run.prompt,
        negative_prompt=run.negative_prompt,
        steps=run.steps,
        guidance_scale=run.guidance_scale,
        width=width,
        height=height,
        seed=run.seed,
        scheduler=run.scheduler,
        clip_skip=run.clip_skip,
        batch_size=run.batch_size,
        hires=run.hires,
    )


def _outcome(run: Run, result: "GenerationResult", *, model: str) -> JobOutcome:
    images = [
        OutputImage(data=encode_png(image, parameters), size=image.size, kind=Image.Kind.OUTPUT, index=index, run=run)
        for index, (image, parameters) in enumerate(zip(result.images, result.image_parameters, strict=True))
    ]
    return JobOutcome(images=images, fields={"model": model})
