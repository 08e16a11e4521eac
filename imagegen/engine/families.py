"""What the model families (SD 1.x, SD 2.x, SDXL) differ in, read off a loaded pipeline's own
config, so no code path needs to be told which family a model is."""

import torch
from diffusers import DiffusionPipeline

from . import catalog
from .previews import LATENT_RGB_FACTORS, SDXL_LATENT_RGB_FACTORS


def working_side(pipe: DiffusionPipeline) -> int:
    """The short side, in pixels, the loaded model works best at (see catalog.working_side)."""
    return catalog.working_side(pipe.unet.config, pipe.vae.config)


def is_sdxl(pipe: DiffusionPipeline) -> bool:
    """Whether the model is SDXL-shaped: its UNet is also conditioned on a pooled text embedding
    and the image's sizes (what the SDXL pipelines give it)."""
    return pipe.unet.config.addition_embed_type == "text_time"


def latent_rgb_factors(pipe: DiffusionPipeline) -> torch.Tensor:
    """The map from the model's latent channels to RGB that previews use (see previews)."""
    return SDXL_LATENT_RGB_FACTORS if is_sdxl(pipe) else LATENT_RGB_FACTORS
