"""URLs: the pages, the JSON API, login and the admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import api, views

imagegen_patterns = [
    path("", views.generate, name="generate"),
    path("gallery/", views.gallery, name="gallery"),
    path("runs/<uuid:run_id>/", views.run_detail, name="run"),
    path("runs/<uuid:run_id>/live/", views.run_live, name="run_live"),
    path("images/<uuid:image_id>", views.image_file, name="image_file"),
    path("api/generate", api.generate, name="api_generate"),
    path("api/v1/runs/<uuid:run_id>", api.run_detail, name="api_run"),
]

urlpatterns = [
    path("", include((imagegen_patterns, "imagegen"))),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
