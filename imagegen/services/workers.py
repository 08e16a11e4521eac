"""What a worker process keeps: its warm engine, loaded once and used by every kind of job."""

from django.conf import settings

from ..engine import GenerationRequest


def current_engine():
    """The warm engine of this worker process (loaded on first use, then kept)."""
    from ..engine import get_engine

    return get_engine(
        settings.IMAGEGEN_MODEL,
        device=settings.IMAGEGEN_DEVICE,
        dtype=settings.IMAGEGEN_DTYPE,
        cache_dir=settings.IMAGEGEN_MODEL_CACHE,
        inpaint_model=settings.IMAGEGEN_INPAINT_MODEL or None,
        ip_adapter=settings.IMAGEGEN_IP_ADAPTER or None,
        ip_adapter_scale=settings.IMAGEGEN_IP_ADAPTER_SCALE,
    )


def engine_warm_up() -> None:
    """Load the model and run one tiny generation before the first job arrives.

    The first generation in a process pays for one-time set-up in torch (seconds on a CPU);
    paying it here means no user's first job waits for it.
    """
    current_engine().generate(GenerationRequest(prompt="", steps=1, width=64, height=64))
