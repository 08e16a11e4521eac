"""Where a waiting job stands in the line ("3rd in line"): counted over every kind of job, shown on
its card, kept up to date over the card's WebSocket as the jobs ahead start, and in the API."""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.utils import timezone

from imagegen import progress, selectors, services
from imagegen.models import JobStatus, Run
from refinement.models import Refinement
from refinement.tests.factories import refinement_of

from .factories import ImageFactory, RunFactory, UserFactory
from .test_consumers import ORIGIN, open_socket, session_cookie

pytestmark = pytest.mark.django_db


def queued(model, job, minutes_ago: int):
    """The job, queued that many minutes ago (queued_at is set on creation, so it is moved after)."""
    model.objects.filter(pk=job.pk).update(queued_at=timezone.now() - timedelta(minutes=minutes_ago))
    job.refresh_from_db()
    return job


def run_waiting(minutes_ago: int, **fields) -> Run:
    return queued(Run, RunFactory(sent_at=timezone.now(), **fields), minutes_ago)


def refinement_waiting(minutes_ago: int, **fields) -> Refinement:
    run = RunFactory(status=JobStatus.SUCCEEDED)
    ImageFactory(owner=run.owner, run=run)
    return queued(Refinement, refinement_of(run, sent_at=timezone.now(), **fields), minutes_ago)


def test_the_line_holds_queued_jobs_of_every_kind_and_every_user_by_when_they_were_queued(
    django_assert_num_queries,
):
    first = run_waiting(50)
    second = refinement_waiting(40)
    RunFactory(status=JobStatus.RUNNING)  # started, succeeded or cancelled: no longer in the line
    queued(Run, RunFactory(status=JobStatus.SUCCEEDED), 45)
    refinement_waiting(44, status=JobStatus.CANCELLED)
    third = run_waiting(30, owner=UserFactory())  # another user's job is in the same line
    fourth = refinement_waiting(20)
    assert [selectors.job_queue_position(job=job) for job in (first, second, third, fourth)] == [1, 2, 3, 4]
    with django_assert_num_queries(1):
        selectors.job_queue_position(job=fourth)
    running = Run.objects.get(status=JobStatus.RUNNING)
    assert selectors.job_queue_position(job=running) is None


def test_a_waiting_card_says_where_it_stands(user_client):
    run_waiting(30)
    refinement_waiting(20)
    mine = run_waiting(10, owner=user_client.user)
    card = user_client.get(f"/runs/{mine.pk}/live/").content.decode()
    assert "Waiting for a worker · " in card and "3rd in line" in card
    assert "3rd in line" in user_client.get("/gallery/").content.decode()
    Run.objects.exclude(pk=mine.pk).update(status=JobStatus.RUNNING)
    Refinement.objects.update(status=JobStatus.RUNNING)
    assert "1st in line" in user_client.get(f"/runs/{mine.pk}/live/").content.decode()


def test_the_api_says_where_a_waiting_job_stands(client):
    token = services.api_token_create(username="dana")
    owner = UserFactory(username="dana")
    run_waiting(30)
    run = run_waiting(20, owner=owner)
    refinement = refinement_waiting(10, owner=owner)
    finished = RunFactory(owner=owner, status=JobStatus.SUCCEEDED)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/v1/runs/{run.pk}", headers=headers).json()["queue_position"] == 2
    assert client.get(f"/api/v1/refinements/{refinement.pk}", headers=headers).json()["queue_position"] == 3
    assert client.get(f"/api/v1/runs/{finished.pk}", headers=headers).json()["queue_position"] is None


@pytest.mark.django_db(transaction=True)
def test_the_card_moves_up_live_as_the_jobs_ahead_start():
    ahead = refinement_waiting(30)
    mine = run_waiting(20)
    cookie = session_cookie(mine.owner)

    def start(job) -> None:
        """What a worker does as it takes a job: claim it, and say it is running."""
        claimed = services.job_claim(model=type(job), job_id=job.pk, worker="test")
        progress.publish_status(claimed)

    async def scenario():
        socket, connected = await open_socket(f"/ws/jobs/{mine.pk}/", [ORIGIN, cookie])
        assert connected
        assert "2nd in line" in await socket.receive_from(timeout=5)
        await sync_to_async(start)(ahead)
        assert "1st in line" in await socket.receive_from(timeout=5)
        await sync_to_async(start)(mine)
        assert "Step 0/4" in await socket.receive_from(timeout=5)  # its own status: running
        # It has left the line: a job starting elsewhere sends it nothing more.
        await sync_to_async(lambda: start(run_waiting(10)))()
        assert await socket.receive_nothing(timeout=0.5)
        await socket.disconnect()

    async_to_sync(scenario)()
