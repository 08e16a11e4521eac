"""Django's ASGI handler, made cheaper for synchronous views: one switch to a thread per request,
on a thread that is kept, not made for the request.

Django's own handler loads the middleware for async views. Ours are synchronous (and so is the
API-token middleware), so Django adapts each step back and forth: the chain runs in a thread, the
view layer goes back to the event loop (async_to_sync), the CSRF check and the view each go to the
thread again (sync_to_async). Loaded for synchronous views, the whole chain runs in the request's
thread after a single switch; an async view still works, run by async_to_sync.

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
from django.core.handlers.asgi import ASGIHandler

# Idle request threads a web process keeps for the next requests; more are made under a burst and
# ended once they are not needed.
KEPT_IDLE_THREADS = 16


class SyncViewsASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.idle_threads: list[ThreadPoolExecutor] = []  # touched only in the event loop

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        # ASGIHandler awaits the chain: run it in the request's thread (its ThreadSensitiveContext).
        self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)

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


def get_asgi_application() -> SyncViewsASGIHandler:
    """As django.core.asgi.get_asgi_application, with the handler above."""
    django.setup(set_prefix=False)
    return SyncViewsASGIHandler()
