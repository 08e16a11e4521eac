"""Accounts: API tokens and the local administrator of a single-machine install."""

import secrets

from django.contrib.auth import get_user_model

from ..models import ApiToken


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
