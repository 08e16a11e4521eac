"""Production settings through real uvicorn: the studio as `make run` serves it (DEBUG off by
default), and behind a reverse proxy or without one, who may say which address and scheme a
request came from (X-Forwarded-For, X-Forwarded-Proto)."""

import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

from imagegen import services
from imagegen.localstack import start_stack

from .factories import PASSWORD, UserFactory

pytestmark = pytest.mark.integration

LOGIN_FAILURES = 2


@pytest.fixture(scope="module")
def proxied_stack(django_db_setup, redis_server, tmp_path_factory):
    """The studio behind a proxy on this machine: FORWARDED_ALLOW_IPS as README "Deploy" says."""
    stack = start_stack(
        tmp_path_factory.mktemp("proxied"),
        redis_server.url(3),  # not the live stack's: neither worker may take the other's jobs
        FORWARDED_ALLOW_IPS="127.0.0.1",
        IMAGEGEN_LOGIN_MAX_FAILURES=str(LOGIN_FAILURES),
    )
    yield stack
    stack.stop()


def submit(stack, token: str, **headers: str) -> dict:
    request = urllib.request.Request(
        f"{stack.base_url}/api/generate",
        method="POST",
        data=json.dumps({"prompt": "fox", "num_inference_steps": 2, "width": 64, "height": 64}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 202
        return json.loads(response.read())


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def log_in(stack, password: str, *, forwarded_for: str) -> int:
    """The log-in form filled in as a browser does (CSRF token and cookie): the answer's status."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(), NoRedirect)
    headers = {"X-Forwarded-For": forwarded_for}
    page = opener.open(urllib.request.Request(f"{stack.base_url}/login/", headers=headers), timeout=30).read()
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1].decode()
    form = urllib.parse.urlencode({"username": "root", "password": password, "csrfmiddlewaretoken": token})
    request = urllib.request.Request(f"{stack.base_url}/login/", data=form.encode(), headers=headers)
    try:
        return opener.open(request, timeout=30).status
    except urllib.error.HTTPError as answer:
        return answer.code


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.headers.get("Content-Type", ""), answer.read().decode()


def test_with_debug_off_by_default_pages_static_files_and_the_404_page_work(stack):
    # The stack is started with no DEBUG at all, as `make run` is.
    status, _, page = get(f"{stack.base_url}/login/")
    assert status == 200
    stylesheet = re.search(r'<link rel="stylesheet" href="([^"]+)"', page)[1]
    status, content_type, css = get(f"{stack.base_url}{stylesheet}")
    assert status == 200 and content_type.startswith("text/css") and ".topbar" in css
    status, _, page = get(f"{stack.base_url}/no-such-page/")
    # The studio's own page, with its header and style: no debug page, no bare "Not Found".
    assert status == 404
    assert "There is nothing here" in page and stylesheet in page
    assert "Django" not in page and "urlpatterns" not in page


def test_behind_the_proxy_the_api_hands_out_https_and_wss_urls(proxied_stack, transactional_db):
    token = services.api_token_create(username="traveller")
    secure = submit(proxied_stack, token, **{"X-Forwarded-Proto": "https"})
    assert secure["ws_url"].startswith("wss://127.0.0.1:") and secure["status_url"].startswith("https://127.0.0.1:")
    plain = submit(proxied_stack, token)
    assert plain["ws_url"].startswith("ws://") and plain["status_url"].startswith("http://")


def test_behind_the_proxy_the_lockout_counts_each_client_address(proxied_stack, transactional_db):
    UserFactory(username="root")
    statuses = [log_in(proxied_stack, "guess", forwarded_for="198.51.100.7") for _ in range(LOGIN_FAILURES)]
    assert statuses == [200] * (LOGIN_FAILURES - 1) + [429]
    assert log_in(proxied_stack, PASSWORD, forwarded_for="198.51.100.7") == 429
    # The proxy connects from one address for everyone; the owner, elsewhere, is not locked out.
    assert log_in(proxied_stack, PASSWORD, forwarded_for="203.0.113.9") == 302


def test_without_a_proxy_nobody_can_claim_https(stack):
    token = services.api_token_create(username="pretender")
    claimed = submit(stack, token, **{"X-Forwarded-Proto": "https"})
    assert claimed["ws_url"].startswith("ws://") and claimed["status_url"].startswith("http://")


def test_without_a_proxy_a_made_up_address_does_not_dodge_the_lockout(stack):
    UserFactory(username="root")
    statuses = [log_in(stack, "guess", forwarded_for=f"198.51.100.{number}") for number in range(1, 6)]
    assert statuses == [200, 200, 200, 200, 429]
    assert log_in(stack, PASSWORD, forwarded_for="203.0.113.9") == 429
