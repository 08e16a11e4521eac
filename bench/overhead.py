"""What a job costs through the whole service (API → Celery worker → WebSocket result) over the bare
diffusers call with the same model, size, steps and seed, and where the difference goes.

On a small CPU machine the worker and this process must never compute at once, so the two run
strictly in turn: a service job, then a raw call, then a service job, and so on.

    python -m bench.overhead [--quick] [--threads 1]

With other CPU-bound processes on the machine, torch's default threads make timings erratic
(threads that wait for one another at every operation); `--threads 1` keeps them steady.
"""

import argparse
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench import common

PROMPT = "a lighthouse at dawn, oil painting"
SEED = 1234
GUIDANCE = 7.5
SETTLE_SECONDS = 0.5  # lets the worker acknowledge and go idle before the next measurement


def load_raw_pipeline():
    """The tiny model loaded with diffusers alone, as the engine loads it, with the service's default sampler."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from django.conf import settings

    from imagegen.engine.tiny import ensure_tiny_model

    diffusers_logging.disable_progress_bar()
    folder = ensure_tiny_model(settings.IMAGEGEN_MODEL_CACHE)
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def raw_call(pipe, *, size: int, steps: int) -> dict:
    """One pipeline call; a callback only notes when each step ends, to split the time like the service's."""
    import torch

    step_ends: list[float] = []

    def note_step(pipe, index, timestep, tensors):
        step_ends.append(time.perf_counter())
        return tensors

    started = time.perf_counter()
    with torch.inference_mode():
        output = pipe(
            prompt=PROMPT,
            negative_prompt="",
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            width=size,
            height=size,
            generator=torch.Generator().manual_seed(SEED),
            callback_on_step_end=note_step,
        )
    ended = time.perf_counter()
    return {
        "total": ended - started,
        "to_first_step": step_ends[0] - started,
        "sampling": step_ends[-1] - step_ends[0],
        "tail": ended - step_ends[-1],
        "image": output.images[0],
    }


def worker_priority() -> None:
    """Lower this thread's priority as the worker lowers its own (IMAGEGEN_WORKER_NICE), so that other
    processes on the machine slow both sides alike. Linux: a thread's niceness is its own."""
    from django.conf import settings

    thread = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + settings.IMAGEGEN_WORKER_NICE)


def service_call(bench: common.Bench, *, size: int, steps: int) -> dict:
    body = {
        "prompt": PROMPT,
        "num_inference_steps": steps,
        "width": size,
        "height": size,
        "seed": SEED,
        "guidance_scale": GUIDANCE,
    }
    job = common.submit_and_follow(bench, body)
    if job["result"] is None or not job["progress"]:
        raise RuntimeError(f"the job ended without progress or result: {job}")
    first_progress, last_progress = job["progress"][0][1], job["progress"][-1][1]
    return {
        "run_id": job["run_id"],
        "total": job["result"] - job["submit"],
        "dispatch": job["task_start"] - job["submit"],
        "to_first_step": first_progress - job["task_start"],
        "sampling": last_progress - first_progress,
        "tail": job["result"] - last_progress,
    }


def output_difference(run_id: str, raw_image) -> int:
    """The largest difference of any pixel between the service's stored output and the raw image."""
    import numpy
    from PIL import Image

    from imagegen.models import Run

    stored = Run.objects.get(pk=run_id).outputs.get()
    with stored.file.open("rb") as file, Image.open(file) as service_image:
        service_pixels = numpy.asarray(service_image.convert("RGB"), dtype=numpy.int16)
    return int(numpy.abs(service_pixels - numpy.asarray(raw_image, dtype=numpy.int16)).max())


def in_process_costs(image, *, steps: int) -> dict:
    """Medians of what the worker does beyond the pipeline: PNG + storage, and the live previews."""
    import torch
    from django.conf import settings
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from imagegen.engine import encode_png
    from imagegen.engine.previews import latents_to_preview
    from imagegen.progress import preview_data_url

    png_seconds, store_seconds, preview_seconds = [], [], []
    latents = torch.randn(1, 4, image.height // 8, image.width // 8)
    for _ in range(5):
        started = time.perf_counter()
        data = encode_png(image, f"{PROMPT}\nSteps: {steps}, Seed: {SEED}")
        encoded = time.perf_counter()
        name = default_storage.save("bench/encode.png", ContentFile(data))
        stored = time.perf_counter()
        default_storage.delete(name)
        preview_data_url(latents_to_preview(latents))
        previewed = time.perf_counter()
        png_seconds.append(encoded - started)
        store_seconds.append(stored - encoded)
        preview_seconds.append(previewed - stored)
    previews = steps // settings.IMAGEGEN_PREVIEW_EVERY if settings.IMAGEGEN_PREVIEW_EVERY else 0
    return {
        "png_encode": common.median(png_seconds),
        "png_store": common.median(store_seconds),
        "png_bytes": len(data),
        "preview_each": common.median(preview_seconds),
        "previews_per_job": previews,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 pairs instead of 7")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--budget", type=float, default=100, help="seconds for the pairs; at least 2 pairs run")
    parser.add_argument("--threads", type=int, help="torch threads in the worker and here (default: torch's own)")
    options = parser.parse_args()
    if options.threads:
        # Read when torch is imported, here and in the stack's processes, which inherit this environment.
        os.environ["OMP_NUM_THREADS"] = str(options.threads)
    pairs = 2 if options.quick else options.pairs
    size, steps = options.size, options.steps

    # The raw calls run as the worker runs jobs: in one long-lived thread, at the worker's CPU priority.
    with common.bench_stack() as bench, ThreadPoolExecutor(1, initializer=worker_priority) as raw_thread:
        pipe = load_raw_pipeline()

        def run_raw(**sizes) -> dict:
            return raw_thread.submit(raw_call, pipe, **sizes).result()

        common.log("warming up: one short job of the same size through each")
        service_call(bench, size=size, steps=2)
        time.sleep(SETTLE_SECONDS)
        run_raw(size=size, steps=2)

        service, raw, differences = [], [], []
        started = time.monotonic()
        for index in range(pairs):
            pair_started = time.monotonic()
            time.sleep(SETTLE_SECONDS)
            service.append(service_call(bench, size=size, steps=steps))
            time.sleep(SETTLE_SECONDS)
            raw.append(run_raw(size=size, steps=steps))
            differences.append(output_difference(service[-1]["run_id"], raw[-1]["image"]))
            common.log(f"pair {index + 1}: service {service[-1]['total']:.2f} s, raw {raw[-1]['total']:.2f} s")
            pair_seconds = time.monotonic() - pair_started
            if index + 1 >= 2 and time.monotonic() - started + pair_seconds > options.budget:
                common.log(f"stopping after {index + 1} pairs: the next would pass the {options.budget:g} s budget")
                break
        extra = in_process_costs(raw[-1]["image"], steps=steps)

    def median_of(rows: list[dict], key: str) -> float:
        return common.median([row[key] for row in rows])

    parts = ("total", "to_first_step", "sampling", "tail")
    figures = {
        "pairs": len(service),
        "size": size,
        "steps": steps,
        "torch_threads": options.threads or "default",
        "nice": "the raw calls' thread at the worker's niceness (IMAGEGEN_WORKER_NICE)",
        "service_seconds": {key: median_of(service, key) for key in (*parts, "dispatch")},
        "raw_seconds": {key: median_of(raw, key) for key in parts},
        "ratio_of_medians": median_of(service, "total") / median_of(raw, "total"),
        # Other processes on a shared machine only ever add time: the fastest of each is the least disturbed.
        "ratio_of_minimums": min(row["total"] for row in service) / min(row["total"] for row in raw),
        "median_paired_ratio": common.median([s["total"] / r["total"] for s, r in zip(service, raw, strict=True)]),
        "max_pixel_difference": max(differences),
        "in_process_seconds": extra,
        "every_pair": [
            {"service": {key: s[key] for key in (*parts, "dispatch")}, "raw": {key: r[key] for key in parts}}
            for s, r in zip(service, raw, strict=True)
        ],
    }
    s, r = figures["service_seconds"], figures["raw_seconds"]
    ms = 1000
    summary = (
        f"overhead: service {s['total']:.2f} s vs raw {r['total']:.2f} s → ratio {figures['ratio_of_medians']:.3f} "
        f"(target ≤ 1.05; fastest vs fastest {figures['ratio_of_minimums']:.3f}) — "
        f"dispatch {s['dispatch'] * ms:.0f} ms, "
        f"start→1st step {s['to_first_step'] * ms:.0f} ms (raw {r['to_first_step'] * ms:.0f}), "
        f"sampling {s['sampling']:.2f} s (raw {r['sampling']:.2f}), "
        f"last step→result {s['tail'] * ms:.0f} ms (raw decode {r['tail'] * ms:.0f}), "
        f"PNG {extra['png_encode'] * ms:.0f} ms + store {extra['png_store'] * ms:.1f} ms, "
        f"previews {extra['previews_per_job']}×{extra['preview_each'] * ms:.1f} ms; "
        f"{len(service)} pairs, {size}×{size}×{steps} steps, max pixel diff {max(differences)}, "
        f"{common.load_note()}"
    )
    common.write_result("overhead", summary, figures)


if __name__ == "__main__":
    main()
