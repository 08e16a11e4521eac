"""The refine API: submission, status, versions in the run, and every bad input (no worker here)."""

import json
import uuid

import pytest
from django.conf import settings as django_settings

from conftest import point_celery_at
from imagegen import selectors, services
from imagegen.models import Image, JobStatus
from imagegen.tests.factories import ImageFactory, RunFactory, UserFactory
from refinement.models import Refinement

from .factories import finished_run, refinement_of

# Transactional: a refinement is sent to the queue only once committed.
pytestmark = pytest.mark.django_db(transaction=True)

GENERAL = {"type": "general", "payload": {"prompt": "warmer light"}}


@pytest.fixture
def token():
    return services.api_token_create(username="alice")


@pytest.fixture
def run(token):
    return finished_run(owner=selectors.user_for_api_token(token=token))


def call(client, method: str, url: str, token: str, body=None):
    headers = {"Authorization": f"Bearer {token}"}
    if method == "get":
        return client.get(url, headers=headers)
    data = body if isinstance(body, str) else json.dumps(body or {})
    return client.post(url, data=data, content_type="application/json", headers=headers)


def test_refine_answers_201_with_the_new_version_and_where_to_follow_it(client, token, run):
    response = call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, {**GENERAL, "seed": 42})
    assert response.status_code == 201
    body = response.json()
    refinement = Refinement.objects.get(pk=body["job_id"])
    assert body == {
        "job_id": str(refinement.pk),
        "version": 2,
        "status": "queued",
        "status_url": f"http://testserver/api/v1/refinements/{refinement.pk}",
        "ws_url": f"ws://testserver/api/v1/ws/{refinement.pk}",
    }
    assert (refinement.creativity, refinement.strength, refinement.seed) == (2, 0.5, 42)  # creativity defaults to 2
    assert refinement.sent_at is not None

    detail = call(client, "get", body["status_url"], token).json()
    assert detail == {
        "job_id": str(refinement.pk),
        "run_id": str(run.pk),
        "type": "general",
        "status": "queued",
        "queue_position": 1,
        "version": 2,
        "parent_version": 1,
        "parent_image_id": str(run.outputs.get().pk),
        "step": 0,
        "total_steps": 15,
        "creativity": 2,
        "strength": 0.5,
        "seed": 42,
        "payload": {"prompt": "warmer light"},
        "error": "",
        "result": None,
        "checks": [],
    }


def test_a_finished_refinement_shows_its_result_and_the_run_lists_its_versions(client, token, run):
    first = call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, GENERAL).json()
    refinement = Refinement.objects.get(pk=first["job_id"])
    result = ImageFactory(owner=run.owner, kind=Image.Kind.REFINEMENT, width=64, height=64)
    Refinement.objects.filter(pk=refinement.pk).update(status=JobStatus.SUCCEEDED, step=15, result=result)
    detail = call(client, "get", first["status_url"], token).json()
    assert detail["result"] == {
        "image_id": str(result.pk),
        "url": f"http://testserver/images/{result.pk}",
        "width": 64,
        "height": 64,
    }
    second = call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, GENERAL).json()  # still queued
    assert second["version"] == 3
    versions = call(client, "get", f"/api/v1/runs/{run.pk}", token).json()["versions"]
    v1 = run.outputs.get()
    assert versions == [  # succeeded versions only, v1 first
        {
            "version": 1,
            "image_id": str(v1.pk),
            "url": f"http://testserver/images/{v1.pk}",
            "width": v1.width,
            "height": v1.height,
            "type": "text_to_image",
            "parent_version": None,
            "job_id": str(run.pk),
        },
        {
            "version": 2,
            "image_id": str(result.pk),
            "url": f"http://testserver/images/{result.pk}",
            "width": 64,
            "height": 64,
            "type": "general",
            "parent_version": 1,
            "job_id": str(refinement.pk),
        },
    ]
    # A later refinement may start from any version: here v1, so it is a branch.
    third = call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, {**GENERAL, "parent_image_id": str(v1.pk)})
    assert Refinement.objects.get(pk=third.json()["job_id"]).parent_version == 1


def test_cancel_any_refinement_of_ones_own(client, token, run):
    accepted = call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, GENERAL).json()
    response = call(client, "post", f"/api/v1/refinements/{accepted['job_id']}/cancel", token)
    assert response.status_code == 200
    assert response.json() == {"job_id": accepted["job_id"], "status": "cancelled"}
    again = call(client, "post", f"/api/v1/refinements/{accepted['job_id']}/cancel", token)
    assert again.status_code == 409 and "already ended (cancelled)" in again.json()["error"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"type": "paint", "payload": {"prompt": "x"}}, "type", "Select a valid choice"),
        ({"payload": {"prompt": "x"}}, "type", "This field is required."),
        ({"type": "text", "payload": {}}, "payload.corrections", "Give at least one correction"),
        (
            {"type": "text", "payload": {"corrections": [{"bbox": [0, 0, 8, 8], "text": "x"}] * 21}},
            "payload.corrections",
            "At most 20 corrections (got 21).",
        ),
        (
            {"type": "text", "payload": {"corrections": [{"bbox": [0, 0, 8, 8], "text": " "}]}},
            "payload.corrections",
            "Correction 1 needs its text",
        ),
        (
            {"type": "text", "payload": {"corrections": [{"bbox": [0, 0, 8, 8], "text": "x" * 201}]}},
            "payload.corrections",
            "Correction 1's text is longer than 200 characters.",
        ),
        (
            {"type": "text", "payload": {"corrections": [{"bbox": [0, 0, 3, 10], "text": "x"}]}},
            "payload.corrections",
            "Correction 1 is 3×10 pixels: its width and height must be at least 4 pixels.",
        ),
        (
            {"type": "text", "payload": {"corrections": [{"bbox": [60, 0, 8, 8], "text": "x"}]}},
            "payload.corrections",
            "Correction 1 [60, 0, 8, 8] reaches outside the image (64×64).",
        ),
        (
            {"type": "text", "payload": {"corrections": [{"bbox": [0, 0, 8, 8], "prompt": "x"}]}},
            "payload.corrections",
            "unknown field: prompt",
        ),
        ({"type": "region", "payload": {}}, "payload.masks", "Draw at least one rectangle."),
        ({"type": "region", "payload": {"masks": []}}, "payload.masks", "Draw at least one rectangle."),
        ({"type": "region", "payload": {"masks": "[1"}}, "payload.masks", "Must be JSON."),
        ({"type": "region", "payload": {"masks": {"bbox": [0, 0, 8, 8]}}}, "payload.masks", "Must be a list"),
        (
            {"type": "region", "payload": {"masks": [{"bbox": [0, 0, 8, 8], "prompt": "x"}] * 9}},
            "payload.masks",
            "At most 8 rectangles (got 9).",
        ),
        (
            {"type": "region", "payload": {"masks": [{"bbox": [0, 0, 8, 8]}]}},
            "payload.masks",
            "Rectangle 1 needs a prompt",
        ),
        (
            {"type": "region", "payload": {"masks": [{"bbox": [0, 0, 8, 8], "prompt": "  "}]}},
            "payload.masks",
            "Rectangle 1 needs a prompt",
        ),
        (
            {"type": "region", "payload": {"masks": [{"bbox": [1, 2, 3], "prompt": "x"}]}},
            "payload.masks",
            "Rectangle 1's bbox must be [x, y, width, height]",
        ),
        (
            {"type": "region", "payload": {"masks": [{"bbox": [1, 2, 3.5, 4], "prompt": "x"}]}},
            "payload.masks",
            "in whole pixels",
        ),
        (
            {
                "type": "region",
                "payload": {"masks": [{"bbox": [0, 0, 8, 8], "prompt": "x"}, {"bbox": [10, 10, 0, 5], "prompt": "y"}]},
            },
            "payload.masks",
            "Rectangle 2 is empty",
        ),
        (
            {"type": "region", "payload": {"masks": [{"bbox": [50, 40, 20, 20], "prompt": "x"}]}},
            "payload.masks",
            "Rectangle 1 [50, 40, 20, 20] reaches outside the image (64×64).",
        ),
        (
            {"type": "region", "payload": {"masks": [{"bbox": [-1, 0, 8, 8], "prompt": "x"}]}},
            "payload.masks",
            "reaches outside the image",
        ),
        (
            {"type": "region", "payload": {"masks": [{"bbox": [0, 0, 8, 8], "prompt": "x", "colour": 1}]}},
            "payload.masks",
            "unknown field: colour",
        ),
        ({"type": "subject", "payload": {}}, "payload.instructions", "This field is required."),
        (
            {"type": "subject", "payload": {"instructions": "x", "bbox": [0, 0, 65, 8]}},
            "payload.bbox",
            "The box [0, 0, 65, 8] reaches outside the image (64×64).",
        ),
        ({"type": "subject", "payload": {"instructions": "x", "bbox": "0,0,8,8"}}, "payload.bbox", "Must be JSON."),
        (
            {"type": "subject", "payload": {"instructions": "x", "referenceFileId": "nope"}},
            "payload.referenceFileId",
            "Enter a valid UUID.",
        ),
        (
            {
                "type": "subject",
                "payload": {"instructions": "x", "referenceFileId": "00000000-0000-0000-0000-000000000000"},
            },
            "payload.referenceFileId",
            "No such image",
        ),
        ({"type": "general", "payload": {}}, "payload.prompt", "This field is required."),
        ({"type": "general"}, "payload.prompt", "This field is required."),
        ({"type": "general", "payload": {"prompt": "   "}}, "payload.prompt", "This field is required."),
        ({"type": "general", "payload": {"prompt": "x" * 1001}}, "payload.prompt", "at most 1000 characters"),
        ({"type": "general", "payload": {"prompt": ["a", "list"]}}, "payload.prompt", "Must be text."),
        ({"type": "general", "payload": {"prompt": "x", "promt": "y"}}, "payload.promt", "Unknown field"),
        ({"type": "general", "payload": "warmer"}, "payload", "Must be a JSON object."),
        ({**GENERAL, "creativity": 0}, "creativity", "greater than or equal to 1"),
        ({**GENERAL, "creativity": 4}, "creativity", "less than or equal to 3"),
        ({**GENERAL, "creativity": "max"}, "creativity", "Enter a whole number."),
        ({**GENERAL, "seed": -1}, "seed", "greater than or equal to 0"),
        ({**GENERAL, "parent_image_id": "not-a-uuid"}, "parent_image_id", "Enter a valid UUID."),
    ],
)
def test_bad_input_is_400_naming_the_field_and_stores_nothing(client, token, run, body, field, message):
    response = call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, body)
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert response.json()["error"].startswith(f"{field}: ") and message in response.json()["error"]
    assert not Refinement.objects.exists()


def test_malformed_json_is_400(client, token, run):
    for raw in ("{not json", "[1, 2]"):
        response = call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, raw)
        assert response.status_code == 400 and "JSON object" in response.json()["error"]
    assert not Refinement.objects.exists()


def test_a_parent_from_another_run_of_ones_own_is_400(client, token, run):
    other_run = finished_run(owner=run.owner)
    body = {**GENERAL, "parent_image_id": str(other_run.outputs.get().pk)}
    response = call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, body)
    assert response.status_code == 400
    assert response.json()["error"] == "parent_image_id: This image is not a version of this run."
    assert not Refinement.objects.exists()


def test_other_users_runs_images_and_refinements_are_404(client, token, run):
    stranger_run = finished_run(owner=UserFactory())
    stranger_refinement = refinement_of(stranger_run, payload={"prompt": "theirs"})
    assert call(client, "post", f"/api/v1/runs/{stranger_run.pk}/refine", token, GENERAL).status_code == 404
    foreign_parent = {**GENERAL, "parent_image_id": str(stranger_run.outputs.get().pk)}
    assert call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, foreign_parent).status_code == 404
    unknown_parent = {**GENERAL, "parent_image_id": str(uuid.uuid4())}
    assert call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, unknown_parent).status_code == 404
    assert call(client, "get", f"/api/v1/refinements/{stranger_refinement.pk}", token).status_code == 404
    assert call(client, "post", f"/api/v1/refinements/{stranger_refinement.pk}/cancel", token).status_code == 404
    assert Refinement.objects.get(pk=stranger_refinement.pk).status == JobStatus.QUEUED
    assert Refinement.objects.count() == 1


def test_a_run_without_an_image_is_409(client, token):
    run = RunFactory(owner=selectors.user_for_api_token(token=token), status=JobStatus.QUEUED)
    response = call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, GENERAL)
    assert response.status_code == 409
    assert response.json()["error"] == "The run has no image to refine yet (it is queued)."
    assert not Refinement.objects.exists()


def test_over_the_daily_quota_is_429(client, token, run, settings):
    settings.IMAGEGEN_DAILY_QUOTA = 1  # used by the run
    response = call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, GENERAL)
    assert response.status_code == 429 and "daily quota" in response.json()["error"]
    assert not Refinement.objects.exists()


def test_the_api_needs_authentication(client, run):
    assert client.post(f"/api/v1/runs/{run.pk}/refine", GENERAL, content_type="application/json").status_code == 401
    assert not Refinement.objects.exists()


def test_submitted_while_the_queue_is_down_it_is_kept_and_sent_when_back(client, token, run):
    reachable = django_settings.CELERY_BROKER_URL
    point_celery_at("redis://127.0.0.1:9/0")  # nothing listens there
    try:
        response = call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, GENERAL)
    finally:
        point_celery_at(reachable)
    assert response.status_code == 503
    body = response.json()
    assert "queue is unavailable" in body["error"] and body["version"] == 2 and body["status"] == "queued"
    refinement = Refinement.objects.get(pk=body["job_id"])
    assert refinement.sent_at is None
    Refinement.objects.filter(pk=refinement.pk).update(queued_at=refinement.queued_at.replace(year=2000))
    assert services.jobs_recover()["resent"] == 1  # housekeeping sends it once the broker answers
    refinement.refresh_from_db()
    assert refinement.sent_at is not None and refinement.status == JobStatus.QUEUED


def png_bytes(size=(96, 80), colour=(200, 90, 30)) -> bytes:
    import io

    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(client, token, content: bytes, name="reference.png"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    files = {"image": SimpleUploadedFile(name, content, content_type="image/png")} if content is not None else {}
    return client.post("/api/v1/uploads", files, headers={"Authorization": f"Bearer {token}"})


def test_a_reference_upload_answers_201_and_is_the_users_own(client, token, media_root):
    response = upload(client, token, png_bytes())
    assert response.status_code == 201
    body = response.json()
    image = Image.objects.get(pk=body["file_id"])
    assert body["url"] == f"http://testserver/images/{image.pk}"
    assert (image.kind, image.owner.username, image.width, image.height) == ("reference", "alice", 96, 80)
    assert call(client, "get", body["url"], token).status_code == 200
    stranger = services.api_token_create(username="mallory")
    assert call(client, "get", body["url"], stranger).status_code == 404


@pytest.mark.parametrize(
    ("content", "message"), [(b"%PDF-1.4 not an image", "Not a PNG, JPEG or WebP"), (None, "required")]
)
def test_a_reference_that_is_not_an_image_is_400_and_stores_nothing(client, token, media_root, content, message):
    response = upload(client, token, content, name="notes.png")
    assert response.status_code == 400 and response.json()["field"] == "image"
    assert message in response.json()["error"]
    assert not Image.objects.filter(kind="reference").exists()
    assert not (media_root / "references").exists()


def test_a_reference_of_another_user_is_refused_naming_the_field(client, token, run):
    theirs = upload(client, services.api_token_create(username="mallory"), png_bytes()).json()["file_id"]
    body = {"type": "subject", "payload": {"instructions": "a terrier", "referenceFileId": theirs}}
    response = call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, body)
    assert response.status_code == 400 and response.json()["field"] == "payload.referenceFileId"
    assert "No such image" in response.json()["error"]
    mine = upload(client, token, png_bytes()).json()["file_id"]
    body["payload"]["referenceFileId"] = mine
    accepted = call(client, "post", f"/api/v1/runs/{run.pk}/refine", token, body)
    assert accepted.status_code == 201
    assert Refinement.objects.get().payload == {"instructions": "a terrier", "referenceFileId": mine}
