"""The ASGI application: Django for HTTP, Channels consumers for WebSockets (uvicorn serves both)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagegen.settings")
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402 - needs Django set up first
from django.conf import settings  # noqa: E402

from .auth import AuthStack, OriginCheck  # noqa: E402
from .bodylimit import RequestBodyLimit  # noqa: E402
from .routing import websocket_urlpatterns  # noqa: E402

# Static files are served inside Django by ServeStatic's middleware (settings.SERVE_STATIC).
application = ProtocolTypeRouter(
    {
        "http": RequestBodyLimit(django_application, max_bytes=settings.IMAGEGEN_MAX_REQUEST_BYTES),
        "websocket": OriginCheck(AuthStack(URLRouter(websocket_urlpatterns))),
    }
)
