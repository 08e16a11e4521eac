"""Django's ASGI handler, made cheaper for synchronous views: one trip to a thread per request, on
a thread that is kept, not made for the request.

Django's own handler loads the middleware for async views and goes to a thread for each sync part
of a request: the request_started signal, the middleware chain (and within it, back and forth for
the CSRF check and the view), and the response's close (request_finished). Each trip wakes a
thread and waits for the GIL, which on a loaded server is most of a request's wait. Here the
middleware is loaded for synchronous views and one trip does everything from request_started to
request_finished; the event loop only reads the body and sends the response. A streaming response
(a file download) is still closed after it is sent, as Django does. An async view still works, run
by async_to_sync. Django also listens for a client that goes away meanwhile, to cancel async views;
a synchronous view runs to its end either way, so that is left out.

Django also starts a new thread for every request (a ThreadSensitiveContext with its own executor)
and the event loop waits until that thread has started, which under load means waiting for the
GIL: a profile of the loaded server found the loop blocked there most of its time. Here a request
borrows an idle single-thread executor, or makes one when none is idle, so every sync part of one
request still runs on one thread (what Django needs), no request ever waits for a thread (a slow
download holds only its own), and at most KEPT_IDLE_THREADS are kept between requests.
"""

from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix

# Idle request threads a web process keeps for the next requests; more are made under a burst and
# ended once they are not needed.
KEPT_IDLE_THREADS = 16


class SyncViewsASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.idle_threads: list[ThreadPoolExecutor] = []  # touched only in the event loop

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self.idle_threads.pop() if self.idle_threads else ThreadPoolExecutor(max_workers=1)
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            if len(self.idle_threads) < KEPT_IDLE_THREADS:
                self.idle_threads.append(executor)
            else:
                executor.shutdown(wait=False)

    async def handle(self, scope, receive, send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            response = await sync_to_async(self.respond, thread_sensitive=True)(scope, body_file)
            await self.send_response(response, send)
            if response.streaming:
                await sync_to_async(response.close, thread_sensitive=True)()
        finally:
            body_file.close()

    def respond(self, scope, body_file) -> HttpResponseBase:
        """The response to one request, on its thread: request_started, the middleware and view,
        and, unless it streams, request_finished (the response is then only bytes to send)."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size  # the ASGI server chunks the file itself
        if not response.streaming:
            response.close()
        return response


def get_asgi_application() -> SyncViewsASGIHandler:
    """As django.core.asgi.get_asgi_application, with the handler above."""
    django.setup(set_prefix=False)
    return SyncViewsASGIHandler()
