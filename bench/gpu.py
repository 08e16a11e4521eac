"""Sampling speed of Stable Diffusion 1.5 shapes (random weights): raw diffusers variants against the service engine.

On CUDA: 512×512, float16, 30 steps, Euler a (the engine's default sampler), timing diffusers'
default (SDPA attention), its UNet in channels_last, and the service Engine.generate; raw diffusers
runs on the engine's own modules, so the two differ only in the engine's wrapping. The variants
alternate round by round after a warm-up, and the service/raw ratio is taken per round. With
--compile the UNet, in channels_last, is then timed under torch.compile. On a CPU it is a smoke
run (256×256, float32, 2 steps, one unwarmed round): GPU figures need a CUDA machine.

    .venv/bin/python bench/gpu.py [--quick] [--compile [--compile-mode max-autotune]] [--steps 50]
"""

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

from bench.engine_common import MODELS_DIR, machine_info, median, synchronize, write_result
from bench.sd15_random import DIRNAME, NAME, NotEnoughDiskError, ensure_sd15_random
from imagegen.engine import Engine, GenerationRequest

PROMPT = "a lighthouse on a cliff at sunset, oil painting"
# fal-ai/stable-diffusion-benchmarks, A100 80GB SXM, SD 1.5 fp16, batch 1, 50 steps, torch 2.1,
# it/s = steps / whole-pipeline seconds (VAE decode included).
ANCHORS = {
    "A100 SDPA": 31.19,
    "A100 SDPA + torch.compile": 36.93,
    "A100 SDPA + torch.compile + channels_last": 47.29,
}
COMPILED_ANCHOR = "A100 SDPA + torch.compile + channels_last"
# The target: the service engine is at most this much slower than raw diffusers.
TARGET_SERVICE_OVERHEAD = 0.05
RAW, CHANNELS_LAST, SERVICE, COMPILED = "raw_sdpa", "raw_channels_last", "service", "raw_compiled"
SERVICE_COMPILED = "service_compiled"
# The target of compiled mode: the service, previews on, runs at least this share of raw compiled's speed.
TARGET_SERVICE_COMPILED = 0.95


class StepClock:
    """Time the sampling loop alone: from the end of its first step to the end of its last."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.first: float | None = None
        self.last: float | None = None
        self.count = 0

    def tick(self) -> None:
        self.count += 1
        if self.count in (1, self.steps):
            # Only at the two ends, so the loop in between runs as freely as without a callback.
            synchronize()
            now = time.perf_counter()
            if self.count == 1:
                self.first = now
            if self.count == self.steps:
                self.last = now

    def loop_its(self) -> float | None:
        if self.steps < 2 or self.first is None or self.last is None or self.last <= self.first:
            return None
        return (self.steps - 1) / (self.last - self.first)


def _run(variant: str, call: Callable[[StepClock], Any], steps: int) -> dict[str, Any]:
    clock = StepClock(steps)
    synchronize()
    started = time.perf_counter()
    call(clock)
    synchronize()
    seconds = time.perf_counter() - started
    return {"variant": variant, "seconds": seconds, "its": steps / seconds, "loop_its": clock.loop_its()}


def _set_memory_format(pipe: StableDiffusionPipeline, channels_last: bool) -> None:
    pipe.unet.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 rounds instead of 5 on CUDA; 128 px, no channels_last on CPU"
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to compile)")
    # reduce-overhead (CUDA graphs) compiles in a minute or two; max-autotune searches kernels for many minutes.
    parser.add_argument("--compile-mode", default="reduce-overhead", choices=("reduce-overhead", "max-autotune"))
    parser.add_argument("--model", default=NAME, help=f'"{NAME}" (built once) or a diffusers folder, e.g. tiny\'s')
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, help="default 512 on CUDA, 256 on CPU (quick 128)")
    parser.add_argument("--steps", type=int, help="default 30 on CUDA, 2 on CPU")
    parser.add_argument("--rounds", type=int, help="default 5 on CUDA (quick 2), 1 on CPU")
    args = parser.parse_args()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    # A quick CPU run keeps to two small runs, so it stays near 30 s; it only checks that everything works.
    quick_cpu = args.quick and not cuda
    size = args.size or (512 if cuda else 128 if quick_cpu else 256)
    steps = args.steps or (30 if cuda else 2)
    rounds = args.rounds or ((2 if args.quick else 5) if cuda else 1)
    dtype = torch.float16 if cuda else torch.float32
    figures: dict[str, Any] = {"device": device, "size": size, "steps": steps, "rounds": rounds, "dtype": str(dtype)}

    started = time.perf_counter()
    if args.model == NAME:
        already_built = (MODELS_DIR / DIRNAME).is_dir()
        try:
            folder = ensure_sd15_random()
        except NotEnoughDiskError as exc:
            write_result("gpu", f"gpu: skipped — {exc}", {**figures, "skipped": str(exc)})
            return
        if not already_built:
            figures["build_seconds"] = time.perf_counter() - started
            figures["build_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            print(f"built {folder} in {figures['build_seconds']:.1f} s", flush=True)
    else:
        folder = Path(args.model)

    load_started = time.perf_counter()
    engine = Engine(str(folder), device=device, dtype=str(dtype).removeprefix("torch."), cache_dir=MODELS_DIR)
    engine.load()
    figures["load_seconds"] = time.perf_counter() - load_started
    # Raw diffusers on the engine's own modules: the same weights, device and dtype, so the two
    # differ only in the engine's wrapping of the call, and the model is in memory once.
    raw = StableDiffusionPipeline(**engine.pipeline.components, requires_safety_checker=False)
    raw.set_progress_bar_config(disable=True)
    raw.scheduler = EulerAncestralDiscreteScheduler.from_config(engine.pipeline.scheduler.config)
    request = GenerationRequest(prompt=PROMPT, steps=steps, width=size, height=size, seed=0, scheduler="euler_a")

    def step_end(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any], clock: StepClock) -> dict[str, Any]:
        clock.tick()
        return tensors

    def run_raw(clock: StepClock) -> None:
        generator = torch.Generator(device if cuda else "cpu").manual_seed(0)
        with torch.inference_mode():
            raw(
                prompt=PROMPT,
                negative_prompt="",
                num_inference_steps=steps,
                width=size,
                height=size,
                generator=generator,
                callback_on_step_end=lambda *call: step_end(*call, clock=clock),
                callback_on_step_end_tensor_inputs=[],
            )

    def run_service(clock: StepClock) -> None:
        engine.generate(request, on_step=lambda step, total, preview: clock.tick())

    # Variant → (how to run it, whether the raw UNet is in channels_last meanwhile).
    variants: dict[str, tuple[Callable[[StepClock], Any], bool]] = {
        RAW: (run_raw, False),
        CHANNELS_LAST: (run_raw, True),
        SERVICE: (run_service, False),
    }
    if quick_cpu:
        del variants[CHANNELS_LAST]

    def run_variant(variant: str) -> dict[str, Any]:
        call, channels_last = variants[variant]
        # Switching the layout copies the UNet's weights, so it happens outside the timed call.
        _set_memory_format(raw, channels_last)
        try:
            return _run(variant, call, steps)
        finally:
            _set_memory_format(raw, False)

    if cuda:
        # Warm-up: cuDNN/cuBLAS algorithm choice and the allocator, for every variant.
        for variant in variants:
            run_variant(variant)
    runs: list[dict[str, Any]] = []
    service_ratios: list[float] = []
    for round_index in range(rounds):
        # Rotate the order each round so no variant always runs first.
        shift = round_index % len(variants)
        order = list(variants)[shift:] + list(variants)[:shift]
        this_round = {variant: run_variant(variant) for variant in order}
        runs.extend(this_round.values())
        service_ratios.append(this_round[SERVICE]["seconds"] / this_round[RAW]["seconds"])
        print(
            f"round {round_index + 1}/{rounds}: "
            + ", ".join(f"{v} {r['seconds']:.2f} s ({r['its']:.2f} it/s)" for v, r in this_round.items()),
            flush=True,
        )

    if args.compile:
        if not cuda:
            print("--compile is only timed on CUDA; skipped.")
        else:
            _set_memory_format(raw, True)
            raw.unet = torch.compile(raw.unet, mode=args.compile_mode, fullgraph=True)
            compile_started = time.perf_counter()
            _run(COMPILED, run_raw, steps)
            figures["compile_seconds"] = time.perf_counter() - compile_started
            _run(COMPILED, run_raw, steps)
            for _ in range(rounds):
                runs.append(_run(COMPILED, run_raw, steps))
            figures["compile_mode"] = args.compile_mode
            # The service in compiled mode as a worker runs it (IMAGEGEN_COMPILE=on, warmed at start),
            # with the worker's per-step relay to another thread and previews every 5 steps.
            compiled_engine = Engine(
                str(folder), device=device, dtype=str(dtype).removeprefix("torch."), cache_dir=MODELS_DIR, compile="on"
            )
            warm_started = time.perf_counter()
            compiled_engine.warm_up(sizes=[(size, size)], batch_sizes=[1])
            figures["service_compile_seconds"] = time.perf_counter() - warm_started

            def run_service_compiled(clock: StepClock) -> None:
                compiled_engine.generate(request, on_step=lambda step, total, preview: clock.tick(), preview_every=5)

            _run(SERVICE_COMPILED, run_service_compiled, steps)
            for _ in range(rounds):
                runs.append(_run(SERVICE_COMPILED, run_service_compiled, steps))

    by_variant: dict[str, dict[str, Any]] = {}
    for variant in dict.fromkeys(run["variant"] for run in runs):
        mine = [run for run in runs if run["variant"] == variant]
        loop = [run["loop_its"] for run in mine if run["loop_its"] is not None]
        by_variant[variant] = {
            "median_seconds": median(run["seconds"] for run in mine),
            "median_its": median(run["its"] for run in mine),
            "median_loop_its": median(loop) if loop else None,
        }
    ratio = median(service_ratios)
    if SERVICE_COMPILED in by_variant:
        compiled_ratio = by_variant[SERVICE_COMPILED]["median_its"] / by_variant[COMPILED]["median_its"]
        figures["service_compiled_over_raw_compiled"] = compiled_ratio
        figures["target_service_compiled"] = TARGET_SERVICE_COMPILED
        figures["target_service_compiled_met"] = compiled_ratio >= TARGET_SERVICE_COMPILED
    # One unwarmed CPU run per variant says nothing about a 5% difference.
    met = ratio <= 1 + TARGET_SERVICE_OVERHEAD if cuda else None
    figures.update(
        {
            "model": args.model,
            "folder": str(folder),
            "variants": by_variant,
            "service_over_raw": ratio,
            "service_over_raw_per_round": service_ratios,
            "target_service_overhead": TARGET_SERVICE_OVERHEAD,
            "target_met": met,
            "anchors_its": ANCHORS,
            "runs": runs,
            "seconds": time.perf_counter() - started,
        }
    )

    for variant, row in by_variant.items():
        loop = f", sampling loop alone {row['median_loop_its']:.2f} it/s" if row["median_loop_its"] else ""
        print(f"{variant}: {row['median_seconds']:.2f} s = {row['median_its']:.2f} it/s{loop}")
    print(
        "published anchors (50 steps, whole pipeline; at fewer steps the VAE decode weighs more, "
        "so compare with --steps 50): " + ", ".join(f"{k} ≈ {v} it/s" for k, v in ANCHORS.items())
    )
    speeds = ", ".join(f"{variant} {row['median_its']:.2f} it/s" for variant, row in by_variant.items())
    where = machine_info()["cuda_name"] or "CPU"
    summary = (
        f"gpu: {args.model} {size}px {steps} steps {str(dtype).removeprefix('torch.')} on {where}: {speeds}; "
        f"service/raw {ratio:.3f} (target ≤ {1 + TARGET_SERVICE_OVERHEAD:.2f}: "
        f"{'no verdict on CPU' if met is None else 'met' if met else 'MISSED'})"
    )
    if "service_compiled_over_raw_compiled" in figures:
        summary += (
            f"; compiled service (previews every 5) / raw compiled {figures['service_compiled_over_raw_compiled']:.3f}"
            f" it/s (target ≥ {TARGET_SERVICE_COMPILED}: "
            f"{'met' if figures['target_service_compiled_met'] else 'MISSED'})"
        )
    if cuda:
        summary += (
            f"; anchors A100 ≈ {ANCHORS['A100 SDPA']} it/s SDPA, "
            f"≈ {ANCHORS[COMPILED_ANCHOR]} it/s compiled + channels_last"
        )
    else:
        summary += (
            f"; CPU smoke run ({rounds} round(s), no warm-up), not a measurement — GPU figures need a CUDA machine"
        )
    # Other models' results go beside the default one instead of replacing it.
    write_result("gpu" if args.model == NAME else f"gpu-{Path(args.model).name}", summary, figures)


if __name__ == "__main__":
    main()
