"""The API's OpenAPI description: valid, complete (every API URL with its methods, every form field
with its limits), true (each limit is the one enforced, and every answer of a walk through the API
is as described) and shown at /api/docs."""

import copy
import io
import json
import re
import uuid
from collections.abc import Iterator

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import resolve
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate
from PIL import Image as PILImage
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from conftest import ARTIFACTS
from imagegen import progress, selectors, services
from imagegen.asgi import application
from imagegen.engine import encode_png
from imagegen.engine.requests import SAMPLER_LABELS
from imagegen.models import JobStatus, Run
from imagegen.openapi import REQUEST_FORMS
from imagegen.routing import websocket_urlpatterns
from refinement import services as refinement_services
from refinement.forms import RefineForm
from refinement.models import Refinement
from refinement.tests.test_stages import misspelt_sign

from .factories import ImageFactory, RunFactory, UserFactory
from .test_hostile import Route, every_route

pytestmark = pytest.mark.django_db(transaction=True)

JSON = "application/json"
DESCRIPTION = "/api/v1/openapi.json"
SPEC_URI = "urn:openapi"
ROUTE_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")


@pytest.fixture
def token():
    return services.api_token_create(username="alice")


@pytest.fixture
def api(token) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
def spec(api) -> dict:
    response = api.get(DESCRIPTION)
    assert response.status_code == 200
    return response.json()


def png(size=(64, 64), picture=None, name="picture.png") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    (picture or PILImage.new("RGB", size, (40, 90, 160))).save(buffer, format="PNG")
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/png")


def run_png() -> SimpleUploadedFile:
    """A PNG carrying this studio's parameters, with every setting the form has."""
    text = (
        "a fox\nNegative prompt: fog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, "
        "Model: tiny, Denoising strength: 0.5"
    )
    return SimpleUploadedFile("fox.png", encode_png(PILImage.new("RGB", (64, 64)), text), content_type="image/png")


def post_json(client: Client, url: str, body) -> object:
    return client.post(url, data=json.dumps(body), content_type=JSON)


def described_path(route: Route) -> str:
    return route.fill({placeholder.name: f"{{{placeholder.name}}}" for placeholder in route.placeholders})


def test_the_description_is_valid_openapi_3_1_and_needs_a_login(spec, client):
    validate(spec)  # raises, naming the fault, on anything the specification does not allow
    assert spec["openapi"] == "3.1.0"
    assert spec["servers"] == [{"url": "http://testserver"}]
    assert set(spec["components"]["securitySchemes"]) == {"bearerAuth", "sessionCookie"}
    anonymous = client.get(DESCRIPTION)
    assert anonymous.status_code == 401 and anonymous.json()["error"].startswith("Authentication required")


def test_every_api_url_is_described_with_the_methods_its_view_takes(spec):
    """Walked from the URL resolver: an endpoint added without its description fails here."""
    api_routes = [route for route in every_route() if described_path(route).startswith("/api/")]
    assert len(api_routes) >= 12
    for route in api_routes:
        path = described_path(route)
        if path == "/api/docs":
            continue  # the page that shows the description
        assert path in spec["paths"], f"{path} ({route.name}) is missing: describe it in imagegen.openapi.OPERATIONS"
        view = resolve(route.fill({placeholder.name: str(uuid.uuid4()) for placeholder in route.placeholders})).func
        assert sorted(method.upper() for method in spec["paths"][path]) == sorted(view.allowed_methods), path
        for operation in spec["paths"][path].values():
            in_path = [parameter for parameter in operation["parameters"] if parameter["in"] == "path"]
            assert [parameter["name"] for parameter in in_path] == [
                placeholder.name for placeholder in route.placeholders
            ]
            assert all(parameter["schema"]["format"] == "uuid" for parameter in in_path)
            assert "401" in operation["responses"]
    # The WebSocket has no place in OpenAPI: it is described in words, at the top.
    sockets = ["/" + ROUTE_PARAMETER.sub(r"{\1}", str(route.pattern)) for route in websocket_urlpatterns]
    assert "/api/v1/ws/{job_id}" in sockets
    for socket in sockets:
        if socket.startswith("/api/"):
            assert f"`{socket}`" in spec["info"]["description"]
    for event in ("job.status", "job.progress", "job.result", "4404"):
        assert event in spec["info"]["description"]


@pytest.mark.parametrize("schema_name", sorted(REQUEST_FORMS))
def test_each_request_holds_every_field_of_its_form_with_its_limits(spec, schema_name):
    form, _ = REQUEST_FORMS[schema_name]
    schema = spec["components"]["schemas"][schema_name]
    assert list(schema["properties"]) == list(form.base_fields)
    for name, field in form.base_fields.items():
        described = schema["properties"][name]
        # The API fills in a left-out field's default, so only fields without one are required.
        assert (name in schema["required"]) == (field.required and field.initial is None), name
        assert described.get("default") == field.initial, name
        for attribute, keyword in (("min_value", "minimum"), ("max_value", "maximum"), ("max_length", "maxLength")):
            if getattr(field, attribute, None) is not None:
                assert described[keyword] == getattr(field, attribute), (name, keyword)
        if hasattr(field, "choices"):
            assert described["enum"] == [value for value, _ in field.choices if value != ""]


def test_a_refinement_request_is_one_of_the_modes_each_with_its_payload(spec):
    schemas = spec["components"]["schemas"]
    mapping = schemas["RefineRequest"]["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(Refinement.Type.values)
    for refinement_type, target in mapping.items():
        variant = schemas[target.rsplit("/", 1)[1]]
        assert variant["properties"]["type"] == {"type": "string", "const": refinement_type}
        assert variant["properties"]["payload"] == {"$ref": f"#/components/schemas/{refinement_type.title()}Payload"}
        assert set(variant["properties"]) == {"payload", *RefineForm.base_fields}
        assert variant["required"] == ["type", "payload"]
        assert variant["properties"]["creativity"] | {"description": ""} == {
            "type": "integer",
            "minimum": 1,
            "maximum": 3,
            "default": 2,
            "description": "",
        }


def test_the_rules_read_as_the_readme_states_them(spec):
    schemas = spec["components"]["schemas"]
    generate = schemas["GenerateRequest"]["properties"]
    assert schemas["GenerateRequest"]["required"] == ["prompt"]
    assert generate["prompt"] | {"description": ""} == {
        "type": "string",
        "minLength": 1,
        "maxLength": 1000,
        "description": "",
    }
    assert "`<lora:name:weight>`" in generate["prompt"]["description"]
    assert "(word:1.3)" in generate["prompt"]["description"]
    clip_skip = generate["clip_skip"]
    assert (clip_skip["type"], clip_skip["minimum"], clip_skip["maximum"], clip_skip["default"]) == (
        "integer",
        1,
        12,
        1,
    )
    assert generate["num_inference_steps"] == {"type": "integer", "minimum": 1, "maximum": 150, "default": 50}
    for side in ("width", "height"):
        assert generate[side] == {"type": "integer", "multipleOf": 8, "minimum": 64, "maximum": 1536, "default": 512}
    assert generate["scheduler"]["enum"] == list(SAMPLER_LABELS) and generate["scheduler"]["default"] == "euler_a"
    assert generate["batch_size"] | {"description": ""} == {
        "type": "integer",
        "minimum": 1,
        "maximum": 4,
        "default": 1,
        "description": "",
    }
    image_to_image = schemas["ImageToImageRequest"]
    assert "width" not in image_to_image["properties"] and image_to_image["required"] == ["prompt", "init_image"]
    assert image_to_image["properties"]["init_image"]["format"] == "binary"
    strength = image_to_image["properties"]["strength"]
    assert (strength["minimum"], strength["maximum"], strength["default"]) == (0.0, 1.0, 0.75)
    masks = schemas["RegionPayload"]["properties"]["masks"]
    assert (masks["minItems"], masks["maxItems"], masks["items"]["required"]) == (1, 8, ["bbox", "prompt"])
    corrections = schemas["TextPayload"]["properties"]["corrections"]
    assert (corrections["maxItems"], corrections["items"]["properties"]["text"]["maxLength"]) == (20, 200)
    assert "at least 4" in corrections["items"]["properties"]["bbox"]["description"]
    assert schemas["SubjectPayload"]["properties"]["referenceFileId"]["format"] == "uuid"
    generate_answers = spec["paths"]["/api/generate"]["post"]["responses"]
    assert sorted(generate_answers) == ["202", "400", "401", "403", "413", "429", "503"]
    assert "Retry-After" in generate_answers["429"]["headers"]


# The limits are the ones enforced: each described limit, through the API itself.

MINIMAL_BODIES = {
    "GenerateRequest": {"prompt": "a fox"},
    "ImageToImageRequest": {"prompt": "a fox"},  # and an init_image
    "ImageUpload": {},  # and an image
    "SettingsImage": {},  # and an image
    "GeneralRefinement": {"type": "general", "payload": {"prompt": "warmer"}},
    "RegionRefinement": {"type": "region", "payload": {"masks": [{"bbox": [0, 0, 8, 8], "prompt": "a door"}]}},
    "SubjectRefinement": {"type": "subject", "payload": {"instructions": "a terrier", "bbox": [0, 0, 8, 8]}},
    "TextRefinement": {"type": "text", "payload": {"corrections": [{"bbox": [0, 0, 8, 8], "text": "OPEN"}]}},
}


def schema_name(schema: dict) -> str:
    return schema["$ref"].rsplit("/", 1)[1]


def values_at_the_limits(schema: dict, valid) -> Iterator[tuple[str, object, bool]]:
    """(limit, value, accepted): each limit's edge, which the API must accept, and the value just
    past it, which it must refuse. `valid` is a value of the field that passes."""
    step = 1 if schema.get("type") == "integer" else 0.5
    if "maximum" in schema:
        yield "maximum", schema["maximum"], True
        yield "maximum", schema["maximum"] + step, False
    if "minimum" in schema:
        yield "minimum", schema["minimum"], True
        yield "minimum", schema["minimum"] - step, False
    if "multipleOf" in schema:
        yield "multipleOf", schema["minimum"] + schema["multipleOf"], True
        yield "multipleOf", schema["minimum"] + schema["multipleOf"] // 2, False
    if "maxLength" in schema:
        yield "maxLength", "x" * schema["maxLength"], True
        yield "maxLength", "x" * (schema["maxLength"] + 1), False
    if schema.get("minLength"):
        yield "minLength", "", False
    for value in schema.get("enum", []):
        yield "enum", value, True
    if "enum" in schema:
        yield "enum", "none-of-these", False
    if schema.get("format") == "uuid":
        yield "format", "not-a-uuid", False
    if schema.get("type") == "array" and schema["items"].get("type") == "object":
        # A list of rectangles: as many as allowed, one more, none; and each limit of one of them.
        yield "maxItems", valid[:1] * schema["maxItems"], True
        yield "maxItems", valid[:1] * (schema["maxItems"] + 1), False
        yield "minItems", [], False
        item = schema["items"]
        for name, item_schema in item["properties"].items():
            for limit, value, accepted in values_at_the_limits(item_schema, valid[0][name]):
                yield f"{name}.{limit}", [{**valid[0], name: value}], accepted
        for missing in item["required"]:
            yield f"{missing}.required", [{key: v for key, v in valid[0].items() if key != missing}], False
    elif schema.get("type") == "array" and schema.get("minItems") == schema.get("maxItems"):
        yield "minItems", valid[:-1], False  # a box of three numbers
        yield "maxItems", valid + valid[-1:], False


def request_cases(spec: dict, run: Run) -> Iterator[tuple[str, str, str, dict, str, str, object, bool]]:
    """(operation, url, media type, body, field, limit, value, accepted) for every limit of every request."""
    schemas = spec["components"]["schemas"]
    for path, methods in spec["paths"].items():
        for operation in methods.values():
            for media_type, content in operation.get("requestBody", {}).get("content", {}).items():
                request = schemas[schema_name(content["schema"])]
                variants = [schema_name(variant) for variant in request.get("oneOf", [content["schema"]])]
                for variant in variants:
                    minimal = MINIMAL_BODIES[variant]
                    fields = [(name, field, "") for name, field in schemas[variant]["properties"].items()]
                    if "payload" in minimal:
                        payload = schemas[schema_name(schemas[variant]["properties"]["payload"])]
                        fields += [(name, field, "payload.") for name, field in payload["properties"].items()]
                    for name, field, prefix in fields:
                        holder = minimal["payload"] if prefix else minimal
                        for limit, value, accepted in values_at_the_limits(field, holder.get(name)):
                            body = {**holder, name: value}
                            body = {**minimal, "payload": body} if prefix else body
                            url = path.replace("{run_id}", str(run.pk))
                            yield operation["operationId"], url, media_type, body, prefix + name, limit, value, accepted


def test_each_described_limit_is_the_one_the_api_enforces(spec, api, settings, token):
    """At each limit's edge the API accepts, just past it it answers 400 naming the field."""
    settings.IMAGEGEN_MAX_ACTIVE_JOBS = settings.IMAGEGEN_SUBMISSIONS_PER_MINUTE = 0
    imported = api.post("/api/v1/imports", {"image": png()}).json()
    run = Run.objects.get(pk=imported["run_id"])
    tried, cases = set(), 0
    for operation, url, media_type, body, field, limit, value, accepted in request_cases(spec, run):
        if media_type == JSON:
            response = post_json(api, url, body)
        else:
            files = {"init_image": png()} if operation == "generate_img2img" else {"image": png()}
            response = api.post(url, {**files, **body})
        seen = f"{operation} {field} {limit}={str(value)[:40]}: {response.status_code} {response.content[:200]}"
        if accepted:
            assert response.status_code in (201, 202), seen
        else:
            assert response.status_code == 400 and field in response.json()["errors"], seen
        tried.add((operation, field))
        cases += 1
    # Every field of every request with a limit was tried, the payloads' included.
    assert cases > 120, cases
    assert {("generate", "width"), ("generate_img2img", "strength"), ("refine_run", "payload.masks")} <= tried
    assert {("refine_run", "payload.referenceFileId"), ("refine_run", "creativity")} <= tried


def test_a_file_that_is_no_image_is_refused_naming_its_field(api):
    note = SimpleUploadedFile("note.png", b"just words", content_type="image/png")
    response = api.post("/api/v1/uploads", {"image": note})
    assert response.status_code == 400 and response.json()["field"] == "image"


# Every answer of a walk through the API is as described.


def strict(schema):
    """The described shapes, with no property beyond those described: an answer that grew a field
    the description lacks fails (the description itself stays open to additions)."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def schema_problems(spec: dict, name: str, instance) -> list[str]:
    """Where `instance` departs from the described schema `name`."""
    registry = Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012))
    schema = {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}
    validator = Draft202012Validator(schema, registry=registry, format_checker=FormatChecker())
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(instance)]


class Described:
    """Checks an answer against the description: its status is described for the operation, and
    its body has the described shape and nothing more."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.strict = {**spec, "components": strict(copy.deepcopy(spec["components"]))}
        self.seen: set[tuple[str, str, int]] = set()

    def check(self, method: str, path: str, response) -> dict | None:
        operation = self.spec["paths"][path][method]
        status = str(response.status_code)
        assert status in operation["responses"], f"{method.upper()} {path} answered {status}: {response.content[:300]}"
        answer = operation["responses"][status]
        self.seen.add((operation["operationId"], method, response.status_code))
        for header in answer.get("headers", {}):
            assert response.has_header(header), f"{method.upper()} {path} {status} lacks {header}"
        if "content" not in answer:
            assert response.content == b""
            return None
        assert response["Content-Type"] == JSON
        return self.shape(schema_name(answer["content"][JSON]["schema"]), response.json(), f"{method} {path} {status}")

    def shape(self, name: str, instance, what: str = ""):
        problems = schema_problems(self.strict, name, instance)
        assert not problems, f"{what or name}: " + "; ".join(problems)
        return instance


def test_every_answer_of_a_walk_through_the_api_is_as_described(spec, api, client, settings, token):
    described = Described(spec)
    sign, _ = misspelt_sign()
    imported = described.check("post", "/api/v1/imports", api.post("/api/v1/imports", {"image": png(picture=sign)}))
    run_id, image_id = imported["run_id"], imported["image_id"]
    lines = described.check("get", "/api/v1/images/{image_id}/text", api.get(f"/api/v1/images/{image_id}/text"))
    assert [line["text"] for line in lines["lines"]] == ["GRAND OPENNING", "Sumer Sale"]
    described.check("post", "/api/v1/uploads", api.post("/api/v1/uploads", {"image": png()}))
    settings_read = described.check("post", "/api/v1/parameters", api.post("/api/v1/parameters", {"image": png()}))
    assert settings_read["source"] is None  # a PNG with no settings
    described.check("post", "/api/v1/parameters", api.post("/api/v1/parameters", {"image": run_png()}))

    # Text repair of the line OCR found, made here (creativity 1 needs no model): real checks.
    refine = {
        "type": "text",
        "payload": {"corrections": [{"bbox": lines["lines"][0]["bbox"], "text": "GRAND OPENING"}]},
    }
    assert not schema_problems(spec, "RefineRequest", {**refine, "creativity": 1})
    accepted = post_json(api, f"/api/v1/runs/{run_id}/refine", {**refine, "creativity": 1})
    job_id = described.check("post", "/api/v1/runs/{run_id}/refine", accepted)["job_id"]
    refinement_services.refinement_execute(refinement_id=job_id, worker="test")
    refinement = described.check("get", "/api/v1/refinements/{job_id}", api.get(f"/api/v1/refinements/{job_id}"))
    assert refinement["status"] == "succeeded" and refinement["checks"][0]["read"] == "GRAND OPENING"
    described.check("post", "/api/v1/refinements/{job_id}/cancel", api.post(f"/api/v1/refinements/{job_id}/cancel"))
    run = described.check("get", "/api/v1/runs/{run_id}", api.get(f"/api/v1/runs/{run_id}"))
    assert [version["version"] for version in run["versions"]] == [1, 2]
    listed = described.check("get", "/api/v1/runs", api.get("/api/v1/runs?type=refined"))
    assert [(run["run_id"], run["versions"]) for run in listed["runs"]] == [(run_id, 2)]
    described.check("get", "/api/v1/runs", api.get("/api/v1/runs?type=bogus"))  # 400

    generate = {"prompt": "a fox", "num_inference_steps": 2, "width": 64, "height": 64, "seed": 1}
    assert not schema_problems(spec, "GenerateRequest", generate)
    queued = described.check("post", "/api/generate", post_json(api, "/api/generate", generate))
    cancel = f"/api/v1/runs/{queued['run_id']}/cancel"
    described.check("post", "/api/v1/runs/{job_id}/cancel", api.post(cancel))
    described.check("post", "/api/v1/runs/{job_id}/cancel", api.post(cancel))  # 409: already ended
    image_to_image = api.post("/api/generate_img2img", {"prompt": "a fox", "strength": "0.5", "init_image": png()})
    queued = described.check("post", "/api/generate_img2img", image_to_image)
    # A run without an image yet cannot be refined: 409.
    described.check(
        "post", "/api/v1/runs/{run_id}/refine", post_json(api, f"/api/v1/runs/{queued['run_id']}/refine", refine)
    )
    described.check("get", "/api/v1/openapi.json", api.get(DESCRIPTION))

    # The errors.
    described.check("post", "/api/generate", post_json(api, "/api/generate", {"prompt": ""}))
    described.check("post", "/api/generate", post_json(client, "/api/generate", generate))  # 401
    session = Client(enforce_csrf_checks=True)
    session.force_login(Run.objects.get(pk=run_id).owner)
    described.check("post", "/api/generate", post_json(session, "/api/generate", generate))  # 403: no CSRF token
    described.check("get", "/api/v1/runs/{run_id}", api.get(f"/api/v1/runs/{uuid.uuid4()}"))
    described.check("get", "/api/v1/images/{image_id}/text", api.get(f"/api/v1/images/{uuid.uuid4()}/text"))
    settings.IMAGEGEN_MAX_ACTIVE_JOBS = 1  # one job is queued: a second must wait
    described.check("post", "/api/generate", post_json(api, "/api/generate", generate))  # 429, Retry-After
    described.check("delete", "/api/v1/runs/{run_id}", api.delete(f"/api/v1/runs/{run_id}"))

    statuses = {(operation, status) for operation, _, status in described.seen}
    assert {("generate", 202), ("generate", 400), ("generate", 401), ("generate", 403), ("generate", 429)} <= statuses
    assert {("cancel_run", 200), ("cancel_run", 409), ("refine_run", 201), ("refine_run", 409)} <= statuses
    assert {("get_run", 200), ("get_run", 404), ("delete_run", 204), ("get_refinement", 200)} <= statuses
    operations = {operation["operationId"] for methods in spec["paths"].values() for operation in methods.values()}
    assert {operation for operation, _ in statuses} == operations  # every operation was called


def test_a_new_field_in_an_answer_must_be_described(spec, api):
    """The walk above would catch an answer that grows a field the description lacks."""
    described = Described(spec)
    response = api.get(DESCRIPTION)
    response.content = json.dumps({"error": "x", "field": None, "extra": 1}).encode()
    response.status_code = 401
    with pytest.raises(AssertionError, match="Additional properties are not allowed"):
        described.check("get", "/api/v1/openapi.json", response)


def test_the_websocket_events_are_as_described(spec, token):
    """The API socket's snapshot, a progress step from the worker's own reporter, and the result."""
    described = Described(spec)
    run = RunFactory(owner=selectors.user_for_api_token(token=token), status=JobStatus.RUNNING, total_steps=4)
    headers = [(b"authorization", f"Bearer {token}".encode())]

    async def scenario():
        socket = WebsocketCommunicator(application, f"/api/v1/ws/{run.pk}", headers=headers)
        connected, _ = await socket.connect(timeout=5)
        assert connected
        described.shape("JobStatusEvent", await socket.receive_json_from(timeout=5))
        await sync_to_async(progress.ProgressReporter(run))(1, 4, PILImage.new("RGB", (8, 8)))
        step = described.shape("JobProgressEvent", await socket.receive_json_from(timeout=5))
        assert step["preview"].startswith("data:image/jpeg;base64,")
        image = await sync_to_async(ImageFactory)(owner=run.owner, run=run)
        await sync_to_async(progress.publish_result)(run, [image])
        described.shape("JobResultEvent", await socket.receive_json_from(timeout=5))
        closed = await socket.receive_output(timeout=5)
        assert (closed["type"], closed["code"]) == ("websocket.close", 1000)

    async_to_sync(scenario)()


# The docs page.


def test_the_docs_page_shows_swagger_ui_from_the_studios_own_files(user_client):
    response = user_client.get("/api/docs")
    assert response.status_code == 200
    html = response.text
    assert 'id="swagger-ui" data-url="/api/v1/openapi.json"' in html
    assert 'href="/api/v1/openapi.json"' in html and "create_api_token" in html
    assets = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert any("swagger-ui-bundle" in asset for asset in assets) and any("swagger-ui." in asset for asset in assets)
    for asset in assets:  # no CDN: every script and style sheet is one of the studio's static files
        assert asset.startswith("/static/"), asset
        assert staticfiles_storage.exists(asset.removeprefix("/static/")), asset
    # The top bar links to it.
    assert 'href="/api/docs">API</a>' in user_client.get("/").text

    assert Client().get("/api/docs").url == "/login/?next=/api/docs"
    refused = user_client.post("/api/docs")
    assert (refused.status_code, refused["Content-Type"], refused["Allow"]) == (405, JSON, "GET")


@pytest.mark.integration
@pytest.mark.browser
def test_the_docs_page_lists_every_endpoint_and_tries_one_with_the_session(stack, page):
    """In Chromium: Swagger UI lists every operation, loads nothing from outside the studio, and
    "Try it out" submits a run as the logged-in user (the session and its CSRF token)."""
    from playwright.sync_api import expect

    from .test_browser import log_in

    elsewhere = []

    def only_the_studio(route):
        if route.request.url.startswith(stack.base_url) or route.request.url.startswith("data:"):
            return route.continue_()
        elsewhere.append(route.request.url)
        return route.abort()

    page.route("**/*", only_the_studio)
    user = UserFactory()
    log_in(page, stack, user.username)
    page.goto(f"{stack.base_url}/api/docs")
    spec = Client(HTTP_AUTHORIZATION=f"Bearer {services.api_token_create(username=user.username)}").get(DESCRIPTION)
    paths = spec.json()["paths"]
    for path, methods in paths.items():
        expect(page.locator(f'.opblock-summary-path[data-path="{path}"]')).to_have_count(len(methods))
    expect(page.locator(".info .description")).to_contain_text("/api/v1/ws/{job_id}")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "api-docs.png"), full_page=True)

    operation = page.locator("#operations-Runs-generate")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    body = {"prompt": "a heron in the reeds", "num_inference_steps": 2, "width": 64, "height": 64}
    operation.locator("textarea.body-param__text").fill(json.dumps(body))
    operation.get_by_role("button", name="Execute").click()
    expect(operation.locator(".live-responses-table tr.response .response-col_status")).to_have_text("202")
    assert Run.objects.get(prompt="a heron in the reeds").owner == user
    assert elsewhere == []
