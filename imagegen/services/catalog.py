"""Which models this deployment offers (IMAGEGEN_MODELS, or the one IMAGEGEN_MODEL names)."""

from django.conf import settings

from ..engine.catalog import OfferedModel, model_id, parse_models


def models_offered() -> dict[str, OfferedModel]:
    """The models users choose from, by id, the default first."""
    return parse_models(settings.IMAGEGEN_MODELS or settings.IMAGEGEN_MODEL)


def default_model() -> OfferedModel:
    return next(iter(models_offered().values()))


def offered_model(identifier: str) -> OfferedModel | None:
    """The model a job names (by id; runs stored before IMAGEGEN_MODELS may name its source), or
    None when this deployment no longer offers it."""
    offered = models_offered()
    return offered.get(identifier) or offered.get(model_id(identifier))


def model_to_reuse(identifier: str) -> OfferedModel:
    """The model of a job made from an earlier one (a variation, a new version): the earlier one's
    while it is offered, so the result keeps its look, else the default."""
    return offered_model(identifier) or default_model()
