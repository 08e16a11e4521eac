"""The session and the user of each request are read with plain SQL (imagegen.sessions and
imagegen.auth.UserBackend); what a user and an operator rely on stays Django's: a log-out ends the
session wherever its cookie is, and an expired session, a deactivated user or a changed password
ends it too."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from .factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    assert client.post("/login/", {"username": user.username, "password": PASSWORD}).status_code == 302
    return client


def same_session(client: Client) -> Client:
    """Another browser holding the same session cookie (a second tab, or a stolen cookie)."""
    other = Client()
    other.cookies[settings.SESSION_COOKIE_NAME] = client.cookies[settings.SESSION_COOKIE_NAME].value
    return other


def sent_to_log_in(response) -> bool:
    return response.status_code == 302 and response["Location"].startswith("/login/")


def test_logging_out_ends_the_session_wherever_its_cookie_is():
    user = UserFactory()
    browser = logged_in(user)
    elsewhere = same_session(browser)
    assert elsewhere.get("/gallery/").status_code == 200
    browser.post("/logout/")
    assert sent_to_log_in(elsewhere.get("/gallery/"))
    assert not Session.objects.exists()


def test_an_expired_session_is_logged_out():
    browser = logged_in(UserFactory())
    assert browser.get("/gallery/").status_code == 200
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
    assert sent_to_log_in(browser.get("/gallery/"))


def test_a_deactivated_user_is_logged_out():
    user = UserFactory()
    browser = logged_in(user)
    type(user).objects.filter(pk=user.pk).update(is_active=False)  # as the admin's list action does
    assert sent_to_log_in(browser.get("/gallery/"))


def test_a_new_password_ends_the_other_sessions():
    user = UserFactory()
    browser, phone = logged_in(user), logged_in(user)
    user.set_password("a brand new passphrase")
    user.save()
    assert sent_to_log_in(browser.get("/gallery/")) and sent_to_log_in(phone.get("/gallery/"))
