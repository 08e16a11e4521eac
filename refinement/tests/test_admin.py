"""The admin's Refinements: parent → result thumbnails, filters, search, cancel and retry."""

import pytest

from imagegen.models import JobStatus
from imagegen.tests.factories import UserFactory
from refinement.models import Refinement

from .factories import finished_run, refinement_of, succeeded_refinement

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(username="boss", is_staff=True, is_superuser=True))
    return client


def test_refinements_are_listed_with_thumbnails_filters_and_search(admin_client):
    run = finished_run()
    done = succeeded_refinement(run, payload={"prompt": "a copper roof"})
    refinement_of(run, version=3, payload={"prompt": "a glass roof"})
    page = admin_client.get("/admin/refinement/refinement/?q=copper").content.decode()
    assert "a copper roof" in page and "a glass roof" not in page
    assert f"/admin/imagegen/image/{run.outputs.get().pk}/file/" in page  # parent
    assert f"/admin/imagegen/image/{done.result.pk}/file/" in page  # result
    assert "v2 from v1" in page
    filtered = admin_client.get("/admin/refinement/refinement/?status__exact=queued&type__exact=general").content
    assert b"a glass roof" in filtered and b"a copper roof" not in filtered
    assert admin_client.get(f"/admin/refinement/refinement/{done.pk}/change/").status_code == 200


def test_cancel_and_retry_actions(admin_client):
    run = finished_run()
    queued = refinement_of(run, payload={"prompt": "first try"})
    failed = refinement_of(run, version=3, status=JobStatus.FAILED, error="boom", payload={"prompt": "second try"})
    url = "/admin/refinement/refinement/"
    response = admin_client.post(url, {"action": "cancel", "_selected_action": [queued.pk, failed.pk]}, follow=True)
    assert "Cancelled 1 refinement(s)" in response.content.decode()
    assert Refinement.objects.get(pk=queued.pk).status == JobStatus.CANCELLED
    assert Refinement.objects.get(pk=failed.pk).status == JobStatus.FAILED
    response = admin_client.post(url, {"action": "retry", "_selected_action": [failed.pk]}, follow=True)
    assert "Queued 1 retry(ies): v4." in response.content.decode()
    retry = Refinement.objects.get(version=4)
    assert (retry.status, retry.parent_image, retry.payload, retry.seed) == (
        JobStatus.QUEUED,
        failed.parent_image,
        {"prompt": "second try"},
        failed.seed,
    )


def test_refinements_are_for_staff_only(client):
    client.force_login(UserFactory())
    assert client.get("/admin/refinement/refinement/").status_code == 302


def test_regional_refinements_are_found_by_their_rectangles_prompts(admin_client):
    run = finished_run()
    masks = [{"bbox": [0, 0, 8, 8], "prompt": "a brass door knocker"}, {"bbox": [8, 8, 8, 8], "prompt": "ivy"}]
    refinement_of(run, type="region", payload={"masks": masks})
    page = admin_client.get("/admin/refinement/refinement/?q=knocker").content.decode()
    assert "a brass door knocker | ivy" in page
    assert "a brass door knocker" not in admin_client.get("/admin/refinement/refinement/?q=teapot").content.decode()
