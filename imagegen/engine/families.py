"""What the model families (SD 1.x, SD 2.x, SDXL) differ in, read off a loaded pipeline's own
config, so no code path needs to be told which family a model is."""

import torch
from diffusers import DiffusionPipeline

from .previews import LATENT_RGB_FACTORS, SDXL_LATENT_RGB_FACTORS


def working_side(pipe: DiffusionPipeline) -> int:
    """The short side, in pixels, the model was trained at and works best at: 512 for SD 1.x, 768
    for SD 2.x's 768-px models, 1024 for SDXL (its UNet's sample size, in latents)."""
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def is_sdxl(pipe: DiffusionPipeline) -> bool:
    """Whether the model is SDXL-shaped: its UNet is also conditioned on a pooled text embedding
    and the image's sizes (what the SDXL pipelines give it)."""
    return pipe.unet.config.addition_embed_type == "text_time"


def latent_rgb_factors(pipe: DiffusionPipeline) -> torch.Tensor:
    """The map from the model's latent channels to RGB that previews use (see previews)."""
    return SDXL_LATENT_RGB_FACTORS if is_sdxl(pipe) else LATENT_RGB_FACTORS
