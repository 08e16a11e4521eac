"""Test fixtures: a private Redis for every run, and on demand a real Celery worker, a daphne
server and headless Chromium, all sharing the test database and a media folder."""

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from channels.layers import channel_layers
from django.conf import settings

from imagegen.celery import app as celery_app
from imagegen.localredis import free_port, start_redis

ROOT = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def pytest_sessionstart(session) -> None:
    # Figures that tests add up for the README (see imagegen/tests/test_reliability.py).
    (ARTIFACTS / "reliability.json").unlink(missing_ok=True)


def use_redis(url: str) -> None:
    """Point this process's broker and channel layer at the tests' own Redis."""
    settings.REDIS_URL = settings.CELERY_BROKER_URL = url
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [url], "prefix": "imagegen"},
        }
    }
    celery_app.conf.broker_url = url
    # Forget the pools made for the previous URL (kombu keeps them, keyed by URL, for reuse).
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
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


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def database_url(settings_dict: dict) -> str:
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{user}{password}@{host}{port}/{settings_dict['NAME']}"


@dataclass
class Stack:
    """A web server and a worker running as separate processes, like `make run` starts them."""

    base_url: str
    ws_url: str
    media_root: Path
    worker_log: Path
    web_log: Path
    env: dict
    worker: subprocess.Popen | None = None

    def start_worker(self, name: str = "worker1") -> None:
        command = [sys.executable, "-m", "celery", "-A", "imagegen", "worker", "--pool=threads", "--concurrency=1"]
        command += ["-Q", "gpu,light", "-l", "INFO", "-n", f"{name}@%h", "--without-gossip", "--without-mingle"]
        with open(self.worker_log, "ab") as log:
            self.worker = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.worker_answers(name), timeout=60, what="the Celery worker", log=self.worker_log)

    def worker_answers(self, name: str) -> bool:
        # Pinged through this process's current broker: callers point it at the stack's Redis.
        replies = celery_app.control.ping(timeout=0.5)
        return any(reply_name.startswith(f"{name}@") for reply in replies for reply_name in reply)

    def stop_worker(self) -> None:
        if self.worker and self.worker.poll() is None:
            self.worker.terminate()
            self.worker.wait(timeout=30)

    def worker_log_text(self) -> str:
        return self.worker_log.read_text(errors="replace")


def wait_until(check, *, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception:
            result = None
        if result:
            return result
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what} did not come up within {timeout} s\n{tail}")


@pytest.fixture(scope="session")
def live_stack(django_db_setup, redis_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack")
    port = free_port()
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="imagegen.settings",
        DATABASE_URL=database_url(settings.DATABASES["default"]),
        REDIS_URL=redis_server.url(0),
        MEDIA_ROOT=str(folder / "media"),
        SECRET_KEY=settings.SECRET_KEY,
        IMAGEGEN_MODEL_CACHE=str(settings.IMAGEGEN_MODEL_CACHE),
        PYTHONUNBUFFERED="1",
        DEBUG="false",
        ALLOWED_HOSTS="localhost,127.0.0.1",
        # Recovery in seconds rather than a minute, so the crash tests stay short.
        IMAGEGEN_HEARTBEAT_INTERVAL="0.5",
        IMAGEGEN_HEARTBEAT_TIMEOUT="3",
        IMAGEGEN_HOUSEKEEPING_INTERVAL="0.5",
    )
    stack = Stack(
        base_url=f"http://127.0.0.1:{port}",
        ws_url=f"ws://127.0.0.1:{port}",
        media_root=folder / "media",
        worker_log=folder / "worker.log",
        web_log=folder / "web.log",
        env=env,
    )
    with open(stack.web_log, "ab") as log:
        web = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "imagegen.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_until(
        lambda: urllib.request.urlopen(f"{stack.base_url}/login/", timeout=2).status == 200,
        timeout=60,
        what="daphne",
        log=stack.web_log,
    )
    with open(folder / "housekeeping.log", "ab") as log:
        housekeeping = subprocess.Popen(
            [sys.executable, "manage.py", "housekeeping"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    use_redis(redis_server.url(0))
    stack.start_worker()
    use_redis(redis_server.url(1))
    yield stack
    stack.stop_worker()
    for process in (web, housekeeping):
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def stack(live_stack, redis_server, transactional_db, settings):
    """The live stack for one test; rows it creates are committed so the other processes see them,
    and what this process queues goes to the stack's worker."""
    settings.MEDIA_ROOT = live_stack.media_root
    use_redis(redis_server.url(0))
    if live_stack.worker is None or live_stack.worker.poll() is not None:
        live_stack.start_worker()
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
