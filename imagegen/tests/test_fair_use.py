"""Fair use: jobs queued or running at once, and submissions a minute, per user, on every way in."""

import json
import threading
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.db.models import F
from django.test import Client
from PIL import Image as PILImage

from imagegen import selectors, services
from imagegen.models import JobStatus, Run
from img2img.tests.test_uploads import encode
from img2img.uploads import normalise_upload
from refinement.models import Refinement
from refinement.tests.factories import finished_run

from .factories import UserFactory

# Transactional: an accepted job is sent to the (unit tests') queue once committed.
pytestmark = pytest.mark.django_db(transaction=True)

TEXT = {"prompt": "fox", "num_inference_steps": 2, "width": 64, "height": 64}
ACTIVE_CAP_MESSAGE = "You have 4 jobs queued or running, the most you may have at once."


def png_file() -> SimpleUploadedFile:
    return SimpleUploadedFile("photo.png", encode(PILImage.new("RGB", (64, 64), (200, 30, 30)), "PNG"), "image/png")


class Api:
    """The JSON API as a token holder calls it."""

    def __init__(self, token: str):
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {token}"}

    def generate(self):
        return self.post("/api/generate", TEXT)

    def post(self, url: str, body: dict):
        return self.client.post(url, json.dumps(body), content_type="application/json", headers=self.headers)

    def img2img(self):
        data = {"prompt": "watercolour", "strength": "0.5", "num_inference_steps": "2", "init_image": png_file()}
        return self.client.post("/api/generate_img2img", data, headers=self.headers)

    def refine(self, run):
        return self.post(f"/api/v1/runs/{run.pk}/refine", {"type": "general", "payload": {"prompt": "warmer"}})


@pytest.fixture
def api():
    api = Api(services.api_token_create(username="busy"))
    api.user = selectors.user_for_api_token(token=api.headers["Authorization"].split()[1])
    return api


def active_jobs(user) -> int:
    active = (JobStatus.QUEUED, JobStatus.RUNNING)
    return (
        Run.objects.filter(owner=user, status__in=active).count()
        + Refinement.objects.filter(owner=user, status__in=active).count()
    )


def test_the_fifth_active_job_of_any_kind_is_refused_with_429_until_a_slot_frees(api):
    run = finished_run(owner=api.user)  # a generated image to refine
    accepted = [api.generate(), api.generate(), api.refine(run), api.img2img()]
    assert [response.status_code for response in accepted] == [202, 202, 201, 202]
    for refused in (api.generate(), api.img2img(), api.refine(run)):
        assert refused.status_code == 429
        assert refused.json()["error"].startswith(ACTIVE_CAP_MESSAGE)
        assert refused.json()["field"] is None
        assert refused["Retry-After"]
    assert active_jobs(api.user) == 4
    # Cancelling one frees a slot; so does one that finishes.
    cancelled = api.post(f"/api/v1/runs/{accepted[0].json()['run_id']}/cancel", {})
    assert cancelled.status_code == 200
    assert api.generate().status_code == 202
    assert api.generate().status_code == 429
    services.run_execute(run_id=accepted[1].json()["run_id"])
    assert Run.objects.get(pk=accepted[1].json()["run_id"]).status == JobStatus.SUCCEEDED
    assert api.generate().status_code == 202
    assert active_jobs(api.user) == 4


def test_each_user_has_their_own_slots(api):
    for _ in range(4):
        assert api.generate().status_code == 202
    other = Api(services.api_token_create(username="someone-else"))
    assert other.generate().status_code == 202


def test_the_generate_page_says_why_and_stores_nothing(user_client):
    form = {"mode": "text_to_image", "prompt": "fox", "steps": 2, "guidance_scale": 7.5, "width": 64, "height": 64}
    for _ in range(4):
        assert user_client.post("/", form).status_code == 302
    page = user_client.post("/", form)
    assert page.status_code == 200
    assert ACTIVE_CAP_MESSAGE in page.content.decode()
    assert Run.objects.filter(owner=user_client.user).count() == 4


def test_a_burst_of_submissions_is_refused_for_the_rest_of_the_minute(api, settings):
    settings.IMAGEGEN_SUBMISSIONS_PER_MINUTE = 3
    settings.IMAGEGEN_MAX_ACTIVE_JOBS = 0
    for _ in range(3):
        run_id = api.generate().json()["run_id"]
        api.post(f"/api/v1/runs/{run_id}/cancel", {})  # cancelled at once: still a submission
    refused = api.generate()
    assert refused.status_code == 429
    body = refused.json()["error"]
    assert body.startswith("You have submitted 3 jobs in the last minute, the most you may. Try again in")
    assert 1 <= int(refused["Retry-After"]) <= 60
    # Imports generate nothing, and do not count.
    for _ in range(3):
        services.run_import(owner=api.user, upload=normalise_upload(png_file()))
    # A minute later, the burst has left the window.
    Run.objects.filter(owner=api.user).update(queued_at=F("queued_at") - timedelta(seconds=61))
    assert api.generate().status_code == 202


@pytest.mark.parametrize("limit", ["IMAGEGEN_MAX_ACTIVE_JOBS", "IMAGEGEN_DAILY_QUOTA"])
def test_concurrent_submissions_at_a_limit_cannot_all_pass(settings, limit):
    """Eight threads, each with its own database connection, race for the last two slots (jobs at
    once, or today's generations)."""
    setattr(settings, limit, 3)
    owner = UserFactory()
    arguments = {"steps": 2, "guidance_scale": 7.5, "width": 64, "height": 64}
    services.run_create(owner=owner, prompt="first", **arguments)
    barrier = threading.Barrier(8)
    outcomes = []

    def attempt(number: int) -> None:
        barrier.wait()
        try:
            services.run_create(owner=owner, prompt=f"racer {number}", **arguments)
            outcomes.append("created")
        except services.QuotaExceededError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] * 2 + ["refused"] * 6
    assert Run.objects.filter(owner=owner).count() == 3
