"""Shared set-up for the service benchmarks: a private database, Redis, media folder and live stack.

Run the benchmarks from the repository root as modules (`python -m bench.overhead`): `bench_stack()`
sets the environment before Django is imported, so the scripts import Django and the app inside it.
"""

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.engine_common import LOAD_AT_START, machine_info, median, write_result  # noqa: F401 - shared

ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    """A progress line on stderr; stdout keeps only the summary line."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Bench:
    """What a benchmark works with: the live stack, a user and that user's API token."""

    stack: Any  # imagegen.localstack.Stack
    user: Any
    token: str
    folder: Path


@contextlib.contextmanager
def bench_stack() -> Iterator[Bench]:
    """Django set up on a fresh database, a private redis-server, and web + housekeeping + a worker,
    with as many web processes as `make run` starts.

    The model cache stays the default var/models, so the tiny model is built once and reused.
    Everything started here is stopped on the way out; the folder is kept only if something failed.
    """
    folder = Path(tempfile.mkdtemp(prefix="imagegen-bench-"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "imagegen.settings"
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{folder / 'bench.sqlite3'}")
    os.environ["MEDIA_ROOT"] = str(folder / "media")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no warnings about optional extras

    from imagegen.localredis import free_port, start_redis

    port = free_port()
    redis = start_redis(port, folder / "redis", folder / "redis.log")
    os.environ["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    stack = None
    failed = True
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from imagegen import services
        from imagegen.localstack import collect_static_files, start_stack, web_processes_default

        log(f"migrating the database in {folder}")
        call_command("migrate", verbosity=0)
        collect_static_files()
        token = services.api_token_create(username="bench", name="benchmarks")
        user = get_user_model().objects.get(username="bench")
        log("starting the web server, housekeeping and a worker")
        # The stack's own heartbeat and housekeeping intervals are the tests' (fractions of a
        # second, for short crash tests); a benchmark measures what an installation runs with.
        installation_timings = {
            name: str(getattr(settings, name))
            for name in ("IMAGEGEN_HEARTBEAT_INTERVAL", "IMAGEGEN_HEARTBEAT_TIMEOUT", "IMAGEGEN_HOUSEKEEPING_INTERVAL")
        }
        # One user submits every job of every benchmark: the per-user fair-use limits are off.
        no_fair_use_limits = {"IMAGEGEN_MAX_ACTIVE_JOBS": "0", "IMAGEGEN_SUBMISSIONS_PER_MINUTE": "0"}
        stack = start_stack(
            folder,
            os.environ["REDIS_URL"],
            web_processes=web_processes_default(),
            **installation_timings,
            **no_fair_use_limits,
        )
        log(f"stack up at {stack.base_url}")
        yield Bench(stack=stack, user=user, token=token, folder=folder)
        failed = False
    finally:
        if stack is not None:
            stack.stop()
        redis.terminate()
        redis.wait(timeout=10)
        if failed:
            log(f"kept {folder} (logs of every process) for a look")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def api(bench: Bench, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """A JSON API call with the bench user's token; returns the status and the decoded body."""
    request = urllib.request.Request(
        bench.stack.base_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {bench.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def submit_and_follow(bench: Bench, body: dict) -> dict:
    """Submit a job through `POST /api/generate` and follow its API WebSocket until it closes.

    Every time is wall-clock `time.time()`, the clock the worker's and web server's row timestamps
    use on this machine: submit (just before the request), response, queued/sent/task start (from
    the run's row), each progress event and the result event (when received here).
    """
    from websockets.sync.client import connect

    from imagegen.models import Run

    submit = time.time()
    status, accepted = api(bench, "POST", "/api/generate", body)
    response = time.time()
    if status != 202:
        raise RuntimeError(f"submit answered {status}: {accepted}")
    progress: list[tuple[int, float]] = []
    result = None
    headers = {"Authorization": f"Bearer {bench.token}"}
    with connect(accepted["ws_url"], additional_headers=headers, open_timeout=10) as socket:
        for message in socket:  # the server closes after the job's last event
            received = time.time()
            event = json.loads(message)
            if event["type"] == "job.progress":
                progress.append((event["step"], received))
            elif event["type"] == "job.result":
                result = received
    run = Run.objects.get(pk=accepted["run_id"])
    return {
        "run_id": str(run.pk),
        "status": run.status,
        "submit": submit,
        "response": response,
        "queued": run.queued_at.timestamp(),
        "sent": run.sent_at.timestamp() if run.sent_at else None,
        "task_start": run.started_at.timestamp() if run.started_at else None,
        "progress": progress,
        "result": result,
    }


def percentile(values: list[float], percent: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * percent / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def load_note() -> str:
    """Other processes share this machine's CPU; the summary line says how busy it was."""
    return f"load {LOAD_AT_START:.1f}→{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
