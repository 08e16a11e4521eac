"""Worker liveness: each worker process writes a beat to Redis every few seconds, whether it is busy
or idle, and the health endpoint reads the newest. A job's own heartbeat (on its row) says only
that a running job's worker is alive; an idle worker has no job to beat for.

Beats are a sorted set in the broker's Redis (member: the worker's name, score: the Unix time of
its last beat), so the newest one is a single read, and a worker that cannot reach the broker,
and so cannot take jobs either, stops beating.

With each beat a worker also says which of the model queues (services.routing) it consumes: one
sorted set per queue, of the workers consuming it, scored by their last beat, so whether a live
worker consumes a queue is one read, and a worker that stops beating stops counting at once.
"""

import time
from collections.abc import Iterable
from functools import cache

from django.conf import settings
from redis import Redis

WORKER_BEATS_KEY = "imagegen:worker-beats"
# A sorted set per queue: member a worker consuming it, score the Unix time of that worker's last beat.
QUEUE_CONSUMERS_KEY = "imagegen:queue-consumers:{queue}"
# Workers gone for this long (a renamed or removed host) are dropped from the set.
FORGET_AFTER_SECONDS = 24 * 3600


def redis_client(*, timeout: float = 1.0) -> Redis:
    """A client of the broker's Redis that gives up after `timeout` seconds instead of hanging.

    One per process (and URL and timeout), shared by its threads: its pool keeps connections open,
    so sending a job (which asks which workers hold its model) or answering /healthz does not
    connect anew; a connection Redis closed (a restart) is replaced when next taken from the pool.
    """
    return _shared_client(settings.REDIS_URL, timeout)


@cache
def _shared_client(url: str, timeout: float) -> Redis:
    return Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)


def record_worker_beat(
    client: Redis, worker: str, *, queues: Iterable[str] = (), withdrawn: Iterable[str] = (), now: float | None = None
) -> None:
    """The worker is alive now, and consumes `queues`; it no longer consumes `withdrawn`."""
    now = time.time() if now is None else now
    pipeline = client.pipeline()
    pipeline.zadd(WORKER_BEATS_KEY, {worker: now})
    pipeline.zremrangebyscore(WORKER_BEATS_KEY, "-inf", now - FORGET_AFTER_SECONDS)
    for queue in queues:
        pipeline.zadd(QUEUE_CONSUMERS_KEY.format(queue=queue), {worker: now})
        pipeline.zremrangebyscore(QUEUE_CONSUMERS_KEY.format(queue=queue), "-inf", now - FORGET_AFTER_SECONDS)
    for queue in withdrawn:
        pipeline.zrem(QUEUE_CONSUMERS_KEY.format(queue=queue), worker)
    pipeline.execute()


def queue_consumed(client: Redis, queue: str, *, now: float | None = None) -> bool:
    """Whether a worker that beat within IMAGEGEN_HEARTBEAT_TIMEOUT says it consumes `queue`."""
    now = time.time() if now is None else now
    return client.zcount(QUEUE_CONSUMERS_KEY.format(queue=queue), now - settings.IMAGEGEN_HEARTBEAT_TIMEOUT, "+inf") > 0


def newest_worker_beat_age(client: Redis, *, now: float | None = None) -> float | None:
    """Seconds since the most recent beat of any worker; None when no worker has beaten."""
    newest = client.zrevrange(WORKER_BEATS_KEY, 0, 0, withscores=True)
    if not newest:
        return None
    now = time.time() if now is None else now
    return max(0.0, now - newest[0][1])
