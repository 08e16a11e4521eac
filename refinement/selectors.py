"""Reads of the version chain: which images are a run's versions, and the refinements users may see."""

from dataclasses import asdict, dataclass

from django.core.cache import cache
from django.http import Http404
from PIL import Image as PILImage

from imagegen.models import Image, Run
from imagegen.storedfiles import open_image_file

from . import ocr
from .models import Refinement


@dataclass(frozen=True)
class Version:
    """One image of a run's chain: the run's own output (v1) or a succeeded refinement's result."""

    number: int
    image: Image
    refinement: Refinement | None  # None for version 1

    @property
    def parent_version(self) -> int | None:
        return self.refinement.parent_version if self.refinement else None


def run_versions(*, run: Run) -> list[Version]:
    """The run's versions that exist, v1 first, in version order."""
    versions = [Version(number=1, image=image, refinement=None) for image in run.outputs.order_by("index")]
    refinements = run.refinements.succeeded().select_related("result").order_by("version")
    versions += [Version(number=r.version, image=r.result, refinement=r) for r in refinements if r.result]
    return versions


def latest_version(*, run: Run) -> Version | None:
    """The highest version of the chain that exists; None while the run has no image."""
    versions = run_versions(run=run)
    return versions[-1] if versions else None


def version_of_image(*, run: Run, image_id) -> Version | None:
    """The version of the run's chain that this image is; None when it is not in the chain."""
    return next((version for version in run_versions(run=run) if str(version.image.pk) == str(image_id)), None)


def refinements_of_run(*, run: Run):
    """Every refinement of the run, whatever its status, in version order (the run page's list)."""
    return run.refinements.select_related("parent_image", "result").order_by("version")


def refinement_for_user(*, user, job_id) -> Refinement:
    """The user's refinement; another user's is reported as missing so its existence does not leak."""
    refinements = Refinement.objects.owned_by(user).select_related("run", "parent_image", "result")
    refinement = refinements.filter(pk=job_id).first()
    if refinement is None:
        raise Http404("No such refinement.")
    return refinement


def refinement_record(*, refinement: Refinement, model: str | None = None) -> dict:
    """How a version was made: what its PNG carries and what the run's history.json lists."""
    return {
        "version": refinement.version,
        "parent_version": refinement.parent_version,
        "parent_sha256": refinement.parent_image.sha256,
        "run_id": str(refinement.run_id),
        "job_id": str(refinement.pk),
        "type": refinement.type,
        "payload": refinement.payload,
        "creativity": refinement.creativity,
        "strength": refinement.strength,
        "seed": refinement.seed,
        "model": model or refinement.model,
    }


def image_text_lines(*, image: Image) -> list[dict]:
    """The lines of text OCR finds in the image ([{"bbox", "text", "confidence"}]), remembered by
    the image's content: the drawer asks again each time its Text tab opens."""
    key = f"ocr-lines:{image.sha256}"
    lines = cache.get(key)
    if lines is None:
        with open_image_file(image=image) as file:
            picture = PILImage.open(file).convert("RGB")
        lines = [{**asdict(line), "bbox": list(line.bbox)} for line in ocr.detect_lines(picture)]
        cache.set(key, lines, timeout=24 * 3600)
    return lines
