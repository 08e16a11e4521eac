"""Django's ASGI handler, serving the synchronous views with one switch to a thread per request.

Django's own handler loads the middleware for async views. Ours are synchronous (and so is the
API-token middleware), so Django adapts each step back and forth: the chain runs in a thread, the
view layer goes back to the event loop (async_to_sync), the CSRF check and the view each go to the
thread again (sync_to_async). Under load every trip to the event loop waits its turn behind other
connections. Loaded for synchronous views, the whole chain (middleware, CSRF, view) runs in the
request's thread after a single switch; an async view still works, run by async_to_sync.
"""

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class SyncViewsASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        # ASGIHandler awaits the chain; run it in the request's thread (ThreadSensitiveContext).
        self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)


def get_asgi_application() -> SyncViewsASGIHandler:
    """As django.core.asgi.get_asgi_application, with the handler above."""
    django.setup(set_prefix=False)
    return SyncViewsASGIHandler()
