"""`POST /api/generate_img2img`: multipart, like other Stable Diffusion APIs; 202 like /api/generate.
`POST /api/v1/imports`: an image to edit, stored at once as a run's v1; 201.
`POST /api/v1/parameters`: the generation settings a PNG carries, as the generate form's fields; 200."""

from django.http import HttpRequest, JsonResponse

from imagegen import services
from imagegen.api import api_view, bind_with_defaults, create_run_response, form_error_response, image_json
from imagegen.engine import read_generation_settings

from .forms import ApiImageToImageForm, ImageUploadForm, SettingsImageForm, StudioForm

NO_SETTINGS = "The image carries no generation settings (none of this studio, AUTOMATIC1111, Fooocus or InvokeAI)."


@api_view("POST")
def generate_img2img(request: HttpRequest) -> JsonResponse:
    form = bind_with_defaults(ApiImageToImageForm, request.POST.dict(), request.FILES)
    if not form.is_valid():
        return form_error_response(form)
    return create_run_response(request, form)


@api_view("POST")
def import_image(request: HttpRequest) -> JsonResponse:
    """Multipart `image` → 201 with the imported run, its image (v1) and the image's URL."""
    form = ImageUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return form_error_response(form)
    run = services.run_import(owner=request.user, upload=form.cleaned_data["image"])
    return JsonResponse({"run_id": str(run.pk), **image_json(request, run.outputs.get())}, status=201)


@api_view("POST")
def image_settings(request: HttpRequest) -> JsonResponse:
    """Multipart `image` → the settings it carries that the generate form takes (`fields`), where
    they come from, and what could not be taken (`notes`). Nothing is stored."""
    form = SettingsImageForm(request.POST, request.FILES)
    if not form.is_valid():
        return form_error_response(form)
    imported = read_generation_settings(form.cleaned_data["image"])
    if imported is None:
        return JsonResponse({"source": None, "source_label": None, "fields": {}, "model": "", "notes": [NO_SETTINGS]})
    fields, refused = StudioForm.initial_from_settings({**imported.settings, "model": imported.model})
    return JsonResponse(
        {
            "source": imported.source,
            "source_label": imported.source_label,
            "fields": fields,
            "model": imported.model,
            "notes": [*imported.notes, *refused],
        }
    )
