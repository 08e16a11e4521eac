"""Describe generation settings in the AUTOMATIC1111 "parameters" text and embed it in PNG files."""

from collections.abc import Mapping
from io import BytesIO
from typing import BinaryIO

from PIL import Image
from PIL.PngImagePlugin import PngInfo

# The tEXt keyword AUTOMATIC1111 and most other tools read generation settings from.
PARAMETERS_KEY = "parameters"


def format_parameters(
    *,
    prompt: str,
    negative_prompt: str,
    steps: int,
    sampler: str,
    guidance_scale: float,
    seed: int,
    width: int,
    height: int,
    model: str,
    strength: float | None = None,
    clip_skip: int = 1,
    extra: Mapping[str, object] | None = None,
) -> str:
    """Return the settings as AUTOMATIC1111 "parameters" text; `extra` adds settings of its own
    (a masked edit's "Mask blur", "Inpaint area", "Masked area padding")."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    settings = (
        f"Steps: {steps}, Sampler: {sampler}, CFG scale: {guidance_scale:g}, Seed: {seed}, "
        f"Size: {width}x{height}, Model: {model}"
    )
    if strength is not None:
        settings += f", Denoising strength: {strength:g}"
    if clip_skip > 1:  # A1 names it only when set
        settings += f", Clip skip: {clip_skip}"
    for name, value in (extra or {}).items():
        settings += f", {name}: {value}"
    lines.append(settings)
    return "\n".join(lines)


def encode_png(image: Image.Image, parameters: str, *, chunks: Mapping[str, str] | None = None) -> bytes:
    """Return PNG bytes of image with parameters stored in a "parameters" text chunk.

    `chunks` adds further text chunks (keyword → text), such as a refinement's own record.
    """
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, parameters)
    for keyword, text in (chunks or {}).items():
        info.add_text(keyword, text)  # Pillow writes iTXt (UTF-8) for text that Latin-1 cannot hold
    buffer = BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_png_parameters(data: bytes | BinaryIO) -> str | None:
    """Return the "parameters" text stored in a PNG, or None when it has none."""
    with Image.open(BytesIO(data) if isinstance(data, bytes) else data) as image:
        return image.info.get(PARAMETERS_KEY)
