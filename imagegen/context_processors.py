"""Template context every page needs: which model the workers run."""

from .services.catalog import default_model


def engine_info(request) -> dict:
    model = default_model()
    return {"model_name": model.label, "model_is_tiny": model.is_tiny}
