"""Page latency under load: the gallery and a run page from 20 concurrent clients, while the worker
is busy with a long job on the same machine.

    python -m bench.web_load [--quick]
"""

import argparse
import io
import random
import threading
import time
import urllib.request

from bench import common

TARGET_P95 = 0.100
SEEDED_RUNS = 60
PAGES = ("gallery", "run")


def seed_runs(user, count: int) -> list[str]:
    """Finished text-to-image runs with one small output each, as a user's history would have."""
    from django.utils import timezone
    from PIL import Image as PILImage

    from imagegen import services
    from imagegen.models import Image, JobStatus, Run

    buffer = io.BytesIO()
    PILImage.effect_noise((128, 128), 64).convert("RGB").save(buffer, format="PNG")
    png = buffer.getvalue()
    run_ids = []
    for index in range(count):
        now = timezone.now()
        run = Run.objects.create(
            owner=user,
            prompt=f"seeded run {index}: a lighthouse at dawn, oil painting",
            steps=20,
            total_steps=20,
            step=20,
            guidance_scale=7.5,
            width=128,
            height=128,
            seed=index,
            model="tiny",
            status=JobStatus.SUCCEEDED,
            started_at=now,
            finished_at=now,
        )
        services.image_store(
            owner=user, data=png, kind=Image.Kind.OUTPUT, name=f"outputs/{run.pk}/0.png", size=(128, 128), run=run
        )
        run_ids.append(str(run.pk))
    return run_ids


def session_cookie(user) -> str:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def start_long_job(bench: common.Bench) -> str:
    """A 512×512, 150-step job that keeps the worker computing for longer than the load lasts."""
    from imagegen.localstack import wait_until
    from imagegen.models import Run

    body = {"prompt": "a long job", "num_inference_steps": 150, "width": 512, "height": 512, "seed": 7}
    _, accepted = common.api(bench, "POST", "/api/generate", body)
    run_id = accepted["run_id"]
    wait_until(lambda: Run.objects.get(pk=run_id).started_at, timeout=30, what="the long job's start")
    return run_id


def one_client(base_url: str, cookie: str, run_id: str, *, requests: int) -> dict[str, float]:
    """Median time of each page for a lone client: the server's own cost, without queueing behind others."""
    medians = {}
    for page, url in (("gallery", f"{base_url}/gallery/"), ("run", f"{base_url}/runs/{run_id}/")):
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            with urllib.request.urlopen(urllib.request.Request(url, headers={"Cookie": cookie}), timeout=30) as r:
                r.read()
            times.append(time.perf_counter() - started)
        medians[page] = common.median(times)
    return medians


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and all its descendants so far, from /proc (Linux)."""
    import os
    from pathlib import Path

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return own + sum(cpu_seconds(int(child)) for child in children)


def hit_pages(base_url: str, cookie: str, run_ids: list[str], *, threads: int, requests: int, seconds: float):
    """`threads` clients, each asking alternately for the gallery and a run page until done or out of time."""
    timings: dict[str, list[float]] = {page: [] for page in PAGES}
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(threads + 1)
    deadline = 0.0

    def client(number: int) -> None:
        chooser = random.Random(number)
        ready.wait()
        for index in range(requests):
            if time.monotonic() > deadline:
                return
            page = PAGES[(number + index) % 2]
            url = f"{base_url}/gallery/" if page == "gallery" else f"{base_url}/runs/{chooser.choice(run_ids)}/"
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers={"Cookie": cookie}), timeout=30) as r:
                    r.read()
                    # urllib follows redirects: a page that sent us to the log-in page has failed.
                    failure = None if r.status == 200 and r.geturl() == url else f"{r.status} at {r.geturl()}"
            except OSError as error:
                failure = repr(error)
            elapsed = time.perf_counter() - started
            with lock:
                if failure:
                    errors.append(failure)
                else:
                    timings[page].append(elapsed)

    workers = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(threads)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + seconds
    ready.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return timings, errors, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 requests a client and 15 s at most")
    options = parser.parse_args()
    threads = 20
    requests, seconds = (5, 15.0) if options.quick else (50, 30.0)

    with common.bench_stack() as bench:
        from imagegen.models import Run

        run_ids = seed_runs(bench.user, SEEDED_RUNS)
        cookie = session_cookie(bench.user)
        long_job = start_long_job(bench)
        alone = one_client(bench.stack.base_url, cookie, run_ids[0], requests=10)
        common.log(f"the worker is busy with {long_job}; {threads} clients × {requests} requests")
        web_pid = bench.stack.processes["web"].pid
        web_cpu_before = cpu_seconds(web_pid)
        timings, errors, elapsed = hit_pages(
            bench.stack.base_url, cookie, run_ids, threads=threads, requests=requests, seconds=seconds
        )
        web_cpu = cpu_seconds(web_pid) - web_cpu_before
        busy = Run.objects.get(pk=long_job)
        common.api(bench, "POST", f"/api/v1/runs/{long_job}/cancel")

    done = sum(len(values) for values in timings.values())
    per_page = {
        page: {
            "requests": len(values),
            "p50": common.percentile(values, 50),
            "p95": common.percentile(values, 95),
            "max": max(values),
        }
        for page, values in timings.items()
    }
    figures = {
        "threads": threads,
        "requests_per_thread": requests,
        "seeded_runs": SEEDED_RUNS,
        "seconds": elapsed,
        "requests_per_second": done / elapsed,
        "errors": len(errors),
        "first_errors": errors[:5],
        "pages": per_page,
        "one_client_median_seconds": alone,
        # What the web processes spent per page under load: unlike latency, barely moved by other
        # programs sharing the CPU, so steps can be compared on a busy machine.
        "web_cpu_ms_per_request": web_cpu * 1000 / max(done, 1),
        "worker_busy_throughout": busy.status == "running",
        "long_job_step_at_end": busy.step,
    }
    ms = 1000
    gallery, run = per_page["gallery"], per_page["run"]
    summary = (
        f"web_load: gallery p50 {gallery['p50'] * ms:.0f} ms p95 {gallery['p95'] * ms:.0f} ms, "
        f"run page p50 {run['p50'] * ms:.0f} ms p95 {run['p95'] * ms:.0f} ms (target p95 < {TARGET_P95 * ms:.0f} ms); "
        f"one client alone: gallery {alone['gallery'] * ms:.0f} ms, run page {alone['run'] * ms:.0f} ms; "
        f"{done / elapsed:.1f} requests/s, web CPU {figures['web_cpu_ms_per_request']:.1f} ms a request, "
        f"{done} ok, {len(errors)} errors, {threads} clients, "
        f"{SEEDED_RUNS} runs, worker {'busy' if figures['worker_busy_throughout'] else 'NOT busy'} "
        f"with a 512×512 job; {common.load_note()}"
    )
    common.write_result("web_load", summary, figures)


if __name__ == "__main__":
    main()
