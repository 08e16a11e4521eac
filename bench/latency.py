"""Two latencies a user feels: a progress event from a worker to an API WebSocket client (through
the real channels_redis layer and uvicorn), and a submitted job until a worker starts it.

    python -m bench.latency [--quick]
"""

import argparse
import json
import threading
import time

from bench import common

PROGRESS_TARGET_P95 = 0.050
DISPATCH_TARGET_P50 = 0.050


def progress_latency(bench: common.Bench, *, events: int, interval: float) -> dict:
    """Publish `events` progress events for a running job, as a worker does, and time each one's arrival.

    Sender and receiver are both in this process, so both ends read the same perf_counter clock.
    """
    from PIL import Image
    from websockets.sync.client import connect

    from imagegen import progress
    from imagegen.models import JobStatus, Run

    run = Run.objects.create(
        owner=bench.user,
        prompt="progress latency",
        steps=events,
        total_steps=events,
        guidance_scale=7.5,
        width=512,
        height=512,
        seed=1,
        model="tiny",
        status=JobStatus.RUNNING,
    )
    # Every 5th event carries a preview the size a worker sends, as with IMAGEGEN_PREVIEW_EVERY=5.
    preview = progress.preview_data_url(Image.effect_noise((128, 128), 64).convert("RGB"))
    latencies: dict[int, float] = {}
    publish_seconds: list[float] = []
    ws_url = f"{bench.stack.ws_url}/api/v1/ws/{run.pk}"
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {bench.token}"}, open_timeout=10) as socket:
        socket.recv(timeout=10)  # the snapshot: the consumer has joined the job's group

        def receive() -> None:
            for message in socket:
                arrived = time.perf_counter()
                event = json.loads(message)
                if "bench_sent" in event:
                    latencies[event["step"]] = arrived - event["bench_sent"]
                if len(latencies) == events:
                    return

        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        start = time.perf_counter()
        for step in range(1, events + 1):
            sent = time.perf_counter()
            event = {
                "type": "job.progress",
                "job_id": str(run.pk),
                "step": step,
                "total": events,
                "eta": 1.0,
                "preview": preview if step % 5 == 0 else None,
                "bench_sent": sent,
            }
            progress.publish(run.pk, event)
            publish_seconds.append(time.perf_counter() - sent)
            time.sleep(max(0.0, start + step * interval - time.perf_counter()))
        receiver.join(timeout=5)
    values = list(latencies.values())
    return {
        "events": events,
        "interval_seconds": interval,
        "received": len(values),
        "p50": common.percentile(values, 50),
        "p95": common.percentile(values, 95),
        "max": max(values),
        "with_preview_p50": common.median([latencies[s] for s in latencies if s % 5 == 0]),
        "publish_call_p50": common.median(publish_seconds),
        "publish_call_p95": common.percentile(publish_seconds, 95),
    }


def dispatch_latency(bench: common.Bench, *, jobs: int) -> dict:
    """Tiny jobs one after another on an idle worker: from just before the HTTP request to the claim."""
    rows = []
    for index in range(jobs):
        time.sleep(0.3)  # the previous job's worker has acknowledged it and waits again
        body = {"prompt": "dispatch", "num_inference_steps": 2, "width": 64, "height": 64, "seed": index}
        job = common.submit_and_follow(bench, body)
        rows.append(
            {
                "dispatch": job["task_start"] - job["submit"],
                "http_response": job["response"] - job["submit"],
                "submit_to_row": job["queued"] - job["submit"],
                "row_to_sent": job["sent"] - job["queued"],
                "sent_to_start": job["task_start"] - job["sent"],
            }
        )
    dispatch = [row["dispatch"] for row in rows]
    return {
        "jobs": jobs,
        "p50": common.percentile(dispatch, 50),
        "p95": common.percentile(dispatch, 95),
        "max": max(dispatch),
        "medians": {key: common.median([row[key] for row in rows]) for key in rows[0]},
        "every_job": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 events and 8 jobs instead of 200 and 15")
    options = parser.parse_args()
    events, jobs = (100, 8) if options.quick else (200, 15)

    with common.bench_stack() as bench:
        common.log(f"progress latency: {events} events, 20 ms apart")
        progress = progress_latency(bench, events=events, interval=0.020)
        common.log(f"dispatch latency: {jobs} tiny jobs")
        dispatch = dispatch_latency(bench, jobs=jobs)

    ms = 1000
    parts = dispatch["medians"]
    summary = (
        f"latency: progress p50 {progress['p50'] * ms:.1f} ms, p95 {progress['p95'] * ms:.1f} ms "
        f"(target p95 < {PROGRESS_TARGET_P95 * ms:.0f} ms; {progress['received']}/{events} received, "
        f"publish() {progress['publish_call_p50'] * ms:.1f} ms) — dispatch p50 {dispatch['p50'] * ms:.0f} ms "
        f"(target < {DISPATCH_TARGET_P50 * ms:.0f} ms), p95 {dispatch['p95'] * ms:.0f} ms "
        f"[request→row {parts['submit_to_row'] * ms:.0f}, row→sent {parts['row_to_sent'] * ms:.0f}, "
        f"sent→start {parts['sent_to_start'] * ms:.0f} ms]; {common.load_note()}"
    )
    common.write_result("latency", summary, {"progress": progress, "dispatch": dispatch})


if __name__ == "__main__":
    main()
