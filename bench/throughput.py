"""Throughput under load: N compatible jobs submitted at once through the whole stack (API, Redis,
a Celery worker, the database), images a second with batching (IMAGEGEN_MAX_BATCH=N) against the
same jobs one by one (IMAGEGEN_MAX_BATCH=1), and with --compile the same again in compiled mode.

    python -m bench.throughput [--quick] [--compile] [--model PATH] [--size 512] [--steps 30]

Targets (on a CUDA GPU with the SD 1.5-shaped model, `bench/sd15_random.py`): batching ≥ 3× one by
one with compile off, ≥ 1.4× with compile on, and compile + batching ≥ 7× eager one by one. On a
CPU the figures are reported with no target.
"""

import argparse
import re
import threading
import time

from bench import common

TARGETS = {"batching_eager": 3.0, "batching_compiled": 1.4, "compiled_batching_vs_eager_one_by_one": 7.0}
PROMPTS = ("a lighthouse at dawn", "a fox in the snow", "a bowl of lemons", "a red bicycle", "an old map")


def submit_all(bench: common.Bench, jobs: int, *, size: int, steps: int) -> list[str]:
    """Submit `jobs` compatible jobs at once (one thread each), as many users would."""
    run_ids: list[str] = [""] * jobs

    def submit(index: int) -> None:
        body = {
            "prompt": f"{PROMPTS[index % len(PROMPTS)]}, study {index}",
            "num_inference_steps": steps,
            "width": size,
            "height": size,
            "seed": 1000 + index,
        }
        status, accepted = common.api(bench, "POST", "/api/generate", body)
        if status != 202:
            raise RuntimeError(f"submit answered {status}: {accepted}")
        run_ids[index] = accepted["run_id"]

    threads = [threading.Thread(target=submit, args=(index,)) for index in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return run_ids


def measure(bench: common.Bench, *, name: str, jobs: int, size: int, steps: int, worker_env: dict) -> dict:
    """Start a worker with `worker_env`, wait for its warm-up, submit the jobs, and time them all."""
    from imagegen.localstack import wait_until
    from imagegen.models import JobStatus, Run

    for worker in bench.stack.alive_workers():
        bench.stack.stop_worker(worker)
    common.log(f"{name}: starting a worker with {worker_env}")
    # A worker in compiled mode answers once its warm-up has compiled (minutes on a CPU).
    bench.stack.start_worker(f"worker-{name}", timeout=1800, **worker_env)
    # The worker answers pings before its warm-up ends: one small job waits for that.
    warm = submit_all(bench, 1, size=size, steps=2)
    wait_until(lambda: Run.objects.get(pk=warm[0]).is_finished, timeout=1800, what="the warm-up job")
    started = time.time()
    run_ids = submit_all(bench, jobs, size=size, steps=steps)
    runs = Run.objects.filter(pk__in=run_ids)
    wait_until(lambda: all(run.is_finished for run in runs.all()), timeout=3600, what=f"{jobs} jobs")
    finished = max(run.finished_at.timestamp() for run in runs.all())
    failed = [run.error for run in runs.all() if run.status != JobStatus.SUCCEEDED]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not succeed: {failed[:2]}")
    log = (bench.stack.folder / f"worker-{name}.log").read_text(errors="replace")
    batches = [int(size) for size in re.findall(r"runs in a batch of (\d+)", log)]
    seconds = finished - started
    common.log(f"{name}: {jobs} images in {seconds:.1f} s, batches {batches or 'none'}")
    return {"seconds": seconds, "images_per_second": jobs / seconds, "batches": batches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128 px and 8 steps")
    parser.add_argument("--compile", action="store_true", help="also measure compiled mode (IMAGEGEN_COMPILE=on)")
    parser.add_argument("--model", default="tiny", help='"tiny" or a diffusers folder (e.g. bench/sd15_random.py\'s)')
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    size, steps = (128, 8) if args.quick else (args.size, args.steps)

    with common.bench_stack() as bench:
        modes = {"off": "eager", **({"on": "compiled"} if args.compile else {})}
        figures: dict[str, dict] = {}
        for compile_setting, mode in modes.items():
            for batch in (1, args.jobs):
                env = {
                    "IMAGEGEN_MODEL": args.model,
                    "IMAGEGEN_COMPILE": compile_setting,
                    "IMAGEGEN_MAX_BATCH": str(batch),
                    "IMAGEGEN_WARM_SIZES": f"{size}x{size}",
                }
                name = f"{mode}-batch{batch}"
                figures[name] = measure(bench, name=name, jobs=args.jobs, size=size, steps=steps, worker_env=env)
        from imagegen.engine.pipelines import resolve_device

        device = resolve_device("auto")

    rate = {name: figure["images_per_second"] for name, figure in figures.items()}
    ratios = {"batching_eager": rate[f"eager-batch{args.jobs}"] / rate["eager-batch1"]}
    if args.compile:
        ratios["batching_compiled"] = rate[f"compiled-batch{args.jobs}"] / rate["compiled-batch1"]
        ratios["compiled_batching_vs_eager_one_by_one"] = rate[f"compiled-batch{args.jobs}"] / rate["eager-batch1"]
    on_gpu = device.startswith("cuda")
    verdicts = {name: ratio >= TARGETS[name] for name, ratio in ratios.items()} if on_gpu else {}
    described = ", ".join(
        f"{name} {ratio:.2f}×"
        + (f" (target ≥ {TARGETS[name]}: {'met' if verdicts[name] else 'MISSED'})" if on_gpu else "")
        for name, ratio in ratios.items()
    )
    summary = (
        f"throughput: {args.jobs} compatible jobs at once, {size}², {steps} steps, {args.model} on {device}: "
        + ", ".join(f"{name} {value:.2f} images/s" for name, value in rate.items())
        + f"; {described}{'' if on_gpu else ' (CPU: no target)'}; {common.load_note()}"
    )
    suffix = "" if args.model == "tiny" else f"-{args.model.rstrip('/').rsplit('/', 1)[-1]}"
    common.write_result(
        f"throughput{suffix}{'-compiled' if args.compile else ''}",
        summary,
        {
            "model": args.model,
            "device": device,
            "jobs": args.jobs,
            "size": size,
            "steps": steps,
            "quick": args.quick,
            "figures": figures,
            "ratios": ratios,
            "targets": TARGETS if on_gpu else {},
            "targets_met": verdicts,
        },
    )


if __name__ == "__main__":
    main()
