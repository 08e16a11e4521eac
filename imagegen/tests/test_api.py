"""The JSON API: validation, authentication and who may see what (no worker needed here)."""

import json

import pytest

from imagegen import selectors, services
from imagegen.models import ApiToken, Run

from .factories import ImageFactory, RunFactory, UserFactory

# Transactional: a run is sent to the queue only once committed, and the API answers 202 only then.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token():
    return services.api_token_create(username="alice")


def post_json(client, url, body, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(url, data=json.dumps(body), content_type="application/json", headers=headers)


def test_generate_accepts_and_defaults(client, token):
    response = post_json(client, "/api/generate", {"prompt": "a red fox"}, token)
    assert response.status_code == 202
    body = response.json()
    run = Run.objects.get(pk=body["run_id"])
    assert body["status"] == "queued"
    assert body["status_url"] == f"http://testserver/api/v1/runs/{run.pk}"
    assert body["ws_url"] == f"ws://testserver/api/v1/ws/{run.pk}"
    assert (run.steps, run.guidance_scale, run.width, run.height) == (50, 7.5, 512, 512)
    assert run.owner.username == "alice"
    assert 0 <= run.seed < 2**32
    assert run.sent_at is not None  # sent to the queue once the row was committed


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 5000}, "prompt"),
        ({"prompt": "fox", "num_inference_steps": 0}, "num_inference_steps"),
        ({"prompt": "fox", "num_inference_steps": "lots"}, "num_inference_steps"),
        ({"prompt": "fox", "guidance_scale": 31}, "guidance_scale"),
        ({"prompt": "fox", "width": 100}, "width"),
        ({"prompt": "fox", "height": 2048}, "height"),
        ({"prompt": "fox", "seed": "abc"}, "seed"),
        ({"prompt": "fox", "batch_size": 0}, "batch_size"),
        ({"prompt": "fox", "batch_size": 5}, "batch_size"),
        ({"prompt": "fox", "scheduler": "DPM++ 3M"}, "scheduler"),
        ({"prompt": "fox", "clip_skip": 0}, "clip_skip"),
        ({"prompt": "fox", "clip_skip": 13}, "clip_skip"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_stores_nothing(client, token, body, field):
    response = post_json(client, "/api/generate", body, token)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["error"].startswith(f"{field}: ")
    assert not Run.objects.exists()


def test_body_that_is_not_a_json_object_is_400(client, token):
    for raw in ("not json", "[1, 2]"):
        response = client.post(
            "/api/generate", data=raw, content_type="application/json", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 400
        assert "JSON object" in response.json()["error"]
    assert not Run.objects.exists()


def test_authentication_is_required(client):
    assert post_json(client, "/api/generate", {"prompt": "fox"}).status_code == 401
    assert post_json(client, "/api/generate", {"prompt": "fox"}, token="made-up").status_code == 401
    assert not Run.objects.exists()


def test_revoked_token_no_longer_authenticates(client, token):
    ApiToken.objects.update(revoked=True)
    assert post_json(client, "/api/generate", {"prompt": "fox"}, token).status_code == 401


def test_token_is_stored_hashed(token):
    stored = ApiToken.objects.get()
    assert token not in (stored.key_hash, stored.prefix)
    assert stored.key_hash == ApiToken.hash_key(token)


def test_session_login_works_too_and_keeps_csrf(client):
    user = UserFactory()
    client.force_login(user)
    assert post_json(client, "/api/generate", {"prompt": "fox"}).status_code == 202
    csrf_client = client.__class__(enforce_csrf_checks=True)
    csrf_client.force_login(user)
    assert post_json(csrf_client, "/api/generate", {"prompt": "fox"}).status_code == 403


def test_run_detail_shows_parameters_and_outputs(client, token):
    run = RunFactory(owner=selectors.user_for_api_token(token=token), status="succeeded", step=4)
    image = ImageFactory(owner=run.owner, run=run)
    response = client.get(f"/api/v1/runs/{run.pk}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "succeeded"
    assert (body["step"], body["total_steps"]) == (4, 4)
    assert body["parameters"]["seed"] == 1234
    assert body["parameters"]["num_inference_steps"] == 4
    assert body["outputs"] == [
        {
            "image_id": str(image.pk),
            "url": f"http://testserver/images/{image.pk}",
            "width": 64,
            "height": 64,
            "seed": 1234,
        }
    ]


def test_a_run_of_several_images_lists_each_with_its_own_seed(client, token):
    response = post_json(client, "/api/generate", {"prompt": "a red fox", "seed": 40, "batch_size": 3}, token)
    assert response.status_code == 202
    run = Run.objects.get(pk=response.json()["run_id"])
    assert (run.batch_size, run.seeds) == (3, [40, 41, 42])
    # As the worker stores them (here by hand), in any order: the answer lists them by their place.
    images = [ImageFactory(owner=run.owner, run=run, index=index) for index in (2, 0, 1)]
    body = client.get(response.json()["status_url"], headers={"Authorization": f"Bearer {token}"}).json()
    assert body["parameters"]["batch_size"] == 3
    assert [(output["image_id"], output["seed"]) for output in body["outputs"]] == [
        (str(images[1].pk), 40),
        (str(images[2].pk), 41),
        (str(images[0].pk), 42),
    ]


def test_a_sampler_and_clip_skip_are_taken_and_reported_back(client, token):
    body = {"prompt": "a (red:1.3) fox", "scheduler": "dpmpp_sde_karras", "clip_skip": 2}
    response = post_json(client, "/api/generate", body, token)
    assert response.status_code == 202
    run = Run.objects.get(pk=response.json()["run_id"])
    assert (run.prompt, run.scheduler, run.clip_skip) == ("a (red:1.3) fox", "dpmpp_sde_karras", 2)
    parameters = client.get(f"/api/v1/runs/{run.pk}", headers={"Authorization": f"Bearer {token}"}).json()["parameters"]
    assert (parameters["sampler"], parameters["clip_skip"]) == ("DPM++ SDE Karras", 2)


def test_unknown_and_foreign_runs_are_404(client, token):
    other = RunFactory()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/v1/runs/{other.pk}", headers=headers).status_code == 404
    assert client.get("/api/v1/runs/00000000-0000-0000-0000-000000000000", headers=headers).status_code == 404


def test_wrong_method_is_405(client, token):
    response = client.get("/api/generate", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 405


def test_create_api_token_command_prints_a_working_token_last(client, capsys):
    from django.core.management import call_command

    call_command("create_api_token", "bob")
    token = capsys.readouterr().out.strip().splitlines()[-1]
    response = post_json(client, "/api/generate", {"prompt": "fox"}, token)
    assert response.status_code == 202
    assert Run.objects.get().owner.username == "bob"
