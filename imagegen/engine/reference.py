"""Reference-only attention: condition a generation on a reference image without extra weights.

At every sampler step the reference image, noised to the same timestep, first runs through the
UNet ("write": each self-attention layer keeps its input), then the job's own latents run ("read":
each self-attention layer also attends to the reference's features, and the result moves from
its own attention towards that one by `weight`). This is what A1's ControlNet "reference_only"
and diffusers' community reference pipeline do; here it is an attention processor installed on
the UNet for one pipeline call and removed after it, so it works with the text-to-image,
image-to-image and inpainting pipelines and any SD 1.x, 2.x or SDXL weights, and nothing of it is left
for the next job.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from diffusers import DiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0, FusedAttnProcessor2_0
from PIL import Image

from .families import working_side

# How much the job's self-attention moves towards attending to the reference (0: not at all).
DEFAULT_REFERENCE_WEIGHT = 0.5


@dataclass
class ReferenceState:
    weight: float
    writing: bool = False


@dataclass
class ReferenceAttention:
    """The processor of one self-attention layer while a reference is installed."""

    original: object  # the layer's own processor, which does the actual attention
    state: ReferenceState
    bank: list = field(default_factory=list)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        own = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if self.state.writing:
            self.bank.append(hidden_states)
            return own
        if not self.bank:
            return own
        reference = self.bank.pop()
        if self.state.weight == 0:
            return own
        both = torch.cat([hidden_states, reference], dim=1)
        with_reference = self.original(attn, hidden_states, both, attention_mask, temb, **kwargs)
        return own + self.state.weight * (with_reference - own)


def unfused_processor(processor: object) -> object:
    """A processor that attends to other keys than the layer's own input: a fused one (compiled
    mode fuses the query, key and value projections) projects keys from its input only, so the
    layer's separate projections, which fusing keeps, do it instead."""
    return AttnProcessor2_0() if isinstance(processor, FusedAttnProcessor2_0) else processor


def reference_size(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """The size the reference is encoded at: a short side of `short_side` (the model's working side),
    or less, since it is never enlarged, on the 8-px grid."""
    width, height = size
    scale = min(1.0, short_side / min(width, height))
    return max(64, int(width * scale) // 8 * 8), max(64, int(height * scale) // 8 * 8)


def encode_reference(pipe: DiffusionPipeline, reference: Image.Image) -> torch.Tensor:
    """The reference's latents (as the pipelines scale them), deterministic: the posterior's mode."""
    width, height = reference_size(reference.size, working_side(pipe))
    pixels = pipe.image_processor.preprocess(reference.convert("RGB"), height=height, width=width)
    pixels = pixels.to(device=pipe.vae.device, dtype=pipe.vae.dtype)
    return pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor


@contextmanager
def reference_attention(
    pipe: DiffusionPipeline, reference: Image.Image, *, weight: float = DEFAULT_REFERENCE_WEIGHT, seed: int = 0
) -> Iterator[None]:
    """Within the block, every call of pipe's UNet is conditioned on `reference` as described above."""
    unet = pipe.unet
    latents = encode_reference(pipe, reference)
    # The reference's noise comes from a generator of its own: the job's own draws stay the same.
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    noise = torch.randn(latents.shape, generator=generator).to(device=latents.device, dtype=latents.dtype)
    state = ReferenceState(weight=weight)
    originals = unet.attn_processors
    unet.set_attn_processor(
        {
            name: ReferenceAttention(unfused_processor(processor), state)
            if name.endswith("attn1.processor")
            else processor
            for name, processor in originals.items()
        }
    )
    own_forward = unet.forward
    replaced = unet.__dict__.get("forward")  # a forward set on the instance (a compiled one), if any

    def forward(sample, timestep, *args, **kwargs):
        timesteps = timestep.reshape(1) if torch.is_tensor(timestep) else torch.tensor([timestep])
        noisy = pipe.scheduler.add_noise(latents, noise, timesteps.to(latents.device))
        reference_input = pipe.scheduler.scale_model_input(noisy, timestep).repeat(sample.shape[0], 1, 1, 1)
        if sample.shape[1] > reference_input.shape[1]:
            # An inpainting UNet also takes a mask and the masked image: show it the whole reference.
            mask = torch.zeros_like(reference_input[:, :1])
            reference_input = torch.cat([reference_input, mask, latents.repeat(sample.shape[0], 1, 1, 1)], dim=1)
        state.writing = True
        try:
            own_forward(reference_input, timestep, *args, **kwargs)
        finally:
            state.writing = False
        return own_forward(sample, timestep, *args, **kwargs)

    unet.forward = forward
    try:
        yield
    finally:
        if replaced is None:
            del unet.forward  # the class's own forward again
        else:
            unet.forward = replaced
        unet.set_attn_processor(originals)
