"""Accounts: API tokens, the local administrator of a single-machine install, failed log-ins."""

import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from ..models import ApiToken, LoginFailure


def api_token_create(*, username: str, name: str = "") -> str:
    """Create the user if missing and a new API token for them; returns the token (shown once)."""
    user, created = get_user_model().objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    key = secrets.token_urlsafe(32)
    ApiToken.objects.create(owner=user, name=name, prefix=key[:8], key_hash=ApiToken.hash_key(key))
    return key


def api_tokens_revoke(*, tokens) -> int:
    """Revoke API tokens (a queryset); they stop authenticating at once. Returns how many."""
    return tokens.filter(revoked=False).update(revoked=True)


def local_admin_create(*, username: str) -> str:
    """A superuser for a single-machine install, with a new random password (returned)."""
    password = secrets.token_urlsafe(9)
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return password


def login_failure_record(*, username: str, ip_address: str | None) -> None:
    LoginFailure.objects.create(username=username[:150], ip_address=ip_address)
    # Old failures only matter inside the lockout window.
    window = timedelta(seconds=settings.IMAGEGEN_LOGIN_LOCKOUT_SECONDS)
    LoginFailure.objects.filter(at__lt=timezone.now() - window).delete()
