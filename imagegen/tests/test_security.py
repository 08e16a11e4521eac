"""What an attacker tries: hostile uploads, other users' things, forged requests, password guessing."""

import io
import json
import time
import zlib
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from PIL import Image as PILImage
from PIL import PngImagePlugin

from imagegen import services
from imagegen.models import Image, Run
from img2img.tests.test_uploads import crafted_png, encode, png_chunk

from .factories import PASSWORD, ImageFactory, RunFactory, UserFactory
from .test_reliability import record

# Transactional: an accepted run is sent to the (unit tests') queue once committed.
pytestmark = pytest.mark.django_db(transaction=True)


def png(size=(128, 96), colour=(20, 90, 200)) -> bytes:
    return encode(PILImage.new("RGB", size, colour), "PNG")


def png_with_payload() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "<script>alert('text chunk')</script>")
    buffer = io.BytesIO()
    PILImage.new("RGB", (128, 96), (20, 90, 200)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue() + b"<html><script>alert('appended')</script></html>"


REFUSED = {
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "Not a PNG, JPEG or WebP"),
    "pdf": (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "Not a PNG, JPEG or WebP"),
    "tiff": (encode(PILImage.new("RGB", (100, 100)), "TIFF"), "Not a PNG, JPEG or WebP"),
    "bmp": (encode(PILImage.new("RGB", (100, 100)), "BMP"), "Not a PNG, JPEG or WebP"),
    "html named .jpg": (b"<!DOCTYPE html><html><script>alert(1)</script></html>", "Not a PNG, JPEG or WebP"),
    "zero bytes": (b"", "empty"),
    "truncated png": (png((512, 512))[:200], "damaged or truncated"),
    "bomb": (crafted_png(100_000, 100_000), "the limit is 40 megapixels"),
    "declared 8000x6000": (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", (8000).to_bytes(4, "big") + (6000).to_bytes(4, "big") + b"\x08\x02\x00\x00\x00")
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b""),
        "the limit is 40 megapixels",
    ),
    "over 10 MB": (png() + bytes(10 * 1024 * 1024), "limit of 10 MB"),
}

ACCEPTED_NAMES = ["../../etc/passwd.png", "a\x00b.png", "x" * 300 + ".png", "🦊🎨.png", "..\\..\\win.png"]


@pytest.fixture
def api_client(client):
    token = services.api_token_create(username="mallory")
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def stored_files(media_root) -> list:
    return [path for path in media_root.rglob("*") if path.is_file()] if media_root.exists() else []


@pytest.mark.parametrize("case", REFUSED)
def test_hostile_uploads_are_refused_and_leave_nothing(api_client, media_root, case):
    content, message = REFUSED[case]
    upload = SimpleUploadedFile("upload.jpg", content, content_type="image/jpeg")
    response = api_client.post("/api/generate_img2img", {"init_image": upload, "prompt": "fox"})
    assert response.status_code == 400
    assert response.json()["field"] == "init_image"
    assert message in response.json()["error"]
    leaked = stored_files(media_root)
    record(bad_inputs_tried=1, files_leaked=len(leaked))
    assert not Run.objects.exists() and not Image.objects.exists()
    assert leaked == []


def test_payload_in_a_png_is_re_encoded_away(api_client, media_root):
    upload = SimpleUploadedFile("payload.png", png_with_payload(), content_type="image/png")
    response = api_client.post("/api/generate_img2img", {"init_image": upload, "prompt": "fox"})
    assert response.status_code == 202
    (stored,) = stored_files(media_root)
    data = stored.read_bytes()
    assert b"script" not in data and b"alert" not in data and b"Comment" not in data
    record(bad_inputs_tried=1)


@pytest.mark.parametrize("name", ACCEPTED_NAMES, ids=["dotdot", "nul", "300-chars", "emoji", "backslashes"])
def test_hostile_file_names_never_reach_storage(api_client, media_root, name):
    upload = SimpleUploadedFile(name, png(), content_type="image/png")
    response = api_client.post("/api/generate_img2img", {"init_image": upload, "prompt": "fox"})
    assert response.status_code == 202
    (stored,) = stored_files(media_root)
    assert stored.is_relative_to(media_root / "uploads")
    assert stored.name.endswith(".png") and len(stored.stem) == 36  # a generated UUID
    image = Run.objects.get().init_image
    assert "passwd" not in image.file.name and "win" not in image.file.name and "x" * 20 not in image.file.name
    record(bad_inputs_tried=1)


def test_other_users_things_are_404(client):
    run = RunFactory(status="running")
    image = ImageFactory(owner=run.owner, run=run)
    client.force_login(UserFactory())
    for method, url in [
        ("get", f"/runs/{run.pk}/"),
        ("get", f"/runs/{run.pk}/download/"),
        ("get", f"/images/{image.pk}"),
        ("get", f"/images/{image.pk}?download"),
        ("post", f"/runs/{run.pk}/variation/"),
        ("post", f"/runs/{run.pk}/cancel/"),
        ("post", f"/api/v1/runs/{run.pk}/cancel"),
        ("get", f"/api/v1/runs/{run.pk}"),
    ]:
        assert getattr(client, method)(url).status_code == 404, url
    run.refresh_from_db()
    assert run.status == "running" and Run.objects.count() == 1


def test_everything_needs_a_login(client):
    image = ImageFactory()
    for url in ("/", "/gallery/", f"/images/{image.pk}", f"/runs/{image.pk}/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url
    assert client.get("/api/v1/runs/" + str(image.pk)).status_code == 401
    assert client.get(f"/media/{image.file.name}").status_code == 404  # media is never served directly


def test_forms_need_a_csrf_token():
    user = UserFactory()
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post("/", {"prompt": "fox", "steps": 4, "guidance_scale": 7.5, "width": 64, "height": 64})
    assert response.status_code == 403
    run = RunFactory(owner=user, status="running")
    assert client.post(f"/runs/{run.pk}/cancel/").status_code == 403
    assert not Run.objects.exclude(pk=run.pk).exists() and Run.objects.get().status == "running"


def log_in(client: Client, login_url: str, password: str):
    return client.post(login_url, {"username": "root", "password": password})


@pytest.mark.parametrize("login_url", ["/login/", "/admin/login/"])
def test_repeated_failed_log_ins_lock_out_that_username_from_that_address(login_url, settings):
    settings.AXES_FAILURE_LIMIT = 3
    UserFactory(username="root", is_staff=True, is_superuser=True)
    guesser = Client(REMOTE_ADDR="198.51.100.7")
    for _ in range(2):
        response = log_in(guesser, login_url, "guess")
        assert response.status_code == 200 and "correct username and password" in response.content.decode()
    # The third failure locks the pair out; from then on even the right password is refused,
    # on the same log-in page, which says why and for how long.
    for password in ("guess", PASSWORD):
        response = log_in(guesser, login_url, password)
        page = response.content.decode()
        assert response.status_code == 429
        assert "Too many failed log-ins. Wait 15 minutes and try again." in page
        assert 'name="password"' in page
        assert "_auth_user_id" not in guesser.session
    # A stranger cannot lock the administrator out: from another address the password works.
    assert log_in(Client(REMOTE_ADDR="203.0.113.9"), login_url, PASSWORD).status_code == 302
    # The operator lifts every lockout at once.
    call_command("axes_reset", stdout=io.StringIO())
    assert log_in(guesser, login_url, PASSWORD).status_code == 302


def test_a_lockout_ends_by_itself_after_the_cool_off(settings):
    settings.AXES_FAILURE_LIMIT = 1
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    UserFactory(username="root")
    client = Client()
    assert log_in(client, "/login/", "guess").status_code == 429
    assert log_in(client, "/login/", PASSWORD).status_code == 429
    time.sleep(1.2)
    assert log_in(client, "/login/", PASSWORD).status_code == 302


def test_api_tokens_can_be_revoked_in_the_admin(client):
    token = services.api_token_create(username="leaky")
    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(admin)
    from imagegen.models import ApiToken

    stored = ApiToken.objects.get(owner__username="leaky")
    response = client.post("/admin/imagegen/apitoken/", {"action": "revoke", "_selected_action": [stored.pk]})
    assert response.status_code == 302
    anonymous = Client()
    response = anonymous.post(
        "/api/generate",
        json.dumps({"prompt": "fox"}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 401
