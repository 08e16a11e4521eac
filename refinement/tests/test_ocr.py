"""OCR of text lines (Tesseract) on rendered test images, and the API that serves it."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from imagegen import services
from imagegen.models import Image as StoredImage
from imagegen.tests.factories import UserFactory
from refinement.ocr import detect_lines, ned, read_line

FONTS = "/usr/share/fonts/truetype/"


def sign(background, lines, size=(720, 360), seed=0) -> Image.Image:
    """Text drawn on a flat colour, or on a (low, high) grey gradient from left to right with noise."""
    width, height = size
    if len(background) == 2:
        ramp = np.linspace(*background, width, dtype=np.float32)
        noise = np.random.default_rng(seed).normal(0, 8, (height, width, 3))
        pixels = np.stack([np.tile(ramp, (height, 1))] * 3, -1) + noise
    else:
        pixels = np.full((height, width, 3), background, np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for text, font, font_size, colour, origin in lines:
        draw.text(origin, text, font=ImageFont.truetype(FONTS + font, font_size), fill=colour)
    return image


@pytest.mark.parametrize(
    ("background", "colour"),
    [
        ((235, 230, 220), (20, 20, 20)),
        ((25, 30, 45), (245, 240, 200)),
        ((20, 130), (250, 250, 250)),
        ((120, 235), (0, 0, 0)),
    ],
    ids=["dark-on-light", "light-on-dark", "light-on-a-gradient", "dark-on-a-gradient"],
)
def test_lines_are_found_with_their_boxes_and_read_right(background, colour):
    lines = [
        ("GRAND OPENNING", "dejavu/DejaVuSans-Bold.ttf", 48, colour, (40, 40)),
        ("Sumer Sale today", "liberation/LiberationSerif-Regular.ttf", 32, colour, (60, 170)),
        ("Open 7 days a weak", "noto/NotoSans-Regular.ttf", 22, colour, (300, 280)),
    ]
    found = detect_lines(sign(background, lines))
    assert [line.text for line in found] == [text for text, *_ in lines]
    for line, (*_, font_size, _, (x, y)) in zip(found, lines, strict=True):
        left, top, _, height = line.bbox
        # The box holds the letters: it starts at them and is about a cap height tall.
        assert abs(left - x) <= 4 and y <= top <= y + font_size
        assert 0.5 * font_size <= height <= 1.2 * font_size
        assert line.confidence >= 55


def test_a_box_is_read_and_compared():
    image = sign((235, 230, 220), [("Fresh coffee", "dejavu/DejaVuSansMono.ttf", 30, (10, 10, 10), (40, 60))])
    assert read_line(image, (40, 66, 230, 26)).text == "Fresh coffee"
    assert ned("Fresh coffee", "Fresh coffee") == 1.0 and ned("Fresh cofee", "Fresh coffee") == pytest.approx(
        1 - 1 / 12
    )
    assert ned("", "") == 1.0 and ned("abc", "") == 0.0


@pytest.mark.django_db
def test_the_api_serves_an_images_lines_to_its_owner_only(client):
    token = services.api_token_create(username="reader")
    owner = UserFactory(username="reader")
    buffer = io.BytesIO()
    sign(
        (235, 230, 220), [("HAPPY BIRTHDAY", "liberation/LiberationSans-Bold.ttf", 40, (200, 30, 30), (50, 100))]
    ).save(buffer, "PNG")
    image = services.image_store(
        owner=owner, data=buffer.getvalue(), kind=StoredImage.Kind.UPLOAD, name="uploads/sign.png", size=(720, 360)
    )
    response = client.get(f"/api/v1/images/{image.pk}/text", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    (line,) = response.json()["lines"]
    assert line["text"] == "HAPPY BIRTHDAY" and len(line["bbox"]) == 4 and line["confidence"] > 55
    stranger = services.api_token_create(username="stranger")
    assert (
        client.get(f"/api/v1/images/{image.pk}/text", headers={"Authorization": f"Bearer {stranger}"}).status_code
        == 404
    )
    assert client.get(f"/api/v1/images/{image.pk}/text").status_code == 401
    assert (
        client.post(f"/api/v1/images/{image.pk}/text", headers={"Authorization": f"Bearer {token}"}).status_code == 405
    )
