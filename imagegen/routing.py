"""WebSocket routes: live job events for the pages (HTML fragments) and for the API (JSON)."""

from django.urls import path

from . import consumers

PAGE_WS_PREFIX = "ws/jobs/"
API_WS_PREFIX = "api/v1/ws/"


def page_ws_path(job_id) -> str:
    return f"/{PAGE_WS_PREFIX}{job_id}/"


def api_ws_path(job_id) -> str:
    return f"/{API_WS_PREFIX}{job_id}"


websocket_urlpatterns = [
    path(f"{PAGE_WS_PREFIX}<uuid:job_id>/", consumers.JobPageConsumer.as_asgi()),
    path(f"{API_WS_PREFIX}<uuid:job_id>", consumers.JobApiConsumer.as_asgi()),
]
