"""The ASGI application: Django for HTTP, Channels consumers for WebSockets (uvicorn serves both)."""

import os

from imagegen.handlers import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagegen.settings")
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402 - needs Django set up first
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from .auth import AuthStack, OriginCheck  # noqa: E402
from .routing import websocket_urlpatterns  # noqa: E402

# uvicorn does not serve static files; a single-host install lets Django do it (a proxy may instead).
http_application = ASGIStaticFilesHandler(django_application) if settings.SERVE_STATIC else django_application

application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": OriginCheck(AuthStack(URLRouter(websocket_urlpatterns))),
    }
)
