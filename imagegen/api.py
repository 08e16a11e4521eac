"""The JSON API: submit a generation, read a run. Errors are JSON naming the field at fault."""

import functools
import json

from django.core.paginator import Paginator
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from refinement.selectors import Version, run_versions

from . import selectors, services
from .forms import ApiGenerateForm, ApiRunListForm
from .models import Image, Job, Run
from .progress import output_json
from .routing import api_ws_path

# Every API URL is under this path; errors there are JSON (imagegen.errors, imagegen.bodylimit).
API_PREFIX = "/api/"


def error_response(message: str, *, status: int, field: str | None = None, errors: dict | None = None) -> JsonResponse:
    body = {"error": message, "field": field}
    if errors:
        body["errors"] = errors
    return JsonResponse(body, status=status)


def form_error_response(form: Form, *, field_prefix: str = "") -> JsonResponse:
    """400 naming the first field at fault; `field_prefix` names fields of a nested object ("payload.")."""
    errors = {
        f"{field_prefix}{field}": [str(message) for message in messages] for field, messages in form.errors.items()
    }
    field, messages = next(iter(errors.items()))
    return error_response(f"{field}: {messages[0]}", status=400, field=field, errors=errors)


def method_refusal(request: HttpRequest, methods: tuple[str, ...]) -> JsonResponse | None:
    """A JSON 405 for a method the view does not take, or None."""
    if request.method in methods:
        return None
    response = error_response(f"Method {request.method} not allowed.", status=405)
    response["Allow"] = ", ".join(methods)
    return response


def api_view(*methods: str):
    """Authentication, allowed methods and JSON errors for every API endpoint.

    The view keeps its methods as `allowed_methods`: the API's description is checked against them.
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs):
            if not request.user.is_authenticated:
                return error_response(
                    "Authentication required: log in or send 'Authorization: Bearer <token>'.", status=401
                )
            if refusal := method_refusal(request, methods):
                return refusal
            try:
                return view(request, *args, **kwargs)
            except Http404 as missing:
                return error_response(str(missing) or "Not found.", status=404)

        wrapper.allowed_methods = methods
        return wrapper

    return decorator


def bind_with_defaults(form_class: type[Form], data: dict, files=None, **form_kwargs) -> Form:
    """A missing field takes the form's documented default, as API callers expect (a form's
    `defaults_for(data)` gives those that depend on other fields)."""
    defaults = {name: field.initial for name, field in form_class.base_fields.items() if field.initial is not None}
    if hasattr(form_class, "defaults_for"):
        defaults |= form_class.defaults_for(data)
    return form_class({**defaults, **data}, files, **form_kwargs)


def json_body(request: HttpRequest) -> dict | None:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return None
    return body if isinstance(body, dict) else None


def job_accepted(request: HttpRequest, job: Job, *, ids: dict, status_url: str, status: int) -> JsonResponse:
    """The answer to a job's submission: its ids and where to follow it (status URL and WebSocket).

    A job the queue could not take yet is stored and queued all the same (housekeeping sends it
    once the broker is back): 503, saying so, with the same ids.
    """
    body = dict(ids)
    if job.sent_at is None:
        status, body["error"] = 503, services.QUEUE_UNAVAILABLE
    scheme = "wss" if request.is_secure() else "ws"
    return JsonResponse(
        {
            **body,
            "status": job.status,
            "status_url": request.build_absolute_uri(status_url),
            "ws_url": f"{scheme}://{request.get_host()}{api_ws_path(job.pk)}",
        },
        status=status,
    )


def quota_refusal_response(refusal: services.QuotaExceededError) -> JsonResponse:
    """429 saying which limit was reached, with Retry-After when waiting is what will help."""
    response = error_response(str(refusal), status=429)
    if refusal.retry_after is not None:
        response["Retry-After"] = str(refusal.retry_after)
    return response


def create_run_response(request: HttpRequest, form: Form) -> JsonResponse:
    """Create the run a valid form describes: 202 with where to follow it, or 429 over a limit."""
    try:
        run = services.run_create(owner=request.user, **form.run_arguments())
    except services.QuotaExceededError as refusal:
        return quota_refusal_response(refusal)
    status_url = reverse("imagegen:api_run", args=[run.pk])
    return job_accepted(request, run, ids={"run_id": str(run.pk)}, status_url=status_url, status=202)


@api_view("POST")
def generate(request: HttpRequest) -> JsonResponse:
    data = json_body(request)
    if data is None:
        return error_response("The request body must be a JSON object.", status=400)
    form = bind_with_defaults(ApiGenerateForm, data)
    if not form.is_valid():
        return form_error_response(form)
    return create_run_response(request, form)


# Runs in one page of the API's run list (the gallery's page size).
RUN_LIST_PAGE_SIZE = 24


@api_view("GET")
def run_list(request: HttpRequest) -> JsonResponse:
    """The user's runs, newest first, a page at a time: `q` searches the prompts (any case), `model`
    and `type` filter, as in the gallery."""
    form = ApiRunListForm(request.GET)
    if not form.is_valid():
        return form_error_response(form)
    runs = selectors.gallery_runs(user=request.user, **form.filters())
    paginator = Paginator(runs, RUN_LIST_PAGE_SIZE)
    number = form.cleaned_data["page"] or 1
    page = paginator.page(number) if number <= paginator.num_pages else []
    return JsonResponse(
        {
            "count": paginator.count,
            "page": number,
            "pages": paginator.num_pages,
            "runs": [run_summary_json(request, run) for run in page],
        }
    )


def run_summary_json(request: HttpRequest, run: Run) -> dict:
    """A run as the run list shows it; its own URL has the rest."""
    return {
        "run_id": str(run.pk),
        "url": request.build_absolute_uri(reverse("imagegen:api_run", args=[run.pk])),
        "status": run.status,
        "generation_type": run.generation_type,
        "prompt": run.prompt,
        "model": run.model,
        "versions": 1 + len(run.refined_versions),
        "queued_at": run.queued_at,
        "outputs": [image_json(request, image) for image in run.outputs.all()],
    }


@api_view("GET", "DELETE")
def run_detail(request: HttpRequest, run_id) -> HttpResponse:
    """GET: the run, its outputs and versions. DELETE: the run with all it made (204)."""
    run = selectors.run_for_user(user=request.user, run_id=run_id)
    if request.method == "DELETE":
        services.run_delete(run=run)
        return HttpResponse(status=204)
    return JsonResponse(
        {
            "run_id": str(run.pk),
            "status": run.status,
            # 1 when it starts next, counting every kind of job; null unless it is queued.
            "queue_position": selectors.job_queue_position(job=run),
            "error": run.error,
            "step": run.step,
            "total_steps": run.total_steps,
            "attempts": run.attempts,
            "queued_at": run.queued_at,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "parameters": selectors.run_parameters(run=run),
            # Each image with the seed it was made from (the run's seed, then the next ones).
            "outputs": [{**image_json(request, image), "seed": image.seed} for image in run.outputs.all()],
            "versions": [version_json(request, run, version) for version in run_versions(run=run)],
        }
    )


def image_json(request: HttpRequest, image: Image) -> dict:
    """An image as the API shows it: its id, its absolute URL and its size."""
    output = output_json(image)
    return {"image_id": str(image.pk), **output, "url": request.build_absolute_uri(output["url"])}


def version_json(request: HttpRequest, run: Run, version: Version) -> dict:
    """One version of the run's chain: v1 is the run's own output, later ones are refinements."""
    refinement = version.refinement
    return {
        "version": version.number,
        **image_json(request, version.image),
        "type": refinement.type if refinement else run.generation_type,
        "parent_version": version.parent_version,
        "job_id": str(refinement.pk if refinement else run.pk),
    }


@api_view("POST")
def job_cancel(request: HttpRequest, job_id) -> JsonResponse:
    """Cancel any queued or running job of the user's: 200 when cancelled, 409 when it had already ended."""
    job = selectors.job_for_user(user=request.user, job_id=job_id)
    if not services.job_cancel(job=job):
        return error_response(f"The {job._meta.verbose_name} has already ended ({job.status}).", status=409)
    return JsonResponse({"job_id": str(job.pk), "status": job.status})
