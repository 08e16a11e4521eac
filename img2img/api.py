"""`POST /api/generate_img2img`: multipart, like other Stable Diffusion APIs; 202 like /api/generate."""

from django.http import HttpRequest, JsonResponse

from imagegen.api import api_view, bind_with_defaults, create_run_response, form_error_response

from .forms import ApiImageToImageForm


@api_view("POST")
def generate_img2img(request: HttpRequest) -> JsonResponse:
    form = bind_with_defaults(ApiImageToImageForm, request.POST.dict(), request.FILES)
    if not form.is_valid():
        return form_error_response(form)
    return create_run_response(request, form)
