"""The API's OpenAPI description (/api/v1/openapi.json) and the page that shows it (/api/docs)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from . import openapi
from .api import api_view, method_refusal


@api_view("GET")
def openapi_description(request: HttpRequest) -> JsonResponse:
    return JsonResponse(openapi.api_description(server_url=request.build_absolute_uri("/")))


@login_required
def docs_page(request: HttpRequest) -> HttpResponse:
    """Swagger UI over the description, from the studio's own static files (nothing from a CDN)."""
    if refusal := method_refusal(request, ("GET",)):  # under /api/, even a page's errors are JSON
        return refusal
    return render(request, "imagegen/api_docs.html")
