"""Import an image to edit: the generate page's third mode and `POST /api/v1/imports` store the
upload at once as a succeeded run's only output (its v1), with no worker, no queue and no quota."""

import io

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from imagegen import services
from imagegen.celery import app
from imagegen.models import Image, JobStatus, Run
from imagegen.tests.factories import UserFactory
from img2img.uploads import normalise_upload

pytestmark = pytest.mark.django_db

IMPORT_MODE = {"mode": "imported"}


@pytest.fixture
def token():
    return services.api_token_create(username="alice")


@pytest.fixture
def sent_tasks(monkeypatch):
    """The Celery messages sent while the test runs (none reach a broker)."""
    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, *args, **kwargs: sent.append(name))
    return sent


def png(size=(320, 240), colour=(200, 60, 20), name="photo.png") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buffer, format="PNG")
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/png")


def not_an_image() -> SimpleUploadedFile:
    return SimpleUploadedFile("photo.png", b"%PDF-1.4 not an image", content_type="image/png")


def too_large() -> SimpleUploadedFile:
    return SimpleUploadedFile("huge.png", b"\x89PNG\r\n\x1a\n" + bytes(11 * 1024 * 1024), content_type="image/png")


def api_post(client, token, data):
    return client.post("/api/v1/imports", data, headers={"Authorization": f"Bearer {token}"})


def nothing_stored(media_root) -> bool:
    files = [path for path in media_root.rglob("*") if path.is_file()] if media_root.exists() else []
    return not Run.objects.exists() and not Image.objects.exists() and not files


def test_import_mode_stores_a_succeeded_run_with_the_upload_as_its_output(
    user_client, sent_tasks, media_root, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        # What the other modes post is ignored: the prompt is not required, bad settings don't count.
        response = user_client.post("/", {**IMPORT_MODE, "init_image": png(), "prompt": "", "steps": 500})
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    assert (run.generation_type, run.status, run.owner) == ("imported", JobStatus.SUCCEEDED, user_client.user)
    assert (run.prompt, run.steps, run.total_steps, run.guidance_scale, run.seed, run.model) == ("", 0, 0, 0, 0, "")
    assert (run.width, run.height) == (320, 240)
    assert run.started_at is not None and run.finished_at is not None
    assert run.init_image is None and run.strength is None
    (image,) = run.outputs.all()
    assert (image.kind, image.index, image.owner, image.width, image.height) == ("upload", 0, run.owner, 320, 240)
    with default_storage.open(image.file.name) as stored:
        data = stored.read()
    assert image.sha256 == Image.digest(data)
    assert PILImage.open(io.BytesIO(data)).getpixel((10, 10)) == (200, 60, 20)
    # Nothing queued: no message was sent, none was waiting to be.
    assert run.sent_at is None and sent_tasks == [] and callbacks == []

    page = user_client.get(response["Location"]).content.decode()
    assert "Imported image" in page and "Imported</span>" in page
    assert f"/images/{image.pk}" in page
    assert "Generate Variation" not in page
    assert "<dt>Type</dt><dd>Imported</dd>" in page and "<dt>Size</dt><dd>" in page
    assert "<dt>Seed</dt>" not in page and "<dt>Prompt</dt>" not in page
    assert "Queue unavailable" not in page


def test_htmx_import_returns_the_finished_card(user_client, sent_tasks):
    response = user_client.post("/", {**IMPORT_MODE, "init_image": png()}, headers={"HX-Request": "true"})
    run = Run.objects.get()
    card = response.content.decode()
    assert f'id="run-{run.pk}"' in card
    assert "Imported image" in card and "Imported</span>" in card
    assert f"/images/{run.outputs.get().pk}" in card and "Refine Image" in card
    assert "ws-connect" not in card and "hx-trigger" not in card  # finished: nothing to follow
    assert "320×240" in card and "steps" not in card and "seed" not in card
    assert sent_tasks == []


def test_the_page_offers_import_as_a_third_mode(user_client):
    page = user_client.get("/").content.decode()
    assert 'value="imported"' in page and "<span>Import</span>" in page
    form = user_client.post("/", IMPORT_MODE).content.decode()
    assert "This field is required." in form
    assert ">Import</button>" in form  # the form comes back in import mode


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (not_an_image, "Not a PNG, JPEG or WebP image"),
        (too_large, "the limit is 10 MB"),
        (None, "This field is required."),
    ],
)
def test_bad_import_on_the_page_is_a_form_error_and_stores_nothing(user_client, media_root, upload, message):
    data = {**IMPORT_MODE, **({"init_image": upload()} if upload else {})}
    page = user_client.post("/", data).content.decode()
    assert message in page
    assert nothing_stored(media_root)


@pytest.mark.django_db(transaction=True)
def test_api_import_is_201_and_the_url_serves_the_png_to_its_owner_only(client, token, sent_tasks):
    response = api_post(client, token, {"image": png(size=(256, 192))})
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"run_id", "image_id", "url", "width", "height"}
    run = Run.objects.get(pk=body["run_id"])
    image = run.outputs.get()
    assert body["image_id"] == str(image.pk)
    assert body["url"] == f"http://testserver/images/{image.pk}"
    assert (body["width"], body["height"]) == (256, 192)
    assert (run.generation_type, run.status, run.sent_at) == ("imported", "succeeded", None)
    assert sent_tasks == []

    served = client.get(body["url"], headers={"Authorization": f"Bearer {token}"})
    assert served.status_code == 200 and served["Content-Type"] == "image/png"
    assert b"".join(served.streaming_content).startswith(b"\x89PNG\r\n\x1a\n")
    other = services.api_token_create(username="mallory")
    assert client.get(body["url"], headers={"Authorization": f"Bearer {other}"}).status_code == 404

    detail = client.get(f"/api/v1/runs/{run.pk}", headers={"Authorization": f"Bearer {token}"}).json()
    assert detail["parameters"] == {"generation_type": "imported", "width": 256, "height": 192}
    assert [version["version"] for version in detail["versions"]] == [1]
    assert detail["versions"][0]["image_id"] == str(image.pk)


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (not_an_image, "Not a PNG, JPEG or WebP image"),
        (too_large, "the limit is 10 MB"),
        (None, "This field is required."),
    ],
)
def test_bad_api_import_is_400_naming_image_and_stores_nothing(client, token, media_root, upload, message):
    response = api_post(client, token, {"image": upload()} if upload else {})
    assert response.status_code == 400
    assert response.json()["field"] == "image"
    assert message in response.json()["error"]
    assert nothing_stored(media_root)


def test_api_import_needs_authentication(client, media_root):
    assert client.post("/api/v1/imports", {"image": png()}).status_code == 401
    assert nothing_stored(media_root)


def test_imports_do_not_use_the_daily_quota(user_client, token, settings, sent_tasks):
    settings.IMAGEGEN_DAILY_QUOTA = 0
    assert api_post(user_client, token, {"image": png()}).status_code == 201
    response = user_client.post("/", {**IMPORT_MODE, "init_image": png()})
    assert response.status_code == 302
    assert Run.objects.filter(generation_type="imported").count() == 2

    page = user_client.post(
        "/", {"mode": "text_to_image", "prompt": "fox", "steps": 4, "guidance_scale": 7.5, "width": 64, "height": 64}
    ).content.decode()
    assert "used all 0 generations of your daily quota" in page
    assert not Run.objects.exclude(generation_type="imported").exists()


def test_an_imported_run_has_no_variation(user_client, sent_tasks):
    user_client.post("/", {**IMPORT_MODE, "init_image": png()})
    run = Run.objects.get()
    response = user_client.post(f"/runs/{run.pk}/variation/", follow=True)
    assert response.redirect_chain == [(f"/runs/{run.pk}/", 302)]
    assert "An imported image has no settings to vary; refine it instead." in response.content.decode()
    assert Run.objects.get() == run and Image.objects.count() == 1
    with pytest.raises(ValueError, match="no settings to vary"):
        services.run_variation_create(run=run)
    assert sent_tasks == []


def test_imported_run_archive_holds_the_image_and_its_size(user_client):
    import zipfile

    user_client.post("/", {**IMPORT_MODE, "init_image": png()})
    run = Run.objects.get()
    archive = zipfile.ZipFile(io.BytesIO(user_client.get(f"/runs/{run.pk}/download/").content))
    assert "Size: 320x240" in archive.read("parameters.txt").decode()
    assert len([name for name in archive.namelist() if name.endswith(".png")]) == 1


@pytest.mark.parametrize("fail_after_storing", [False, True])
def test_run_import_stores_nothing_when_it_fails(monkeypatch, media_root, fail_after_storing):
    from imagegen.services import runs

    real_image_store = runs.image_store

    def failing_image_store(**kwargs):
        real_image_store(**kwargs)  # the file and its row are written, then the commit fails
        raise RuntimeError("the database went away")

    def failing_create(**kwargs):
        raise RuntimeError("the database went away")

    if fail_after_storing:
        monkeypatch.setattr(runs, "image_store", failing_image_store)
    else:
        monkeypatch.setattr(Image.objects, "create", failing_create)  # the file is written, its row is not
    with pytest.raises(RuntimeError):
        services.run_import(owner=UserFactory(), upload=normalise_upload(png().read()))
    assert nothing_stored(media_root)
