"""`POST /api/generate_img2img`: multipart, like other Stable Diffusion APIs; 202 like /api/generate.
`POST /api/v1/imports`: an image to edit, stored at once as a run's v1; 201."""

from django.http import HttpRequest, JsonResponse

from imagegen import services
from imagegen.api import api_view, bind_with_defaults, create_run_response, form_error_response, image_json

from .forms import ApiImageToImageForm, ImageUploadForm


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
