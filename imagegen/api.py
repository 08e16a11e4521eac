"""The JSON API: submit a generation, read a run. Errors are JSON naming the field at fault."""

import functools
import json

from django.forms import Form
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import reverse

from . import selectors, services
from .forms import ApiGenerateForm
from .models import Run
from .progress import output_json
from .routing import api_ws_path


def error_response(message: str, *, status: int, field: str | None = None, errors: dict | None = None) -> JsonResponse:
    body = {"error": message, "field": field}
    if errors:
        body["errors"] = errors
    return JsonResponse(body, status=status)


def form_error_response(form: Form) -> JsonResponse:
    errors = {field: [str(message) for message in messages] for field, messages in form.errors.items()}
    field, messages = next(iter(errors.items()))
    return error_response(f"{field}: {messages[0]}", status=400, field=field, errors=errors)


def api_view(*methods: str):
    """Authentication, allowed methods and JSON errors for every API endpoint."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs):
            if not request.user.is_authenticated:
                return error_response(
                    "Authentication required: log in or send 'Authorization: Bearer <token>'.", status=401
                )
            if request.method not in methods:
                response = error_response(f"Method {request.method} not allowed.", status=405)
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return view(request, *args, **kwargs)
            except Http404 as missing:
                return error_response(str(missing) or "Not found.", status=404)

        return wrapper

    return decorator


def bind_with_defaults(form_class: type[Form], data: dict, files=None) -> Form:
    """A missing field takes the form's documented default, as API callers expect."""
    defaults = {name: field.initial for name, field in form_class.base_fields.items() if field.initial is not None}
    return form_class({**defaults, **data}, files)


def json_body(request: HttpRequest) -> dict | None:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def run_accepted(request: HttpRequest, run: Run, *, status: int = 202, error: str | None = None) -> JsonResponse:
    scheme = "wss" if request.is_secure() else "ws"
    body = {"error": error} if error else {}
    return JsonResponse(
        {
            **body,
            "run_id": str(run.pk),
            "status": run.status,
            "status_url": request.build_absolute_uri(reverse("imagegen:api_run", args=[run.pk])),
            "ws_url": f"{scheme}://{request.get_host()}{api_ws_path(run.pk)}",
        },
        status=status,
    )


def create_run_response(request: HttpRequest, form: Form) -> JsonResponse:
    """Create the run a valid form describes: 202 with where to follow it, or 429 over quota."""
    try:
        run = services.run_create(owner=request.user, **form.run_arguments())
    except services.QuotaExceededError as refusal:
        return error_response(str(refusal), status=429)
    if run.sent_at is None:
        # Stored and queued all the same: housekeeping sends it once the broker is back.
        return run_accepted(request, run, status=503, error=services.QUEUE_UNAVAILABLE)
    return run_accepted(request, run)


@api_view("POST")
def generate(request: HttpRequest) -> JsonResponse:
    data = json_body(request)
    if data is None:
        return error_response("The request body must be a JSON object.", status=400)
    form = bind_with_defaults(ApiGenerateForm, data)
    if not form.is_valid():
        return form_error_response(form)
    return create_run_response(request, form)


@api_view("GET")
def run_detail(request: HttpRequest, run_id) -> JsonResponse:
    run = selectors.run_for_user(user=request.user, run_id=run_id)
    return JsonResponse(
        {
            "run_id": str(run.pk),
            "status": run.status,
            "error": run.error,
            "step": run.step,
            "total_steps": run.total_steps,
            "attempts": run.attempts,
            "queued_at": run.queued_at,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "parameters": selectors.run_parameters(run=run),
            "outputs": [
                {**output, "url": request.build_absolute_uri(output["url"])}
                for output in map(output_json, run.outputs.all())
            ],
        }
    )


@api_view("POST")
def job_cancel(request: HttpRequest, job_id) -> JsonResponse:
    """Cancel any queued or running job of the user's: 200 when cancelled, 409 when it had already ended."""
    job = selectors.job_for_user(user=request.user, job_id=job_id)
    if job is None:
        raise Http404("No such job.")
    if not services.job_cancel(job=job):
        return error_response(f"The {job._meta.verbose_name} has already ended ({job.status}).", status=409)
    return JsonResponse({"job_id": str(job.pk), "status": job.status})
