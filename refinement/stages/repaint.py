"""The one step the diffusion modes share: repaint the whole image (image to image), or only a
rectangle, A1's "inpaint only masked": crop around it, repaint the crop at the model's working size
(its own short side: 512 for SD 1.5, 1024 for SDXL), composite it back onto the original pixels, so
only pixels within FEATHER of it can change."""

from dataclasses import replace

from PIL import Image

from imagegen.engine import GenerationRequest

from ..editing import FEATHER, PADDING, Rect, composite, fit_to_size, plan_crop, working_crop, working_mask
from .base import StepCallback

# What A1 prints for a rectangle's edit, so the PNG's parameters read the same there.
MASKED_PARAMETERS = {"Mask blur": FEATHER, "Inpaint area": "Only masked", "Masked area padding": PADDING}


def repaint(
    engine,
    image: Image.Image,
    request: GenerationRequest,
    rect: Rect | None = None,
    *,
    on_step: StepCallback | None = None,
    preview_every: int = 0,
) -> tuple[Image.Image, object]:
    """`image` repainted as `request` asks (its prompt, steps, strength, seed…): all of it, or only
    `rect`. The request's init (and mask) image are set here. Returns the new image, at the size of
    `image`, and the engine's result."""
    if rect is None:
        result = engine.generate(replace(request, init_image=image), on_step=on_step, preview_every=preview_every)
        return fit_to_size(result.images[0], image.size), result
    plan = plan_crop(rect, image.size, short_side=engine.working_side)
    crop_request = replace(request, init_image=working_crop(image, plan), mask_image=working_mask(plan, rect))
    result = engine.generate(crop_request, on_step=on_step, preview_every=preview_every)
    return composite(image, result.images[0], plan, rect), result
