"""Housekeeping against the tests' real Redis broker, with no worker consuming the queues."""

import base64
import json
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from redis import Redis

from imagegen import liveness, services
from imagegen.models import JobStatus, Run

from .factories import RunFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def messages_waiting(redis: Redis, queue: str = "gpu") -> Counter:
    """How many messages for each run wait in the queue, read straight from kombu's Redis list."""
    counts = Counter()
    for raw in redis.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(envelope["body"]))
        counts[args[0]] += 1
    return counts


def test_housekeeping_does_not_pile_up_messages_for_a_backlog_but_resends_a_lost_one(settings):
    settings.IMAGEGEN_RESEND_QUEUED_AFTER = 0
    redis = Redis.from_url(settings.CELERY_BROKER_URL)
    redis.delete("gpu", "unacked")
    owner = UserFactory()
    backlog = [RunFactory(owner=owner) for _ in range(3)]
    for run in backlog:
        services.job_enqueue(job=run)  # sent at once: no transaction around it here
    lost = RunFactory(owner=owner, sent_at=timezone.now() - timedelta(hours=1))  # its message never arrived
    assert messages_waiting(redis) == Counter({str(run.pk): 1 for run in backlog})

    for _ in range(4):
        call_command("housekeeping", "--once")

    assert messages_waiting(redis) == Counter({str(run.pk): 1 for run in [*backlog, lost]})
    assert Run.objects.get(pk=lost.pk).sent_at > lost.sent_at


@pytest.mark.parametrize("worker_left", ["unloaded the model", "died"])
def test_a_message_in_a_model_queue_no_live_worker_reads_is_resent_to_any_worker(settings, worker_left):
    settings.IMAGEGEN_MODELS = "tiny=Test model; /models/sd15=Stable Diffusion 1.5"
    redis = Redis.from_url(settings.CELERY_BROKER_URL)
    redis.delete("gpu", "unacked", "gpu.model.sd15", liveness.QUEUE_CONSUMERS_KEY.format(queue="gpu.model.sd15"))
    # A worker holds sd15 loaded and says so with its beat: the job is sent to it alone.
    liveness.record_worker_beat(redis, "gpu-a@host", queues=["gpu.model.sd15"])
    owner = UserFactory()
    waiting, finished = RunFactory(owner=owner, model="sd15"), RunFactory(owner=owner, model="sd15")
    services.job_enqueue(job=waiting)
    services.job_enqueue(job=finished)
    Run.objects.filter(pk=finished.pk).update(status=JobStatus.SUCCEEDED)
    assert messages_waiting(redis, "gpu.model.sd15") == Counter({str(waiting.pk): 1, str(finished.pk): 1})

    call_command("housekeeping", "--once")  # its worker is alive and reads that queue: nothing moves
    assert messages_waiting(redis, "gpu.model.sd15") == Counter({str(waiting.pk): 1, str(finished.pk): 1})
    assert messages_waiting(redis, "gpu") == Counter()

    if worker_left == "died":
        stale = time.time() - settings.IMAGEGEN_HEARTBEAT_TIMEOUT - 1
        redis.zadd(liveness.QUEUE_CONSUMERS_KEY.format(queue="gpu.model.sd15"), {"gpu-a@host": stale})
    else:  # its next beat withdraws the queue
        liveness.record_worker_beat(redis, "gpu-a@host", withdrawn=["gpu.model.sd15"])
    assert services.jobs_recover() == {"requeued": 0, "failed": 0, "resent": 1}

    # The queued job now waits where any worker takes it; the finished one's message is gone.
    assert messages_waiting(redis, "gpu") == Counter({str(waiting.pk): 1})
    assert not redis.exists("gpu.model.sd15")
    assert services.jobs_recover()["resent"] == 0  # waiting in "gpu" now: not lost
    redis.delete(liveness.QUEUE_CONSUMERS_KEY.format(queue="gpu.model.sd15"))
