"""IP-Adapter: condition a generation on a reference image through local IP-Adapter weights.

The weights (and their CLIP image encoder) are loaded once, through diffusers' `load_ip_adapter`,
and what loading produced is kept aside: the IP attention processors of the UNet's cross-attention
layers, the image projection (`unet.encoder_hid_proj`), the image encoder and its feature
extractor. For one pipeline call they are installed on that pipeline and its UNet, and afterwards
exactly what was there before is put back, so a job without a reference never goes through the
adapter. This works for the text-to-image pipeline and the img2img / inpainting pipelines derived
from it with `from_pipe` (they share the UNet but not the image encoder), and for an inpainting
checkpoint with SD's attention layout.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.models.attention_processor import (
    IPAdapterAttnProcessor,
    IPAdapterAttnProcessor2_0,
    IPAdapterXFormersAttnProcessor,
)

# How strongly the result follows the reference (IMAGEGEN_IP_ADAPTER_SCALE): 0 ignores it, 1 is
# the strength the adapter was trained at; 0.5–0.7 keeps the prompt in charge.
DEFAULT_IP_ADAPTER_SCALE = 0.6
# The h94/IP-Adapter layout: the image encoder in this folder beside the weights file.
IMAGE_ENCODER_FOLDER = "image_encoder"

_IP_PROCESSORS = (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0, IPAdapterXFormersAttnProcessor)
# The pipeline components that loading registers and a call needs.
_COMPONENTS = ("image_encoder", "feature_extractor")


@dataclass
class IPAdapter:
    """What loading an IP-Adapter produced, kept to be installed for one pipeline call at a time."""

    processors: dict[str, torch.nn.Module]  # the cross-attention layers' IP processors, by layer name
    image_projection: torch.nn.Module  # becomes unet.encoder_hid_proj
    image_encoder: torch.nn.Module
    feature_extractor: Any


@contextmanager
def _restored(pipe: DiffusionPipeline) -> Iterator[None]:
    """Within the block pipe and its UNet may change; after it (also after an error) they are as before."""
    unet = pipe.unet
    processors = unet.attn_processors
    projection = unet.encoder_hid_proj
    # load_ip_adapter sets this as an attribute of the config (its dict entry stays), and the
    # UNet's forward reads the attribute.
    hid_dim_type = unet.config.encoder_hid_dim_type
    components = {name: (getattr(pipe, name), pipe.config.get(name)) for name in _COMPONENTS if hasattr(pipe, name)}
    try:
        yield
    finally:
        unet.set_attn_processor(processors)
        unet.encoder_hid_proj = projection
        unet.config.encoder_hid_dim_type = hid_dim_type
        for name, (module, registered) in components.items():
            setattr(pipe, name, module)
            # setattr registers the module's class in the pipeline's config; put back what was there.
            if registered is not None:
                pipe.register_to_config(**{name: registered})


def load_ip_adapter(pipe: DiffusionPipeline, weights: str | Path) -> IPAdapter:
    """Load the IP-Adapter in the file `weights` (its image encoder in image_encoder/ beside it, as in
    the h94/IP-Adapter repository) through pipe, keep what loading produced and leave pipe as it was.

    Never downloads: a missing file raises OSError.
    """
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"no IP-Adapter weights file at {str(weights)!r}")
    with _restored(pipe):
        pipe.load_ip_adapter(
            str(weights.parent),
            subfolder="",
            weight_name=weights.name,
            image_encoder_folder=IMAGE_ENCODER_FOLDER,
            local_files_only=True,
        )
        unet = pipe.unet
        return IPAdapter(
            processors={name: p for name, p in unet.attn_processors.items() if isinstance(p, _IP_PROCESSORS)},
            image_projection=unet.encoder_hid_proj,
            image_encoder=pipe.image_encoder,
            feature_extractor=pipe.feature_extractor,
        )


@contextmanager
def ip_adapter_attention(pipe: DiffusionPipeline, adapter: IPAdapter, *, scale: float) -> Iterator[None]:
    """Within the block, pipe's calls are conditioned on the image they get as `ip_adapter_image`,
    through `adapter` at `scale`; afterwards pipe and its UNet are exactly as before."""
    with _restored(pipe):
        unet = pipe.unet
        current = unet.attn_processors
        missing = adapter.processors.keys() - current.keys()
        if missing:
            raise ValueError(f"The IP-Adapter does not fit this model's UNet (no layer {sorted(missing)[0]}).")
        # Only the cross-attention layers change; the others keep whatever processor they have now.
        unet.set_attn_processor({**current, **adapter.processors})
        unet.encoder_hid_proj = adapter.image_projection
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        pipe.register_modules(image_encoder=adapter.image_encoder, feature_extractor=adapter.feature_extractor)
        pipe.set_ip_adapter_scale(scale)
        yield
