"""/healthz: database, Redis, storage and the newest worker beat, for compose and load balancers."""

import json
import time
import urllib.error
import urllib.request

import pytest
from redis import Redis

from conftest import wait_until
from imagegen import liveness


def healthz(base_url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.integration
def test_healthz_is_200_on_the_live_stack_and_503_naming_redis_while_it_is_down(stack, redis_server):
    # The stack's worker beats every 0.5 s; the web process reads its beat from Redis.
    status, body = wait_until(lambda: (r := healthz(stack.base_url))[0] == 200 and r, timeout=30, what="healthz 200")
    assert body["status"] == "ok" and body["failed"] == []
    assert set(body["checks"]) == {"database", "redis", "storage", "worker"}
    assert body["checks"]["worker"]["last_beat_seconds_ago"] < 3

    redis_server.stop()
    try:
        started = time.monotonic()
        status, body = healthz(stack.base_url)
        answered_in = time.monotonic() - started
    finally:
        redis_server.start()
    assert status == 503
    assert body["status"] == "unhealthy"
    assert "redis" in body["failed"] and "database" not in body["failed"] and "storage" not in body["failed"]
    assert answered_in < 3, f"a health check should answer quickly, took {answered_in:.1f} s"
    # Once Redis is back, so is the worker's beat, and the installation is healthy again.
    wait_until(lambda: healthz(stack.base_url)[0] == 200, timeout=30, what="healthz 200 after Redis came back")


@pytest.fixture
def beats(redis_server):
    client = Redis.from_url(redis_server.url(1))
    client.delete(liveness.WORKER_BEATS_KEY)
    yield client
    client.delete(liveness.WORKER_BEATS_KEY)


@pytest.mark.django_db
def test_a_stale_worker_beat_is_reported_without_naming_the_worker(client, beats, settings):
    settings.IMAGEGEN_HEARTBEAT_TIMEOUT = 60
    liveness.record_worker_beat(beats, "gpu-worker@host-a", now=time.time() - 600)
    response = client.get("/healthz")  # not logged in: the endpoint is public
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["worker"]
    assert body["checks"]["worker"]["last_beat_seconds_ago"] >= 600
    assert "no worker has reported for over 60 s" in body["checks"]["worker"]["error"]
    assert "host-a" not in response.content.decode()
    assert response["Cache-Control"] == "no-store"

    liveness.record_worker_beat(beats, "gpu-worker@host-b")
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["worker"]["last_beat_seconds_ago"] < 5


@pytest.mark.django_db
def test_no_worker_at_all_and_broken_storage_are_named(client, beats, settings, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the media folder should be")
    settings.MEDIA_ROOT = blocker
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["storage", "worker"]
    assert body["checks"]["worker"]["error"] == "no worker has reported"
    assert str(tmp_path) not in response.content.decode()
