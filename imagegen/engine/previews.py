"""Turn Stable Diffusion latents into a small approximate RGB preview without running the VAE."""

import time
from collections.abc import Callable

import torch
from PIL import Image

from .requests import PROGRESS_PUSH_SECONDS

# Linear map from the 4 SD latent channels to RGB (AUTOMATIC1111's "Approx cheap" preview):
# far cheaper than a VAE decode and close enough to show how an image is shaping up.
LATENT_RGB_FACTORS = torch.tensor(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ]
)

# SDXL's VAE places colours otherwise in its latents (ComfyUI's factors for it).
SDXL_LATENT_RGB_FACTORS = torch.tensor(
    [
        [0.3651, 0.4232, 0.4341],
        [-0.2533, -0.0042, 0.1068],
        [0.1076, 0.1111, -0.0362],
        [-0.3165, -0.2492, -0.2188],
    ]
)

PREVIEW_MAX_SIDE = 128


def latents_to_preview(
    latents: torch.Tensor, *, index: int = 0, factors: torch.Tensor = LATENT_RGB_FACTORS
) -> Image.Image:
    """Return an RGB preview, at most PREVIEW_MAX_SIDE px on the long side, of one latent in a batch
    (`factors`: the model family's map from latent channels to RGB).

    Computed where the latents are (the GPU) down to the bytes of the small picture, so only those
    cross to the CPU: copying the whole latent first and converting it there made each preview
    wait for more than it needs.
    """
    latent = latents[index].float()
    rgb = torch.einsum("chw,cr->rhw", latent, factors.to(latent.device))
    scale = PREVIEW_MAX_SIDE / max(rgb.shape[1:])
    if scale < 1:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[2] * scale)))
        rgb = torch.nn.functional.interpolate(rgb[None], size=size, mode="area")[0]
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(pixels)


def job_preview(
    latents: torch.Tensor, *, start: int, count: int, factors: torch.Tensor = LATENT_RGB_FACTORS
) -> Image.Image:
    """The preview of a job's `count` images, from `start` in the batch: one image's alone, several
    two to a row, as the run's card lays out its images."""
    if count == 1:
        return latents_to_preview(latents, index=start, factors=factors)
    tiles = [latents_to_preview(latents, index=start + place, factors=factors) for place in range(count)]
    width, height = tiles[0].size
    grid = Image.new("RGB", (width * 2, height * ((count + 1) // 2)))
    for place, tile in enumerate(tiles):
        grid.paste(tile, ((place % 2) * width, (place // 2) * height))
    return grid


class PreviewPacer:
    """Says at which steps to make a preview: every `every` steps, and no more often than the
    progress pushes that carry them (PROGRESS_PUSH_SECONDS), since a preview made in between
    would be replaced before anyone saw it; on a fast GPU that is most of them."""

    MIN_SECONDS = PROGRESS_PUSH_SECONDS

    def __init__(self, every: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.last = float("-inf")

    def due(self, step: int) -> bool:
        if not self.every or step % self.every:
            return False
        now = self.clock()
        if now - self.last < self.MIN_SECONDS:
            return False
        self.last = now
        return True
