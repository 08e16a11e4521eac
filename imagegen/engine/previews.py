"""Turn Stable Diffusion latents into a small approximate RGB preview without running the VAE."""

import torch
from PIL import Image

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

PREVIEW_MAX_SIDE = 128


def latents_to_preview(latents: torch.Tensor) -> Image.Image:
    """Return an RGB preview, at most PREVIEW_MAX_SIDE px on the long side, of the first latent in a batch."""
    rgb = torch.einsum("chw,cr->hwr", latents[0].float().cpu(), LATENT_RGB_FACTORS)
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(pixels)
    image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    return image
