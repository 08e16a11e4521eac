"""What a worker process keeps: its warm engine, loaded once and used by every kind of job, and the
beat that tells the health endpoint it is alive."""

import logging
import threading

from django.conf import settings
from redis.exceptions import RedisError

from .. import liveness
from ..engine import GenerationRequest

logger = logging.getLogger("imagegen.services")


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


def worker_beat_start(worker: str) -> threading.Thread:
    """Beat for this worker every IMAGEGEN_HEARTBEAT_INTERVAL seconds, from a thread of its own, for as
    long as the process lives: loading a model or running a job never holds it up. A beat that
    cannot reach Redis is logged and tried again at the next one."""

    def beat() -> None:
        client = liveness.redis_client(timeout=2.0)
        while True:
            try:
                liveness.record_worker_beat(client, worker)
            except (RedisError, OSError) as error:
                logger.warning("Worker %s could not record its beat in Redis: %s", worker, error)
            stopped.wait(settings.IMAGEGEN_HEARTBEAT_INTERVAL)

    stopped = threading.Event()  # never set: the thread ends with the process (daemon)
    thread = threading.Thread(target=beat, name="worker-beat", daemon=True)
    thread.start()
    return thread
