"""A whole installation in local processes (web server, housekeeping, Celery workers), for the tests
and the benchmarks: the same commands `make run` starts, on a database, Redis and media folder given."""

import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.management import call_command

from .celery import app as celery_app
from .localredis import free_port

ROOT = Path(__file__).resolve().parent.parent


def point_celery_at(url: str) -> None:
    """Send this process's messages and pings to the broker at `url` from now on."""
    celery_app.conf.broker_url = url
    # Forget the pools made for the previous URL (kombu keeps them, keyed by URL, for reuse).
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


def database_url(settings_dict: dict) -> str:
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{user}{password}@{host}{port}/{settings_dict['NAME']}"


def collect_static_files() -> None:
    """Copy the static files into STATIC_ROOT under hashed names, with compressed copies, unless no
    file changed since the last time: the pages name them from the manifest this writes."""
    manifest = Path(settings.STATIC_ROOT) / "staticfiles.json"
    if manifest.exists():
        collected_at = manifest.stat().st_mtime
        sources = (storage.path(path) for finder in finders.get_finders() for path, storage in finder.list([]))
        if all(os.stat(source).st_mtime <= collected_at for source in sources):
            return
    call_command("collectstatic", interactive=False, verbosity=0)


def web_processes_default() -> int:
    """How many web server processes `make run` starts: $WEB_CONCURRENCY, else one per core, at most 4.

    One process runs one synchronous view at a time (Python's GIL), so a second core only serves
    pages with a second process; each costs about 100 MB, since the web side never loads torch.
    """
    configured = os.environ.get("WEB_CONCURRENCY")
    return int(configured) if configured else min(4, os.cpu_count() or 1)


def web_server_command(host: str, port: int, *, processes: int, forwarded_allow_ips: str = "") -> list[str]:
    """uvicorn serving HTTP and WebSockets with `processes` processes sharing the port.

    X-Forwarded-For and -Proto count only from `forwarded_allow_ips` (settings.FORWARDED_ALLOW_IPS,
    the reverse proxy); without one, not even from localhost, which uvicorn trusts by default: a
    client must not choose the address the log-in lockout counts it under.
    """
    command = [sys.executable, "-m", "uvicorn", "--host", host, "--port", str(port), "--workers", str(processes)]
    if forwarded_allow_ips:
        command += ["--proxy-headers", "--forwarded-allow-ips", forwarded_allow_ips]
    else:
        command += ["--no-proxy-headers"]
    # Django has no lifespan events; open WebSockets get 5 s to end when the server stops.
    command += ["--no-access-log", "--lifespan", "off", "--timeout-graceful-shutdown", "5", "imagegen.asgi:application"]
    return command


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

    def start(self, name: str, command: list[str], **env: str) -> subprocess.Popen:
        """Start a process of the stack, with the stack's environment and `env` over it."""
        with open(self.folder / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.env | env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
        self.processes[name] = process
        return process

    def start_worker(self, name: str = "worker1", *, timeout: float = 60, **env: str) -> None:
        """Start a worker (its settings in `env` over the stack's) and wait until it answers a ping
        (through this process's current broker, which the callers point at this stack's Redis)."""
        command = [sys.executable, "-m", "celery", "-A", "imagegen", "worker", "--pool=threads", "--concurrency=1"]
        command += ["-Q", "gpu,light", "-l", "INFO", "-n", f"{name}@%h", "--without-gossip", "--without-mingle"]
        self.start(name, command, **env)
        wait_until(
            lambda: self.worker_answers(name),
            timeout=timeout,
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


def start_stack(folder: Path, redis_url: str, *, web_processes: int = 1, **extra_env: str) -> Stack:
    """The web server, housekeeping and one worker on this process's database, the given Redis and
    extra settings. One web process unless told: the tests start many stacks.

    Workers are pinged through this process's Celery app, pointed at `redis_url` meanwhile.
    """
    stack = start_web(folder, redis_url, web_processes=web_processes, **extra_env)
    try:
        stack.start("housekeeping", [sys.executable, "manage.py", "housekeeping"])
        previous = celery_app.conf.broker_url
        point_celery_at(redis_url)
        try:
            stack.start_worker()
        finally:
            point_celery_at(previous)
    except BaseException:
        stack.stop()  # a stack that did not come up must not outlive the test run
        raise
    return stack


def start_web(folder: Path, redis_url: str, *, web_processes: int = 1, **extra_env: str) -> Stack:
    """The web server alone (the first part of start_stack), for tests of what happens in front of Django."""
    port = free_port()
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="imagegen.settings",
        DATABASE_URL=database_url(settings.DATABASES["default"]),
        REDIS_URL=redis_url,
        MEDIA_ROOT=str(folder / "media"),
        STATIC_ROOT=str(settings.STATIC_ROOT),
        SECRET_KEY=settings.SECRET_KEY,
        IMAGEGEN_MODEL_CACHE=str(settings.IMAGEGEN_MODEL_CACHE),
        PYTHONUNBUFFERED="1",
        ALLOWED_HOSTS="localhost,127.0.0.1",
        # Recovery in seconds rather than a minute, so the crash tests stay short.
        IMAGEGEN_HEARTBEAT_INTERVAL="0.5",
        IMAGEGEN_HEARTBEAT_TIMEOUT="3",
        IMAGEGEN_HOUSEKEEPING_INTERVAL="0.5",
    )
    env.update(extra_env)
    stack = Stack(
        base_url=f"http://127.0.0.1:{port}",
        ws_url=f"ws://127.0.0.1:{port}",
        redis_url=redis_url,
        media_root=folder / "media",
        folder=folder,
        env=env,
    )
    try:
        web = web_server_command(
            "127.0.0.1", port, processes=web_processes, forwarded_allow_ips=env.get("FORWARDED_ALLOW_IPS", "")
        )
        stack.start("web", web)
        wait_until(
            lambda: urllib.request.urlopen(f"{stack.base_url}/login/", timeout=2).status == 200,
            timeout=60,
            what="the web server",
            log=folder / "web.log",
        )
    except BaseException:
        stack.stop()
        raise
    return stack
