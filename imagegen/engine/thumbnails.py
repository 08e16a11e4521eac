"""Small WebP copies of stored images, for the cards that show many of them at once."""

from io import BytesIO
from typing import BinaryIO

from PIL import Image

# Long side in pixels: sharp in a gallery card (260–420 CSS px wide) at 1×, a quarter of the pixels
# of a 768² image, and a tenth of its PNG's bytes or less.
THUMBNAIL_SIDE = 384
THUMBNAIL_QUALITY = 80


def encode_thumbnail(source: bytes | BinaryIO, *, side: int = THUMBNAIL_SIDE) -> bytes:
    """A WebP of the image at most `side` pixels on its long side (never enlarged), keeping any alpha."""
    with Image.open(BytesIO(source) if isinstance(source, bytes) else source) as image:
        image.draft("RGB", (side, side))  # JPEG decodes at a fraction of its size; others ignore it
        pixels = image.convert("RGBA" if image.has_transparency_data else "RGB")
    pixels.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = BytesIO()
    pixels.save(buffer, format="WEBP", quality=THUMBNAIL_QUALITY, method=4)
    return buffer.getvalue()
