""" "Inpaint only masked", the step both masked modes (regional, subject repair with a box) share:
crop around a rectangle, repaint the crop at the model's working size, composite it back onto the
original pixels. Only pixels within FEATHER of the rectangle can change."""

from dataclasses import replace

from PIL import Image

from imagegen.engine import GenerationRequest

from ..editing import FEATHER, PADDING, Rect, composite, plan_crop, working_crop, working_mask
from .base import StepCallback

# What A1 prints for such an edit, so the PNG's parameters read the same there.
MASKED_PARAMETERS = {"Mask blur": FEATHER, "Inpaint area": "Only masked", "Masked area padding": PADDING}


def repaint_rectangle(
    engine,
    image: Image.Image,
    rect: Rect,
    request: GenerationRequest,
    *,
    on_step: StepCallback | None = None,
    preview_every: int = 0,
) -> tuple[Image.Image, object]:
    """`image` with `rect` repainted as `request` asks (its prompt, steps, strength, seed…); the
    request's init and mask images are the crop's. Returns the new image and the engine's result."""
    plan = plan_crop(rect, image.size)
    crop_request = replace(request, init_image=working_crop(image, plan), mask_image=working_mask(plan, rect))
    result = engine.generate(crop_request, on_step=on_step, preview_every=preview_every)
    return composite(image, result.images[0], plan, rect), result
