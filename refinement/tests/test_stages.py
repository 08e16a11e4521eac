"""The refinement stages on the engine alone (no Django), with the tiny CPU model."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagegen.engine import Engine
from refinement.stages import STAGES, Plan, StageInput


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine("tiny", cache_dir=Path(tmp_path_factory.mktemp("models")))


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


def near(size: tuple[int, int], bboxes) -> np.ndarray:
    """The pixels an edit of these rectangles may change: within FEATHER of one of them."""
    from refinement.editing import Rect, feather_alpha

    reach = np.zeros(size[::-1], bool)
    for bbox in bboxes:
        reach |= feather_alpha(size, Rect.from_bbox(bbox)) > 0
    return reach


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
        reach = near(size, [mask["bbox"] for mask in masks])
        assert np.array_equal(after[~reach], before[~reach]), f"edit {edit} changed pixels outside its rectangles"
        for mask in masks:
            assert (after[inside(size, mask["bbox"])] != before[inside(size, mask["bbox"])]).any()
        touched |= reach
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
    reach = near(parent.size, [[20, 30, 40, 30]])
    assert np.array_equal(np.asarray(boxed.image)[~reach], np.asarray(parent)[~reach])
    assert (
        np.asarray(boxed.image)[inside(parent.size, [20, 30, 40, 30])]
        != np.asarray(parent)[inside(parent.size, [20, 30, 40, 30])]
    ).any()
    assert "Inpaint area: Only masked" in boxed.parameters
