"""How long image-to-image takes at each strength, as a fraction of text-to-image with the same steps.

Image-to-image skips the noisiest (1 - strength) of the steps but adds a VAE encode of the init
image, so the model is: img2img ≈ strength × txt2img + VAE encode. Variants are alternated within
each round and ratios are taken per round, so a machine that slows down mid-run skews them less.

    .venv/bin/python bench/strength.py [--quick] [--steps 40] [--model tiny|sd15-random] [--threads 1]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from PIL import Image

from bench.engine_common import MODELS_DIR, median, timed, write_result
from bench.sd15_random import model_source
from imagegen.engine import Engine, GenerationRequest, effective_steps

STRENGTHS = (0.25, 0.5, 0.75)
# The target: half-strength image-to-image costs at most this fraction of text-to-image.
TARGET_AT_HALF = 0.6
PROMPT = "a lighthouse on a cliff at sunset, oil painting"
TXT2IMG = "txt2img"


def _request(
    args: argparse.Namespace, *, steps: int, init_image: Image.Image | None = None, strength: float | None = None
) -> GenerationRequest:
    return GenerationRequest(
        prompt=PROMPT,
        steps=steps,
        width=args.size,
        height=args.size,
        seed=0,
        init_image=init_image,
        strength=strength,
    )


def _component_seconds(engine: Engine, init_image: Image.Image) -> dict[str, float]:
    """Time the fixed costs on their own: prompt encoding, the init image's VAE encode, the VAE decode."""
    pipe = engine.pipeline
    generator = torch.Generator("cpu").manual_seed(0)
    with torch.inference_mode():
        prompt_seconds, _ = timed(lambda: pipe.encode_prompt(PROMPT, engine.device, 1, True, negative_prompt=""))

        def encode() -> torch.Tensor:
            # What the image-to-image pipeline does before sampling: preprocess, encode, sample, scale.
            pixels = pipe.image_processor.preprocess(init_image).to(engine.device, engine.dtype)
            latents = pipe.vae.encode(pixels).latent_dist.sample(generator.manual_seed(0))
            return latents * pipe.vae.config.scaling_factor

        encode_seconds, latents = timed(encode)

        def decode() -> list[Image.Image]:
            pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
            return pipe.image_processor.postprocess(pixels, output_type="pil")

        decode_seconds, _ = timed(decode)
    return {"prompt_encode": prompt_seconds, "vae_encode": encode_seconds, "vae_decode": decode_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds and a 15 s budget (under 30 s on a quiet CPU)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, help="most rounds after warm-up (default 8, quick 2)")
    parser.add_argument(
        "--budget", type=float, help="stop starting rounds after this many seconds (default 90, quick 15)"
    )
    parser.add_argument("--model", default="tiny", help='"tiny", "sd15-random" or a diffusers folder')
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default torch's); 1 gives steadier ratios on a busy machine"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 8)
    budget = args.budget or (15.0 if args.quick else 90.0)

    engine = Engine(model_source(args.model), device=args.device, cache_dir=MODELS_DIR)
    engine.load()
    # Warm-up at a few steps (allocator, kernel selection for these shapes); its image is the init image.
    init_image = engine.generate(_request(args, steps=4)).images[0]
    engine.generate(_request(args, steps=4, init_image=init_image, strength=0.5))
    _component_seconds(engine, init_image)

    variants: list[str | float] = [TXT2IMG, *STRENGTHS]
    seconds: dict[str, list[float]] = {str(v): [] for v in variants}
    # CPU time of this process: on a CPU it counts the work done, whatever else the machine runs.
    cpu_seconds: dict[str, list[float]] = {str(v): [] for v in variants}
    ratios: dict[str, list[float]] = {str(s): [] for s in STRENGTHS}
    components: dict[str, list[float]] = {"prompt_encode": [], "vae_encode": [], "vae_decode": []}
    started = time.perf_counter()
    rounds = 0
    # At least two rounds; more while the budget lasts, so a busy machine cannot stretch the run for long.
    while rounds < repeats and (rounds < 2 or time.perf_counter() - started < budget):
        # Rotate the order each round so no variant always runs first or after the slowest one.
        shift = rounds % len(variants)
        this_round: dict[str, float] = {}
        for variant in variants[shift:] + variants[:shift]:
            if variant == TXT2IMG:
                request = _request(args, steps=args.steps)
            else:
                request = _request(args, steps=args.steps, init_image=init_image, strength=variant)
            cpu_started = time.process_time()
            this_round[str(variant)], _ = timed(lambda request=request: engine.generate(request))
            cpu_seconds[str(variant)].append(time.process_time() - cpu_started)
        for name, value in _component_seconds(engine, init_image).items():
            components[name].append(value)
        for variant, value in this_round.items():
            seconds[variant].append(value)
        for strength in STRENGTHS:
            ratios[str(strength)].append(this_round[str(strength)] / this_round[TXT2IMG])
        rounds += 1
        print(
            f"round {rounds}/{repeats}: "
            + ", ".join(f"{variant} {value:.2f} s" for variant, value in this_round.items()),
            flush=True,
        )

    # The cost model is built from the fastest reading of each part: other processes only ever add
    # time, and the parts were timed at different moments, so their medians would not add up.
    txt2img = min(seconds[TXT2IMG])
    parts = {name: min(values) for name, values in components.items()}
    fixed = parts["prompt_encode"] + parts["vae_decode"]
    per_step = (txt2img - fixed) / args.steps
    rows = {}
    for strength in STRENGTHS:
        fraction = effective_steps(args.steps, strength) / args.steps
        rows[str(strength)] = {
            "steps_run": effective_steps(args.steps, strength),
            "median_seconds": median(seconds[str(strength)]),
            # Median of the per-round ratios: each pairs runs made close together.
            "ratio": median(ratios[str(strength)]),
            "ratio_of_fastest": min(seconds[str(strength)]) / txt2img,
            "cpu_time_ratio": median(cpu_seconds[str(strength)]) / median(cpu_seconds[TXT2IMG]),
            # The brief's model, and one that also keeps prompt encoding and the VAE decode whole.
            "predicted_ratio": (fraction * txt2img + parts["vae_encode"]) / txt2img,
            "predicted_ratio_fixed_costs": (fixed + fraction * (txt2img - fixed) + parts["vae_encode"]) / txt2img,
        }
    met = rows["0.5"]["ratio"] <= TARGET_AT_HALF

    def listing(key: str) -> str:
        return ", ".join(f"{s}→{rows[str(s)][key]:.2f}" for s in STRENGTHS)

    cpu_note = f"; CPU time: {listing('cpu_time_ratio')}" if engine.device == "cpu" else ""
    print(
        f"fastest runs: {listing('ratio_of_fastest')}{cpu_note}; where txt2img's {txt2img:.2f} s goes: "
        f"{per_step * 1000:.0f} ms per step × {args.steps}, prompt encode {parts['prompt_encode'] * 1000:.0f} ms, "
        f"VAE decode {parts['vae_decode'] * 1000:.0f} ms; predicted (strength × txt2img + encode): "
        f"{listing('predicted_ratio')}; keeping fixed costs whole: {listing('predicted_ratio_fixed_costs')}"
    )
    summary = (
        f"strength: {listing('ratio')} of txt2img (target ≤ {TARGET_AT_HALF} at 0.5: {'met' if met else 'MISSED'}; "
        f"VAE encode {parts['vae_encode'] * 1000:.0f} ms; txt2img {median(seconds[TXT2IMG]):.2f} s median, "
        f"{args.model} {args.size}px {args.steps} steps on {engine.device}, median of {rounds} rounds)"
    )
    # Other models' results go beside the default one instead of replacing it.
    write_result(
        "strength" if args.model == "tiny" else f"strength-{Path(args.model).name}",
        summary,
        {
            "model": args.model,
            "device": engine.device,
            "dtype": str(engine.dtype),
            "size": args.size,
            "steps": args.steps,
            "rounds": rounds,
            "quick": args.quick,
            "torch_threads": torch.get_num_threads(),
            "txt2img_median_seconds": median(seconds[TXT2IMG]),
            "txt2img_fastest_seconds": txt2img,
            "strengths": rows,
            "component_fastest_seconds": parts,
            "per_step_seconds": per_step,
            "target_ratio_at_half": TARGET_AT_HALF,
            "target_met": met,
            "raw_seconds": seconds,
            "raw_cpu_seconds": cpu_seconds,
            "raw_component_seconds": components,
        },
    )


if __name__ == "__main__":
    main()
