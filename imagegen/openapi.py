"""The OpenAPI 3.1 description of the JSON API (served at /api/v1/openapi.json, shown at /api/docs).

What a request may hold is read from the forms that validate it (types, required fields, defaults,
limits, choices) and the paths from the URL patterns, so the description follows the rules as they
change; a field or validator it cannot describe raises, rather than being left out. What the views
answer is written out here, and checked against real answers by imagegen/tests/test_openapi.py.
"""

import re
import types
import typing
from dataclasses import dataclass, field
from typing import Literal, get_args, get_origin, get_type_hints, is_typeddict

from django import forms
from django.conf import settings
from django.core import validators as django_validators
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.converters import IntConverter, StringConverter, UUIDConverter

from img2img.forms import ApiImageToImageForm, ImageUploadForm, SettingsImageForm, StudioForm
from refinement.forms import PAYLOAD_FORMS, RefineForm
from refinement.models import Refinement

from . import consumers, limits, progress, validators
from .api import API_PREFIX
from .engine import SOURCE_LABELS
from .forms import ApiGenerateForm, ApiRunListForm
from .models import JobStatus, Run
from .routing import api_ws_path

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
JSON = "application/json"
MULTIPART = "multipart/form-data"

# The studio's own validators, in the words of JSON Schema (Django's own are read from their limits).
VALIDATOR_SCHEMAS = {
    validators.validate_side: {"multipleOf": limits.SIDE_MULTIPLE},
    validators.validate_strength: {"minimum": limits.MIN_STRENGTH, "maximum": limits.MAX_STRENGTH},
    # 1 (off), or a scale in the hires fix's range.
    validators.validate_hires_scale: {
        "minimum": limits.HIRES_OFF,
        "maximum": limits.MAX_HIRES_SCALE,
        "not": {"exclusiveMinimum": limits.HIRES_OFF, "exclusiveMaximum": limits.MIN_HIRES_SCALE},
    },
}
# What these keep out is not a shape a schema states (a NUL character in text).
UNDESCRIBED_VALIDATORS = (django_validators.ProhibitNullCharactersValidator,)
ROUTE_PARAMETER = re.compile(r"<(?:\w+:)?(?P<name>\w+)>")
PATH_CONVERTERS = {
    UUIDConverter: {"type": "string", "format": "uuid"},
    IntConverter: {"type": "integer", "minimum": 0},
    StringConverter: {"type": "string"},
}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


# Requests: read from the forms.


def field_schema(field: forms.Field) -> dict:
    """One form field as a JSON Schema: its type, limits, choices, default and help text."""
    if hasattr(field, "json_schema"):  # a field with a shape of its own (refinement's boxes)
        schema = field.json_schema()
    elif isinstance(field, forms.FileField):
        schema = {"type": "string", "format": "binary"}
    elif isinstance(field, forms.FloatField):
        schema = {"type": "number"}
    elif isinstance(field, forms.IntegerField):
        schema = {"type": "integer"}
    elif isinstance(field, forms.BooleanField):
        schema = {"type": "boolean"}
    elif isinstance(field, forms.UUIDField):
        schema = {"type": "string", "format": "uuid"}
    elif isinstance(field, forms.ChoiceField):
        schema = {"type": "string", "enum": [str(value) for value, _ in field.choices if value != ""]}
        labels = "; ".join(f"`{value}`: {label}" for value, label in field.choices if value != "")
        schema["description"] = f"One of {labels}."
    elif isinstance(field, forms.CharField):
        schema = {"type": "string"}
        if field.required and not field.min_length:
            schema["minLength"] = 1  # a required text field refuses an empty one
    else:
        raise TypeError(f"{type(field).__name__} has no JSON Schema: teach imagegen.openapi.field_schema.")
    for validator in field.validators:
        schema.update(validator_schema(validator))
    if field.initial is not None:
        schema["default"] = field.initial
    words = [str(field.label)] if field.label else []
    words += [str(field.help_text)] if field.help_text else []
    words += [schema["description"]] if "description" in schema else []
    if words:
        schema["description"] = " ".join(word if word.endswith(".") else f"{word}." for word in words)
    return schema


def validator_schema(validator) -> dict:
    limit = getattr(validator, "limit_value", None)
    limit = limit() if callable(limit) else limit
    if isinstance(validator, django_validators.MinValueValidator):
        return {"minimum": limit}
    if isinstance(validator, django_validators.MaxValueValidator):
        return {"maximum": limit}
    if isinstance(validator, django_validators.MinLengthValidator):
        return {"minLength": limit}
    if isinstance(validator, django_validators.MaxLengthValidator):
        return {"maxLength": limit}
    if isinstance(validator, django_validators.StepValueValidator) and not validator.offset:
        return {"multipleOf": limit}
    if isinstance(validator, UNDESCRIBED_VALIDATORS):
        return {}
    if validator in VALIDATOR_SCHEMAS:
        return VALIDATOR_SCHEMAS[validator]
    raise TypeError(f"{validator!r} has no JSON Schema: add it to imagegen.openapi.VALIDATOR_SCHEMAS.")


def form_schema(form_class: type[forms.Form], description: str) -> dict:
    """The object a form validates. A field with a default may be left out: the API fills it in
    (imagegen.api.bind_with_defaults)."""
    fields = form_class.base_fields
    return {
        "type": "object",
        "description": description,
        "properties": {name: field_schema(field) for name, field in fields.items()},
        "required": [name for name, field in fields.items() if field.required and field.initial is None],
    }


def payload_schema_name(refinement_type: str) -> str:
    return f"{refinement_type.title()}Payload"


# Each request described by a form: its schema's name, the form, and what it is. The tests check
# each schema against its form.
REQUEST_FORMS: dict[str, tuple[type[forms.Form], str]] = {
    "GenerateRequest": (
        ApiGenerateForm,
        "A text-to-image run. With neither `width` nor `height` given, the picture is a square of the chosen "
        "model's own size (512 for SD 1.x models, 1024 for SDXL); the defaults below are SD 1.x's.",
    ),
    "ImageToImageRequest": (ApiImageToImageForm, "An image-to-image run: the output takes the init image's size."),
    "ImageUpload": (ImageUploadForm, "An image file."),
    "SettingsImage": (SettingsImageForm, "An image whose generation settings to read."),
    **{
        payload_schema_name(refinement_type): (form, f"The payload of a `{refinement_type}` refinement.")
        for refinement_type, form in PAYLOAD_FORMS.items()
    },
}


def refine_schemas() -> dict[str, dict]:
    """A refinement request: RefineForm's fields and the payload of the mode its `type` chooses."""
    common = form_schema(RefineForm, "")
    types_offered = common["properties"]["type"]["enum"]
    assert sorted(types_offered) == sorted(PAYLOAD_FORMS), "every refinement type needs its payload form"
    schemas, variants = {}, {}
    for refinement_type in types_offered:
        label = Refinement.Type(refinement_type).label
        name = f"{refinement_type.title()}Refinement"
        schemas[name] = {
            "type": "object",
            "description": f"{label}: a new version made from the parent by the `{refinement_type}` mode.",
            "properties": {
                "type": {"type": "string", "const": refinement_type},
                "payload": ref(payload_schema_name(refinement_type)),
                **{key: value for key, value in common["properties"].items() if key != "type"},
            },
            "required": ["type", "payload", *(key for key in common["required"] if key != "type")],
        }
        variants[refinement_type] = f"#/components/schemas/{name}"
    schemas["RefineRequest"] = {
        "type": "object",
        "description": "What to refine and how: `type` chooses the mode and the shape of `payload`.",
        "oneOf": [{"$ref": target} for target in variants.values()],
        "discriminator": {"propertyName": "type", "mapping": variants},
    }
    return schemas


def request_schemas() -> dict[str, dict]:
    described = {name: form_schema(form, description) for name, (form, description) in REQUEST_FORMS.items()}
    return {**described, **refine_schemas()}


# Answers: what the views send.

UUID = {"type": "string", "format": "uuid"}
ABSOLUTE_URL = {"type": "string", "format": "uri"}
TEXT = {"type": "string"}
WHOLE = {"type": "integer"}
MOMENT = {"type": ["string", "null"], "format": "date-time"}
QUEUE_POSITION = {
    "type": ["integer", "null"],
    "description": "While queued: its place in line among every user's waiting jobs (1 is next); null otherwise.",
}
BBOX = {"type": "array", "items": WHOLE, "minItems": 4, "maxItems": 4, "description": "[x, y, width, height]"}


def object_schema(description: str, properties: dict, *, optional: tuple[str, ...] = ()) -> dict:
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }


def typed_dict_schema(typed_dict, description: str) -> dict:
    """A TypedDict (the WebSocket's event shapes in imagegen.progress) as a JSON Schema."""
    hints = get_type_hints(typed_dict)
    return object_schema(description, {name: type_schema(hint) for name, hint in hints.items()})


def type_schema(hint) -> dict:
    origin = get_origin(hint)
    if origin is Literal:
        (value,) = get_args(hint)
        return {"type": "string", "const": value}
    if origin in (types.UnionType, typing.Union):
        inner = [type_schema(arg) for arg in get_args(hint) if arg is not type(None)]
        (single,) = inner
        return {**single, "type": [single["type"], "null"]}
    if origin is list:
        (item,) = get_args(hint)
        return {"type": "array", "items": type_schema(item)}
    if is_typeddict(hint):
        return ref(hint.__name__)
    scalars = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return {"type": scalars[hint]}


def settings_field_schema(name: str) -> dict:
    """A field of the generate form as ImageSettings fills it: its type, without limits or default
    (the value is one the form accepts)."""
    schema = field_schema(StudioForm.base_fields[name])
    return {key: schema[key] for key in ("type", "enum", "description") if key in schema}


def answer_schemas() -> dict[str, dict]:
    status = {"type": "string", "enum": list(JobStatus.values)}
    image = {"image_id": UUID, "url": ABSOLUTE_URL, "width": WHOLE, "height": WHOLE}
    following = {
        "status": ref("JobStatus"),
        "status_url": {**ABSOLUTE_URL, "description": "Where to read the job's state."},
        "ws_url": {"type": "string", "format": "uri", "description": "The job's live events (WebSocket)."},
        "error": {**TEXT, "description": "Only with a 503: the queue is down; the job is kept and starts later."},
    }
    return {
        "Error": object_schema(
            "Every error: a message a person can read, and the field at fault (null when none is).",
            {
                "error": TEXT,
                "field": {"type": ["string", "null"], "description": "`payload.<name>` inside a refinement's payload."},
                "errors": {
                    "type": "object",
                    "description": "With a 400: every field at fault with its messages.",
                    "additionalProperties": {"type": "array", "items": TEXT},
                },
            },
            optional=("errors",),
        ),
        "JobStatus": {**status, "description": "Where a job (a run or a refinement) stands."},
        "Image": object_schema("An image; its URL is fetched with the same authentication.", image),
        "RunOutput": object_schema(
            "One image the run made (v1): a run of several lists them in order.",
            {
                **image,
                "seed": {
                    "type": ["integer", "null"],
                    "description": "Its own seed: the run's seed plus its place in the run (null: imported).",
                },
            },
        ),
        "RunAccepted": object_schema(
            "A run accepted for the queue, and where to follow it.",
            {"run_id": UUID, **following},
            optional=("error",),
        ),
        "RefinementAccepted": object_schema(
            "A refinement accepted for the queue: its version number, and where to follow it.",
            {"job_id": UUID, "version": WHOLE, **following},
            optional=("error",),
        ),
        "RunParameters": object_schema(
            "Every setting that, with the seed, reproduces the run. An imported image has only its type and size.",
            {
                "generation_type": {"type": "string", "enum": list(Run.GenerationType.values)},
                "prompt": TEXT,
                "negative_prompt": TEXT,
                "num_inference_steps": WHOLE,
                "guidance_scale": {"type": "number"},
                **{
                    side: {**WHOLE, "description": "With a hires fix, the size it upscales from (see the outputs)."}
                    for side in ("width", "height")
                },
                "seed": WHOLE,
                "sampler": {**TEXT, "description": "The sampler's name (`Euler a`…)."},
                "clip_skip": {**WHOLE, "description": "1 reads the prompt at the model's own text-encoder layer."},
                "model": TEXT,
                "batch_size": WHOLE,
                "strength": {"type": "number", "description": "Image to image only."},
                **{
                    name: {**schema, "description": "Text to image with a hires fix only."}
                    for name, schema in (
                        ("hires_scale", {"type": "number"}),
                        ("hires_strength", {"type": "number"}),
                        ("hires_steps", WHOLE),
                    )
                },
            },
            optional=(
                "prompt",
                "negative_prompt",
                "num_inference_steps",
                "guidance_scale",
                "seed",
                "sampler",
                "clip_skip",
                "model",
                "batch_size",
                "strength",
                "hires_scale",
                "hires_strength",
                "hires_steps",
            ),
        ),
        "Version": object_schema(
            "One image of the run's chain: v1 is the run's own output, later ones are refinements.",
            {
                "version": WHOLE,
                **image,
                "type": {"type": "string", "enum": [*Run.GenerationType.values, *Refinement.Type.values]},
                "parent_version": {"type": ["integer", "null"]},
                "job_id": {**UUID, "description": "The refinement that made it (for v1, the run)."},
            },
        ),
        "Run": object_schema(
            "A run: where it stands, its parameters, its outputs and the versions refined from them.",
            {
                "run_id": UUID,
                "status": ref("JobStatus"),
                "error": {**TEXT, "description": "Why it failed, in words; empty otherwise."},
                "step": WHOLE,
                "total_steps": WHOLE,
                "attempts": WHOLE,
                "queue_position": QUEUE_POSITION,
                "queued_at": MOMENT,
                "started_at": MOMENT,
                "finished_at": MOMENT,
                "parameters": ref("RunParameters"),
                "outputs": {"type": "array", "items": ref("RunOutput")},
                "versions": {"type": "array", "items": ref("Version")},
            },
        ),
        "ImageSettings": object_schema(
            "The generation settings an image carries, as the generate page's form fields, ready to fill "
            "it (or, with `steps` as `num_inference_steps`, to send to `/api/generate`). Only the "
            "settings the image states and the form accepts are in `fields`; `notes` say what was left "
            "out or changed (an unknown sampler becomes the default).",
            {
                "source": {
                    "type": ["string", "null"],
                    "enum": [*SOURCE_LABELS, None],
                    "description": "The format the settings were read in (`a1111` also for this studio's "
                    "own images); null when the image carries none.",
                },
                "source_label": {"type": ["string", "null"], "description": "The same, in words."},
                "fields": {
                    "type": "object",
                    "properties": {
                        name: settings_field_schema(name)
                        for name in StudioForm.base_fields
                        if name not in ("mode", "init_image", "init_image_id")
                    },
                },
                "model": {**TEXT, "description": "The model the image names (empty when none)."},
                "notes": {"type": "array", "items": TEXT},
            },
        ),
        "RunSummary": object_schema(
            "A run as the run list shows it: `url` has the rest.",
            {
                "run_id": UUID,
                "url": {**ABSOLUTE_URL, "description": "The run (`GET /api/v1/runs/{run_id}`)."},
                "status": ref("JobStatus"),
                "generation_type": {"type": "string", "enum": list(Run.GenerationType.values)},
                "prompt": TEXT,
                "model": TEXT,
                "versions": {**WHOLE, "description": "How many versions its chain has (1: none refined)."},
                "queued_at": MOMENT,
                "outputs": {"type": "array", "items": ref("Image")},
            },
        ),
        "RunList": object_schema(
            "One page of runs.",
            {
                "count": {**WHOLE, "description": "How many runs the filters select, on every page."},
                "page": WHOLE,
                "pages": WHOLE,
                "runs": {"type": "array", "items": ref("RunSummary")},
            },
        ),
        "ImportedImage": object_schema("The run the image became (its v1).", {"run_id": UUID, **image}),
        "ReferenceImage": object_schema(
            "A reference image for subject repair: its id goes in `payload.referenceFileId`.",
            {"file_id": UUID, "url": ABSOLUTE_URL},
        ),
        "TextLine": object_schema(
            "A line of text OCR found.",
            {"bbox": BBOX, "text": TEXT, "confidence": {"type": "number", "description": "0–100"}},
        ),
        "TextLines": object_schema(
            "The text OCR finds in the image.", {"lines": {"type": "array", "items": ref("TextLine")}}
        ),
        "TextCheck": object_schema(
            "Text repair's verification of one correction: what OCR reads back and whether it is right.",
            {
                "bbox": BBOX,
                "area": {**BBOX, "description": "Where the repair drew: the box, the old letters and the new."},
                "text": TEXT,
                "read": TEXT,
                "was": {**TEXT, "description": "What the box said before."},
                "exact": {"type": "boolean"},
                "verified": {"type": "boolean"},
                "ned": {"type": "number", "description": "Normalised edit distance, 0 = identical."},
                "reason": TEXT,
                "method": {"type": "string", "enum": ["render", "blend"]},
                "font": TEXT,
                "size": WHOLE,
            },
        ),
        "Refinement": object_schema(
            "A refinement: where it stands and, once succeeded, the version it made.",
            {
                "job_id": UUID,
                "run_id": UUID,
                "type": {"type": "string", "enum": list(Refinement.Type.values)},
                "status": ref("JobStatus"),
                "version": WHOLE,
                "parent_version": WHOLE,
                "parent_image_id": UUID,
                "step": WHOLE,
                "total_steps": WHOLE,
                "queue_position": QUEUE_POSITION,
                "creativity": WHOLE,
                "strength": {"type": "number"},
                "seed": WHOLE,
                "payload": {"type": "object", "description": "The payload as validated and stored."},
                "error": TEXT,
                "result": {"oneOf": [ref("Image"), {"type": "null"}]},
                "checks": {"type": "array", "items": ref("TextCheck")},
            },
        ),
        "JobCancelled": object_schema("The job, now cancelled.", {"job_id": UUID, "status": ref("JobStatus")}),
        "OpenAPIDescription": {"type": "object", "description": "This document."},
        # The WebSocket's events (see the description at the top).
        "OutputJson": typed_dict_schema(progress.OutputJson, "An output image; `url` is relative to the server."),
        "JobStatusEvent": typed_dict_schema(
            progress.StatusEvent, "WebSocket: the job's state, on connect and on each change."
        ),
        "JobProgressEvent": typed_dict_schema(
            progress.ProgressEvent, "WebSocket: a sampler step; `eta` in seconds, `preview` a data URL or null."
        ),
        "JobResultEvent": typed_dict_schema(progress.ResultEvent, "WebSocket: the job succeeded with these outputs."),
    }


# Operations, by URL name.


@dataclass(frozen=True)
class Answer:
    status: int
    description: str
    schema: str | None = None  # None: no body


@dataclass(frozen=True)
class Operation:
    url_name: str
    method: str
    operation_id: str
    tag: str
    summary: str
    answer: Answer
    description: str = ""
    request: str | None = None  # a request schema's name
    media_type: str = JSON
    query: type[forms.Form] | None = None  # the form that validates the query string's parameters
    # Besides those every operation of its kind has (401; 403 for writes; 404 with an id in the
    # path; 400 and 413 with a body): status → what it means here.
    errors: dict[int, str] = field(default_factory=dict)


SUBMISSION_ERRORS = {
    429: "Over the daily quota or a fair-use limit; the message says which. `Retry-After` (seconds) "
    "comes with it when waiting will help.",
    503: "The queue is unavailable: the job is stored all the same and starts once it is back. The "
    "body is the success's, with `error` saying so.",
}
CANCEL_ANSWER = Answer(200, "Cancelled.", "JobCancelled")
ALREADY_ENDED = {409: "The job had already ended (the message says how)."}

OPERATIONS = [
    Operation(
        "imagegen:api_generate",
        "post",
        "generate",
        "Runs",
        "Text to image",
        Answer(202, "Queued: follow it at `status_url` or `ws_url`.", "RunAccepted"),
        request="GenerateRequest",
        errors=SUBMISSION_ERRORS,
    ),
    Operation(
        "imagegen:api_generate_img2img",
        "post",
        "generate_img2img",
        "Runs",
        "Image to image",
        Answer(202, "Queued: follow it at `status_url` or `ws_url`.", "RunAccepted"),
        description="Multipart, like other Stable Diffusion APIs. The sampler runs "
        "`int(num_inference_steps × strength)` steps.",
        request="ImageToImageRequest",
        media_type=MULTIPART,
        errors=SUBMISSION_ERRORS,
    ),
    Operation(
        "imagegen:api_runs",
        "get",
        "list_runs",
        "Runs",
        "Your runs, newest first, searched and filtered",
        Answer(200, "One page of the runs (24 a page); an empty `runs` past the last page.", "RunList"),
        description="The gallery's search and filters: `q` finds runs whose prompt contains it (in any "
        "case), `model` and `type` (a generation type, or `refined`: runs with versions beyond v1) filter.",
        query=ApiRunListForm,
    ),
    Operation(
        "imagegen:api_run",
        "get",
        "get_run",
        "Runs",
        "A run, its outputs and its versions",
        Answer(200, "The run.", "Run"),
    ),
    Operation(
        "imagegen:api_run",
        "delete",
        "delete_run",
        "Runs",
        "Delete a run with all it made",
        Answer(204, "Deleted, with its images and versions (a running one is cancelled first)."),
    ),
    Operation(
        "imagegen:api_run_cancel",
        "post",
        "cancel_run",
        "Runs",
        "Cancel a queued or running run",
        CANCEL_ANSWER,
        errors=ALREADY_ENDED,
    ),
    Operation(
        "imagegen:api_import",
        "post",
        "import_image",
        "Runs",
        "Import an image to edit",
        Answer(201, "Stored as v1 of a new run's chain.", "ImportedImage"),
        description="The image becomes a run of type `imported`, succeeded at once, ready to refine. "
        "It does not count against the quota.",
        request="ImageUpload",
        media_type=MULTIPART,
    ),
    Operation(
        "imagegen:api_parameters",
        "post",
        "read_image_settings",
        "Images",
        "The generation settings an image carries",
        Answer(200, "What the image carries (nothing is stored).", "ImageSettings"),
        description="Reads the settings a PNG made by this studio, AUTOMATIC1111, Fooocus or InvokeAI "
        "carries in its text chunks (`parameters`, `fooocus_scheme`, `invokeai_metadata`); its pixels "
        "are not decoded. A JPEG or WebP is answered with no settings.",
        request="SettingsImage",
        media_type=MULTIPART,
    ),
    Operation(
        "refinement:api_refine",
        "post",
        "refine_run",
        "Refinements",
        "Refine a version of a run",
        Answer(201, "Queued as the run's next version.", "RefinementAccepted"),
        description="Refines `parent_image_id` (any version of this run; the latest when absent). "
        "`creativity` 1–3 is how far the new version may move from its parent.",
        request="RefineRequest",
        errors={
            **SUBMISSION_ERRORS,
            404: "No such run, or `parent_image_id` names no image of yours.",
            409: "The run has no image yet (it is still running, or failed).",
        },
    ),
    Operation(
        "refinement:api_uploads",
        "post",
        "upload_reference",
        "Refinements",
        "Upload a reference image for subject repair",
        Answer(201, "Stored.", "ReferenceImage"),
        request="ImageUpload",
        media_type=MULTIPART,
    ),
    Operation(
        "refinement:api_refinement",
        "get",
        "get_refinement",
        "Refinements",
        "A refinement",
        Answer(200, "The refinement.", "Refinement"),
    ),
    Operation(
        "refinement:api_cancel",
        "post",
        "cancel_refinement",
        "Refinements",
        "Cancel a queued or running refinement",
        CANCEL_ANSWER,
        errors=ALREADY_ENDED,
    ),
    Operation(
        "refinement:api_image_text",
        "get",
        "get_image_text",
        "Images",
        "The text in an image (OCR)",
        Answer(200, "The lines found, to correct with a `text` refinement.", "TextLines"),
        description="Takes up to a second for a 1024² image; the answer is remembered for a day.",
        errors={404: "No such image of yours, or its file is missing from storage."},
    ),
    Operation(
        "imagegen:api_openapi",
        "get",
        "get_openapi_description",
        "Documentation",
        "This description",
        Answer(200, "The OpenAPI 3.1 description of the API, to generate clients from.", "OpenAPIDescription"),
    ),
]

TAGS = [
    {"name": "Runs", "description": "Text to image, image to image, imports; reading, cancelling, deleting."},
    {"name": "Refinements", "description": "New versions of a run's images, in four modes."},
    {"name": "Images", "description": "What is in an image."},
    {"name": "Documentation", "description": "This description."},
]


# Paths: read from the URL patterns.


@dataclass(frozen=True)
class ApiRoute:
    path: str  # as OpenAPI writes it: /api/v1/runs/{run_id}
    parameters: dict[str, dict]  # each path parameter's schema
    view: object


def api_routes(resolver=None, prefix: str = "", namespace: str = "") -> dict[str, ApiRoute]:
    """Every URL pattern under /api/, by its namespaced name."""
    routes = {}
    for entry in (resolver or get_resolver()).url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            routes.update(api_routes(entry, route, inner))
        elif isinstance(entry, URLPattern) and f"/{route}".startswith(API_PREFIX):
            converters = entry.pattern.converters
            path = "/" + ROUTE_PARAMETER.sub(r"{\g<name>}", route)
            parameters = {name: PATH_CONVERTERS[type(converter)] for name, converter in converters.items()}
            routes[f"{namespace}{entry.name}"] = ApiRoute(path, parameters, entry.callback)
    return routes


# The document.


def error_answer(status: int, operation: Operation) -> dict:
    descriptions = {
        400: "Invalid input, and nothing stored: `field` names the first field at fault, `errors` every "
        "one. A body that is not a JSON object is a 400 too.",
        401: "No session and no valid API token.",
        403: "A call with the session but without its CSRF token (send `X-CSRFToken`, or use a token).",
        404: "No such object, or not yours (another user's is answered the same way).",
        413: f"The body is larger than {settings.IMAGEGEN_MAX_REQUEST_BYTES / limits.MEGABYTE:g} MB "
        "(`IMAGEGEN_MAX_REQUEST_BYTES`): refused unread, and the connection closed.",
        **operation.errors,
    }
    if status == 503:  # the job is kept: the success's body, saying the queue is down
        return {"description": descriptions[503], "content": {JSON: {"schema": ref(operation.answer.schema)}}}
    answer = {"description": descriptions[status], "content": {JSON: {"schema": ref("Error")}}}
    if status == 429:
        answer["headers"] = {
            "Retry-After": {"description": "Seconds after which the same request may pass.", "schema": WHOLE}
        }
    return answer


def operation_description(operation: Operation, route: ApiRoute) -> dict:
    statuses = {401, *operation.errors}
    if operation.method != "get":
        statuses.add(403)
    if route.parameters:
        statuses.add(404)
    if operation.request:
        statuses |= {400, 413}
    if operation.query:
        statuses.add(400)
    answer = operation.answer
    responses = {str(answer.status): {"description": answer.description}}
    if answer.schema:
        responses[str(answer.status)]["content"] = {JSON: {"schema": ref(answer.schema)}}
    responses |= {str(status): error_answer(status, operation) for status in sorted(statuses)}
    described = {
        "operationId": operation.operation_id,
        "tags": [operation.tag],
        "summary": operation.summary,
        **({"description": operation.description} if operation.description else {}),
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": schema}
            for name, schema in route.parameters.items()
        ]
        + [
            {"name": name, "in": "query", "required": field.required, "schema": field_schema(field)}
            for name, field in (operation.query.base_fields.items() if operation.query else ())
        ],
    }
    if operation.request:
        body = {"schema": ref(operation.request)}
        described["requestBody"] = {"required": True, "content": {operation.media_type: body}}
    described["responses"] = responses
    return described


def api_description(*, server_url: str) -> dict:
    """The whole OpenAPI document, for a server at `server_url`."""
    routes = api_routes()
    paths: dict[str, dict] = {}
    for operation in OPERATIONS:
        route = routes[operation.url_name]
        paths.setdefault(route.path, {})[operation.method] = operation_description(operation, route)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Image studio API", "version": API_VERSION, "description": introduction()},
        "servers": [{"url": server_url.rstrip("/")}],
        "security": [{"bearerAuth": []}, {"sessionCookie": []}],
        "tags": TAGS,
        "paths": paths,
        "components": {
            "schemas": {**request_schemas(), **answer_schemas()},
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token: `manage.py create_api_token <username>` prints one. "
                    "A call with a token needs no CSRF token.",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": settings.SESSION_COOKIE_NAME,
                    "description": "A logged-in browser's session. POST and DELETE then also need the "
                    f"`X-CSRFToken` header with the `{settings.CSRF_COOKIE_NAME}` cookie's value.",
                },
            },
        },
    }


def introduction() -> str:
    events_per_second = round(1 / progress.PUSH_INTERVAL)
    return f"""The image studio's JSON API: submit text-to-image and image-to-image runs, import
images, refine any version of a run, and follow every job live.

**Authentication**: `Authorization: Bearer <token>` (a token from `manage.py create_api_token
<username>`), or the session of a browser logged in to this site. Every error is JSON,
`{{"error": "…", "field": …}}`, with a status that means what it says.

**Limits**: prompts up to {limits.MAX_PROMPT_LENGTH} characters; uploads PNG, JPEG or WebP up to
{limits.MAX_UPLOAD_BYTES // limits.MEGABYTE} MB; a daily quota and fair-use limits per user (429).

## Live progress: the WebSocket `{api_ws_path("{job_id}")}`

Every submission answers with its `ws_url`. Connect with the same authentication (the
`Authorization` header, or the browser's session). The socket sends JSON and takes no messages:
first a `job.status` snapshot (`JobStatusEvent`), then `job.progress` (`JobProgressEvent`, at most
{events_per_second} a second, `preview` a small data-URL image or null), `job.status` on every change,
and `job.result` (`JobResultEvent`, its `outputs` with URLs relative to this server) once the job
has succeeded. It then closes with code {consumers.CLOSE_DONE}. A job that is not yours, or does
not exist, is refused with close code {consumers.CLOSE_REFUSED}; a message that is not JSON closes
it with {consumers.CLOSE_BAD_MESSAGE}. Without WebSockets, poll `status_url`."""
