"""The ASGI application: Django for HTTP, Channels consumers for WebSockets (uvicorn serves both)."""

import os

from imagegen.handlers import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagegen.settings")
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402 - needs Django set up first
from django.conf import settings  # noqa: E402

from .auth import AuthStack, OriginCheck  # noqa: E402
from .bodylimit import RequestBodyLimit  # noqa: E402
from .routing import websocket_urlpatterns  # noqa: E402
from .staticfiles import StaticFiles  # noqa: E402

# Static files are answered before Django unless a proxy serves them (settings.SERVE_STATIC).
http_application = StaticFiles(django_application) if settings.SERVE_STATIC else django_application

application = ProtocolTypeRouter(
    {
        "http": RequestBodyLimit(http_application, max_bytes=settings.IMAGEGEN_MAX_REQUEST_BYTES),
        "websocket": OriginCheck(AuthStack(URLRouter(websocket_urlpatterns))),
    }
)
