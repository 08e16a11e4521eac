"""URLs: the pages, the JSON API, login and the admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from img2img import api as img2img_api

from . import api, apidocs, views

imagegen_patterns = [
    path("", views.generate, name="generate"),
    path("gallery/", views.gallery, name="gallery"),
    path("runs/<uuid:run_id>/", views.run_detail, name="run"),
    path("runs/<uuid:job_id>/live/", views.job_live, name="run_live"),
    path("runs/<uuid:run_id>/variation/", views.run_variation, name="run_variation"),
    path("runs/<uuid:run_id>/download/", views.run_download, name="run_download"),
    path("runs/<uuid:run_id>/delete/", views.run_delete, name="run_delete"),
    path("runs/<uuid:job_id>/cancel/", views.job_cancel, name="run_cancel"),
    path("images/<uuid:image_id>", views.image_file, name="image_file"),
    path("images/<uuid:image_id>/thumbnail", views.image_thumbnail, name="image_thumbnail"),
    path("api/generate", api.generate, name="api_generate"),
    path("api/generate_img2img", img2img_api.generate_img2img, name="api_generate_img2img"),
    path("api/v1/runs", api.run_list, name="api_runs"),
    path("api/v1/runs/<uuid:run_id>", api.run_detail, name="api_run"),
    path("api/v1/imports", img2img_api.import_image, name="api_import"),
    path("api/v1/parameters", img2img_api.image_settings, name="api_parameters"),
    path("api/v1/runs/<uuid:job_id>/cancel", api.job_cancel, name="api_run_cancel"),
    path("api/v1/openapi.json", apidocs.openapi_description, name="api_openapi"),
    path("api/docs", apidocs.docs_page, name="api_docs"),
]

handler400 = "imagegen.errors.bad_request"
handler403 = "imagegen.errors.permission_denied"
handler404 = "imagegen.errors.page_not_found"

urlpatterns = [
    path("", include((imagegen_patterns, "imagegen"))),
    path("", include("refinement.urls")),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/operations/", views.operations, name="operations"),
    # Ahead of the admin's own route for the same URL, which answers a non-UUID id with a 500.
    path("admin/r/<path:content_type_id>/<path:object_id>/", views.view_on_site),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
