"""Which queue a job goes to: the queue of its model when a live worker holds that model loaded,
else its kind's queue (CELERY_TASK_ROUTES: "gpu"), which every worker consumes, loading on demand.

Beside its kind's queue, a worker consumes one queue per model it holds loaded ("gpu.model.<id>"),
from when it has loaded the model until it unloads it, and says so with each beat (liveness). A
message left in a model queue that no live worker consumes any more (its worker died, or unloaded
the model meanwhile) is taken out and sent again by housekeeping (jobs_recover), so none waits
there for good; the claim's conditional update makes a message that arrives twice harmless.
"""

import logging
from collections.abc import Iterable
from urllib.parse import quote

from redis import Redis
from redis.exceptions import RedisError

from .. import liveness
from ..models import Job, job_models
from .catalog import models_offered, offered_model

logger = logging.getLogger("imagegen.services")

# Between a kind's queue and a model id in the name of that model's queue.
MODEL_QUEUE_INFIX = ".model."


def kind_queue(kind: type[Job]) -> str:
    """The queue CELERY_TASK_ROUTES gives the kind's task, which every worker of that kind consumes."""
    from ..celery import app

    return app.amqp.router.route({}, kind.task_name)["queue"].name


def model_queue(queue: str, model_id: str) -> str:
    """The queue of `queue`'s jobs for one model. Ids may hold "/" (a repo id) and other signs:
    they are percent-encoded, so two ids never share a queue."""
    return f"{queue}{MODEL_QUEUE_INFIX}{quote(model_id, safe='')}"


def model_queues_offered() -> set[str]:
    """Every model queue this deployment may have: each kind's queue for each offered model."""
    return {model_queue(kind_queue(kind), model) for kind in job_models() for model in models_offered()}


def job_queue(job: Job) -> str:
    """The queue to send the job to: its model's while a live worker consumes it, else its kind's.

    A job without a model (an empty one: no preference), or with one no longer offered, goes to its
    kind's queue. When Redis cannot be read, so does every job: any worker can take it.
    """
    queue = kind_queue(type(job))
    offered = offered_model(job.model) if job.model else None
    if offered is None:
        return queue
    candidate = model_queue(queue, offered.id)
    try:
        if liveness.queue_consumed(liveness.redis_client(), candidate):
            return candidate
    except RedisError as error:
        logger.warning("Could not read which workers hold %s (%s); sending to %s", offered.id, error, queue)
    return queue


def model_queue_lists(redis: Redis, queue: str) -> list[str]:
    """The Redis lists of `queue`'s model queues that hold messages (kombu keeps a queue's priority
    levels in lists of their own, "<name>\\x06\\x163"…)."""
    return [key.decode() for key in redis.scan_iter(match=f"{queue}{MODEL_QUEUE_INFIX}*")]


def stranded_model_queue_lists(redis: Redis, queue: str) -> list[str]:
    """The lists of `queue`'s model queues that no live worker consumes: nothing takes their messages."""
    beats = liveness.redis_client()
    lists = model_queue_lists(redis, queue)
    return [name for name in lists if not liveness.queue_consumed(beats, name.split("\x06")[0])]


class ModelQueues:
    """Keeps a worker's Celery consumer on the queues of the models it holds loaded, and tells which
    of them it consumes already (what its beat advertises) and which it gave up.

    Called from the beat thread; the consumer's queues change on the consumer's own thread
    (`call_soon`), so the queue a worker advertises is one it really reads from.
    """

    def __init__(self, consumer) -> None:
        self.consumer = consumer
        self.wanted: set[str] = set()
        self.added: set[str] = set()  # model queues this follower made the consumer read
        self.advertised: set[str] = set()

    def follow(self, models: Iterable[str]) -> tuple[set[str], set[str]]:
        """Given the ids of the models loaded now: (the model queues consumed now, those
        advertised before and not any more)."""
        tasks = self.consumer.task_consumer
        consumed: set[str] = set()
        if tasks is not None:  # None while the consumer reconnects to the broker
            kinds = {kind_queue(kind) for kind in job_models()}
            wanted = {model_queue(queue, model) for queue in kinds if tasks.consuming_from(queue) for model in models}
            if wanted != self.wanted:
                self.wanted = wanted
                self.consumer.call_soon(self._consume_wanted)
            consumed = {queue for queue in wanted if tasks.consuming_from(queue)}
        withdrawn, self.advertised = self.advertised - consumed, consumed
        return consumed, withdrawn

    def _consume_wanted(self) -> None:
        # On the consumer's thread. The latest wish, whatever came before: callbacks may run out of order.
        wanted = set(self.wanted)
        for queue in sorted(wanted):
            self.consumer.add_task_queue(queue)  # nothing when it reads from it already
        for queue in sorted(self.added - wanted):
            self.consumer.cancel_task_queue(queue)
        self.added = wanted
