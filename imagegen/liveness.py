"""Worker liveness: each worker process writes a beat to Redis every few seconds, whether it is busy
or idle, and the health endpoint reads the newest. A job's own heartbeat (on its row) says only
that a running job's worker is alive; an idle worker has no job to beat for.

Beats are a sorted set in the broker's Redis (member: the worker's name, score: the Unix time of
its last beat), so the newest one is a single read, and a worker that cannot reach the broker,
and so cannot take jobs either, stops beating.
"""

import time

from django.conf import settings
from redis import Redis

WORKER_BEATS_KEY = "imagegen:worker-beats"
# Workers gone for this long (a renamed or removed host) are dropped from the set.
FORGET_AFTER_SECONDS = 24 * 3600


def redis_client(*, timeout: float = 1.0) -> Redis:
    """A client of the broker's Redis that gives up after `timeout` seconds instead of hanging."""
    return Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout)


def record_worker_beat(client: Redis, worker: str, *, now: float | None = None) -> None:
    now = time.time() if now is None else now
    pipeline = client.pipeline()
    pipeline.zadd(WORKER_BEATS_KEY, {worker: now})
    pipeline.zremrangebyscore(WORKER_BEATS_KEY, "-inf", now - FORGET_AFTER_SECONDS)
    pipeline.execute()


def newest_worker_beat_age(client: Redis, *, now: float | None = None) -> float | None:
    """Seconds since the most recent beat of any worker; None when no worker has beaten."""
    newest = client.zrevrange(WORKER_BEATS_KEY, 0, 0, withscores=True)
    if not newest:
        return None
    now = time.time() if now is None else now
    return max(0.0, now - newest[0][1])
