"""What a worker process keeps: its warm engine, loaded once and used by every kind of job, and the
record operators read when it cannot be loaded, and the beat that tells the health endpoint it is alive."""

import json
import logging
import os
import threading
import time

from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError

from .. import liveness
from ..engine import EngineError, ModelLoadError
from .catalog import default_model, models_offered, offered_model
from .routing import ModelQueues, model_queues_offered

logger = logging.getLogger("imagegen.services")

# What users read when the model cannot be loaded; the details (paths, the loader's words) go to
# the log and the operations page (model_load_failures), which only staff see.
MODEL_UNAVAILABLE = "The image model is not available right now. An administrator has been told; try again later."
# A Redis hash: worker name → its latest load failure (JSON), for the operations page.
MODEL_LOAD_FAILURES_KEY = "imagegen:model-load-failures"


def current_engine(model: str | None = None):
    """This worker process's engine for the model a job names (an id of models_offered; None: the
    default), loaded on first use and kept warm while IMAGEGEN_MODEL_MEMORY_GB holds it with the
    others this worker has loaded. Raises EngineError for a model no longer offered."""
    from ..engine import get_engine

    offered = default_model() if model is None else offered_model(model)
    if offered is None:
        raise EngineError(f"The model {model!r} is not offered here any more; choose another one.")
    return get_engine(
        offered.source,
        memory_budget=model_memory_budget(),
        device=settings.IMAGEGEN_DEVICE,
        dtype=settings.IMAGEGEN_DTYPE,
        cache_dir=settings.IMAGEGEN_MODEL_CACHE,
        inpaint_model=settings.IMAGEGEN_INPAINT_MODEL or None,
        ip_adapter=settings.IMAGEGEN_IP_ADAPTER or None,
        ip_adapter_scale=settings.IMAGEGEN_IP_ADAPTER_SCALE,
        compile=settings.IMAGEGEN_COMPILE,
        lora_dir=settings.IMAGEGEN_LORA_DIR or None,
    )


def model_memory_budget() -> int:
    """Bytes a worker's loaded models may take together: IMAGEGEN_MODEL_MEMORY_GB, or half of the
    GPU's memory (of the machine's without one)."""
    if settings.IMAGEGEN_MODEL_MEMORY_GB:
        return int(settings.IMAGEGEN_MODEL_MEMORY_GB * 2**30)
    import torch

    from ..engine.pipelines import resolve_device

    if resolve_device(settings.IMAGEGEN_DEVICE).startswith("cuda"):
        return torch.cuda.get_device_properties(0).total_memory // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def batch_limit() -> int:
    """How many images of compatible queued jobs this worker makes in one pipeline call: IMAGEGEN_MAX_BATCH,
    or by default 8 on a CUDA GPU and 1 elsewhere (on a CPU a batch takes as long as its jobs one
    after another: see README, Performance)."""
    from ..engine.pipelines import resolve_device

    if settings.IMAGEGEN_MAX_BATCH:
        return settings.IMAGEGEN_MAX_BATCH
    return 8 if resolve_device(settings.IMAGEGEN_DEVICE).startswith("cuda") else 1


def engine_warm_up(*, worker: str = "") -> None:
    """Load the model and warm it up before the first job arrives.

    The first generation in a process pays for one-time set-up in torch (seconds on a CPU), and
    in compiled mode the first at each size and batch size pays the compile (a minute or more on
    a GPU, seconds once torch's caches hold it): paying them here means no user's job waits for
    them. A model that cannot be loaded is recorded for operators; the worker stays up, and each
    job then fails with a short message.
    """
    try:
        engine = current_engine()
        if engine.compile:
            # torch compiles a batch of 1 for that size alone, and the second other size it meets
            # with its batch dimension dynamic: warming 1, 2 and the limit leaves no batch a
            # worker makes (any number of images up to the limit) to compile at a user's job.
            limit = batch_limit()
            sizes = settings.IMAGEGEN_WARM_SIZES or [(engine.working_side, engine.working_side)]
            engine.warm_up(sizes=sizes, batch_sizes=sorted({1, min(2, limit), limit}))
        else:
            engine.warm_up(sizes=[(64, 64)], batch_sizes=[1])
    except ModelLoadError as error:
        logger.error("The worker could not load its model: %s", error)
        model_load_failure_record(worker=worker, detail=str(error))
    else:
        model_load_failure_record(worker=worker, detail="")


def model_load_failure_record(*, worker: str, detail: str) -> None:
    """Keep the worker's latest model-load failure, with its details, for the operations page;
    an empty `detail` (the model loaded) clears it."""
    record = {"worker": worker, "detail": detail, "model": default_model().id, "at": timezone.now().isoformat()}
    try:
        if detail:
            liveness.redis_client().hset(MODEL_LOAD_FAILURES_KEY, worker or "unknown", json.dumps(record))
        else:
            liveness.redis_client().hdel(MODEL_LOAD_FAILURES_KEY, worker or "unknown")
    except RedisError:  # the log has it already
        logger.warning("Could not record the model-load failure for the operations page", exc_info=True)


def model_load_failures() -> list[dict]:
    """The latest model-load failure of each worker that had one, newest first."""
    records = [json.loads(value) for value in liveness.redis_client().hvals(MODEL_LOAD_FAILURES_KEY)]
    return sorted(records, key=lambda record: record["at"], reverse=True)


# Set when the worker begins to shut down; the lock keeps a beat under way from advertising again
# what worker_beat_withdraw has just withdrawn.
_shutting_down = threading.Event()
_advertising = threading.Lock()


def models_loaded() -> list[str]:
    """The ids of the offered models this worker process holds loaded now."""
    from ..engine.pipelines import loaded_engines

    sources = {engine.model for engine in loaded_engines()}
    return [model.id for model in models_offered().values() if model.source in sources]


def worker_beat_start(worker: str, *, consumer=None) -> threading.Thread:
    """Beat for this worker every IMAGEGEN_HEARTBEAT_INTERVAL seconds, from a thread of its own, for as
    long as the process lives: loading a model or running a job never holds it up. A beat that
    cannot reach Redis is logged and tried again at the next one.

    Given the worker's Celery consumer, each beat also keeps it on the queues of the models it holds
    loaded, and advertises those (services.routing): jobs for them are sent to this worker.
    """
    model_queues = ModelQueues(consumer) if consumer is not None else None

    def beat() -> None:
        client = liveness.redis_client(timeout=2.0)
        withdrawn: set[str] = set()
        while True:
            try:
                queues: set[str] = set()
                if model_queues is not None:
                    models = [] if _shutting_down.is_set() else models_loaded()
                    queues, newly_withdrawn = model_queues.follow(models)
                    withdrawn |= newly_withdrawn
                with _advertising:
                    if _shutting_down.is_set():  # what worker_beat_withdraw withdrew stays withdrawn
                        queues = set()
                    liveness.record_worker_beat(client, worker, queues=queues, withdrawn=withdrawn)
                withdrawn = set()  # recorded: a beat that fails keeps them for the next
            except (RedisError, OSError) as error:
                logger.warning("Worker %s could not record its beat in Redis: %s", worker, error)
            except Exception:  # a bug in following the models must not stop the beat
                logger.exception("Worker %s could not follow its models' queues", worker)
            time.sleep(settings.IMAGEGEN_HEARTBEAT_INTERVAL)

    # A daemon: it ends with the process.
    thread = threading.Thread(target=beat, name="worker-beat", daemon=True)
    thread.start()
    return thread


def worker_beat_withdraw(worker: str) -> None:
    """The worker is shutting down and takes no more jobs: withdraw at once every model queue its
    beat may have advertised, so jobs go elsewhere rather than wait for its beat to go stale, and
    advertise none from now on (it still beats while it finishes its job)."""
    with _advertising:
        _shutting_down.set()
        try:
            liveness.record_worker_beat(liveness.redis_client(), worker, withdrawn=model_queues_offered())
        except (RedisError, OSError) as error:  # they go stale within IMAGEGEN_HEARTBEAT_TIMEOUT instead
            logger.warning("Worker %s could not withdraw its model queues: %s", worker, error)
