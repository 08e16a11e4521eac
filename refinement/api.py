"""The refine API: submit a refinement of a run's version, read one. Errors are JSON naming the field."""

from django.http import Http404, HttpRequest, JsonResponse
from django.urls import reverse

from imagegen import selectors as imagegen_selectors
from imagegen.api import (
    api_view,
    bind_with_defaults,
    error_response,
    form_error_response,
    image_json,
    job_accepted,
    json_body,
    quota_refusal_response,
)
from imagegen.services import QuotaExceededError
from img2img.forms import ImageUploadForm

from . import selectors, services
from .forms import RefineForm
from .models import Refinement


@api_view("POST")
def refine(request: HttpRequest, run_id) -> JsonResponse:
    """`{"type", "payload", "creativity"?, "parent_image_id"?, "seed"?}` → 201 with the new version."""
    run = imagegen_selectors.run_for_user(user=request.user, run_id=run_id)
    data = json_body(request)
    if data is None:
        return error_response("The request body must be a JSON object.", status=400)
    payload = data.pop("payload", {})
    form = bind_with_defaults(RefineForm, data, run=run)
    if not form.is_valid():
        if form.has_error("parent_image_id", code="not_found"):
            raise Http404("No such image.")
        return form_error_response(form)
    if not isinstance(payload, dict):
        return error_response("payload: Must be a JSON object.", status=400, field="payload")
    payload_form = form.payload_form(payload)
    unknown = sorted(set(payload) - set(payload_form.fields))
    if unknown:
        field = f"payload.{unknown[0]}"
        known = ", ".join(payload_form.fields)
        return error_response(f"{field}: Unknown field; this mode takes {known}.", status=400, field=field)
    if not payload_form.is_valid():
        return form_error_response(payload_form, field_prefix="payload.")
    try:
        refinement = services.refinement_create(**form.refinement_arguments(payload_form))
    except QuotaExceededError as refusal:
        return quota_refusal_response(refusal)
    except services.NothingToRefineError as refusal:
        return error_response(str(refusal), status=409)
    return job_accepted(
        request,
        refinement,
        ids={"job_id": str(refinement.pk), "version": refinement.version},
        status_url=reverse("refinement:api_refinement", args=[refinement.pk]),
        status=201,
    )


@api_view("POST")
def upload_reference(request: HttpRequest) -> JsonResponse:
    """Multipart `image` → 201 `{"file_id", "url"}`: a reference image for subject repair."""
    form = ImageUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return form_error_response(form)
    image = services.reference_upload_create(owner=request.user, upload=form.cleaned_data["image"])
    shown = image_json(request, image)
    return JsonResponse({"file_id": shown["image_id"], "url": shown["url"]}, status=201)


@api_view("GET")
def image_text(request: HttpRequest, image_id) -> JsonResponse:
    """`{"lines": [{"bbox", "text", "confidence"}]}`: the text OCR finds in one of the user's images.

    OCR takes up to a second for a 1024² image, in Tesseract's own process; the request has a
    thread of its own (imagegen.handlers), so the web process's other requests do not wait for it.
    """
    image = imagegen_selectors.image_for_user(user=request.user, image_id=image_id)
    return JsonResponse({"lines": selectors.image_text_lines(image=image)})


@api_view("GET")
def refinement_detail(request: HttpRequest, job_id) -> JsonResponse:
    refinement = selectors.refinement_for_user(user=request.user, job_id=job_id)
    return JsonResponse(refinement_json(request, refinement))


def refinement_json(request: HttpRequest, refinement: Refinement) -> dict:
    result = image_json(request, refinement.result) if refinement.result else None
    return {
        "job_id": str(refinement.pk),
        "run_id": str(refinement.run_id),
        "type": refinement.type,
        "status": refinement.status,
        "queue_position": imagegen_selectors.job_queue_position(job=refinement),
        "version": refinement.version,
        "parent_version": refinement.parent_version,
        "parent_image_id": str(refinement.parent_image_id),
        "step": refinement.step,
        "total_steps": refinement.total_steps,
        "creativity": refinement.creativity,
        "strength": refinement.strength,
        "seed": refinement.seed,
        "payload": refinement.payload,
        "error": refinement.error,
        "result": result,
        # Text repair's verification: per correction, what OCR read back and whether it is right.
        "checks": refinement.report.get("checks", []),
    }
