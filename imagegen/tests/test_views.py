"""The pages: login, the generate form's errors, and that users see only their own runs."""

import pytest

from imagegen.models import Run

from .factories import ImageFactory, RunFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def user_client(client):
    user = UserFactory()
    client.force_login(user)
    client.user = user
    return client


def test_pages_need_a_login(client):
    for url in ("/", "/gallery/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")


def test_generate_page_says_the_tiny_model_is_random(user_client):
    page = user_client.get("/").content.decode()
    assert "its weights are random" in page
    assert "IMAGEGEN_MODEL" in page
    assert 'name="prompt"' in page


def test_bad_input_shows_a_form_error_and_stores_nothing(user_client):
    response = user_client.post("/", {"prompt": "", "steps": 500, "guidance_scale": 7.5, "width": 512, "height": 500})
    page = response.content.decode()
    assert response.status_code == 200
    assert "This field is required." in page
    assert "less than or equal to 150" in page
    assert "multiple of 8" in page
    assert not Run.objects.exists()


def test_htmx_bad_input_comes_back_as_the_form(user_client):
    response = user_client.post(
        "/",
        {"prompt": "fox", "steps": 0, "guidance_scale": 7.5, "width": 512, "height": 512},
        headers={"HX-Request": "true"},
    )
    assert response["HX-Retarget"] == "#generate-form"
    assert "greater than or equal to 1" in response.content.decode()
    assert not Run.objects.exists()


def test_htmx_generate_returns_a_live_card(user_client):
    response = user_client.post(
        "/",
        {"prompt": "a red fox", "steps": 8, "guidance_scale": 7.5, "width": 128, "height": 128},
        headers={"HX-Request": "true"},
    )
    run = Run.objects.get()
    card = response.content.decode()
    assert f'id="run-{run.pk}"' in card
    assert f'ws-connect="/ws/jobs/{run.pk}/"' in card
    assert "Waiting for a worker" in card
    assert f'hx-get="/runs/{run.pk}/live/"' in card


def test_plain_post_redirects_to_the_run_page(user_client):
    response = user_client.post(
        "/", {"prompt": "a red fox", "steps": 8, "guidance_scale": 7.5, "width": 128, "height": 128}
    )
    run = Run.objects.get()
    assert response["Location"] == f"/runs/{run.pk}/"
    page = user_client.get(response["Location"]).content.decode()
    assert "a red fox" in page
    assert str(run.seed) in page


def test_page_reloaded_mid_job_shows_its_progress(user_client):
    run = RunFactory(owner=user_client.user, status="running", step=3, total_steps=8)
    page = user_client.get(f"/runs/{run.pk}/").content.decode()
    assert 'value="3"' in page and 'max="8"' in page
    assert "Step 3/8" in page


def test_polling_returns_the_finished_card(user_client):
    run = RunFactory(owner=user_client.user, status="succeeded", step=4)
    image = ImageFactory(owner=run.owner, run=run)
    fragment = user_client.get(f"/runs/{run.pk}/live/").content.decode()
    assert f"/images/{image.pk}" in fragment
    assert 'hx-swap-oob="true"' in fragment
    assert "hx-trigger" not in fragment  # finished: polling stops


def test_failed_run_shows_its_error(user_client):
    run = RunFactory(owner=user_client.user, status="failed", error="Out of memory: try a smaller size.")
    assert "Out of memory: try a smaller size." in user_client.get(f"/runs/{run.pk}/").content.decode()


def test_other_users_runs_and_images_are_404(user_client):
    run = RunFactory()
    image = ImageFactory(owner=run.owner, run=run)
    assert user_client.get(f"/runs/{run.pk}/").status_code == 404
    assert user_client.get(f"/runs/{run.pk}/live/").status_code == 404
    assert user_client.get(f"/images/{image.pk}").status_code == 404
    assert "a lighthouse" not in user_client.get("/gallery/").content.decode()


def test_own_image_is_served_with_safe_headers(user_client):
    image = ImageFactory(owner=user_client.user)
    response = user_client.get(f"/images/{image.pk}")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    download = user_client.get(f"/images/{image.pk}?download")
    assert download["Content-Disposition"].startswith("attachment;")


def test_gallery_lists_own_runs_and_filters_by_type(user_client):
    RunFactory(owner=user_client.user, prompt="a blue whale")
    page = user_client.get("/gallery/").content.decode()
    assert "a blue whale" in page
    assert "a blue whale" not in user_client.get("/gallery/?type=image_to_image").content.decode()
