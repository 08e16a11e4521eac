"""Refinements: creating one (the next version of a run's chain) and performing it on a worker.

The lifecycle (claim, heartbeat, progress, cancel, finish, fail, recovery) is the job core's
(imagegen.services.jobs); a refinement brings its work: load_base_image → the mode's stage →
save_outputs.
"""

import json
import uuid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from PIL import Image as PILImage

from imagegen.engine import EngineError, encode_png, random_seed
from imagegen.models import Image, Run
from imagegen.progress import ProgressReporter
from imagegen.services import (
    JobOutcome,
    OutputImage,
    current_engine,
    image_open_rgb,
    image_store,
    job_enqueue,
    job_execute,
    model_to_reuse,
    one_at_a_time,
    quota_claim,
)

from .models import DEFAULT_CREATIVITY, Refinement
from .selectors import latest_version, refinement_record, version_of_image
from .stages import STAGES, StageInput, StageOutput

if TYPE_CHECKING:
    from img2img.uploads import NormalisedImage

# The PNG text chunk holding a result's record (version, parent, mode, payload, seed…) as JSON.
RECORD_CHUNK = "imagegen-refinement"


class NothingToRefineError(Exception):
    """The run has no image yet (it is still running, or failed); str() says so."""


class CannotRefineError(EngineError):
    """What a refinement needs is not there on the worker (a mode not built yet, a reference image
    deleted meanwhile); str() says which, in words a user reads."""


def refinement_create(
    *,
    owner,
    run: Run,
    type: str,
    payload: dict[str, Any],
    creativity: int = DEFAULT_CREATIVITY,
    parent_image: Image | None = None,
    seed: int | None = None,
) -> Refinement:
    """Store a queued refinement as the next version of the run's chain and send it to the workers.

    The parent is `parent_image` (a version of this run's chain) or, when None, the chain's
    latest version. Raises QuotaExceededError or NothingToRefineError, storing nothing.
    """
    plan = STAGES[type].plan(payload=payload, creativity=creativity)
    with transaction.atomic():
        quota_claim(user=owner)
        # The chain's lock: concurrent submissions for one run take their numbers one after another.
        Run.objects.select_for_update().filter(pk=run.pk).first()
        latest = latest_version(run=run)
        if latest is None:
            raise NothingToRefineError(
                f"The run has no image to refine yet (it is {run.get_status_display().lower()})."
            )
        parent = latest if parent_image is None else version_of_image(run=run, image_id=parent_image.pk)
        if parent is None:
            raise ValueError(f"Image {parent_image.pk} is not a version of run {run.pk}.")
        latest_number = run.refinements.aggregate(latest=Max("version"))["latest"] or 1
        refinement = Refinement.objects.create(
            owner=owner,
            run=run,
            parent_image=parent.image,
            parent_version=parent.number,
            version=latest_number + 1,
            type=type,
            payload=payload,
            creativity=creativity,
            strength=plan.strength,
            total_steps=plan.total_steps,
            # Always stored, so every version can be made again.
            seed=random_seed() if seed is None else seed,
            model=model_to_reuse(run.model).id,
        )
        job_enqueue(job=refinement)
    return refinement


def refinement_retry(*, refinement: Refinement) -> Refinement:
    """The same edit again, as a new version: same parent, mode, payload, creativity and seed."""
    return refinement_create(
        owner=refinement.owner,
        run=refinement.run,
        type=refinement.type,
        payload=refinement.payload,
        creativity=refinement.creativity,
        parent_image=refinement.parent_image,
        seed=refinement.seed,
    )


def refinement_execute(*, refinement_id, worker: str = "") -> None:
    """Claim the refinement, make the new version, store it and report every change of state."""
    job_execute(model=Refinement, job_id=refinement_id, worker=worker, perform_batch=one_at_a_time(refinement_perform))


def refinement_perform(refinement: Refinement, on_step: ProgressReporter) -> JobOutcome:
    stage = STAGES.get(refinement.type)
    if stage is None:
        raise CannotRefineError(f"{refinement.get_type_display()} is not available yet.")
    engine = current_engine(refinement.model)
    given = StageInput(
        parent=load_base_image(refinement),
        payload=refinement.payload,
        creativity=refinement.creativity,
        seed=refinement.seed,
        on_step=on_step,
        preview_every=settings.IMAGEGEN_PREVIEW_EVERY,
        reference=load_reference_image(refinement),
    )
    return save_outputs(refinement, stage.run(engine, given), model=engine.model_name)


def load_base_image(refinement: Refinement) -> PILImage.Image:
    """The parent version's pixels, the image the mode works on."""
    return image_open_rgb(refinement.parent_image)


def load_reference_image(refinement: Refinement) -> PILImage.Image | None:
    """The reference image the payload names (subject repair), if any."""
    reference_id = refinement.payload.get("referenceFileId")
    if not reference_id:
        return None
    reference = Image.objects.filter(pk=reference_id, owner=refinement.owner).first()
    if reference is None:
        raise CannotRefineError("The reference image was deleted; upload it again and retry.")
    return image_open_rgb(reference)


def reference_upload_create(*, owner, upload: "NormalisedImage") -> Image:
    """Store an image the user uploads as a reference (for subject repair)."""
    return image_store(
        owner=owner,
        data=upload.data,
        kind=Image.Kind.REFERENCE,
        name=f"references/{uuid.uuid4()}.png",
        size=(upload.width, upload.height),
    )


def save_outputs(refinement: Refinement, output: StageOutput, *, model: str) -> JobOutcome:
    """The new version as a PNG carrying how it was made, both as A1 parameters and as our record;
    the lifecycle stores it with the refinement's success."""
    record = refinement_record(refinement=refinement, model=model)
    data = encode_png(output.image, output.parameters, chunks={RECORD_CHUNK: json.dumps(record)})
    image = OutputImage(data=data, size=output.image.size, kind=Image.Kind.REFINEMENT)
    return JobOutcome(images=[image], fields={"model": model, "report": output.report})
