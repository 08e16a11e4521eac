"""A refinement's WebSockets (page and API) over the real channels_redis layer, like a run's."""

import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async

from imagegen import progress, services
from imagegen.models import Image, JobStatus
from imagegen.tests.factories import ImageFactory, UserFactory
from imagegen.tests.test_consumers import ORIGIN, open_socket, session_cookie
from refinement.models import Refinement

from .factories import finished_run, refinement_of

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_page_socket_relays_a_refinement_and_sends_its_finished_card():
    run = finished_run()
    refinement = refinement_of(run, status=JobStatus.RUNNING)
    cookie = session_cookie(run.owner)

    async def scenario():
        socket, connected = await open_socket(f"/ws/jobs/{refinement.pk}/", [ORIGIN, cookie])
        assert connected
        snapshot = await socket.receive_from(timeout=5)
        assert f'id="refinement-{refinement.pk}-progress"' in snapshot and "Step 0/15" in snapshot
        event = {"type": "job.progress", "job_id": str(refinement.pk), "step": 5, "total": 15, "eta": 2.0}
        await sync_to_async(progress.publish)(refinement.pk, {**event, "preview": None})
        assert "Step 5/15" in await socket.receive_from(timeout=5)
        result = await sync_to_async(finish)(refinement)
        await sync_to_async(progress.publish_result)(refinement, [result])
        fragment = await socket.receive_from(timeout=5)
        assert f"/images/{result.pk}" in fragment
        # The run page's card for it (waiting, or live) becomes the finished card.
        assert f'<article class="version-card" id="refinement-{refinement.pk}" hx-swap-oob="true"' in fragment
        assert (await socket.receive_output(timeout=5))["type"] == "websocket.close"

    async_to_sync(scenario)()


def finish(refinement):
    result = ImageFactory(owner=refinement.owner, kind=Image.Kind.REFINEMENT)
    Refinement.objects.filter(pk=refinement.pk).update(status=JobStatus.SUCCEEDED, step=15, result=result)
    return result


@pytest.mark.parametrize("path", ["/ws/jobs/{id}/", "/api/v1/ws/{id}"])
def test_refinement_sockets_refuse_strangers_and_accept_the_owner(path):
    run = finished_run()
    refinement = refinement_of(run)
    stranger = session_cookie(UserFactory())
    token = services.api_token_create(username=run.owner.username)

    async def scenario():
        for headers in ([ORIGIN], [ORIGIN, stranger], [(b"authorization", b"Bearer wrong")]):
            _, connected = await open_socket(path.format(id=refinement.pk), headers)
            assert not connected, headers
        socket, connected = await open_socket(
            path.format(id=refinement.pk), [(b"authorization", f"Bearer {token}".encode())]
        )
        assert connected
        first = await socket.receive_from(timeout=5)
        if path.startswith("/api"):
            assert json.loads(first)["status"] == "queued"
        await socket.disconnect()

    async_to_sync(scenario)()
