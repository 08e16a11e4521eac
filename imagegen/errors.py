"""The site's error answers: JSON naming the problem for API clients, Django's pages for browsers.

Routed from imagegen/urls.py (handler400/403/404) and settings.CSRF_FAILURE_VIEW.
"""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import csrf, defaults

from .api import API_PREFIX, error_response
from .auth import bearer_token
from .limits import MEGABYTE


def wants_json(request: HttpRequest) -> bool:
    """An API call: a path under /api/, or any request made with an API token (image URLs, say)."""
    return request.path.startswith(API_PREFIX) or bearer_token(request.headers.get("Authorization")) is not None


def exception_message(exception: Exception | None, default: str) -> str:
    """What the code that raised said, when it said it in words (a Resolver404 carries the URL table)."""
    message = exception.args[0] if exception is not None and exception.args else None
    return message if isinstance(message, str) and message else default


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if wants_json(request):
        return error_response(bad_request_message(exception), status=400)
    return defaults.bad_request(request, exception)


def bad_request_message(exception: Exception) -> str:
    """Django's own refusals (a SuspiciousOperation) in the caller's words, naming the limit passed."""
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / MEGABYTE
        return f"The request's data (JSON or form fields, files aside) is larger than {limit:g} MB."
    if isinstance(exception, TooManyFieldsSent):
        return f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields."
    return "Bad request."


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if wants_json(request):
        return error_response(exception_message(exception, "Permission denied."), status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404: a path that matches no URL (a run id that is not a UUID, say) or a missing object or file."""
    message = exception_message(exception, "Not found.")
    if wants_json(request):
        return error_response(message, status=404)
    return render(request, "404.html", {"message": message}, status=404)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if wants_json(request):
        return error_response(
            f"CSRF check failed ({reason}): send the X-CSRFToken header with the csrftoken cookie's value, "
            "or authenticate with 'Authorization: Bearer <token>' instead of the session.",
            status=403,
        )
    return csrf.csrf_failure(request, reason)
