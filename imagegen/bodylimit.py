"""An ASGI guard that refuses request bodies over a cap before Django reads them.

Django reads the whole body into a temporary file before any view or size check runs, and uvicorn
sets no limit, so without this anyone could fill the disk with one request. A body that declares a
larger Content-Length is refused at once, unread; one sent without a length (chunked) is counted as
it passes through and refused as soon as it goes over the cap, and nothing more of it is read.
"""

import json

from .api import API_PREFIX
from .limits import MEGABYTE


def content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RequestBodyLimit:
    """ASGI middleware for HTTP: 413 for a body over `max_bytes`, with the connection closed."""

    def __init__(self, application, *, max_bytes: int):
        self.application = application
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.application(scope, receive, send)
        declared = content_length(scope)
        if declared is not None and declared > self.max_bytes:
            return await self.refuse(scope, send)

        received = 0
        refused = False
        response_started = False

        async def counting_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Tell the application the client has gone: Django then drops what it has read
                    # and answers nothing; the refusal is ours to send.
                    refused = True
                    if not response_started:
                        await self.refuse(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal response_started
            if refused:
                return  # the refusal has been sent; the application's late answer has nobody to go to
            response_started = True
            await send(message)

        return await self.application(scope, counting_receive, guarded_send)

    async def refuse(self, scope: dict, send) -> None:
        limit = f"{self.max_bytes / MEGABYTE:g} MB"
        message = f"The request is larger than the limit of {limit}."
        if scope.get("path", "").startswith(API_PREFIX):
            body, content_type = json.dumps({"error": message, "field": None}).encode(), b"application/json"
        else:
            body, content_type = message.encode(), b"text/plain; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body is never read: the server closes the connection after this.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
