"""The refinement stages on the engine alone (no Django), with the tiny CPU model."""

import numpy as np
import pytest
from PIL import Image

from refinement.stages import STAGES, Plan, StageInput
from refinement.tests.pixels import reach


@pytest.fixture(scope="module")
def parent() -> Image.Image:
    """A 96×64 picture (not square, not 512: the output must keep exactly this size)."""
    ramp = np.linspace(0, 255, 96, dtype=np.uint8)
    pixels = np.stack([np.tile(ramp, (64, 1)), np.full((64, 96), 90, np.uint8), np.tile(ramp[::-1], (64, 1))], -1)
    return Image.fromarray(pixels)


def refine(engine, parent, creativity: int, seed: int = 7, steps: list | None = None):
    given = StageInput(
        parent=parent,
        payload={"prompt": "the same scene, warmer light", "negative_prompt": "blurry"},
        creativity=creativity,
        seed=seed,
        on_step=(lambda step, total, preview: steps.append((step, total))) if steps is not None else None,
    )
    return STAGES["general"].run(engine, given)


@pytest.mark.parametrize(("creativity", "strength", "total"), [(1, 0.30, 9), (2, 0.50, 15), (3, 0.75, 22)])
def test_general_samples_int_30_times_strength_and_keeps_the_parent_size(engine, parent, creativity, strength, total):
    plan = STAGES["general"].plan(payload={"prompt": "x"}, creativity=creativity)
    assert plan == Plan(strength=strength, total_steps=total)  # int(30 × strength)
    steps: list[tuple[int, int]] = []
    output = refine(engine, parent, creativity, steps=steps)
    assert steps == [(step, total) for step in range(1, total + 1)]  # each sampled step reported once
    assert output.image.size == parent.size == (96, 64)
    assert output.parameters.startswith("the same scene, warmer light\nNegative prompt: blurry\n")
    settings = "Steps: 30, Sampler: Euler a, CFG scale: 7.5, Seed: 7, Size: 96x64, Model: tiny"
    assert output.parameters.endswith(f"{settings}, Denoising strength: {strength:g}")


def test_more_creativity_moves_further_from_the_parent_and_the_seed_repeats(engine, parent):
    original = np.asarray(parent, dtype=float)
    distance = {
        creativity: np.abs(np.asarray(refine(engine, parent, creativity).image, dtype=float) - original).mean()
        for creativity in (1, 2, 3)
    }
    assert distance[1] < distance[2] < distance[3], distance
    again = refine(engine, parent, 2)
    assert np.array_equal(np.asarray(again.image), np.asarray(refine(engine, parent, 2).image))
    assert not np.array_equal(np.asarray(again.image), np.asarray(refine(engine, parent, 2, seed=8).image))


def noise_image(size: tuple[int, int], seed: int) -> Image.Image:
    width, height = size
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def inside(size: tuple[int, int], bbox) -> np.ndarray:
    x, y, w, h = bbox
    mask = np.zeros(size[::-1], bool)
    mask[y : y + h, x : x + w] = True
    return mask


def regional(engine, parent, masks, *, creativity=1, seed=3, steps=None):
    given = StageInput(
        parent=parent,
        payload={"masks": masks},
        creativity=creativity,
        seed=seed,
        on_step=(lambda step, total, preview: steps.append((step, total))) if steps is not None else None,
    )
    return STAGES["region"].run(engine, given)


@pytest.mark.parametrize(("creativity", "per_rectangle"), [(1, 15), (2, 22), (3, 27)])
def test_regional_counts_steps_across_its_rectangles(engine, creativity, per_rectangle):
    masks = [{"bbox": [8, 8, 40, 30], "prompt": "a door"}, {"bbox": [120, 60, 50, 50], "prompt": "a cat"}]
    assert STAGES["region"].plan(payload={"masks": masks}, creativity=creativity).total_steps == 2 * per_rectangle
    steps: list[tuple[int, int]] = []
    output = regional(engine, noise_image((192, 128), seed=creativity), masks, creativity=creativity, steps=steps)
    total = 2 * per_rectangle  # int(30 × 0.50 / 0.75 / 0.90) for each of the two
    assert steps == [(step, total) for step in range(1, total + 1)]
    assert output.image.size == (192, 128)
    assert "Inpaint area: Only masked, Masked area padding: 32" in output.parameters


def test_nothing_farther_than_16_px_from_the_rectangles_changes_after_one_edit_and_after_five(engine):
    rng = np.random.default_rng(11)
    size = (256, 192)
    parent = noise_image(size, seed=11)
    image, touched = parent, np.zeros(size[::-1], bool)
    for edit in range(5):
        masks = []
        for number in range(int(rng.integers(1, 4))):
            w, h = (int(value) for value in rng.integers(8, 90, 2))
            x, y = int(rng.integers(0, size[0] - w)), int(rng.integers(0, size[1] - h))
            masks.append({"bbox": [x, y, w, h], "prompt": f"edit {edit}, part {number}"})
        before = np.asarray(image)
        image = regional(engine, image, masks, seed=edit).image
        after = np.asarray(image)
        near = reach(size, [mask["bbox"] for mask in masks])
        assert np.array_equal(after[~near], before[~near]), f"edit {edit} changed pixels outside its rectangles"
        for mask in masks:
            assert (after[inside(size, mask["bbox"])] != before[inside(size, mask["bbox"])]).any()
        touched |= near
        # Over the whole chain: everything no edit reached is the parent's, bit for bit.
        assert np.array_equal(after[~touched], np.asarray(parent)[~touched])
    assert (~touched).mean() > 0.2  # the check covered a good part of the image


def subject(engine, parent, payload, reference=None, seed=4):
    return STAGES["subject"].run(
        engine, StageInput(parent=parent, payload=payload, creativity=2, seed=seed, reference=reference)
    )


def test_subject_repair_follows_the_reference_and_keeps_outside_its_box(engine):
    parent = noise_image((128, 96), seed=5)
    reference = Image.new("RGB", (80, 80), (250, 200, 20))
    plain = subject(engine, parent, {"instructions": "make the dog a terrier"})
    assert plain.image.size == parent.size and "Denoising strength: 0.55" in plain.parameters
    referenced = subject(engine, parent, {"instructions": "make the dog a terrier"}, reference)
    assert not np.array_equal(np.asarray(plain.image), np.asarray(referenced.image))  # the reference counts
    assert "Reference: reference-only 0.5" in referenced.parameters and "Reference" not in plain.parameters
    boxed = subject(engine, parent, {"instructions": "make the dog a terrier", "bbox": [20, 30, 40, 30]}, reference)
    near = reach(parent.size, [[20, 30, 40, 30]])
    assert np.array_equal(np.asarray(boxed.image)[~near], np.asarray(parent)[~near])
    assert (
        np.asarray(boxed.image)[inside(parent.size, [20, 30, 40, 30])]
        != np.asarray(parent)[inside(parent.size, [20, 30, 40, 30])]
    ).any()
    assert "Inpaint area: Only masked" in boxed.parameters


def misspelt_sign() -> tuple[Image.Image, list[dict]]:
    """A light sign with two misspelt lines, and the corrections a user would type."""
    from PIL import ImageDraw, ImageFont

    image = noise_image((640, 280), seed=9).point(lambda value: 200 + value // 10)  # light, slightly noisy
    draw = ImageDraw.Draw(image)
    fonts = "/usr/share/fonts/truetype/"
    draw.text(
        (30, 40),
        "GRAND OPENNING",
        font=ImageFont.truetype(fonts + "dejavu/DejaVuSans-Bold.ttf", 44),
        fill=(170, 20, 20),
    )
    draw.text(
        (40, 170),
        "Sumer Sale",
        font=ImageFont.truetype(fonts + "liberation/LiberationSerif-Regular.ttf", 36),
        fill=(20, 20, 60),
    )
    from refinement.ocr import detect_lines

    lines = detect_lines(image)
    assert [line.text for line in lines] == ["GRAND OPENNING", "Sumer Sale"]
    corrections = [
        {"bbox": list(lines[0].bbox), "text": "GRAND OPENING"},
        {"bbox": list(lines[1].bbox), "text": "Summer Sale"},
    ]
    return image, corrections


def text_repair(engine, image, corrections, creativity=1, steps=None, instructions=None):
    payload = {"corrections": corrections, **({"instructions": instructions} if instructions else {})}
    on_step = (lambda step, total, preview: steps.append((step, total))) if steps is not None else None
    return STAGES["text"].run(
        engine, StageInput(parent=image, payload=payload, creativity=creativity, seed=3, on_step=on_step)
    )


def test_text_repair_reads_right_without_any_model_and_changes_nothing_far_from_the_text():
    image, corrections = misspelt_sign()
    steps: list[tuple[int, int]] = []
    output = text_repair(None, image, corrections, steps=steps)  # creativity 1 needs no engine
    assert steps == [(1, 2), (2, 2)]
    assert [(c["read"], c["verified"], c["method"]) for c in output.report["checks"]] == [
        ("GRAND OPENING", True, "render"),
        ("Summer Sale", True, "render"),
    ]
    first = output.report["checks"][0]
    assert (first["font"], first["size"], first["was"]) == ("DejaVu Sans Bold", 44, "GRAND OPENNING")
    assert "Verified: 2/2" in output.parameters and "Model: none" in output.parameters
    # Beyond 32 px of each box and its new text, every pixel is the parent's.
    around = np.zeros((280, 640), bool)
    for check in output.report["checks"]:
        for x, y, w, h in (check["bbox"],):
            around[max(0, y - 32) : y + h + 32, max(0, x - 32) : x + w + 32 + 60] = True  # the new text may run right
    assert np.array_equal(np.asarray(output.image)[~around], np.asarray(image)[~around])


def test_text_repair_blends_with_a_model_and_keeps_the_drawn_text_when_that_reads_better(engine):
    image, corrections = misspelt_sign()
    steps: list[tuple[int, int]] = []
    output = text_repair(engine, image, corrections[:1], creativity=2, steps=steps, instructions="painted letters")
    assert steps == [(step, 5) for step in range(1, 6)]  # drawing, then int(30 × 0.15) blend steps
    (check,) = output.report["checks"]
    assert check["verified"] and check["read"] == "GRAND OPENING"
    assert check["method"] in ("render", "blend")  # the tiny model's blend is noise: the drawn text wins
    assert "Denoising strength: 0.15" in output.parameters and "painted letters" in output.parameters


def test_a_correction_that_cannot_fit_is_reported_not_verified():
    image, corrections = misspelt_sign()
    long = [{"bbox": corrections[1]["bbox"], "text": ("Summer Sale " * 16).strip()}]  # ~190 characters
    (check,) = text_repair(None, image, long).report["checks"]
    assert not check["verified"] and not check["exact"] and check["ned"] < 1
    assert check["reason"] == "the text does not fit in the image" and check["size"] == 8


def test_weighted_and_long_prompts_refine_like_plain_ones(engine, parent):
    # Regional refinement inpaints through the pipeline derived from the model's; general refinement
    # goes image to image. Both read A1's syntax and prompts past 77 tokens.
    prompt = "a lighthouse, " * 6 + "(warm light:1.3) [fog] BREAK oil painting"
    output = regional(engine, noise_image((96, 64), seed=1), [{"bbox": [8, 8, 40, 30], "prompt": prompt}])
    assert output.image.size == (96, 64) and output.parameters.startswith(prompt)
    given = StageInput(
        parent=parent,
        payload={"prompt": prompt, "negative_prompt": "(blurry:1.4)"},
        creativity=1,
        seed=2,
        on_step=None,
    )
    assert STAGES["general"].run(engine, given).image.size == parent.size
