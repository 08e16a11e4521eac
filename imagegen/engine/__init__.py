"""Django-free Stable Diffusion engine: model loading, generation, previews, PNG metadata, thumbnails.

The light names (requests, errors, metadata) import at once; the pipeline names load torch and
diffusers on first use, so a process that only validates or describes requests never pays for them.
"""

from importlib import import_module

from .errors import EngineError, GenerationCancelled, ModelLoadError, OutOfMemoryError, UnsupportedSettingError
from .metadata import (
    SOURCE_LABELS,
    ImportedSettings,
    encode_png,
    format_parameters,
    read_generation_settings,
    read_png_parameters,
    read_png_text,
)
from .requests import (
    DEFAULT_CLIP_SKIP,
    DEFAULT_SCHEDULER,
    MAX_CLIP_SKIP,
    SAMPLER_LABELS,
    GenerationRequest,
    HiresFix,
    effective_steps,
    hires_first_pass_size,
    hires_size,
    image_seed,
    random_seed,
    total_steps,
)
from .thumbnails import THUMBNAIL_SIDE, encode_thumbnail

_PIPELINE_NAMES = {"SCHEDULERS", "Engine", "GenerationResult", "get_engine", "model_load_count"}


def __getattr__(name: str):
    if name in _PIPELINE_NAMES:
        return getattr(import_module(".pipelines", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_CLIP_SKIP",
    "DEFAULT_SCHEDULER",
    "MAX_CLIP_SKIP",
    "SAMPLER_LABELS",
    "SCHEDULERS",
    "SOURCE_LABELS",
    "THUMBNAIL_SIDE",
    "Engine",
    "EngineError",
    "GenerationCancelled",
    "GenerationRequest",
    "GenerationResult",
    "HiresFix",
    "ImportedSettings",
    "ModelLoadError",
    "OutOfMemoryError",
    "UnsupportedSettingError",
    "effective_steps",
    "encode_png",
    "encode_thumbnail",
    "format_parameters",
    "get_engine",
    "hires_first_pass_size",
    "hires_size",
    "image_seed",
    "model_load_count",
    "random_seed",
    "read_generation_settings",
    "read_png_parameters",
    "read_png_text",
    "total_steps",
]
