"""Validation and normalisation of uploaded init images, the one place the form, the API and the batch command use.

Decisions:
- The file's type is judged by its first bytes only; its name and declared content type are ignored.
- Animated images (APNG, animated WebP) are accepted and their first frame is used.
- Transparency is flattened onto white, and the result is re-encoded as an 8-bit RGB PNG built from
  the pixels alone, so no EXIF (GPS included), text chunk, ICC profile or appended data survives.
- Colour profiles are dropped, not applied: pixels are taken as sRGB.
- Very long, thin images are stretched to at least MIN_UPLOAD_SIDE on their short side.
"""

import io
import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from django import forms
from django.core.files import File
from PIL import Image, ImageOps

from imagegen.engine import read_png_text
from imagegen.limits import FIT_SIDE, MAX_UPLOAD_BYTES, MEGABYTE, MIN_SIDE, SIDE_MULTIPLE

# Checked against the size the file declares, before any pixel is decoded.
MAX_UPLOAD_PIXELS = 40_000_000
ACCEPTED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# The model needs at least 64 pixels a side, the same floor the text-to-image form has.
MIN_UPLOAD_SIDE = MIN_SIDE
WHITE = (255, 255, 255, 255)

# What Pillow raises for a file it cannot read; none of these may reach the caller.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError, KeyError, TypeError)
# Other formats people upload by mistake, named in the refusal so they know what to convert.
_LOOKALIKES = (
    (b"%PDF", "a PDF"),
    (b"GIF8", "a GIF"),
    (b"II*\x00", "a TIFF"),
    (b"MM\x00*", "a TIFF"),
    (b"BM", "a BMP"),
    (b"PK\x03\x04", "a ZIP archive"),
)


class UploadError(ValueError):
    """An upload that cannot be used; str() is a message a user can read, saying what was wrong."""


@dataclass(frozen=True)
class NormalisedImage:
    image: Image.Image  # RGB, the normalised picture
    data: bytes  # its PNG encoding, without any metadata
    width: int
    height: int


def normalise_upload(source: bytes | BinaryIO | File) -> NormalisedImage:
    """Check an uploaded init image and return it as an RGB picture the model can take, or raise UploadError."""
    data = _read_limited(source)
    image_format = _sniff_format(data)
    image = _to_rgb(_decode(data, image_format))
    target = _target_size(*image.size)
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS)
    clean = Image.new("RGB", image.size)  # a fresh image carries no info, so nothing but pixels is saved
    clean.paste(image)
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG")
    return NormalisedImage(image=clean, data=buffer.getvalue(), width=clean.width, height=clean.height)


def read_text_chunks(source: bytes | BinaryIO | File) -> dict[str, str]:
    """The text chunks of an uploaded PNG (where Stable Diffusion tools keep their settings; a JPEG
    or WebP gives none), checked by the same first rules as any upload; the pixels are not decoded."""
    data = _read_limited(source)
    if _sniff_format(data) != "PNG":
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # no pixel is decoded
            return read_png_text(data)
    except Image.DecompressionBombError:
        limit = MAX_UPLOAD_PIXELS // 1_000_000
        raise UploadError(f"The image declares far too many pixels; the limit is {limit} megapixels.") from None
    except _DECODE_ERRORS:
        raise UploadError("The image is damaged or truncated and could not be read.") from None


class InitImageField(forms.FileField):
    """A file field whose cleaned value is a NormalisedImage."""

    def widget_attrs(self, widget: forms.Widget) -> dict:
        attrs = super().widget_attrs(widget)
        if isinstance(widget, forms.FileInput) and "accept" not in widget.attrs:
            attrs["accept"] = ",".join(ACCEPTED_FORMATS.values())
        return attrs

    def clean(self, data, initial=None):
        upload = super().clean(data, initial)
        if not upload or isinstance(upload, NormalisedImage):
            return upload  # nothing uploaded to an optional field, or an already clean initial value
        try:
            return normalise_upload(upload)
        except UploadError as error:
            raise forms.ValidationError(str(error), code="invalid_image") from error


def _read_limited(source: bytes | BinaryIO | File) -> bytes:
    """The upload's bytes, reading at most one byte past the limit so a huge stream is never read whole."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        total: int | None = len(data)
    else:
        if isinstance(source, File):
            source.seek(0)  # Django's own checks may already have read from it
        chunks, remaining = [], MAX_UPLOAD_BYTES + 1
        while remaining > 0 and (chunk := source.read(remaining)):
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        declared = getattr(source, "size", None)  # an UploadedFile knows its size; a bare stream may not
        total = declared if isinstance(declared, int) else None
    if not data:
        raise UploadError("The file is empty.")
    if len(data) > MAX_UPLOAD_BYTES:
        limit = MAX_UPLOAD_BYTES / MEGABYTE
        if total and round(total / MEGABYTE, 1) > limit:
            raise UploadError(f"The file is {total / MEGABYTE:.1f} MB; the limit is {limit:g} MB.")
        raise UploadError(f"The file is larger than the limit of {limit:g} MB.")
    return data


def _sniff_format(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    head = data[:1024].lstrip().lower()
    if b"<svg" in head:
        looks_like = "an SVG drawing"
    elif head.startswith((b"<!doctype html", b"<html")) or b"<script" in head:
        looks_like = "an HTML page"
    elif data[4:8] == b"ftyp":
        looks_like = "a HEIC or AVIF photo"
    else:
        looks_like = next((name for magic, name in _LOOKALIKES if data.startswith(magic)), None)
    hint = f" (it looks like {looks_like})" if looks_like else ""
    raise UploadError(f"Not a PNG, JPEG or WebP image{hint}.")


def _decode(data: bytes, image_format: str) -> Image.Image:
    """The first frame, upright, after refusing images too small or declaring too many pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[image_format]) as image:
                width, height = image.size
                if width * height > MAX_UPLOAD_PIXELS:
                    raise UploadError(
                        f"The image is {width}×{height} pixels ({width * height / 1e6:.1f} megapixels); "
                        f"the limit is {MAX_UPLOAD_PIXELS // 1_000_000} megapixels."
                    )
                if min(width, height) < MIN_UPLOAD_SIDE:
                    raise UploadError(
                        f"The image is {width}×{height} pixels; "
                        f"it must be at least {MIN_UPLOAD_SIDE} pixels on each side."
                    )
                image.seek(0)
                image.draft(None, _fitted_size(width, height))  # JPEG only: decode at a reduced scale
                image.load()
                return ImageOps.exif_transpose(image)
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow refuses before the size is known to us; such a file declares far beyond our limit.
        limit = MAX_UPLOAD_PIXELS // 1_000_000
        raise UploadError(f"The image declares far too many pixels; the limit is {limit} megapixels.") from None
    except _DECODE_ERRORS:
        raise UploadError("The image is damaged or truncated and could not be read.") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I"):
        # 16-bit greyscale: map 0–65535 onto 0–255 (rounded) instead of letting convert() clip at 255.
        image = image.convert("I").point(lambda value: value / 257 + 0.5).convert("L")
        image.info.pop("transparency", None)  # a 16-bit value, meaningless once scaled
    if image.has_transparency_data:
        background = Image.new("RGBA", image.size, WHITE)
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _fitted_size(width: int, height: int) -> tuple[int, int]:
    """The size within FIT_SIDE×FIT_SIDE with the same aspect ratio, never larger than the original."""
    longest = max(width, height)
    if longest <= FIT_SIDE:
        return width, height
    return width * FIT_SIDE // longest, height * FIT_SIDE // longest


def _target_size(width: int, height: int) -> tuple[int, int]:
    """The fitted size rounded down to multiples of SIDE_MULTIPLE, but never below MIN_UPLOAD_SIDE."""
    fitted_width, fitted_height = _fitted_size(width, height)
    return _round_side(fitted_width), _round_side(fitted_height)


def _round_side(side: int) -> int:
    return max(MIN_UPLOAD_SIDE, side // SIDE_MULTIPLE * SIDE_MULTIPLE)
