import io
import struct
import time
import zlib

import pytest
from django import forms
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, PngImagePlugin

from imagegen.limits import FIT_SIDE, SIDE_MULTIPLE
from img2img.uploads import MAX_UPLOAD_BYTES, InitImageField, NormalisedImage, UploadError, normalise_upload


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def crafted_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width×height but which holds almost no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def refusal(source) -> str:
    with pytest.raises(UploadError) as raised:
        normalise_upload(source)
    return str(raised.value)


def assert_clean(result: NormalisedImage) -> Image.Image:
    """The result is an RGB PNG of allowed size that carries nothing but pixels."""
    assert result.image.mode == "RGB"
    assert (result.width, result.height) == result.image.size
    assert result.width <= FIT_SIDE and result.height <= FIT_SIDE
    assert result.width % SIDE_MULTIPLE == 0 and result.height % SIDE_MULTIPLE == 0
    reopened = Image.open(io.BytesIO(result.data))
    assert reopened.format == "PNG"
    assert reopened.size == result.image.size
    assert reopened.mode == "RGB"
    assert reopened.info == {}  # no exif, icc_profile, text chunks, dpi or gamma
    assert not reopened.getexif()
    return reopened


# Refusals


def test_empty_file_is_refused():
    assert refusal(b"") == "The file is empty."


def test_file_over_the_size_limit_is_refused():
    padded = encode(Image.new("RGB", (64, 64)), "PNG")
    padded += b"\x00" * (MAX_UPLOAD_BYTES + 1 - len(padded))
    assert refusal(padded) == "The file is larger than the limit of 10 MB."
    assert refusal(io.BytesIO(padded)) == "The file is larger than the limit of 10 MB."


def test_size_message_gives_the_size_when_known():
    message = refusal(b"\x89PNG\r\n\x1a\n" + b"\x00" * int(12.3 * 1024 * 1024))
    assert message == "The file is 12.3 MB; the limit is 10 MB."


def test_a_huge_stream_is_not_read_whole():
    class EndlessPng(io.RawIOBase):
        read_so_far = 0

        def readable(self):
            return True

        def readinto(self, buffer):
            buffer[:] = b"\x89PNG\r\n\x1a\n"[: len(buffer)].ljust(len(buffer), b"\x00")
            self.read_so_far += len(buffer)
            return len(buffer)

    stream = EndlessPng()
    assert "10 MB" in refusal(stream)
    assert stream.read_so_far == MAX_UPLOAD_BYTES + 1


@pytest.mark.parametrize(
    ("content", "looks_like"),
    [
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "SVG"),
        (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "PDF"),
        (b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>", "HTML"),
        (b"just some text, nothing like an image", None),
        (encode(Image.new("RGB", (100, 100), "red"), "TIFF"), "TIFF"),
        (encode(Image.new("RGB", (100, 100), "red"), "BMP"), "BMP"),
        (encode(Image.new("RGB", (100, 100), "red"), "GIF"), "GIF"),
    ],
)
def test_other_formats_are_refused_by_content(content, looks_like):
    message = refusal(content)
    assert message.startswith("Not a PNG, JPEG or WebP image")
    if looks_like:
        assert looks_like in message


@pytest.mark.parametrize(
    "content",
    [
        encode(Image.effect_noise((200, 200), 64).convert("RGB"), "PNG")[:3000],
        encode(Image.effect_noise((200, 200), 64).convert("RGB"), "JPEG")[:1500],
        b"\x89PNG\r\n\x1a\n" + b"garbage " * 100,
        b"\xff\xd8\xff" + b"garbage " * 100,
        b"RIFF\x00\x01\x00\x00WEBP" + b"garbage " * 100,
    ],
    ids=["truncated-png", "truncated-jpeg", "garbage-png", "garbage-jpeg", "garbage-webp"],
)
def test_damaged_images_are_refused(content):
    assert refusal(content) == "The image is damaged or truncated and could not be read."


def test_truncated_png_cut_in_half_is_refused():
    content = encode(Image.effect_noise((300, 300), 64).convert("RGB"), "PNG")
    assert "damaged or truncated" in refusal(content[: len(content) // 2])


def test_decompression_bomb_is_refused_quickly():
    started = time.monotonic()
    message = refusal(crafted_png(100_000, 100_000))
    assert time.monotonic() - started < 1
    assert "pixels" in message and "40 megapixels" in message


def test_image_declaring_more_than_the_pixel_limit_is_refused_before_decoding():
    started = time.monotonic()
    message = refusal(crafted_png(8000, 6000))
    assert time.monotonic() - started < 1
    assert message == "The image is 8000×6000 pixels (48.0 megapixels); the limit is 40 megapixels."


def test_too_small_image_is_refused():
    message = refusal(encode(Image.new("RGB", (32, 32)), "PNG"))
    assert message == "The image is 32×32 pixels; it must be at least 64 pixels on each side."


# Accepted and normalised


def test_cmyk_jpeg_becomes_rgb():
    result = normalise_upload(encode(Image.new("CMYK", (128, 128), (0, 255, 255, 0)), "JPEG", quality=95))
    assert_clean(result)
    red, green, blue = result.image.getpixel((64, 64))
    assert red > 200 and green < 60 and blue < 60


def test_greyscale_png_becomes_rgb():
    result = normalise_upload(encode(Image.new("L", (128, 128), 100), "PNG"))
    assert_clean(result)
    assert result.image.getpixel((0, 0)) == (100, 100, 100)


def test_16_bit_greyscale_is_scaled_not_clipped():
    result = normalise_upload(encode(Image.new("I;16", (128, 128), 32768), "PNG"))
    assert_clean(result)
    assert result.image.getpixel((0, 0)) == (128, 128, 128)


def test_palette_png_with_transparency_becomes_rgb_on_white():
    palette_image = Image.new("P", (128, 128), 0)
    palette_image.putpalette([0, 0, 255, 255, 0, 0] + [0] * (256 * 3 - 6))
    palette_image.paste(1, (0, 0, 64, 128))
    result = normalise_upload(encode(palette_image, "PNG", transparency=0))
    assert_clean(result)
    assert result.image.getpixel((10, 10)) == (255, 0, 0)
    assert result.image.getpixel((100, 10)) == (255, 255, 255)


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (128, 128), (0, 128, 0, 255))
    image.putpixel((5, 5), (0, 0, 0, 0))
    result = normalise_upload(encode(image, "PNG"))
    assert_clean(result)
    assert result.image.getpixel((5, 5)) == (255, 255, 255)
    assert result.image.getpixel((50, 50)) == (0, 128, 0)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    result = normalise_upload(encode(Image.new("RGB", (200, 100), "blue"), "JPEG", exif=exif))
    assert_clean(result)
    assert result.height > result.width
    assert result.image.size == (96, 200)


def test_exif_gps_is_removed():
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)}
    content = encode(Image.new("RGB", (128, 128), "blue"), "JPEG", exif=exif)
    assert Image.open(io.BytesIO(content)).getexif().get_ifd(0x8825)
    result = normalise_upload(content)
    assert_clean(result)
    assert b"Exif" not in result.data and b"PhoneMaker" not in result.data


def test_text_chunks_and_appended_html_are_removed():
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "<script>alert(1)</script>")
    content = encode(Image.new("RGB", (128, 128), "blue"), "PNG", pnginfo=text)
    content += b"<html><script>alert(1)</script></html>"
    result = normalise_upload(content)
    assert_clean(result)
    assert b"<script" not in result.data and b"alert" not in result.data


def test_zip_appended_to_jpeg_is_removed():
    content = encode(Image.new("RGB", (128, 128), "blue"), "JPEG") + b"PK\x03\x04secret.txt" + b"\x00" * 64
    result = normalise_upload(content)
    assert_clean(result)
    assert b"PK\x03\x04" not in result.data and b"secret" not in result.data


@pytest.mark.parametrize(
    ("size", "expected"),
    [((3000, 2000), (1024, 680)), ((700, 500), (696, 496)), ((1024, 1024), (1024, 1024)), ((64, 64), (64, 64))],
)
def test_images_are_fitted_and_rounded_to_multiples_of_8(size, expected):
    result = normalise_upload(encode(Image.new("RGB", size, "blue"), "JPEG"))
    assert_clean(result)
    assert result.image.size == expected


def test_small_image_is_not_upscaled():
    result = normalise_upload(encode(Image.new("RGB", (203, 171), "blue"), "PNG"))
    assert result.image.size == (200, 168)


def test_webp_is_accepted():
    result = normalise_upload(encode(Image.new("RGB", (128, 96), (10, 200, 30)), "WEBP", lossless=True))
    assert_clean(result)
    assert result.image.size == (128, 96)
    assert result.image.getpixel((10, 10)) == (10, 200, 30)


@pytest.mark.parametrize("image_format", ["PNG", "WEBP"])
def test_animations_use_the_first_frame(image_format):
    first, second = Image.new("RGB", (128, 128), (255, 0, 0)), Image.new("RGB", (128, 128), (0, 0, 255))
    content = encode(first, image_format, save_all=True, append_images=[second], duration=100, lossless=True)
    assert getattr(Image.open(io.BytesIO(content)), "n_frames", 1) == 2
    result = normalise_upload(content)
    assert_clean(result)
    assert result.image.getpixel((64, 64)) == (255, 0, 0)


def test_file_objects_are_accepted():
    result = normalise_upload(io.BytesIO(encode(Image.new("RGB", (128, 128)), "PNG")))
    assert result.image.size == (128, 128)


# The form field


class InitImageForm(forms.Form):
    init_image = InitImageField()


def bound_form(name: str, content: bytes, content_type: str) -> InitImageForm:
    return InitImageForm(files={"init_image": SimpleUploadedFile(name, content, content_type=content_type)})


def test_field_returns_a_normalised_image():
    form = bound_form("photo.png", encode(Image.new("RGB", (700, 500), "blue"), "PNG"), "image/png")
    assert form.is_valid(), form.errors
    result = form.cleaned_data["init_image"]
    assert isinstance(result, NormalisedImage)
    assert result.image.size == (696, 496)


def test_field_turns_a_refusal_into_a_validation_error():
    form = bound_form("tiny.png", encode(Image.new("RGB", (32, 32)), "PNG"), "image/png")
    assert not form.is_valid()
    assert form.errors["init_image"] == ["The image is 32×32 pixels; it must be at least 64 pixels on each side."]
    assert form.errors.as_data()["init_image"][0].code == "invalid_image"


def test_field_judges_by_content_not_name_or_content_type():
    jpeg_named_png = bound_form("x.png", encode(Image.new("RGB", (128, 128), "blue"), "JPEG"), "image/png")
    assert jpeg_named_png.is_valid(), jpeg_named_png.errors
    html_named_jpg = bound_form("photo.jpg", b"<html><script>alert(1)</script></html>", "image/jpeg")
    assert not html_named_jpg.is_valid()
    assert html_named_jpg.errors["init_image"][0].startswith("Not a PNG, JPEG or WebP image")


def test_field_keeps_djangos_required_and_empty_file_handling():
    assert InitImageForm(files={}).errors["init_image"] == ["This field is required."]
    empty = bound_form("empty.png", b"", "image/png")
    assert not empty.is_valid()
    assert empty.errors.as_data()["init_image"][0].code == "empty"


def test_field_renders_an_accept_attribute():
    assert 'accept="image/png,image/jpeg,image/webp"' in str(InitImageForm()["init_image"])
