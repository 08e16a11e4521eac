"""The gallery grid and a run's card and versions are rendered once and cached, keyed by the state of
the rows they show: served with a handful of queries, and never stale after a change made by
another process (a direct UPDATE here, as the worker and housekeeping make them)."""

import pytest
from django.utils import timezone

from imagegen.models import JobStatus, Run
from refinement.tests.factories import refinement_of, succeeded_refinement

from .factories import ImageFactory, RunFactory, UserFactory

pytestmark = pytest.mark.django_db

# The session, its user, and the state of the rows the cached part shows (runs and refinements).
CACHED_PAGE_QUERIES = 4


def finished_runs(owner, count: int) -> list[Run]:
    runs = [RunFactory(owner=owner, status=JobStatus.SUCCEEDED, prompt=f"finished run {n}") for n in range(count)]
    for run in runs:
        ImageFactory(owner=owner, run=run)
    return runs


def test_a_cached_gallery_page_costs_four_queries(user_client, django_assert_num_queries):
    finished_runs(user_client.user, 30)
    first = user_client.get("/gallery/").content.decode()
    with django_assert_num_queries(CACHED_PAGE_QUERIES):
        again = user_client.get("/gallery/").content.decode()
    # The grid is the same; the page around it is not (its CSRF token is masked afresh each time).
    assert again.split("<h1>")[1] == first.split("<h1>")[1] and first.count('class="run-card"') == 24
    second_page = user_client.get("/gallery/?page=2&type=text_to_image").content.decode()  # another key
    assert second_page.count('class="run-card"') == 6
    with django_assert_num_queries(CACHED_PAGE_QUERIES):
        user_client.get("/gallery/?page=2&type=text_to_image")


def test_a_cached_run_page_costs_four_queries(user_client, django_assert_num_queries):
    (run,) = finished_runs(user_client.user, 1)
    succeeded_refinement(run)
    refinement_of(run, version=3, status=JobStatus.FAILED, error="Out of memory.")
    # Rendered: the cached page's four, then the run's outputs and its refinements (each once).
    with django_assert_num_queries(CACHED_PAGE_QUERIES + 2):
        first = user_client.get(f"/runs/{run.pk}/").content.decode()
    assert first.count('class="version-card"') == 2 and "Out of memory." in first
    assert ">v1</span>" in first  # the card knows the run has versions
    with django_assert_num_queries(CACHED_PAGE_QUERIES):
        again = user_client.get(f"/runs/{run.pk}/").content.decode()
    assert "<title>Run · Image studio</title>" in again  # the title is only the title
    assert again.count('class="version-card"') == 2
    assert again.count('id="versions"') == 1


def test_the_gallery_follows_every_change_another_process_makes(user_client):
    run = RunFactory(owner=user_client.user, status=JobStatus.QUEUED, total_steps=20, sent_at=timezone.now())
    assert "Waiting for a worker" in user_client.get("/gallery/").content.decode()
    # The worker claims it, then reports steps, straight in the database.
    Run.objects.filter(pk=run.pk).update(status=JobStatus.RUNNING, step=3, started_at=timezone.now(), attempts=1)
    assert "Step 3/20" in user_client.get("/gallery/").content.decode()
    Run.objects.filter(pk=run.pk).update(step=4)
    assert "Step 4/20" in user_client.get("/gallery/").content.decode()
    # Housekeeping gives it back to the queue after its worker died.
    Run.objects.filter(pk=run.pk).update(status=JobStatus.QUEUED, step=0)
    assert "Waiting for a worker" in user_client.get("/gallery/").content.decode()
    Run.objects.filter(pk=run.pk).update(status=JobStatus.FAILED, error="It broke.", finished_at=timezone.now())
    assert "It broke." in user_client.get("/gallery/").content.decode()
    RunFactory(owner=user_client.user, prompt="a brand new run")
    assert "a brand new run" in user_client.get("/gallery/").content.decode()
    Run.objects.filter(pk=run.pk).delete()
    assert "It broke." not in user_client.get("/gallery/").content.decode()


def test_the_run_page_follows_its_versions(user_client):
    (run,) = finished_runs(user_client.user, 1)
    assert "No refinements yet" in user_client.get(f"/runs/{run.pk}/").content.decode()
    refinement = refinement_of(run, parent=run.outputs.get())
    assert "No refinements yet" not in user_client.get(f"/runs/{run.pk}/").content.decode()
    type(refinement).objects.filter(pk=refinement.pk).update(status=JobStatus.FAILED, error="No memory left.")
    assert "No memory left." in user_client.get(f"/runs/{run.pk}/").content.decode()


def test_users_never_see_each_others_cached_grid(client):
    first, second = UserFactory(), UserFactory()
    RunFactory(owner=first, prompt="only the first user's")
    client.force_login(first)
    assert "only the first user&#x27;s" in client.get("/gallery/").content.decode()
    client.force_login(second)
    page = client.get("/gallery/").content.decode()
    assert "only the first user" not in page and "No runs yet." in page


def test_the_run_pages_parameters_follow_its_status(user_client):
    run = RunFactory(owner=user_client.user, status=JobStatus.RUNNING, attempts=1, started_at=timezone.now())
    assert "<dt>Status</dt><dd>Running</dd>" in user_client.get(f"/runs/{run.pk}/").content.decode()
    # Housekeeping gives it to another worker after its own died: a second attempt.
    Run.objects.filter(pk=run.pk).update(status=JobStatus.QUEUED, attempts=2)
    assert "<dt>Status</dt><dd>Queued (attempt 2)</dd>" in user_client.get(f"/runs/{run.pk}/").content.decode()
