"""Reads that are more than a filter: what a user may see, and the shapes pages and the API show."""

from django.db.models import Prefetch, QuerySet
from django.http import Http404

from .models import ApiToken, Image, Run


def user_for_api_token(*, token: str):
    """The active user an API token belongs to, or None for an unknown or revoked token."""
    api_token = (
        ApiToken.objects.select_related("owner")
        .filter(key_hash=ApiToken.hash_key(token), revoked=False, owner__is_active=True)
        .first()
    )
    return api_token.owner if api_token else None


def runs_for_user(*, user, generation_type: str | None = None) -> QuerySet[Run]:
    runs = (
        Run.objects.owned_by(user)
        .select_related("init_image")
        .prefetch_related(Prefetch("outputs", queryset=Image.objects.order_by("index")))
    )
    if generation_type:
        runs = runs.filter(generation_type=generation_type)
    return runs.order_by("-queued_at")


def run_for_user(*, user, run_id) -> Run:
    """The user's run; another user's run is reported as missing so its existence does not leak."""
    run = runs_for_user(user=user).filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run.")
    return run


def image_for_user(*, user, image_id) -> Image:
    image = Image.objects.filter(pk=image_id, owner=user).first()
    if image is None:
        raise Http404("No such image.")
    return image


def run_parameters(*, run: Run) -> dict:
    """Every setting that, with the seed, reproduces the run (shown on the run page and in the API)."""
    parameters = {
        "generation_type": run.generation_type,
        "prompt": run.prompt,
        "negative_prompt": run.negative_prompt,
        "num_inference_steps": run.steps,
        "guidance_scale": run.guidance_scale,
        "width": run.width,
        "height": run.height,
        "seed": run.seed,
        "sampler": run.sampler_label,
        "model": run.model,
        "batch_size": run.batch_size,
    }
    if run.strength is not None:
        parameters["strength"] = float(run.strength)
    return parameters
