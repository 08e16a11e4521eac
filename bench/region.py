"""What a one-rectangle regional refinement costs next to inpainting the whole image.

Regional refinement repaints only a crop around its rectangle ("inpaint only masked"), at the
model's working size, so its cost follows the edited area, not the image. The target: a rectangle
covering a quarter of a 1024×1024 image costs at most 0.35 × inpainting the whole image with the
same mask, steps and strength. Variants alternate within each round and the ratio is taken per
round, so a machine that slows down mid-run skews it less.

    .venv/bin/python -m bench.region [--quick] [--model tiny|sd15-random] [--size 1024] [--device auto] [--compile]

On an H100 an eager SD 1.5 UNet is bound by kernel launches up to about 512² (NOTES.md: 25–33 it/s
whatever the size), so a smaller crop saves less there than its area; --compile (CUDA only) times
both variants with the inpainting UNet compiled with CUDA graphs, as the GPU-speed work will run it.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.engine_common import MODELS_DIR, median, timed, write_result
from bench.sd15_random import model_source
from imagegen.engine import Engine, GenerationRequest
from refinement.editing import Rect, plan_crop, rect_mask
from refinement.stages import STAGES, StageInput

TARGET_RATIO = 0.35
PROMPT = "a lighthouse on a cliff at sunset, oil painting"
CREATIVITY = 2  # strength 0.75: 22 of 30 steps, for both variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds and a 20 s budget")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, help="most rounds after warm-up (default 6, quick 2)")
    parser.add_argument("--budget", type=float, help="stop starting rounds after this many seconds (default 120)")
    parser.add_argument("--model", default="tiny", help='"tiny", "sd15-random" or a diffusers folder')
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="CUDA: the UNet compiled as IMAGEGEN_COMPILE=on does")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 6)
    budget = args.budget or (20.0 if args.quick else 120.0)

    # Compiled mode as workers run it (IMAGEGEN_COMPILE=on); the inpainting pipeline shares the UNet.
    compile_setting = "on" if args.compile and args.device != "cpu" else "off"
    engine = Engine(model_source(args.model), device=args.device, cache_dir=MODELS_DIR, compile=compile_setting)
    engine.load()
    compiled = engine.compile and engine.device.startswith("cuda")
    size = args.size
    parent = engine.generate(GenerationRequest(prompt=PROMPT, steps=4, width=size, height=size, seed=1)).images[0]
    # A rectangle covering a quarter of the image, in the middle.
    rect = Rect(size // 4, size // 4, size // 2, size // 2)
    stage = STAGES["region"]
    payload = {"masks": [{"bbox": [rect.x, rect.y, rect.w, rect.h], "prompt": PROMPT}]}
    strength = stage.plan(payload=payload, creativity=CREATIVITY).strength
    whole_request = GenerationRequest(
        prompt=PROMPT, steps=30, seed=2, init_image=parent, strength=strength, mask_image=rect_mask(parent.size, rect)
    )

    def regional():
        return stage.run(engine, StageInput(parent=parent, payload=payload, creativity=CREATIVITY, seed=2))

    def whole():
        return engine.generate(whole_request)

    # Warm-up of both shapes (allocator, kernel choice; on a GPU, cuDNN autotuning; compiling).
    warm_up_started = time.perf_counter()
    regional()
    whole()
    warm_up_seconds = time.perf_counter() - warm_up_started
    seconds: dict[str, list[float]] = {"regional": [], "whole": []}
    ratios: list[float] = []
    started, rounds = time.perf_counter(), 0
    while rounds < repeats and (rounds < 2 or time.perf_counter() - started < budget):
        order = [("regional", regional), ("whole", whole)][:: 1 if rounds % 2 == 0 else -1]
        this_round = {name: timed(run)[0] for name, run in order}
        for name, value in this_round.items():
            seconds[name].append(value)
        ratios.append(this_round["regional"] / this_round["whole"])
        rounds += 1
        print(f"round {rounds}: regional {this_round['regional']:.2f} s, whole {this_round['whole']:.2f} s", flush=True)

    ratio = median(ratios)
    crop = plan_crop(rect, parent.size, short_side=engine.working_side)
    met = ratio <= TARGET_RATIO
    summary = (
        f"region: one rectangle of a quarter of {size}² costs {ratio:.2f} × a whole-image inpaint "
        f"({median(seconds['regional']):.2f} s vs {median(seconds['whole']):.2f} s; target ≤ {TARGET_RATIO}: "
        f"{'met' if met else 'MISSED'}; crop {crop.box_size[0]}×{crop.box_size[1]} worked at "
        f"{crop.working_size[0]}×{crop.working_size[1]}; {args.model} on {engine.device}"
        f"{', UNet compiled' if compiled else ''}, median of {rounds} rounds)"
    )
    name = "region" if args.model == "tiny" else f"region-{Path(args.model).name}"
    write_result(
        f"{name}-compiled" if compiled else name,
        summary,
        {
            "model": args.model,
            "device": engine.device,
            "dtype": str(engine.dtype),
            "size": size,
            "rect": [rect.x, rect.y, rect.w, rect.h],
            "crop_box": crop.box,
            "working_size": crop.working_size,
            "strength": strength,
            "rounds": rounds,
            "quick": args.quick,
            "compiled": compiled,
            "warm_up_seconds": warm_up_seconds,
            "torch_threads": torch.get_num_threads(),
            "ratio": ratio,
            "target_ratio": TARGET_RATIO,
            "target_met": met,
            "median_seconds": {name: median(values) for name, values in seconds.items()},
            "raw_seconds": seconds,
            "raw_ratios": ratios,
        },
    )


if __name__ == "__main__":
    main()
