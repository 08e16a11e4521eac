"""Test fixtures: a private Redis for every run, and on demand a real Celery worker, a uvicorn
server and headless Chromium, all sharing the test database and a media folder."""

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.test import override_settings

from imagegen.localredis import free_port, start_redis
from imagegen.localstack import (  # noqa: F401 - tests import these
    Stack,
    collect_static_files,
    point_celery_at,
    start_stack,
    wait_until,
)

ROOT = Path(__file__).resolve().parent
# For stacks whose tests submit many jobs at once for one user (up to 20): the fair-use limits
# (imagegen/tests/test_fair_use.py) are not what they test.
NO_FAIR_USE_LIMITS = {"IMAGEGEN_MAX_ACTIVE_JOBS": "0", "IMAGEGEN_SUBMISSIONS_PER_MINUTE": "0"}
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def pytest_sessionstart(session) -> None:
    # Figures that tests add up for the README (see imagegen/tests/test_reliability.py).
    (ARTIFACTS / "reliability.json").unlink(missing_ok=True)


def use_redis(url: str) -> None:
    """Point this process's broker and channel layer at the tests' own Redis."""
    settings.REDIS_URL = settings.CELERY_BROKER_URL = url
    (host,) = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    host["address"] = url
    point_celery_at(url)
    channel_layers.backends.clear()


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen
    folder: Path

    def url(self, database: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def start(self) -> None:
        self.process = start_redis(self.port, self.folder, self.folder / "redis.log")


@pytest.fixture(scope="session", autouse=True)
def redis_server(tmp_path_factory):
    """A private redis-server, so tests never touch (or depend on) a Redis someone else runs.

    Database 0 belongs to the live stack (its worker consumes it); tests without the stack use
    database 1, so nothing they queue can reach that worker.
    """
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    server = RedisServer(port=port, process=start_redis(port, folder, folder / "redis.log"), folder=folder)
    use_redis(server.url(1))
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def static_files(tmp_path_factory):
    """The static files as production serves them (hashed names from a manifest, compressed copies),
    collected once per run into a folder of its own: pages name them from the manifest, so none
    renders without it. Gzip only: Brotli's best level takes seconds, and it is served the same way."""
    collected = override_settings(STATIC_ROOT=tmp_path_factory.mktemp("static"), SERVESTATIC_USE_BROTLI=False)
    collected.enable()
    collect_static_files()
    yield settings.STATIC_ROOT
    collected.disable()


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def fresh_page_cache():
    """Rendered page parts are keyed by user id and row state; ids come round again in every
    test's rolled-back database, so no test may see a part another test cached."""
    from django.core.cache import caches

    caches["pages"].clear()


@pytest.fixture(autouse=True)
def heartbeats_only_between_processes(settings):
    """A job executed in the test process runs inside the test's transaction, where the heartbeat
    thread's own connection waits 30 s for SQLite's write lock whenever the job outlasts one beat
    (the process's first job does: it pays torch's set-up). Heartbeats matter between processes:
    the stack's workers keep theirs (every 0.5 s), and the crash tests rely on them."""
    settings.IMAGEGEN_HEARTBEAT_INTERVAL = 3600


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A model cache folder of the test module's own, where engines build the tiny models."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def engine(cache_dir):
    """The built-in tiny model on this machine, one per test module (a module may give its own)."""
    from imagegen.engine import Engine

    return Engine("tiny", cache_dir=cache_dir)


@pytest.fixture
def user_client(client):
    """Django's test client, logged in as a new user (client.user)."""
    from imagegen.tests.factories import UserFactory

    client.user = UserFactory()
    client.force_login(client.user)
    return client


@pytest.fixture(scope="session")
def live_stack(django_db_setup, redis_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack")
    # Empty: tests that need a LoRA or an embedding write one there (imagegen/tests/test_addons.py).
    (folder / "loras").mkdir()
    stack = start_stack(folder, redis_server.url(0), IMAGEGEN_LORA_DIR=str(folder / "loras"), **NO_FAIR_USE_LIMITS)
    yield stack
    stack.stop()


@pytest.fixture
def stack(live_stack, redis_server, transactional_db, settings):
    """The live stack for one test; rows it creates are committed so the other processes see them,
    and what this process queues goes to the stack's worker."""
    settings.MEDIA_ROOT = live_stack.media_root
    use_redis(live_stack.redis_url)
    if not live_stack.alive_workers():
        live_stack.start_worker(f"worker{len(live_stack.processes) + 1}")
    yield live_stack
    use_redis(redis_server.url(1))


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for one test module.

    Playwright's sync API keeps an event loop running in this thread while it is open, so it is
    closed after the module (other tests use async_to_sync), and Django is told that the
    test's own database calls, which are synchronous, are fine meanwhile.
    """
    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
            )
            yield chromium
            chromium.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()
