"""Test fixtures: a private Redis for every run, and on demand a real Celery worker, a daphne
server and headless Chromium, all sharing the test database and a media folder."""

import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
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
    (host,) = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    host["address"] = url
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
    """A web server, housekeeping and workers running as separate processes, as `make run` starts them."""

    base_url: str
    ws_url: str
    redis_url: str
    media_root: Path
    folder: Path
    env: dict
    processes: dict = field(default_factory=dict)

    def alive_workers(self) -> list[str]:
        return [
            name for name, process in self.processes.items() if name.startswith("worker") and process.poll() is None
        ]

    def kill_worker(self, name: str) -> None:
        """SIGKILL, as an out-of-memory killer or a power cut would stop it."""
        process = self.processes.pop(name)
        process.kill()
        process.wait(timeout=10)

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        with open(self.folder / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
        self.processes[name] = process
        return process

    def start_worker(self, name: str = "worker1") -> None:
        """Start a worker and wait until it answers a ping (through this process's current broker,
        which the callers point at this stack's Redis)."""
        command = [sys.executable, "-m", "celery", "-A", "imagegen", "worker", "--pool=threads", "--concurrency=1"]
        command += ["-Q", "gpu,light", "-l", "INFO", "-n", f"{name}@%h", "--without-gossip", "--without-mingle"]
        self.start(name, command)
        wait_until(
            lambda: self.worker_answers(name),
            timeout=60,
            what=f"the Celery worker {name}",
            log=self.folder / f"{name}.log",
        )

    def worker_answers(self, name: str) -> bool:
        replies = celery_app.control.ping(timeout=0.5)
        return any(reply_name.startswith(f"{name}@") for reply in replies for reply_name in reply)

    def stop_worker(self, name: str = "worker1") -> None:
        process = self.processes.pop(name, None)
        if process and process.poll() is None:
            process.terminate()
            process.wait(timeout=30)

    def worker_log_text(self) -> str:
        """Every worker's log so far, this stack's workers one after the other."""
        return "".join(path.read_text(errors="replace") for path in sorted(self.folder.glob("worker*.log")))

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            process.wait(timeout=30)


def die_with_parent() -> None:
    """Linux: the child gets SIGKILL when the test run dies, so no server outlives it."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_stack(folder: Path, redis_url: str, **extra_env: str) -> Stack:
    """daphne, housekeeping and one worker on the test database, the given Redis and extra settings."""
    port = free_port()
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="imagegen.settings",
        DATABASE_URL=database_url(settings.DATABASES["default"]),
        REDIS_URL=redis_url,
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
        **extra_env,
    )
    stack = Stack(
        base_url=f"http://127.0.0.1:{port}",
        ws_url=f"ws://127.0.0.1:{port}",
        redis_url=redis_url,
        media_root=folder / "media",
        folder=folder,
        env=env,
    )
    try:
        stack.start(
            "web", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "imagegen.asgi:application"]
        )
        wait_until(
            lambda: urllib.request.urlopen(f"{stack.base_url}/login/", timeout=2).status == 200,
            timeout=60,
            what="daphne",
            log=folder / "web.log",
        )
        stack.start("housekeeping", [sys.executable, "manage.py", "housekeeping"])
        previous = celery_app.conf.broker_url
        use_redis(redis_url)
        try:
            stack.start_worker()
        finally:
            use_redis(previous)
    except BaseException:
        stack.stop()  # a stack that did not come up must not outlive the test run
        raise
    return stack


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
    stack = start_stack(tmp_path_factory.mktemp("stack"), redis_server.url(0))
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
