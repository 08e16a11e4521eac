"""No 500: every URL pattern of the site, found from the resolver (so a URL added later is walked
too), fed hostile path values, query strings and bodies by every kind of caller.

Django's test client is fast enough to try thousands of requests; test_bodylimit.py and the end of
this file check through the real uvicorn what a client sees differently there.
"""

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from imagegen import services
from imagegen.models import Image, JobStatus
from refinement.tests.factories import succeeded_refinement

from .factories import ImageFactory, RunFactory, UserFactory
from .test_reliability import record

# Path values no converter expects: not a UUID, huge, unicode, traversal, NUL, invalid UTF-8,
# and a well-formed UUID that names nothing.
HOSTILE_PATH_VALUES = [
    "not-a-uuid",
    "9" * 4096,
    "ünïcødé-💥",
    "../../../etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%00",
    "%ff%fe",
    str(uuid.UUID(int=0)),
]
HOSTILE_QUERIES = [
    "",
    "?page=-1&type=%00&image=not-a-uuid&download=1&q=%00%ff&o=-99&all=&_changelist_filters=%00&e=1",
    "?page=99999999999999999999999&image=" + "9" * 4096,
    "?" + "&".join(f"field{i}=x" for i in range(1500)),  # more fields than Django parses
]
JSON = "application/json"
# Rows of each admin model whose pages are walked.
ADMIN_ROWS = 3
DEEP_JSON = "[" * 100_000 + "]" * 100_000
HUGE_JSON = json.dumps({"prompt": "x" * (3 * 1024 * 1024)})  # past Django's in-memory body limit
WRONG_TYPES = (
    '{"prompt": null, "negative_prompt": {"a": 1}, "num_inference_steps": [1], "width": "wide", "height": -8,'
    ' "seed": 1e400, "scheduler": 7, "type": {"x": 1}, "payload": "text", "parent_image_id": 5,'
    ' "creativity": true, "strength": "NaN"}'
)
HOSTILE_FORM = {
    "prompt": "\x00" * 10,
    "width": "-1",
    "height": "1e9",
    "steps": "NaN",
    "type": "text",
    "parent_image_id": "not-a-uuid",
    "creativity": "99",
    "text-corrections": "{",
    "region-rectangles": "[[[[",
    "csrfmiddlewaretoken": "forged",
}


@dataclass(frozen=True)
class Body:
    name: str
    data: object
    content_type: str


HOSTILE_BODIES = [
    Body("invalid JSON", "{not json", JSON),
    Body("JSON nested 100 000 deep", DEEP_JSON, JSON),
    Body("3 MB of JSON", HUGE_JSON, JSON),
    Body("JSON of wrong types and nulls", WRONG_TYPES, JSON),
    Body("a JSON array", "[1, 2, 3]", JSON),
    Body("JSON that is not UTF-8", b'{"prompt": "\xff\xfe"}', JSON),
    Body("hostile form fields", HOSTILE_FORM, "multipart"),
    Body("a GIF and an HTML page as uploads", "files", "multipart"),
]


def hostile_files() -> dict:
    from django.core.files.uploadedfile import SimpleUploadedFile

    gif = SimpleUploadedFile("../../x.png", b"GIF89a" + b"\x00" * 64, content_type="image/png")
    html = SimpleUploadedFile("x\x00.jpg", b"<html><script>alert(1)</script>", content_type="image/jpeg")
    return {**HOSTILE_FORM, "image": gif, "init_image": html, "reference": gif, "general-reference": html}


@dataclass(frozen=True)
class Placeholder:
    name: str
    choices: tuple[str, ...] = ()  # a regex group's alternatives (admin's app labels)


@dataclass(frozen=True)
class Route:
    """One URL pattern with its prefixes: literal parts and placeholders, in order."""

    parts: tuple[str | Placeholder, ...]
    name: str

    def fill(self, values: dict[str, str]) -> str:
        return "/" + "".join(part if isinstance(part, str) else values[part.name] for part in self.parts)

    @property
    def placeholders(self) -> list[Placeholder]:
        return [part for part in self.parts if isinstance(part, Placeholder)]


ROUTE_PLACEHOLDER = re.compile(r"<(?:[^>:]+:)?(?P<name>[^>]+)>")
REGEX_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?P<body>[^)]*)\)")
PLAIN_WORDS = re.compile(r"^[\w|]+$")


def pattern_parts(pattern) -> list[str | Placeholder]:
    text = str(pattern)
    is_regex = type(pattern).__name__ == "RegexPattern"
    if is_regex:
        text = text.removeprefix("^").removesuffix("$")
    parts, position = [], 0
    for match in (REGEX_GROUP if is_regex else ROUTE_PLACEHOLDER).finditer(text):
        parts.append(text[position : match.start()])
        body = match.groupdict().get("body") or ""
        parts.append(Placeholder(match["name"], tuple(body.split("|")) if PLAIN_WORDS.match(body) else ()))
        position = match.end()
    parts.append(text[position:])
    literal = "".join(part for part in parts if isinstance(part, str))
    # A new kind of regex pattern needs this walker taught how to fill it, rather than being skipped.
    assert not (is_regex and re.search(r"[\\^$.*+?()\[\]{}|]", literal)), f"cannot fill {text!r}"
    return [part for part in parts if part != ""]


def every_route(resolver=None, prefix=(), namespace="") -> Iterator[Route]:
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        parts = (*prefix, *pattern_parts(entry.pattern))
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from every_route(entry, parts, inner)
        else:
            assert isinstance(entry, URLPattern)
            yield Route(parts, f"{namespace}{entry.name or ''}")


@dataclass
class World:
    """What the callers own: a run (its output's file gone from storage), a refinement, an image."""

    user: object
    staff: object
    token: str
    values: dict[str, list[str]]


@pytest.fixture
def world(db) -> World:
    user = UserFactory(username="walker")
    staff = UserFactory(username="walker-staff", is_staff=True, is_superuser=True)
    token = services.api_token_create(username=user.username)
    run = RunFactory(owner=user, status=JobStatus.SUCCEEDED, step=4)
    lost = ImageFactory(owner=user, run=run, kind=Image.Kind.OUTPUT, file__filename="lost.png")
    refinement = succeeded_refinement(run)
    kept = refinement.result
    lost.file.storage.delete(lost.file.name)
    values = {
        "run_id": [str(run.pk)],
        "job_id": [str(run.pk), str(refinement.pk)],
        "image_id": [str(lost.pk), str(kept.pk)],
        "content_type_id": [str(ContentType.objects.get_for_model(run).pk)],
        "url": ["nothing/here/"],
    }
    return World(user=user, staff=staff, token=token, values=values)


def admin_model_of(route: Route):
    """The model of an admin URL named "admin:<app>_<model>_<view>", or None."""
    named = re.match(r"admin:(?P<app>[a-z0-9]+)_(?P<model>[a-z0-9]+)_", route.name)
    try:
        return apps.get_model(named["app"], named["model"]) if named else None
    except LookupError:  # "admin:view_on_site"
        return None


def valid_values(route: Route, world: World, placeholder: Placeholder) -> list[str]:
    """Values a well-behaved caller would put there: ids of objects that exist."""
    if placeholder.choices:
        return [placeholder.choices[0]]
    if placeholder.name in world.values:
        return world.values[placeholder.name]
    admin_model = admin_model_of(route)
    if admin_model and placeholder.name in {"object_id", "id", "image_id"}:
        # The world's images (the one whose file is lost among them), else a few rows: log rows
        # (axes records every log-in the walk makes) would grow the walk as it goes. Never the
        # staff caller, whom a walked delete page would delete.
        if admin_model is Image:
            return world.values["image_id"]
        rows = admin_model.objects.all()
        if admin_model is type(world.staff):
            rows = rows.exclude(pk=world.staff.pk)
        return [str(pk) for pk in rows.order_by("pk").values_list("pk", flat=True)[:ADMIN_ROWS]] or ["1"]
    if placeholder.name == "object_id":  # admin's "view on site" shortcut, beside content_type_id
        return world.values["run_id"]
    return ["1"]


def urls_to_try(route: Route, world: World) -> Iterator[tuple[str, bool]]:
    """(path, hostile): every valid combination, then each placeholder in turn made hostile."""
    valid = {placeholder.name: valid_values(route, world, placeholder) for placeholder in route.placeholders}
    first = {name: choices[0] for name, choices in valid.items()}
    for name, choices in valid.items():
        for value in choices:
            yield route.fill({**first, name: value}), False
    if not valid:
        yield route.fill({}), False
    for name in valid:
        for value in HOSTILE_PATH_VALUES:
            yield route.fill({**first, name: value}), True


def callers(world: World) -> dict[str, Client]:
    """Anonymous; the user with a session but no CSRF token; the user with one; their API token; staff."""
    anonymous = Client(enforce_csrf_checks=True, raise_request_exception=False)
    no_csrf = Client(enforce_csrf_checks=True, raise_request_exception=False)
    no_csrf.force_login(world.user)
    session = Client(raise_request_exception=False)
    session.force_login(world.user)
    token = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {world.token}")
    staff = Client(raise_request_exception=False)
    staff.force_login(world.staff)
    return {"anonymous": anonymous, "session without CSRF": no_csrf, "session": session, "token": token, "staff": staff}


def requests_for(path: str, hostile_path: bool) -> Iterator[tuple[str, str, dict]]:
    """(method, path, keyword arguments of the test client's method)."""
    queries = HOSTILE_QUERIES[:1] if hostile_path else HOSTILE_QUERIES
    for query in queries:
        yield "get", path + query, {}
    bodies = HOSTILE_BODIES[:1] if hostile_path else HOSTILE_BODIES
    for body in bodies:
        if body.content_type == "multipart":
            data = hostile_files() if body.data == "files" else body.data
            yield "post", path, {"data": data}
        else:
            yield "post", path, {"data": body.data, "content_type": body.content_type}
    if not hostile_path:
        yield "put", path, {"data": WRONG_TYPES, "content_type": JSON}
        yield "patch", path, {"data": DEEP_JSON, "content_type": JSON}
        yield "delete", path, {}
        yield "options", path, {}
        yield "head", path, {}


def test_the_walker_finds_every_kind_of_url():
    names = {route.name for route in every_route()}
    # Pages, the API, the refinement app and the admin (its models and its catch-all) are all walked.
    for expected in (
        "imagegen:image_file",
        "imagegen:api_run",
        "refinement:api_refinement",
        "refinement:refine",
        "admin:imagegen_run_change",
        "admin:app_list",
        "operations",
        "login",
    ):
        assert expected in names


def test_a_stored_file_gone_missing_is_a_404_that_says_so(world):
    """Its image, the run's zip and the OCR of it: a 404 naming the missing file, not a 500."""
    session, token = callers(world)["session"], callers(world)["token"]
    lost_id, run_id = world.values["image_id"][0], world.values["run_id"][0]
    for response in (session.get(f"/images/{lost_id}"), session.get(f"/runs/{run_id}/download/")):
        assert response.status_code == 404
        assert f"The file of image {lost_id} is missing from storage." in response.text
    response = token.get(f"/api/v1/images/{lost_id}/text")
    assert response.status_code == 404
    assert response.json()["error"] == f"The file of image {lost_id} is missing from storage."
    # An image URL fetched with an API token (as the API hands them out) answers in JSON too.
    assert token.get(f"/images/{lost_id}").json()["error"].endswith("is missing from storage.")


def test_api_errors_before_any_view_are_json(world):
    """An id that is not a UUID matches no URL, and a session call without its CSRF token never
    reaches the view: both answer in JSON under /api/, while pages keep their HTML."""
    token, no_csrf = callers(world)["token"], callers(world)["session without CSRF"]
    response = token.get("/api/v1/runs/not-a-uuid")
    assert (response.status_code, response["Content-Type"], response.json()["error"]) == (404, JSON, "Not found.")
    response = no_csrf.post("/api/generate", {"prompt": "a lighthouse"}, content_type=JSON)
    assert (response.status_code, response["Content-Type"]) == (403, JSON)
    assert response.json()["error"].startswith("CSRF check failed (CSRF cookie not set.)")
    assert "Authorization: Bearer" in response.json()["error"]
    page = no_csrf.post("/", {"prompt": "a lighthouse"})
    assert page.status_code == 403 and page["Content-Type"].startswith("text/html")
    # Past Django's own limits for data held in memory and for fields: a 400 naming the limit.
    response = token.post("/api/generate", HUGE_JSON, content_type=JSON)
    assert (response.status_code, response.json()["error"]) == (
        400,
        "The request's data (JSON or form fields, files aside) is larger than 2.5 MB.",
    )
    response = token.get(f"/images/{world.values['image_id'][1]}{HOSTILE_QUERIES[-1]}")
    assert (response.status_code, response.json()["error"]) == (400, "The request has more than 1000 fields.")


def test_a_missing_page_says_what_is_missing(world):
    response = callers(world)["session"].get(f"/runs/{uuid.uuid4()}/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")
    assert "No such run." in response.text and "Back to the studio" in response.text


@pytest.mark.parametrize("caller", ["anonymous", "session without CSRF", "session", "token", "staff"])
def test_no_url_answers_hostile_input_with_a_server_error(world, caller):
    """No 5xx anywhere, and every API error (a 404 for a non-UUID id, a CSRF failure…) is JSON.

    A 503 is the code's own answer that something it needs is down (the queue for a submission, a
    worker for a health check), never Django's answer to a crash: counted apart, not a failure."""
    client = callers(world)[caller]
    user = world.staff if caller == "staff" else world.user
    tried, server_errors, unavailable, not_json = 0, [], 0, []
    for route in every_route():
        for path, hostile_path in urls_to_try(route, world):
            if caller in {"session", "session without CSRF", "staff"}:
                client.force_login(user)  # a walked /logout/ must not turn the rest anonymous
            for method, url, arguments in requests_for(path, hostile_path):
                response = getattr(client, method)(url, **arguments)
                tried += 1
                status, content_type = response.status_code, response.get("Content-Type", "")
                seen = f"{method.upper()} {url[:120]} ({route.name}): {status} {content_type}"
                if status == 503:
                    unavailable += 1
                elif status >= 500:
                    server_errors.append(seen)
                elif url.startswith("/api/") and status >= 400 and content_type != JSON:
                    not_json.append(seen)
    record(
        hostile_requests_tried=tried,
        hostile_requests_answered_5xx=len(server_errors),
        hostile_requests_answered_503_service_down=unavailable,
    )
    assert not server_errors, f"{len(server_errors)} of {tried} got a 5xx:\n" + "\n".join(server_errors[:40])
    assert not not_json, f"{len(not_json)} API errors not in JSON:\n" + "\n".join(not_json[:40])
