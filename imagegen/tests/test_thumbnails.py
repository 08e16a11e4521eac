"""Cards load small WebP thumbnails through the owner check, each made once, instead of full PNGs."""

import io
import re

import pytest
from PIL import Image as PILImage

from imagegen import services
from imagegen.engine import THUMBNAIL_SIDE
from imagegen.models import Image, JobStatus, Run
from refinement.tests.factories import succeeded_refinement

from .factories import RunFactory, UserFactory

pytestmark = pytest.mark.django_db


def noisy_png(size=(768, 512)) -> bytes:
    buffer = io.BytesIO()
    PILImage.effect_noise(size, 40).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def finished_run_with_output(owner, size=(768, 512)) -> tuple[Run, Image]:
    run = RunFactory(owner=owner, status=JobStatus.SUCCEEDED, width=size[0], height=size[1])
    image = services.image_store(
        owner=owner, data=noisy_png(size), kind=Image.Kind.OUTPUT, name=f"outputs/{run.pk}/0.png", size=size, run=run
    )
    return run, image


def image_sources(page: str) -> list[str]:
    return re.findall(r'<img[^>]* src="([^"]+)"', page)


def test_gallery_run_page_and_version_cards_show_thumbnails_not_full_images(user_client):
    _, output = finished_run_with_output(user_client.user)
    other_run, other_output = finished_run_with_output(user_client.user)
    refined = succeeded_refinement(other_run)
    gallery = user_client.get("/gallery/").content.decode()
    assert sorted(image_sources(gallery)) == sorted(
        [f"/images/{output.pk}/thumbnail", f"/images/{refined.result.pk}/thumbnail"]
    )
    # The full PNG stays one click away, as the download.
    assert f'href="/images/{output.pk}?download"' in gallery
    run_page = user_client.get(f"/runs/{other_run.pk}/").content.decode()
    assert set(image_sources(run_page)) == {
        f"/images/{other_output.pk}/thumbnail",  # v1's card, and the version card's "before"
        f"/images/{refined.result.pk}/thumbnail",
    }


def test_a_thumbnail_is_a_small_webp_made_once_and_kept_by_the_browser(user_client, monkeypatch):
    _, image = finished_run_with_output(user_client.user, size=(768, 512))
    encodes = []
    real_encode = services.images.encode_thumbnail
    monkeypatch.setattr(services.images, "encode_thumbnail", lambda *a, **k: encodes.append(1) or real_encode(*a, **k))

    response = user_client.get(f"/images/{image.pk}/thumbnail")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert response["Cache-Control"] == "private, max-age=31536000, immutable"
    data = b"".join(response.streaming_content)
    thumbnail = PILImage.open(io.BytesIO(data))
    assert thumbnail.format == "WEBP"
    assert thumbnail.size == (THUMBNAIL_SIDE, THUMBNAIL_SIDE * 512 // 768)  # the long side, the same shape
    assert len(data) < image.file.size / 4, (len(data), image.file.size)

    again = user_client.get(f"/images/{image.pk}/thumbnail")
    assert b"".join(again.streaming_content) == data
    assert len(encodes) == 1, "the second request should serve the stored thumbnail, not encode again"
    image.refresh_from_db()
    assert image.thumbnail.name == f"thumbnails/{image.pk}.webp"

    # A thumbnail whose file went missing (media moved without it) is made again, not a 500.
    image.thumbnail.storage.delete(image.thumbnail.name)
    remade = user_client.get(f"/images/{image.pk}/thumbnail")
    assert remade.status_code == 200 and b"".join(remade.streaming_content) == data
    assert len(encodes) == 2


def test_another_users_thumbnail_is_404_and_makes_nothing(user_client, client):
    stranger = UserFactory()
    _, image = finished_run_with_output(stranger)
    assert user_client.get(f"/images/{image.pk}/thumbnail").status_code == 404
    image.refresh_from_db()
    assert not image.thumbnail
    client.logout()
    assert client.get(f"/images/{image.pk}/thumbnail").status_code == 302  # to the log-in page


def test_a_missing_stored_file_is_a_404_not_a_500(user_client):
    _, image = finished_run_with_output(user_client.user)
    image.file.storage.delete(image.file.name)
    assert user_client.get(f"/images/{image.pk}/thumbnail").status_code == 404


def test_deleting_a_run_deletes_its_images_thumbnails(user_client, django_capture_on_commit_callbacks):
    run, image = finished_run_with_output(user_client.user)
    user_client.get(f"/images/{image.pk}/thumbnail")
    image.refresh_from_db()
    storage = image.thumbnail.storage
    assert storage.exists(image.thumbnail.name)
    with django_capture_on_commit_callbacks(execute=True):
        services.run_delete(run=run)
    assert not storage.exists(image.thumbnail.name) and not storage.exists(image.file.name)


def test_admin_lists_show_thumbnails(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    run, image = finished_run_with_output(UserFactory())
    for page in ("/admin/imagegen/image/", "/admin/imagegen/run/", f"/admin/imagegen/run/{run.pk}/change/"):
        sources = image_sources(client.get(page).content.decode())
        assert f"/admin/imagegen/image/{image.pk}/thumbnail/" in sources, (page, sources)
        assert f"/admin/imagegen/image/{image.pk}/file/" not in sources, page
    response = client.get(f"/admin/imagegen/image/{image.pk}/thumbnail/")
    assert response.status_code == 200 and response["Content-Type"] == "image/webp"
