"""The ASGI handler (imagegen.handlers) serves a request with one trip to a thread: request_started,
the middleware and view, and request_finished all run there, and a download is closed only once
it has been sent. Driven here as uvicorn drives it, without a server."""

import asyncio
import threading

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core import signals
from django.test import Client

from imagegen import handlers

from .factories import ImageFactory, UserFactory

# The handler's threads have their own database connections: the rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


class CountingExecutor(handlers.ThreadPoolExecutor):
    submitted = 0

    def submit(self, *args, **kwargs):
        CountingExecutor.submitted += 1
        return super().submit(*args, **kwargs)


@pytest.fixture
def handler(monkeypatch):
    monkeypatch.setattr(handlers, "ThreadPoolExecutor", CountingExecutor)
    CountingExecutor.submitted = 0
    return handlers.SyncViewsASGIHandler()


@pytest.fixture
def events():
    """What happened, in order: the signals (with their thread) and the messages sent."""
    happened = []

    def started(**kwargs):
        happened.append(("request_started", threading.current_thread()))

    def finished(**kwargs):
        happened.append(("request_finished", threading.current_thread()))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    yield happened
    signals.request_started.disconnect(started)
    signals.request_finished.disconnect(finished)


def get(handler, path: str, cookie: str, events: list) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"cookie", cookie.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    request = [{"type": "http.request", "body": b"", "more_body": False}]

    async def scenario():
        sent = asyncio.Event()

        async def receive():
            if request:
                return request.pop()
            await sent.wait()  # as a server does: the client goes away once it has its answer
            return {"type": "http.disconnect"}

        async def send(message):
            events.append((message["type"], threading.current_thread()))
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))
                if not message.get("more_body"):
                    sent.set()

        await handler(scope, receive, send)

    status, body = [], []
    async_to_sync(scenario)()
    return status[0], b"".join(body)


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def test_a_page_is_served_in_one_trip_to_its_thread(handler, events, settings):
    settings.ALLOWED_HOSTS = ["localhost"]
    user = UserFactory(username="carol")
    status, body = get(handler, "/gallery/", session_cookie(user), events)
    assert status == 200 and b"Log out carol" in body
    assert CountingExecutor.submitted == 1
    names = [name for name, _ in events]
    assert names == ["request_started", "request_finished", "http.response.start", "http.response.body"]
    (request_thread,) = {thread for name, thread in events if name.startswith("request_")}
    assert request_thread is not threading.current_thread()  # not the event loop's


def test_a_download_is_closed_once_it_has_been_sent(handler, events, settings):
    settings.ALLOWED_HOSTS = ["localhost"]
    image = ImageFactory()
    with image.file.open("rb") as stored:
        expected = stored.read()
    status, body = get(handler, f"/images/{image.pk}", session_cookie(image.owner), events)
    assert status == 200 and body == expected
    names = [name for name, _ in events]
    assert names[0] == "request_started" and names[-1] == "request_finished"
    assert names[1:-1] == ["http.response.start"] + ["http.response.body"] * (len(names) - 3)
