"""Tests of the Django-free diffusion engine, run on the tiny CPU model."""

import dataclasses
import logging
import threading
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagegen.engine import (
    SCHEDULERS,
    Engine,
    GenerationCancelled,
    GenerationRequest,
    ModelLoadError,
    effective_steps,
    encode_png,
    format_parameters,
    get_engine,
    model_load_count,
    random_seed,
    read_png_parameters,
)
from imagegen.engine.previews import PreviewPacer
from imagegen.engine.tiny import ensure_tiny_model

from .engine_support import small


@pytest.fixture(scope="module")
def init_image() -> Image.Image:
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    pixels = np.stack([np.tile(ramp, (64, 1)), np.tile(ramp[:, None], (1, 64)), np.full((64, 64), 128, np.uint8)], -1)
    return Image.fromarray(pixels)


def pixels(engine: Engine, request: GenerationRequest) -> np.ndarray:
    return np.asarray(engine.generate(request).images[0])


def count_steps(engine: Engine, request: GenerationRequest) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    engine.generate(request, on_step=lambda step, total, preview: calls.append((step, total)))
    return calls


def vae_latents(engine: Engine, image: Image.Image) -> torch.Tensor:
    pipe = engine.pipeline
    with torch.inference_mode():
        return pipe.vae.encode(pipe.image_processor.preprocess(image)).latent_dist.mean


def test_same_seed_gives_same_pixels_and_another_seed_differs(engine: Engine) -> None:
    first = pixels(engine, small(seed=7))
    assert first.shape == (64, 64, 3)
    assert np.array_equal(first, pixels(engine, small(seed=7)))
    assert not np.array_equal(first, pixels(engine, small(seed=8)))


def test_batch_size_gives_that_many_images(engine: Engine) -> None:
    result = engine.generate(small(batch_size=2, seed=3))
    assert len(result.images) == 2
    assert (result.seed, result.total_steps) == (3, 3)


def test_on_step_fires_once_per_step_in_order(engine: Engine) -> None:
    assert count_steps(engine, small(steps=4)) == [(1, 4), (2, 4), (3, 4), (4, 4)]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_scheduler_runs_exactly_the_requested_steps(engine: Engine, scheduler: str) -> None:
    assert len(count_steps(engine, small(scheduler=scheduler))) == 3


def test_png_holds_the_parameters(engine: Engine) -> None:
    result = engine.generate(small(negative_prompt="blurry", seed=123, width=96, guidance_scale=7))
    text = read_png_parameters(encode_png(result.images[0], result.parameters))
    assert text == result.parameters
    assert text.startswith("a red fox\nNegative prompt: blurry\n")
    for part in ("Steps: 3", "Sampler: Euler a", "CFG scale: 7,", "Seed: 123", "Size: 96x64", "Model: tiny"):
        assert part in text


def test_format_parameters_follows_automatic1111() -> None:
    common = {"steps": 20, "sampler": "DDIM", "guidance_scale": 7.5, "seed": 1, "width": 512, "height": 768}
    text = format_parameters(prompt="cat", negative_prompt="", model="tiny", strength=0.75, **common)
    assert text == (
        "cat\nSteps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 1, Size: 512x768, Model: tiny, Denoising strength: 0.75"
    )


def test_read_png_parameters_accepts_files_and_is_none_without_them() -> None:
    image = Image.new("RGB", (8, 8))
    assert read_png_parameters(BytesIO(encode_png(image, "a cat"))) == "a cat"
    plain = BytesIO()
    image.save(plain, format="PNG")
    assert read_png_parameters(plain.getvalue()) is None


def test_cancelling_from_on_step_stops_the_run(engine: Engine) -> None:
    steps: list[int] = []

    def on_step(step: int, total: int, preview: Image.Image | None) -> None:
        steps.append(step)
        if step == 2:
            raise GenerationCancelled()

    with pytest.raises(GenerationCancelled):
        engine.generate(small(steps=6), on_step=on_step)
    assert steps == [1, 2]
    # The interrupt flag must not leak into the next job.
    assert len(count_steps(engine, small(steps=6))) == 6


def test_jobs_from_any_thread_sample_on_one_torch_thread_and_report_on_the_callers(engine: Engine) -> None:
    """torch runs on one thread per process (OpenMP slows down with a team per calling thread),
    while on_step runs on the caller's thread, whose database connections it uses."""
    from concurrent.futures import ThreadPoolExecutor

    sampled_on: set[str] = set()
    reported: list[tuple[str, str]] = []
    hook = engine.pipeline.unet.register_forward_pre_hook(
        lambda module, args: sampled_on.add(threading.current_thread().name)
    )

    def job() -> None:
        caller = threading.current_thread().name
        engine.generate(small(steps=2), on_step=lambda *_: reported.append((caller, threading.current_thread().name)))

    try:
        job()
        with ThreadPoolExecutor(1, thread_name_prefix="celery-pool") as pool:
            pool.submit(job).result()
    finally:
        hook.remove()
    assert sampled_on == {"torch_0"}
    assert reported == [("MainThread", "MainThread")] * 2 + [("celery-pool_0", "celery-pool_0")] * 2


def test_previews_are_small_rgb_images_on_the_requested_steps(engine: Engine, monkeypatch) -> None:
    # Not paced by time here (see test_batching's pacing test): every requested step gets one.
    monkeypatch.setattr(PreviewPacer, "MIN_SECONDS", 0)
    previews: list[Image.Image | None] = []
    engine.generate(small(steps=4, width=128), on_step=lambda s, t, p: previews.append(p), preview_every=2)
    assert previews[0] is None and previews[2] is None
    for preview in previews[1::2]:
        assert preview.mode == "RGB" and max(preview.size) <= 128


def test_tiny_model_is_built_once_in_place(engine: Engine, cache_dir: Path) -> None:
    engine.load()
    assert ensure_tiny_model(cache_dir) == cache_dir / "tiny-v1"
    # No half-built staging folder is left behind.
    assert [path.name for path in cache_dir.iterdir()] == ["tiny-v1"]


def test_img2img_pipeline_shares_the_weights(engine: Engine) -> None:
    img2img, base = engine.img2img_pipeline, engine.pipeline
    assert img2img is engine.img2img_pipeline
    assert img2img.unet is base.unet and img2img.vae is base.vae and img2img.text_encoder is base.text_encoder
    assert engine.inpaint_pipeline.unet is base.unet


@pytest.mark.parametrize(("strength", "expected"), [(0.1, 1), (0.5, 5), (1.0, 10), (0.0, 1)])
def test_img2img_runs_effective_steps(engine: Engine, init_image: Image.Image, strength: float, expected: int) -> None:
    assert effective_steps(10, strength) == expected
    request = small(steps=10, init_image=init_image, strength=strength)
    assert count_steps(engine, request) == [(step, expected) for step in range(1, expected + 1)]


def test_effective_steps() -> None:
    assert effective_steps(50, 0.75) == 37
    assert effective_steps(20, None) == 20


def test_img2img_output_has_the_init_image_size(engine: Engine) -> None:
    init = Image.new("RGB", (96, 64), "teal")
    result = engine.generate(small(init_image=init, strength=0.5, width=512, height=512))
    assert result.images[0].size == (96, 64)
    assert "Size: 96x64" in result.parameters and "Denoising strength: 0.5" in result.parameters


def test_img2img_strength_controls_how_far_the_result_moves(engine: Engine, init_image: Image.Image) -> None:
    # An untrained VAE's round trip is not the identity, so measure from the init image's round
    # trip: where a strength of 0 would end.
    pipe = engine.pipeline
    with torch.inference_mode():
        round_trip = pipe.image_processor.postprocess(pipe.vae.decode(vae_latents(engine, init_image)).sample)[0]
    reference = vae_latents(engine, round_trip)
    distances = []
    for strength in (0.1, 0.5, 0.9):
        result = engine.generate(small(steps=10, init_image=init_image, strength=strength))
        distances.append((vae_latents(engine, result.images[0]) - reference).abs().mean().item())
    assert distances == sorted(distances)


def test_get_engine_loads_once_per_settings(cache_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = model_load_count()
    with caplog.at_level(logging.INFO, logger="imagegen.engine"):
        first = get_engine("tiny", device="cpu", cache_dir=cache_dir)
        assert get_engine("tiny", device="cpu", cache_dir=cache_dir) is first
    assert model_load_count() == before + 1
    loads = [r.getMessage() for r in caplog.records if r.name == "imagegen.engine"]
    assert loads == ["Loading model tiny on cpu (float32)"]
    assert (first.model_name, first.is_tiny, first.device, first.dtype) == ("tiny", True, "cpu", torch.float32)


def test_missing_model_folder_raises_model_load_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelLoadError) as error:
        Engine(missing, cache_dir=tmp_path).load()
    assert repr(missing) in str(error.value) and "IMAGEGEN_MODEL" in str(error.value)


def test_random_seed_is_a_32_bit_integer() -> None:
    seeds = {random_seed() for _ in range(20)}
    assert len(seeds) > 1 and all(0 <= seed < 2**32 for seed in seeds)


def square_mask(size: int, inner: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, inner)
    return mask


def test_inpainting_runs_effective_steps_and_keeps_the_size(engine: Engine, init_image: Image.Image) -> None:
    request = small(steps=10, init_image=init_image, strength=0.5, mask_image=square_mask(64, (16, 16, 48, 48)))
    assert count_steps(engine, request) == [(step, 5) for step in range(1, 6)]
    assert engine.generate(request).images[0].size == (64, 64)
    with pytest.raises(ValueError, match="mask of the same size"):
        small(init_image=init_image, strength=0.5, mask_image=square_mask(32, (0, 0, 8, 8)))


def test_an_inpainting_checkpoint_is_used_when_one_is_set(cache_dir: Path, init_image: Image.Image) -> None:
    checkpoint = ensure_tiny_model(cache_dir, inpainting=True)
    engine = Engine("tiny", cache_dir=cache_dir, inpaint_model=str(checkpoint))
    assert engine.inpaint_pipeline.unet.config.in_channels == 9  # the mask and masked image go in too
    assert engine.inpaint_pipeline.unet is not engine.pipeline.unet
    request = small(steps=4, init_image=init_image, strength=1.0, mask_image=square_mask(64, (8, 8, 40, 40)))
    result = engine.generate(request)
    assert result.model == "tiny-inpainting-v1" and "Model: tiny-inpainting-v1" in result.parameters
    assert engine.generate(small(steps=2)).model == "tiny"  # the other jobs keep the model's own pipeline


def reference_image() -> Image.Image:
    ramp = np.linspace(0, 255, 96, dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(ramp, (80, 1))] * 3, -1))


@pytest.mark.parametrize("inpaint", [False, True])
def test_reference_attention_weight_zero_changes_nothing_and_more_changes_the_result(
    engine: Engine, init_image: Image.Image, inpaint: bool
) -> None:
    mask = {"mask_image": square_mask(64, (8, 8, 56, 56))} if inpaint else {}
    request = small(steps=8, init_image=init_image, strength=0.7, **mask)
    plain = pixels(engine, request)
    with_reference = dataclasses.replace(request, reference_image=reference_image())
    assert np.array_equal(pixels(engine, dataclasses.replace(with_reference, reference_weight=0.0)), plain)
    assert not np.array_equal(pixels(engine, dataclasses.replace(with_reference, reference_weight=0.8)), plain)


def test_a_reference_leaves_nothing_behind_for_the_next_job(engine: Engine, init_image: Image.Image) -> None:
    unet = engine.pipeline.unet
    processors_before = {name: type(processor) for name, processor in unet.attn_processors.items()}
    before = pixels(engine, small(steps=4, seed=9))
    pixels(engine, small(steps=4, init_image=init_image, strength=0.6, reference_image=reference_image()))
    assert pixels(engine, small(steps=4, seed=9)).tolist() == before.tolist()
    assert {name: type(processor) for name, processor in unet.attn_processors.items()} == processors_before
    assert "forward" not in unet.__dict__  # the class's own forward, no wrapper left


def test_a_reference_run_that_fails_still_takes_its_hooks_away(engine: Engine, init_image: Image.Image) -> None:
    def stop(step: int, total: int, preview) -> None:
        raise GenerationCancelled()

    request = small(steps=4, init_image=init_image, strength=0.6, reference_image=reference_image())
    with pytest.raises(GenerationCancelled):
        engine.generate(request, on_step=stop)
    assert "forward" not in engine.pipeline.unet.__dict__
    assert not any("Reference" in type(p).__name__ for p in engine.pipeline.unet.attn_processors.values())
