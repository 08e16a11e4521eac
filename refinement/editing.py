"""Image maths every refinement mode shares, free of Django: sizes, the "inpaint only masked" crop
around a rectangle, masks, and the feathered composite onto the ORIGINAL pixels.

The guarantee the masked modes give rests here: `composite` takes the parent's exact pixels
wherever `feather_alpha` is 0, which is everywhere farther than FEATHER pixels from the edited
rectangle, whatever the model made of the crop (the VAE round trip shifts colours, a model may
repaint the whole crop). Repeated edits cannot drift outside their rectangles.
"""

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Pixels of context around a rectangle that the model sees (A1's "Masked area padding").
PADDING = 32
# The new pixels fade into the parent's over at most this many pixels outside a rectangle.
FEATHER = 16
# A crop is worked at the short side the model works best at (Engine.working_side): 512 for SD
# 1.5-class models, the default here, 1024 for SDXL. The VAE works on 8×8 blocks.
SHORT_SIDE = 512
GRID = 8
MIN_WORKING_SIDE = 64
# A small rectangle is enlarged at most 4× (beyond that the model only invents blur), and no
# working side exceeds twice the short side (a long, thin strip would otherwise cost more than the image).
MAX_UPSCALE = 4.0
MAX_WORKING_RATIO = 2
MAX_WORKING_SIDE = MAX_WORKING_RATIO * SHORT_SIDE


@dataclass(frozen=True)
class Rect:
    """A rectangle in an image's own pixels: x, y of its top-left pixel, its width and height."""

    x: int
    y: int
    w: int
    h: int

    @classmethod
    def from_bbox(cls, bbox) -> "Rect":
        x, y, w, h = (int(value) for value in bbox)
        return cls(x, y, w, h)

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    def fits(self, size: tuple[int, int]) -> bool:
        """Whether it is non-empty and lies wholly inside an image of this size."""
        width, height = size
        inside = 0 <= self.x <= self.right <= width and 0 <= self.y <= self.bottom <= height
        return self.w > 0 and self.h > 0 and inside

    def scaled(self, factor_x: float, factor_y: float, *, offset: tuple[int, int] = (0, 0)) -> "Rect":
        """This rectangle in another frame: moved by -offset, then scaled (rounded outwards)."""
        left, top = (self.x - offset[0]) * factor_x, (self.y - offset[1]) * factor_y
        right, bottom = (self.right - offset[0]) * factor_x, (self.bottom - offset[1]) * factor_y
        x, y = math.floor(left), math.floor(top)
        return Rect(x, y, math.ceil(right) - x, math.ceil(bottom) - y)


@dataclass(frozen=True)
class CropPlan:
    """Where a rectangle is worked on: `box` (left, top, right, bottom) in the image, and the
    working size (multiples of 8) the box is resized to for the model."""

    box: tuple[int, int, int, int]
    working_size: tuple[int, int]

    @property
    def box_size(self) -> tuple[int, int]:
        left, top, right, bottom = self.box
        return right - left, bottom - top


def bbox_union(boxes) -> tuple[int, int, int, int]:
    """[x, y, w, h] around the given [x, y, w, h] boxes."""
    boxes = [tuple(int(value) for value in box) for box in boxes]
    left, top = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, bottom = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    return left, top, right - left, bottom - top


def fit_to_size(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The image at exactly `size`: a version always keeps its parent's size.

    The pipelines work in multiples of 8 pixels; stored images already are, so this only resizes
    when a model hands back another size.
    """
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def _on_grid(side: float) -> int:
    return max(MIN_WORKING_SIDE, round(side / GRID) * GRID)


def plan_crop(
    rect: Rect, image_size: tuple[int, int], *, padding: int = PADDING, short_side: int = SHORT_SIDE
) -> CropPlan:
    """The crop around `rect` (plus padding, inside the image), grown to the aspect ratio of its
    working size so that resizing it does not distort it, and that working size (its short side
    `short_side`, the model's, within the caps above)."""
    width, height = image_size
    left, top = max(0, rect.x - padding), max(0, rect.y - padding)
    right, bottom = min(width, rect.right + padding), min(height, rect.bottom + padding)
    box_width, box_height = right - left, bottom - top
    longest = MAX_WORKING_RATIO * short_side
    scale = min(short_side / min(box_width, box_height), MAX_UPSCALE, longest / max(box_width, box_height))
    working = (_on_grid(box_width * scale), _on_grid(box_height * scale))
    # Rounding to the grid changed the aspect ratio a little: grow the box to match it.
    aspect = working[0] / working[1]
    if box_width / box_height < aspect:
        left, right = _grow(left, right, round(box_height * aspect), width)
    else:
        top, bottom = _grow(top, bottom, round(box_width / aspect), height)
    return CropPlan(box=(left, top, right, bottom), working_size=working)


def _grow(start: int, end: int, wanted: int, limit: int) -> tuple[int, int]:
    """Widen [start, end) to `wanted` pixels around its middle, kept inside [0, limit)."""
    wanted = min(max(wanted, end - start), limit)
    start = max(0, min(start - (wanted - (end - start)) // 2, limit - wanted))
    return start, start + wanted


def rect_mask(size: tuple[int, int], rect: Rect, *, grow: int = 0) -> Image.Image:
    """A black image of `size` with `rect` (grown by `grow` pixels on each side) in white."""
    mask = Image.new("L", size, 0)
    left, top = max(0, rect.x - grow), max(0, rect.y - grow)
    right, bottom = min(size[0], rect.right + grow), min(size[1], rect.bottom + grow)
    if right > left and bottom > top:
        mask.paste(255, (left, top, right, bottom))
    return mask


def feather_alpha(size: tuple[int, int], rect: Rect, *, feather: int = FEATHER) -> np.ndarray:
    """How much of the new image each pixel takes: 1 inside `rect`, falling linearly with the
    distance from it to 0 at `feather` pixels, and exactly 0 from there on."""
    width, height = size
    columns, rows = np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    dx = np.maximum(np.maximum(rect.x - columns, columns - (rect.right - 1)), 0)
    dy = np.maximum(np.maximum(rect.y - rows, rows - (rect.bottom - 1)), 0)
    distance = np.hypot(dx[None, :], dy[:, None])
    return np.clip(1.0 - distance / feather, 0.0, 1.0).astype(np.float32)


def match_colours(new: np.ndarray, original: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """`new` shifted, channel by channel, so that its mean over `ring` (the band just outside the
    edited rectangle, where the model continued the picture) equals the original's there.

    It removes the colour cast a VAE round trip or a model leaves, so no seam shows where the
    fade meets the untouched pixels. Arrays are H×W×3 floats; `ring` is an H×W bool mask.
    """
    if not ring.any():
        return new
    shift = original[ring].mean(axis=0) - new[ring].mean(axis=0)
    return np.clip(new + shift, 0, 255)


def composite(
    original: Image.Image, new_crop: Image.Image, plan: CropPlan, rect: Rect, *, feather: int = FEATHER
) -> Image.Image:
    """The original with `new_crop` (the model's output for plan.box, at any size) blended in:
    fully new inside `rect`, a fade over `feather` pixels around it, the original's own pixels
    everywhere else (bit for bit)."""
    left, top, right, bottom = plan.box
    box_rect = Rect(rect.x - left, rect.y - top, rect.w, rect.h)
    base = np.asarray(original.convert("RGB"), dtype=np.uint8).copy()
    old = base[top:bottom, left:right].astype(np.float32)
    new = np.asarray(new_crop.convert("RGB").resize(plan.box_size, Image.Resampling.LANCZOS), dtype=np.float32)
    alpha = feather_alpha(plan.box_size, box_rect, feather=feather)
    new = match_colours(new, old, (alpha > 0) & (alpha < 1))
    blended = np.rint(old * (1 - alpha[..., None]) + new * alpha[..., None]).astype(np.uint8)
    # Where alpha is 0 the original stays as it was: not re-rounded, not re-computed.
    base[top:bottom, left:right] = np.where(alpha[..., None] > 0, blended, base[top:bottom, left:right])
    return Image.fromarray(base)


def working_crop(image: Image.Image, plan: CropPlan) -> Image.Image:
    """The crop the model works on, at its working size."""
    return image.crop(plan.box).resize(plan.working_size, Image.Resampling.LANCZOS)


def working_mask(plan: CropPlan, rect: Rect, *, feather: int = FEATHER) -> Image.Image:
    """The model's mask for the crop: the rectangle and its fade band, at the working size, so the
    model makes new pixels everywhere the composite will show them."""
    left, top, _, _ = plan.box
    box_width, box_height = plan.box_size
    factor_x, factor_y = plan.working_size[0] / box_width, plan.working_size[1] / box_height
    grown = Rect(rect.x - feather, rect.y - feather, rect.w + 2 * feather, rect.h + 2 * feather)
    return rect_mask(plan.working_size, grown.scaled(factor_x, factor_y, offset=(left, top)))
