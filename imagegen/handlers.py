"""Django's ASGI handler, made cheaper for synchronous views: one switch to a thread per request,
on a thread that is kept, not made for the request.

Django's own handler loads the middleware for async views. Ours are synchronous (and so is the
API-token middleware), so Django adapts each step back and forth: the chain runs in a thread, the
view layer goes back to the event loop (async_to_sync), the CSRF check and the view each go to the
thread again (sync_to_async). Loaded for synchronous views, the whole chain runs in the request's
thread after a single switch; an async view still works, run by async_to_sync.

Django also starts a new thread for every request (a ThreadSensitiveContext with its own executor)
and the event loop waits until that thread has started, which under load means waiting for the
GIL: a profile of the loaded server found the loop blocked there most of its time. Here each
request borrows one of IMAGEGEN_WEB_THREADS single-thread executors, kept for the life of the
process, so every sync part of one request still runs on one thread (what Django needs) and a
request beyond that many waits its turn without holding the loop.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler


class SyncViewsASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.threads: asyncio.Queue[ThreadPoolExecutor] | None = None

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        # ASGIHandler awaits the chain: run it in the request's thread (its ThreadSensitiveContext).
        self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        if self.threads is None:  # made here, in the server's event loop
            self.threads = asyncio.Queue()
            for number in range(settings.IMAGEGEN_WEB_THREADS):
                self.threads.put_nowait(ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"request-{number}"))
        executor = await self.threads.get()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self.threads.put_nowait(executor)


def get_asgi_application() -> SyncViewsASGIHandler:
    """As django.core.asgi.get_asgi_application, with the handler above."""
    django.setup(set_prefix=False)
    return SyncViewsASGIHandler()
