"""Deleting a run (its page, its card, the API), an image or a user deletes their files too.

Committed transactions: files go once a deletion commits (django-cleanup), as in production.
"""

import pytest
from django.core.files.storage import default_storage

from imagegen import services
from imagegen.engine import GenerationCancelled
from imagegen.models import Image, JobStatus, Run
from imagegen.progress import ProgressReporter
from refinement.models import Refinement
from refinement.tests.factories import succeeded_refinement

from .factories import ImageFactory, RunFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def on_disk(*images: Image) -> list[bool]:
    return [default_storage.exists(image.file.name) for image in images]


def run_with_everything(owner, init_image=None) -> tuple[Run, list[Image]]:
    """A run with an output (v1), a refinement of it (v2) and a refinement of that (v3)."""
    run = RunFactory(owner=owner, status=JobStatus.SUCCEEDED, init_image=init_image)
    output = ImageFactory(owner=owner, run=run)
    v2 = succeeded_refinement(run)
    v3 = succeeded_refinement(run, version=3, parent=v2.result, parent_version=2)
    return run, [output, v2.result, v3.result]


def test_a_user_deletes_their_run_from_its_card_and_every_file_it_made_goes(user_client):
    upload = ImageFactory(owner=user_client.user, kind=Image.Kind.UPLOAD)
    run, made = run_with_everything(user_client.user, init_image=upload)
    variation = RunFactory(owner=user_client.user, init_image=upload, status=JobStatus.SUCCEEDED)
    assert all(on_disk(upload, *made))
    gallery = user_client.get("/gallery/").content.decode()
    assert f'hx-post="/runs/{run.pk}/delete/"' in gallery and "hx-confirm=" in gallery

    response = user_client.post(
        f"/runs/{run.pk}/delete/", headers={"HX-Request": "true", "HX-Current-URL": "/gallery/"}
    )
    assert (response.status_code, response.content) == (200, b"")  # htmx swaps the card out
    assert not Run.objects.filter(pk=run.pk).exists() and not Refinement.objects.filter(run_id=run.pk).exists()
    assert not Image.objects.filter(pk__in=[image.pk for image in made]).exists()
    assert on_disk(*made) == [False, False, False]
    # The upload is the variation's starting image too: it stays until that run goes as well.
    assert on_disk(upload) == [True]
    user_client.post(f"/runs/{variation.pk}/delete/")
    assert on_disk(upload) == [False] and not Image.objects.filter(pk=upload.pk).exists()


def test_deleting_from_the_run_page_goes_to_the_gallery(user_client):
    run, made = run_with_everything(user_client.user)
    page = user_client.get(f"/runs/{run.pk}/").content.decode()
    assert f'hx-post="/runs/{run.pk}/delete/"' in page
    response = user_client.post(
        f"/runs/{run.pk}/delete/", headers={"HX-Request": "true", "HX-Current-URL": f"http://testserver/runs/{run.pk}/"}
    )
    assert response["HX-Redirect"] == "/gallery/"
    assert on_disk(*made) == [False, False, False]
    assert "The run and its images were deleted." in user_client.get("/gallery/").content.decode()


def test_others_runs_cannot_be_deleted_and_a_delete_needs_a_post_with_csrf(user_client, client):
    other, made = run_with_everything(UserFactory())
    assert user_client.post(f"/runs/{other.pk}/delete/").status_code == 404
    own = RunFactory(owner=user_client.user)
    assert user_client.get(f"/runs/{own.pk}/delete/").status_code == 405
    client.force_login(user_client.user)
    client.handler.enforce_csrf_checks = True
    assert client.post(f"/runs/{own.pk}/delete/").status_code == 403
    assert Run.objects.filter(pk__in=[other.pk, own.pk]).count() == 2 and all(on_disk(*made))


def test_a_running_run_that_is_deleted_stops_and_its_worker_stores_nothing(user_client):
    run = RunFactory(owner=user_client.user, steps=2, total_steps=2)
    job = services.job_claim(model=Run, job_id=run.pk, worker="w1")
    outcome = services.run_perform(job, lambda *step: None)
    user_client.post(f"/runs/{run.pk}/delete/")
    with pytest.raises(GenerationCancelled):  # its next step stops the sampler
        ProgressReporter(job)(1, 2)
    services.job_perform(job=job, perform=lambda job, on_step: outcome)  # or the worker was past its last step
    assert not Image.objects.exists()
    assert not default_storage.exists(f"outputs/{run.pk}") or default_storage.listdir(f"outputs/{run.pk}") == ([], [])


def test_the_api_deletes_a_run_with_its_files(client):
    token = services.api_token_create(username="api-deleter")
    owner = UserFactory(username="api-deleter")
    run, made = run_with_everything(owner)
    stranger_run = RunFactory()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.delete(f"/api/v1/runs/{stranger_run.pk}", headers=headers).status_code == 404
    response = client.delete(f"/api/v1/runs/{run.pk}", headers=headers)
    assert response.status_code == 204
    assert on_disk(*made) == [False, False, False]
    again = client.delete(f"/api/v1/runs/{run.pk}", headers=headers)
    assert again.status_code == 404 and "error" in again.json()


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(username="boss", is_staff=True, is_superuser=True))
    return client


def test_an_image_deleted_in_the_admin_takes_its_file(admin_client):
    image = ImageFactory(kind=Image.Kind.UPLOAD)
    response = admin_client.post(f"/admin/imagegen/image/{image.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert on_disk(image) == [False]


def test_a_user_deleted_in_the_admin_takes_every_file_of_theirs(admin_client):
    user = UserFactory()
    upload = ImageFactory(owner=user, kind=Image.Kind.UPLOAD)
    _, made = run_with_everything(user, init_image=upload)
    RunFactory(owner=user, init_image=upload)  # a variation from the same upload
    _, kept = run_with_everything(UserFactory())
    response = admin_client.post(f"/admin/auth/user/{user.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert on_disk(upload, *made) == [False] * 4
    assert all(on_disk(*kept))
