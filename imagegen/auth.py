"""API token authentication for HTTP requests and WebSocket connections, and the page a
locked-out log-in gets.

`Authorization: Bearer <token>` authenticates as the token's owner. Such a request carries no
session cookie a third-party page could ride on, so it is exempt from CSRF checks.
"""

from axes.helpers import get_cool_off
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import AnonymousUser
from django.forms.forms import NON_FIELD_ERRORS
from django.template.response import TemplateResponse
from django.utils.functional import SimpleLazyObject

from . import selectors


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class UserBackend(ModelBackend):
    """Django's ModelBackend (passwords, permissions), with the user a session names read with
    plain SQL (selectors.row_by): every page reads it, and through the ORM it cost 0.3 ms."""

    def get_user(self, user_id):
        user = selectors.row_by(get_user_model(), pk=user_id)
        return user if user is not None and self.user_can_authenticate(user) else None


class BearerTokenMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = bearer_token(request.headers.get("Authorization"))
        if token is not None:
            user = selectors.user_for_api_token(token=token)
            # An invalid token must not fall back to the session: the caller asked for token auth.
            request.user = SimpleLazyObject(lambda: user or AnonymousUser())
            request._dont_enforce_csrf_checks = True
        return self.get_response(request)


class TokenAuthMiddleware:
    """ASGI middleware: a WebSocket handshake with a bearer token authenticates like the API."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", []))
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
        if token is not None:
            user = await database_sync_to_async(selectors.user_for_api_token)(token=token)
            scope = dict(scope, user=user or AnonymousUser())
        return await self.inner(scope, receive, send)


def AuthStack(inner):  # noqa: N802 - named like Channels' AuthMiddlewareStack, which it extends
    # The session stack runs first; the token, when present, then decides who the user is.
    return AuthMiddlewareStack(TokenAuthMiddleware(inner))


class BrowserOriginValidator(OriginValidator):
    """Refuses a WebSocket whose Origin is not one of ALLOWED_HOSTS (cross-site WebSocket hijacking).

    Browsers always send Origin, so a foreign page is refused. A handshake with no Origin at all
    comes from a script, not a browser: it carries no victim's cookie and passes, as with curl.
    """

    def valid_origin(self, parsed_origin) -> bool:
        return parsed_origin is None or super().valid_origin(parsed_origin)


def OriginCheck(application):  # noqa: N802 - an ASGI middleware factory, named like Channels' own
    return BrowserOriginValidator(application, AllowedHostsOriginValidator(application).allowed_origins)


LOCKED_OUT_STATUS = 429


def login_locked_out_response(request, original_response=None, credentials=None):
    """django-axes' answer to a locked-out log-in (AXES_LOCKOUT_CALLABLE): the log-in page the
    attempt came from (the studio's or the admin's), its form saying why and for how long."""
    minutes = max(1, round(get_cool_off(request).total_seconds() / 60))
    message = f"Too many failed log-ins. Wait {minutes} minutes and try again."
    context = getattr(original_response, "context_data", None) or {}
    if isinstance(original_response, TemplateResponse) and "form" in context:
        response = original_response
    else:
        response = TemplateResponse(request, "registration/login.html", {"form": AuthenticationForm(request)})
    form = response.context_data["form"]
    form.errors.clear()
    form.errors[NON_FIELD_ERRORS] = form.error_class([message], error_class="nonfield", renderer=form.renderer)
    # The page was rendered with the form's own error ("enter a correct password"): render it again.
    response.content = response.rendered_content
    response.status_code = LOCKED_OUT_STATUS
    return response
