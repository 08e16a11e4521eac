"""WebSocket consumers over the real channels_redis layer (the tests' private Redis).

Each test drives the ASGI application with Channels' WebsocketCommunicator, while events are
published the way a worker publishes them: through imagegen.progress and Redis.
"""

import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from imagegen import progress, selectors, services
from imagegen.asgi import application
from imagegen.models import JobStatus

from .factories import ImageFactory, RunFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://localhost:8000")


def session_cookie(user) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    return b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()


async def open_socket(path: str, headers: list) -> tuple[WebsocketCommunicator, bool]:
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    return communicator, connected


def test_page_socket_relays_progress_and_result_as_html():
    run = RunFactory(status=JobStatus.RUNNING, total_steps=4)
    cookie = session_cookie(run.owner)

    async def scenario():
        socket, connected = await open_socket(f"/ws/jobs/{run.pk}/", [ORIGIN, cookie])
        assert connected
        snapshot = await socket.receive_from(timeout=5)
        assert f'id="run-{run.pk}-progress"' in snapshot and "Step 0/4" in snapshot
        await sync_to_async(progress.publish)(
            run.pk, {"type": "job.progress", "job_id": str(run.pk), "step": 2, "total": 4, "eta": 3.0, "preview": None}
        )
        fragment = await socket.receive_from(timeout=5)
        assert 'value="2"' in fragment and "Step 2/4" in fragment and "about 3 s left" in fragment
        image = await sync_to_async(finish)(run)
        await sync_to_async(progress.publish_result)(run, [image])
        fragment = await socket.receive_from(timeout=5)
        assert f"/images/{image.pk}" in fragment
        assert (await socket.receive_output(timeout=5))["type"] == "websocket.close"

    async_to_sync(scenario)()


def finish(run):
    run.status = JobStatus.SUCCEEDED
    run.step = run.total_steps
    run.save()
    return ImageFactory(owner=run.owner, run=run)


def test_api_socket_accepts_a_bearer_token_and_sends_json():
    token = services.api_token_create(username="carol")
    run = RunFactory(owner=UserFactory(username="carol"), status=JobStatus.RUNNING, total_steps=4)

    async def scenario():
        socket, connected = await open_socket(f"/api/v1/ws/{run.pk}", [(b"authorization", f"Bearer {token}".encode())])
        assert connected
        assert json.loads(await socket.receive_from(timeout=5))["status"] == "running"
        await sync_to_async(progress.publish)(
            run.pk, {"type": "job.progress", "job_id": str(run.pk), "step": 1, "total": 4, "eta": None, "preview": None}
        )
        assert json.loads(await socket.receive_from(timeout=5))["step"] == 1
        await socket.disconnect()

    async_to_sync(scenario)()


@pytest.mark.parametrize("path", ["/ws/jobs/{id}/", "/api/v1/ws/{id}"])
def test_sockets_refuse_strangers(path):
    run = RunFactory()
    stranger = session_cookie(UserFactory())

    async def scenario():
        for headers in ([ORIGIN], [ORIGIN, stranger], [(b"authorization", b"Bearer wrong")]):
            socket, connected = await open_socket(path.format(id=run.pk), headers)
            assert not connected, headers
        owner = await sync_to_async(session_cookie)(run.owner)
        socket, connected = await open_socket(path.format(id=run.pk), [(b"origin", b"https://evil.example"), owner])
        assert not connected
        socket, connected = await open_socket(path.format(id=run.pk), [ORIGIN, owner])
        assert connected
        await socket.disconnect()

    async_to_sync(scenario)()


@pytest.mark.parametrize("path", ["/ws/jobs/{id}/", "/api/v1/ws/{id}"])
def test_a_job_that_finishes_while_the_socket_connects_is_not_left_running(path, monkeypatch):
    """The job ends, and its events go out, right after the consumer's ownership check: the
    socket must still end on the finished job, not stay on "running"."""
    run = RunFactory(status=JobStatus.RUNNING, total_steps=4)
    cookie = session_cookie(run.owner)
    real_job_for_user = selectors.job_for_user
    calls = []

    def finishes_after_the_ownership_check(**arguments):
        job = real_job_for_user(**arguments)
        if not calls:
            image = finish(run)
            progress.publish_status(run)
            progress.publish_result(run, [image])
        calls.append(arguments)
        return job

    monkeypatch.setattr(selectors, "job_for_user", finishes_after_the_ownership_check)

    async def scenario():
        socket, connected = await open_socket(path.format(id=run.pk), [ORIGIN, cookie])
        assert connected
        received = []
        while (message := await socket.receive_output(timeout=5))["type"] != "websocket.close":
            received.append(message["text"])
        return received

    received = async_to_sync(scenario)()
    assert received, "nothing was sent before the socket closed"
    if path.startswith("/api"):
        assert json.loads(received[0])["status"] == "succeeded"
        assert json.loads(received[-1])["type"] == "job.result"
    else:
        assert "/images/" in received[-1]
