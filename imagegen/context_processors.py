"""Template context every page needs: which model the workers run."""

from django.conf import settings


def engine_info(request) -> dict:
    return {"model_name": settings.IMAGEGEN_MODEL, "model_is_tiny": settings.IMAGEGEN_MODEL == "tiny"}
