"""Samplers and prompts in the engine: A1's weighting syntax, prompts past 77 tokens, clip skip, and
the samplers A1 users name, on the tiny CPU model."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagegen.engine import Engine, GenerationRequest, UnsupportedSettingError, encode_png, read_png_parameters
from imagegen.engine.prompts import EMPHASIS, PromptEncoder, parse_prompt
from imagegen.engine.tiny import ensure_tiny_model

# More than one 77-token window of the tiny model's tokenizer (one token a character).
LONG = "a lighthouse, " * 6 + "in the "  # 77 tokens: the pipeline alone keeps 75 of them


@pytest.fixture(scope="module")
def encoder(engine: Engine) -> PromptEncoder:
    pipe = engine.pipeline
    return PromptEncoder(pipe, clip_skip=1)


def small(**overrides: object) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red fox", "steps": 3, "width": 64, "height": 64, "seed": 4, **overrides})


def pixels(engine: Engine, request: GenerationRequest) -> np.ndarray:
    return np.asarray(engine.generate(request).images[0])


def todays_pixels(engine: Engine, request: GenerationRequest) -> np.ndarray:
    """The image the pipeline makes given the prompts as text (how the engine called it before it
    read A1's syntax), with the request's sampler as the engine sets it up."""
    engine.generate(request)  # leaves a fresh scheduler of the request's sampler on the pipeline
    pipe = engine.pipeline
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    output = pipe(
        prompt=[request.prompt],
        negative_prompt=[request.negative_prompt],
        num_inference_steps=request.steps,
        guidance_scale=request.guidance_scale,
        width=request.width,
        height=request.height,
        generator=[torch.Generator().manual_seed(request.seed)],
    )
    return np.asarray(output.images[0])


def mean_difference(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.abs(first.astype(int) - second).mean())


def square_mask(size: int) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


@pytest.mark.parametrize(
    ("prompt", "fragments"),
    [
        ("a red fox", [("a red fox", 1.0)]),
        ("a (red:1.5) fox", [("a ", 1.0), ("red", 1.5), (" fox", 1.0)]),
        ("(red)", [("red", EMPHASIS)]),
        ("((red))", [("red", EMPHASIS * EMPHASIS)]),
        ("[red]", [("red", 1 / EMPHASIS)]),
        ("(a [red] fox:1.5)", [("a ", 1.5), ("red", 1.5 / EMPHASIS), (" fox", 1.5)]),
        ("a (red fox", [("a ", 1.0), ("red fox", EMPHASIS)]),  # left open: to the end
        ("a red) fox: 2", [("a red) fox: 2", 1.0)]),  # stray closers and colons are text
        (r"\(red\) \[fox\] \\", [("(red) [fox] \\", 1.0)]),
        ("(red:.5) (fox:+1.25)", [("red", 0.5), (" ", 1.0), ("fox", 1.25)]),
        ("(red:1.2.3)", [("red:1.2.3", EMPHASIS)]),  # not a number: text, the brackets emphasise
        ("", [("", 1.0)]),
    ],
)
def test_prompts_parse_as_automatic1111_reads_them(prompt: str, fragments: list) -> None:
    (segment,) = parse_prompt(prompt)
    assert [text for text, _ in segment] == [text for text, _ in fragments]
    assert [weight for _, weight in segment] == pytest.approx([weight for _, weight in fragments])


def test_break_starts_a_new_chunk() -> None:
    assert parse_prompt("a red fox BREAK (blue:1.2) sky") == [[("a red fox", 1.0)], [("blue", 1.2), (" sky", 1.0)]]


def test_a_plain_prompt_makes_todays_image(engine: Engine) -> None:
    for request in (small(), small(negative_prompt="blurry", scheduler="dpmpp_2m_karras", seed=11)):
        assert np.array_equal(pixels(engine, request), todays_pixels(engine, request))


def test_weights_change_only_the_weighted_words_embeddings(encoder: PromptEncoder) -> None:
    plain = encoder.encode("a red fox")
    assert torch.equal(encoder.encode("a red (fox:1)"), plain)
    weighted = encoder.encode("a red (fox:1.3)")
    assert weighted.shape == plain.shape == (77, 32)
    changed = (weighted - plain).abs().amax(dim=1) > 1e-3
    # The start marker, then a, r, e, d, then f, o, x (one token a character in the tiny tokenizer).
    assert changed.nonzero().flatten().tolist() == [5, 6, 7]
    assert not torch.equal(encoder.encode("a red [fox]"), plain)


def test_weights_change_the_image(engine: Engine) -> None:
    plain = pixels(engine, small())
    assert np.array_equal(pixels(engine, small(prompt="a red (fox:1.0)")), plain)
    # The tiny model's random weights follow the prompt only faintly: a level on average is a lot.
    for weighted in ("a red (fox:3)", "a red [[fox]]", "(a red fox:1.5)"):
        assert mean_difference(pixels(engine, small(prompt=weighted)), plain) > 0.5, weighted


def test_a_prompt_past_77_tokens_is_chunked_not_cut(engine: Engine, encoder: PromptEncoder) -> None:
    tokenizer = engine.pipeline.tokenizer
    first, second = LONG + "green hills", LONG + "stormy night"
    assert len(tokenizer.tokenize(first)) > 77
    # The pipeline alone cuts at 77 tokens, where both prompts are still alike…
    with torch.inference_mode():
        assert torch.equal(
            engine.pipeline.encode_prompt(first, "cpu", 1, False)[0],
            engine.pipeline.encode_prompt(second, "cpu", 1, False)[0],
        )
    # …the engine encodes the rest in a second window, so the tail shows in the image.
    assert encoder.encode(first).shape == (2 * 77, 32)
    assert mean_difference(pixels(engine, small(prompt=first)), pixels(engine, small(prompt=second))) > 0.5
    assert encoder.encode("a red fox BREAK a blue sky").shape == (2 * 77, 32)


def test_a_batch_of_long_short_and_weighted_prompts_gives_each_job_its_own_images(engine: Engine) -> None:
    requests = [
        small(prompt=LONG + "(green:1.4) hills", negative_prompt="blurry", seed=1),
        small(prompt="a red fox", seed=2),
        small(prompt="[a blue whale]", negative_prompt=LONG + "BREAK ugly", seed=3, batch_size=2),
    ]
    batched = engine.generate_batch(requests)
    for request, result in zip(requests, batched, strict=True):
        for image, alone in zip(result.images, engine.generate(request).images, strict=True):
            assert np.abs(np.asarray(image, dtype=int) - np.asarray(alone)).max() <= 2


def test_weighted_long_prompts_work_in_image_to_image_and_inpainting(engine: Engine, cache_dir: Path) -> None:
    init = Image.fromarray(pixels(engine, small()))
    prompt = LONG + "(a red fox:1.3) BREAK [snow]"
    image_to_image = small(prompt=prompt, negative_prompt="(blurry:1.2)", init_image=init, strength=0.6, steps=4)
    assert engine.generate(image_to_image).images[0].size == (64, 64)
    inpainting = dataclasses.replace(image_to_image, mask_image=square_mask(64))
    assert engine.generate(inpainting).images[0].size == (64, 64)
    # An inpainting checkpoint reads the prompt with its own text encoder.
    checkpoint = Engine("tiny", cache_dir=cache_dir, inpaint_model=str(ensure_tiny_model(cache_dir, inpainting=True)))
    assert checkpoint.generate(inpainting).model == "tiny-inpainting-v1"


def test_clip_skip_reads_an_earlier_layer(engine: Engine) -> None:
    pipe = engine.pipeline
    skipping = PromptEncoder(pipe, clip_skip=2)
    tokens = pipe.tokenizer("a red fox", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.inference_mode():
        layers = pipe.text_encoder(tokens, output_hidden_states=True).hidden_states
        # A1's clip skip 2 is the penultimate layer, normalised: what diffusers calls clip_skip=1.
        assert torch.allclose(skipping.encode("a red fox"), pipe.text_encoder.final_layer_norm(layers[-2])[0])
    assert not np.array_equal(pixels(engine, small(clip_skip=2)), pixels(engine, small(clip_skip=1)))


def test_a_clip_skip_past_the_text_encoders_layers_is_refused_in_words(engine: Engine) -> None:
    with pytest.raises(UnsupportedSettingError, match="has 2 layers: choose a clip skip of at most 2"):
        engine.generate(small(clip_skip=3))
    with pytest.raises(ValueError, match="Clip skip must be between 1 and 12"):
        small(clip_skip=13)


def test_png_parameters_name_the_sampler_and_clip_skip(engine: Engine) -> None:
    result = engine.generate(small(scheduler="dpmpp_sde_karras", clip_skip=2))
    text = read_png_parameters(encode_png(result.images[0], result.parameters))
    assert "Sampler: DPM++ SDE Karras," in text and text.endswith(", Clip skip: 2")
    assert "Clip skip" not in engine.generate(small(scheduler="heun")).parameters  # A1 leaves out the default 1


@pytest.mark.parametrize("scheduler", ["heun", "dpmpp_sde_karras"])
def test_two_model_calls_a_step_still_report_each_step_once(engine: Engine, scheduler: str) -> None:
    steps: list[tuple[int, int]] = []
    engine.generate(
        small(scheduler=scheduler, steps=4), on_step=lambda step, total, preview: steps.append((step, total))
    )
    assert steps == [(step, 4) for step in range(1, 5)]
    init = Image.new("RGB", (64, 64), "teal")
    steps = []
    engine.generate(
        small(scheduler=scheduler, steps=6, init_image=init, strength=0.7),
        on_step=lambda step, total, preview: steps.append((step, total)),
    )
    assert steps == [(step, 4) for step in range(1, 5)]
