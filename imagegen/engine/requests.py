"""What a caller asks the engine for: the request, the sampler names and the step arithmetic.

Kept free of torch and diffusers, so the web process can validate and describe requests
without loading them.
"""

import secrets
from dataclasses import dataclass

from PIL import Image

from .addons import PromptLora, split_loras

DEFAULT_SCHEDULER = "euler_a"
# How often a job's progress (and the preview it carries) is pushed to its watchers at most:
# progress.PUSH_INTERVAL is this, and the engine makes previews no more often (PreviewPacer).
PROGRESS_PUSH_SECONDS = 0.1
# Our sampler keys, with the labels AUTOMATIC1111 gives them (and prints in its parameters).
# Keys are stored on runs: keep every one that ever existed.
SAMPLER_LABELS: dict[str, str] = {
    "euler_a": "Euler a",
    "euler": "Euler",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "dpmpp_sde_karras": "DPM++ SDE Karras",
    "ddim": "DDIM",
    "unipc": "UniPC",
    "heun": "Heun",
    "lms": "LMS",
    "lcm": "LCM",
    "pndm": "PNDM",
}
# Clip skip as AUTOMATIC1111 counts it: the prompt is read from the text encoder's last layer (1;
# SDXL's own is the penultimate), the one before it (2), and so on; its slider stops at 12, the
# layers SD 1.x's encoder has.
DEFAULT_CLIP_SKIP = 1
MAX_CLIP_SKIP = 12
# The VAE works on 8×8 pixel blocks: the pipelines round every side down to a multiple of this.
SIDE_MULTIPLE = 8
# What the hires fix upscales with, as A1's parameters name it: a pixel-space resize, no weights.
HIRES_UPSCALER = "Lanczos"


@dataclass(frozen=True)
class HiresFix:
    """A second pass for pictures larger than the model's own size (A1's "hires fix"): the image
    made at the request's size is upscaled by `scale` in pixel space and redrawn by image to image
    at `strength`, for `steps` steps of which it runs effective_steps(steps, strength)."""

    scale: float
    strength: float
    steps: int

    def __post_init__(self) -> None:
        if self.scale <= 1.0:
            raise ValueError("The hires fix upscales: its scale must be more than 1.")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError("The hires fix needs a strength between 0.0 and 1.0.")
        if self.steps < 1:
            raise ValueError("The hires fix needs at least one step.")

    @property
    def sampler_steps(self) -> int:
        return effective_steps(self.steps, self.strength)


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The size a hires fix ends at: each side times scale, to the nearest multiple of SIDE_MULTIPLE."""
    return _nearest_multiple(width * scale), _nearest_multiple(height * scale)


def hires_first_pass_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The first pass's size of a hires fix that ended at width × height (hires_size undone).

    Exact for first-pass sides that are multiples of SIDE_MULTIPLE: rounding moved each final side
    by at most half a multiple, which divided by a scale above 1 is less than half a multiple.
    """
    return _nearest_multiple(width / scale), _nearest_multiple(height / scale)


def _nearest_multiple(side: float) -> int:
    return max(SIDE_MULTIPLE, round(side / SIDE_MULTIPLE) * SIDE_MULTIPLE)


@dataclass(frozen=True)
class GenerationRequest:
    """One generation job; an init_image makes it image-to-image at the init image's size.

    Sizes should be multiples of 8: the pipelines round anything else down.
    """

    prompt: str
    negative_prompt: str = ""
    steps: int = 20
    guidance_scale: float = 7.5
    width: int = 512
    height: int = 512
    seed: int = 0
    scheduler: str = DEFAULT_SCHEDULER
    clip_skip: int = DEFAULT_CLIP_SKIP
    batch_size: int = 1
    init_image: Image.Image | None = None
    strength: float | None = None
    # With an init image: repaint only where the mask is white (inpainting), at the init image's size.
    mask_image: Image.Image | None = None
    # Conditions the result on this image (reference-only attention, or an IP-Adapter when configured).
    reference_image: Image.Image | None = None
    # How strongly: 0 ignores the reference, 1 follows it as far as the method goes.
    reference_weight: float = 0.5
    # Text to image only: made at width × height, then upscaled and redrawn at hires_size.
    hires: HiresFix | None = None

    def __post_init__(self) -> None:
        split_loras(self.prompt)  # a LoRA weight that is not a number in range raises ValueError
        if self.scheduler not in SAMPLER_LABELS:
            raise ValueError(f"Unknown scheduler {self.scheduler!r}; choose one of {', '.join(SAMPLER_LABELS)}.")
        if not 1 <= self.clip_skip <= MAX_CLIP_SKIP:
            raise ValueError(f"Clip skip must be between 1 and {MAX_CLIP_SKIP}.")
        if self.init_image is not None and (self.strength is None or not 0.0 <= self.strength <= 1.0):
            raise ValueError("Image-to-image needs a strength between 0.0 and 1.0.")
        if self.mask_image is not None and (self.init_image is None or self.mask_image.size != self.init_image.size):
            raise ValueError("Inpainting needs an init image and a mask of the same size.")
        if not 0.0 <= self.reference_weight <= 1.0:
            raise ValueError("The reference weight must be between 0.0 and 1.0.")
        if self.hires is not None and self.init_image is not None:
            raise ValueError("The hires fix is for text to image.")

    @property
    def total_steps(self) -> int:
        """The sampler steps of the whole job: what its progress counts to."""
        strength = self.strength if self.init_image is not None else None
        return total_steps(steps=self.steps, strength=strength, hires=self.hires)

    @property
    def loras(self) -> tuple[PromptLora, ...]:
        """The LoRAs the prompt applies with <lora:name:weight> tags."""
        return split_loras(self.prompt)[1]

    @property
    def prompt_text(self) -> str:
        """What the text encoder reads: the prompt without its LoRA tags."""
        return split_loras(self.prompt)[0]


def total_steps(*, steps: int, strength: float | None = None, hires: HiresFix | None = None) -> int:
    """Return the sampler steps a job really runs: those of its own pass (img2img skips the noisiest
    ones) and those of its hires fix's second pass."""
    return effective_steps(steps, strength) + (hires.sampler_steps if hires else 0)


def effective_steps(steps: int, strength: float | None) -> int:
    """Return the number of sampler steps a job really runs (img2img skips the noisiest ones)."""
    if strength is None:
        return steps
    return max(1, int(steps * strength))


def image_seed(seed: int, place: int) -> int:
    """The seed of the image at `place` in a request's batch: consecutive from the request's seed,
    so image k of a batch is the image a batch of one makes from seed + k."""
    return seed + place


def random_seed() -> int:
    """Return a fresh random seed that fits the 32-bit range UIs and other tools accept."""
    return secrets.randbelow(2**32)
