"""Peak memory of text-to-image alone against also deriving and running image-to-image and inpainting.

The derived pipelines (Engine.img2img_pipeline, Engine.inpaint_pipeline, via from_pipe) should
share the text-to-image pipeline's modules, so they should add activations at most, not weights.
Each phase runs in a fresh process, and its peak is taken from the loaded model on (loading peaks
by itself): on CPU the peak resident set size (VmHWM, reset through /proc/self/clear_refs), on
CUDA torch.cuda.max_memory_allocated. On Linux CPUs the phases also run once with glibc's mmap
threshold pinned, which tells memory the tensors need from freed memory the allocator keeps.

    .venv/bin/python bench/memory.py [--quick] [--model tiny|sd15-random|FOLDER] [--size 512]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from PIL import Image, ImageDraw

from bench.engine_common import MODELS_DIR, median, write_result
from bench.sd15_random import model_source
from imagegen.engine import Engine, GenerationRequest

# The target: running all three pipelines peaks at most this much above text-to-image alone.
TARGET_RATIO = 1.05
PHASES = ("txt2img", "all")
RESULT_MARKER = "PHASE-RESULT "
PROMPT = "a lighthouse on a cliff at sunset, oil painting"
SHARED_MODULES = ("unet", "vae", "text_encoder", "tokenizer")
MIB = 1024**2
# glibc raises its mmap threshold as large blocks are freed, after which freed activations stay in
# the heap and count as resident; pinning it (to its 128 KiB default) hands them back to the
# system, which separates what the tensors need from what the allocator keeps.
FIXED_THRESHOLD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def _status_bytes(field: str) -> int:
    """Read a memory field of /proc/self/status (VmRSS: now, VmHWM: peak since start or reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak_rss() -> bool:
    """Restart VmHWM from the current RSS (Linux ≥ 4.0), so later peaks leave loading out."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak if sys.platform == "darwin" else peak * 1024


def _uses_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _run_phase(phase: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one phase in this process and return its memory readings."""
    cuda = _uses_cuda(args.device)
    timeline: list[dict[str, Any]] = []

    def mark(stage: str) -> None:
        reading = {
            "stage": stage,
            "rss": _status_bytes("VmRSS"),
            "peak_rss": _peak_rss(),
            "peak_rss_since_load": _status_bytes("VmHWM"),
        }
        if cuda:
            torch.cuda.synchronize()
            reading["cuda_allocated"] = torch.cuda.memory_allocated()
            reading["cuda_peak_since_load"] = torch.cuda.max_memory_allocated()
        timeline.append(reading)

    mark("imported")
    result: dict[str, Any] = {"phase": phase, "timeline": timeline}
    engine = Engine(model_source(args.model), device=args.device, cache_dir=MODELS_DIR)
    engine.load()
    # Loading peaks on its own (file pages, dtype casts) and by a different amount each run, which
    # would hide what generating costs; the peaks compared start from the loaded model instead.
    result["loading_peak_rss"] = _status_bytes("VmHWM")
    result["peak_reset"] = _reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    mark("loaded")
    pipe = engine.pipeline
    result["weights_bytes"] = {
        name: sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
        for name, module in (("unet", pipe.unet), ("vae", pipe.vae), ("text_encoder", pipe.text_encoder))
    }
    result["device"] = engine.device
    result["dtype"] = str(engine.dtype)
    size = args.size
    text = GenerationRequest(prompt=PROMPT, steps=args.steps, width=size, height=size, seed=0)
    init_image = engine.generate(text).images[0]
    mark("txt2img run")
    if phase == "txt2img":
        return result

    img2img = engine.img2img_pipeline
    inpaint = engine.inpaint_pipeline
    mark("derived")
    result["shared"] = {
        pipe_name: {name: getattr(derived, name) is getattr(pipe, name) for name in SHARED_MODULES}
        for pipe_name, derived in (("img2img", img2img), ("inpaint", inpaint))
    }
    # from_pipe must not have cast the shared weights (e.g. back to float32).
    result["dtypes_after_derive"] = {name: str(getattr(pipe, name).dtype) for name in ("unet", "vae", "text_encoder")}
    engine.generate(
        GenerationRequest(
            prompt=PROMPT, steps=args.steps, width=size, height=size, seed=0, init_image=init_image, strength=0.75
        )
    )
    mark("img2img run")
    mask = Image.new("L", init_image.size, 0)
    ImageDraw.Draw(mask).rectangle((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=255)
    generator = torch.Generator("cpu").manual_seed(0)
    with torch.inference_mode():
        inpaint(
            prompt=PROMPT,
            image=init_image,
            mask_image=mask,
            height=size,
            width=size,
            strength=0.75,
            num_inference_steps=max(2, args.steps),
            generator=generator,
        )
    mark("inpaint run")
    return result


def _spawn(phase: str, args: argparse.Namespace, *, fixed_threshold: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--phase", phase, "--model", args.model, "--device", args.device]
    command += ["--size", str(args.size), "--steps", str(args.steps)]
    env = {**os.environ, **FIXED_THRESHOLD_ENV} if fixed_threshold else None
    completed = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line.removeprefix(RESULT_MARKER))
    raise RuntimeError(f"Phase {phase} failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}")


def _peak(result: dict[str, Any], key: str) -> int:
    return max(reading[key] for reading in result["timeline"] if key in reading)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="256 px, one run of each phase: a smoke run, not the 512 px figure"
    )
    parser.add_argument("--model", default="tiny", help='"tiny", "sd15-random" (SD 1.5 shapes) or a diffusers folder')
    parser.add_argument("--size", type=int, help="image side in pixels (default 512, quick 256)")
    parser.add_argument("--steps", type=int, help="sampling steps per run (default 2: memory does not grow with steps)")
    parser.add_argument("--repeats", type=int, help="fresh-process runs of each phase (default 2, quick 1)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or 2
    args.size = args.size or (256 if args.quick else 512)

    if args.phase:
        print(RESULT_MARKER + json.dumps(_run_phase(args.phase, args)), flush=True)
        return

    started = time.perf_counter()
    cuda = _uses_cuda(args.device)
    # On Linux CPUs each phase also runs with the glibc threshold pinned (not in a quick run).
    allocators = [False] if cuda or args.quick or sys.platform != "linux" else [False, True]
    # Peak RSS differs by a few percent between identical runs (allocator, threads), so the phases
    # alternate in fresh processes and each one's median peak is compared.
    runs: dict[tuple[str, bool], list[dict[str, Any]]] = {(p, f): [] for f in allocators for p in PHASES}
    for repeat in range(args.repeats or (1 if args.quick else 2)):
        for phase, fixed_threshold in runs:
            # With the threshold pinned the peaks repeat to within a MiB, so once is enough.
            if not (fixed_threshold and repeat):
                runs[phase, fixed_threshold].append(_spawn(phase, args, fixed_threshold=fixed_threshold))
    alone, everything = runs["txt2img", False][0], runs["all", False][0]
    if not cuda and not alone["peak_reset"]:
        print("note: /proc/self/clear_refs is not writable here, so the peaks include loading the model")
    key = "cuda_peak_since_load" if cuda else "peak_rss_since_load"
    peaks = {phase: [_peak(run, key) for run in runs[phase, False]] for phase in PHASES}
    peak_alone, peak_all = median(peaks["txt2img"]), median(peaks["all"])
    ratio = peak_all / peak_alone
    # Over the interpreter and libraries (CPU) or over nothing (CUDA): what the model itself costs.
    floor = 0 if cuda else alone["timeline"][0]["rss"]
    ratio_over_floor = (peak_all - floor) / (peak_alone - floor)
    loading_peaks = {
        phase: median(max(run["loading_peak_rss"], _peak(run, "peak_rss")) for run in runs[phase, False])
        for phase in PHASES
    }
    pinned = (
        {phase: median(_peak(run, key) for run in runs[phase, True]) for phase in PHASES} if True in allocators else {}
    )
    weights = sum(alone["weights_bytes"].values())
    derived_runs = [run for (phase, _), phase_runs in runs.items() if phase == "all" for run in phase_runs]
    shared_ok = all(all(flags.values()) for run in derived_runs for flags in run["shared"].values())
    met = ratio <= TARGET_RATIO
    results = {phase: runs[phase, False][0] for phase in PHASES}
    if pinned:
        results.update({f"{phase}, pinned threshold": runs[phase, True][0] for phase in PHASES})

    # The first run of each phase, stage by stage: where the memory goes.
    for phase in results:
        now, peak = ("cuda_allocated", "cuda_peak_since_load") if cuda else ("rss", "peak_rss_since_load")
        stages = ", ".join(
            f"{r['stage']} {r[now] / MIB:.0f}/{r[peak] / MIB:.0f}" for r in results[phase]["timeline"] if now in r
        )
        print(f"{phase}: {'CUDA allocated' if cuda else 'RSS'} now/peak MiB after each stage: {stages}")
    what = "CUDA peak allocated while generating" if cuda else "peak RSS while generating"
    note = (
        " — weights are tiny, so this compares activations and library overhead, not weight sharing"
        if weights < 100 * MIB
        else ""
    )
    summary = (
        f"memory: {what} all three pipelines {peak_all / MIB:.0f} MiB vs txt2img alone {peak_alone / MIB:.0f} MiB "
        f"= {ratio:.3f}× (target ≤ {TARGET_RATIO}: {'met' if met else 'MISSED'}"
        + ("" if cuda else f"; {ratio_over_floor:.2f}× over the {floor / MIB:.0f} MiB of the imported libraries")
        + (
            f"; with glibc's mmap threshold pinned {pinned['all'] / MIB:.0f} vs {pinned['txt2img'] / MIB:.0f} MiB "
            f"= {pinned['all'] / pinned['txt2img']:.3f}×"
            if pinned
            else ""
        )
        + f"); weights {weights / MIB:.1f} MiB{note}; process peak RSS, loading included, "
        f"{loading_peaks['all'] / MIB:.0f} vs {loading_peaks['txt2img'] / MIB:.0f} MiB; "
        f"unet/vae/text_encoder/tokenizer shared: {'yes' if shared_ok else 'NO'} "
        f"({args.model} {args.size}px {alone['device']} {alone['dtype']}, median of {len(peaks['all'])})"
    )
    # Other models' results go beside the default one instead of replacing it.
    write_result(
        "memory" if args.model == "tiny" else f"memory-{Path(args.model).name}",
        summary,
        {
            "model": args.model,
            "size": args.size,
            "steps": args.steps,
            "quick": args.quick,
            "measure": key,
            "peaks_bytes": peaks,
            "peaks_pinned_threshold_bytes": pinned,
            "pinned_threshold_env": FIXED_THRESHOLD_ENV,
            "peak_txt2img_bytes": peak_alone,
            "peak_all_bytes": peak_all,
            "ratio": ratio,
            "libraries_rss_bytes": floor,
            "process_peak_rss_with_loading_bytes": loading_peaks,
            "ratio_over_baseline": ratio_over_floor,
            "target_ratio": TARGET_RATIO,
            "target_met": met,
            "weights_bytes": alone["weights_bytes"],
            "shared": everything["shared"],
            "dtypes_after_derive": everything["dtypes_after_derive"],
            "phases": {f"{phase}{', pinned threshold' if pin else ''}": rs for (phase, pin), rs in runs.items()},
            "seconds": time.perf_counter() - started,
        },
    )
    if not shared_ok:
        raise SystemExit("The derived pipelines do not share the text-to-image pipeline's modules.")


if __name__ == "__main__":
    main()
