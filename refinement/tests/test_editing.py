"""The crop, resize and composite maths of the masked modes (no model, no Django)."""

import numpy as np
import pytest
from PIL import Image

from refinement.editing import (
    FEATHER,
    MAX_UPSCALE,
    MAX_WORKING_SIDE,
    PADDING,
    Rect,
    composite,
    feather_alpha,
    plan_crop,
    working_crop,
    working_mask,
)


def random_image(size=(320, 200), seed=0) -> Image.Image:
    width, height = size
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def contains(box, rect: Rect) -> bool:
    left, top, right, bottom = box
    return left <= rect.x and top <= rect.y and rect.right <= right and rect.bottom <= bottom


@pytest.mark.parametrize(
    "rect",
    [
        Rect(100, 60, 80, 50),  # in the middle
        Rect(0, 0, 40, 30),  # top-left corner
        Rect(280, 170, 40, 30),  # bottom-right corner
        Rect(0, 90, 320, 20),  # a full-width strip
        Rect(150, 0, 5, 200),  # a thin full-height strip
        Rect(10, 10, 1, 1),  # one pixel
        Rect(0, 0, 320, 200),  # the whole image
    ],
)
def test_the_crop_holds_the_rectangle_and_its_padding_inside_the_image_at_the_working_aspect(rect):
    size = (320, 200)
    plan = plan_crop(rect, size)
    left, top, right, bottom = plan.box
    assert 0 <= left < right <= 320 and 0 <= top < bottom <= 200
    assert contains(plan.box, rect)
    # The padding is there wherever the image allows it.
    assert left <= max(0, rect.x - PADDING) and top <= max(0, rect.y - PADDING)
    assert right >= min(320, rect.right + PADDING) and bottom >= min(200, rect.bottom + PADDING)
    working_width, working_height = plan.working_size
    assert working_width % 8 == 0 and working_height % 8 == 0 and min(plan.working_size) >= 64
    assert max(plan.working_size) <= MAX_WORKING_SIDE
    # Grown to the working aspect ratio: resizing the crop distorts it by under a pixel.
    box_width, box_height = plan.box_size
    if box_width < 320 and box_height < 200:  # room to grow in both directions
        assert abs(box_width / box_height - working_width / working_height) * box_height < 1.0


def test_the_working_size_has_a_short_side_of_512_and_caps_enlargement():
    big = plan_crop(Rect(0, 0, 512, 512), (1024, 1024))  # a quarter of a 1024² image
    assert big.box == (0, 0, 544, 544) and big.working_size == (512, 512)  # 576 is cut by the image edge
    small = plan_crop(Rect(500, 500, 20, 20), (1024, 1024))  # 84 px with padding: at most 4×
    assert min(small.working_size) <= 84 * MAX_UPSCALE and min(small.working_size) == 336
    strip = plan_crop(Rect(0, 500, 1024, 10), (1024, 1024))  # long and thin: the long side is capped
    assert max(strip.working_size) == MAX_WORKING_SIDE


def test_the_fade_is_full_inside_linear_outside_and_zero_from_16_px_on():
    alpha = feather_alpha((100, 60), Rect(40, 20, 20, 10))
    assert (alpha[20:30, 40:60] == 1).all()
    row = alpha[25]  # through the middle of the rectangle, going right from its last column (59)
    assert [round(float(row[59 + distance]), 4) for distance in (0, 4, 8, 12, 16, 17)] == [1, 0.75, 0.5, 0.25, 0, 0]
    assert alpha[25, 40 - FEATHER] == 0 and alpha[25, 40 - FEATHER + 1] > 0
    # Diagonally the distance is Euclidean: 12 px right and 12 px down is about 17 px away.
    assert alpha[29 + 12, 59 + 12] == 0
    assert np.all((alpha == 0) | (alpha == 1) | ((alpha > 0) & (alpha < 1)))


def test_composite_keeps_every_pixel_beyond_the_fade_bit_for_bit():
    original = random_image()
    rect = Rect(100, 60, 80, 50)
    plan = plan_crop(rect, original.size)
    # Whatever the model hands back (here noise at the working size, unrelated to the original).
    new_crop = random_image(plan.working_size, seed=1)
    result = np.asarray(composite(original, new_crop, plan, rect))
    before = np.asarray(original)
    alpha = feather_alpha(original.size, rect)
    assert np.array_equal(result[alpha == 0], before[alpha == 0])
    inside = np.zeros(alpha.shape, bool)
    inside[rect.y : rect.bottom, rect.x : rect.right] = True
    assert (result[inside] != before[inside]).any(axis=-1).mean() > 0.9


def test_the_model_sees_the_crop_at_its_working_size_and_a_mask_over_the_rectangle_and_its_fade():
    original = random_image((640, 480))
    rect = Rect(200, 150, 100, 80)
    plan = plan_crop(rect, original.size)
    crop = working_crop(original, plan)
    mask = np.asarray(working_mask(plan, rect)) > 127
    assert crop.size == plan.working_size == mask.shape[::-1]
    left, top, _, _ = plan.box
    scale_x = plan.working_size[0] / plan.box_size[0]
    scale_y = plan.working_size[1] / plan.box_size[1]
    # The rectangle grown by the fade, in working pixels, is masked; the padding's far edge is not.
    y0, y1 = int((rect.y - FEATHER - top) * scale_y) + 1, int((rect.bottom + FEATHER - top) * scale_y) - 1
    x0, x1 = int((rect.x - FEATHER - left) * scale_x) + 1, int((rect.right + FEATHER - left) * scale_x) - 1
    assert mask[y0:y1, x0:x1].all()
    assert not mask[0].any() and not mask[:, 0].any() and not mask[-1].any() and not mask[:, -1].any()
