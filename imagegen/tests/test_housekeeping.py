"""Housekeeping against the tests' real Redis broker, with no worker consuming the queue."""

import base64
import json
from collections import Counter
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from redis import Redis

from imagegen import services
from imagegen.models import Run

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
