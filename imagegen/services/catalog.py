"""Which models this deployment offers (IMAGEGEN_MODELS, or the one IMAGEGEN_MODEL names)."""

from django.conf import settings

from .. import limits
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


def model_size(identifier: str | None) -> int:
    """The side of the square a new picture of this model (by id; None: the default) is made at
    unless told: the model's working side where known (1024 for SDXL), else limits.DEFAULT_SIDE."""
    model = (offered_model(identifier) if identifier else None) or default_model()
    return model.working_side or limits.DEFAULT_SIDE
