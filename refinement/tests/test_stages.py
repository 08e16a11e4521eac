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
