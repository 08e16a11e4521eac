"""`POST /api/generate_img2img`: the documented curl call, and bad input refused with nothing stored."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from imagegen import services
from imagegen.models import Image, Run

# Transactional: a run is sent to the queue only once committed, and the API answers 202 only then.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token():
    return services.api_token_create(username="alice")


def jpeg(width=640, height=480) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), (30, 120, 200)).save(buffer, format="JPEG")
    return SimpleUploadedFile("test.jpg", buffer.getvalue(), content_type="image/jpeg")


def post(client, token, data):
    return client.post("/api/generate_img2img", data, headers={"Authorization": f"Bearer {token}"})


def nothing_stored(media_root) -> bool:
    files = [path for path in media_root.rglob("*") if path.is_file()] if media_root.exists() else []
    return not Run.objects.exists() and not Image.objects.exists() and not files


def test_the_documented_call_is_accepted_with_defaults(client, token, media_root):
    # curl -X POST …/api/generate_img2img -F "init_image=@test.jpg" -F "prompt=A watercolor painting" -F "strength=0.75"
    response = post(client, token, {"init_image": jpeg(), "prompt": "A watercolor painting", "strength": "0.75"})
    assert response.status_code == 202, response.content
    run = Run.objects.get(pk=response.json()["run_id"])
    assert run.generation_type == "image_to_image"
    assert (run.steps, run.guidance_scale, float(run.strength)) == (50, 7.5, 0.75)
    assert run.total_steps == 37
    assert (run.width, run.height) == (640, 480)
    assert (media_root / run.init_image.file.name).exists()
    detail = client.get(f"/api/v1/runs/{run.pk}", headers={"Authorization": f"Bearer {token}"}).json()
    assert detail["parameters"]["strength"] == 0.75


def test_strength_defaults_to_075(client, token):
    response = post(client, token, {"init_image": jpeg(), "prompt": "fox"})
    assert response.status_code == 202
    assert float(Run.objects.get().strength) == 0.75


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"init_image": None}, "init_image", "required"),
        ({"init_image": "make"}, "init_image", "Not a PNG, JPEG or WebP image"),
        ({"prompt": ""}, "prompt", "required"),
        ({"strength": "1.5"}, "strength", "between 0 and 1"),
        ({"strength": "-0.1"}, "strength", "between 0 and 1"),
        ({"strength": "strong"}, "strength", "Enter a number"),
        ({"num_inference_steps": "0"}, "num_inference_steps", "greater than or equal to 1"),
        ({"guidance_scale": "x"}, "guidance_scale", "Enter a number"),
    ],
)
def test_bad_input_is_400_naming_the_field(client, token, media_root, data, field, message):
    body = {"init_image": jpeg(), "prompt": "fox", **data}
    if body["init_image"] is None:
        del body["init_image"]
    elif body["init_image"] == "make":
        html = b"<html>not an image</html>"
        body["init_image"] = SimpleUploadedFile("test.jpg", html, content_type="image/jpeg")
    response = post(client, token, body)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert message in response.json()["error"]
    assert nothing_stored(media_root)


def test_over_quota_is_429_and_stores_nothing(client, token, settings, media_root):
    settings.IMAGEGEN_DAILY_QUOTA = 0
    response = post(client, token, {"init_image": jpeg(), "prompt": "fox"})
    assert response.status_code == 429
    assert "daily quota" in response.json()["error"]
    assert nothing_stored(media_root)
    headers = {"Authorization": f"Bearer {token}"}
    text = client.post("/api/generate", {"prompt": "fox"}, content_type="application/json", headers=headers)
    assert text.status_code == 429
