"""URLs of the refinement add-on: the drawer, the live parts of a refinement, and its API."""

from django.urls import path

from imagegen import api as imagegen_api
from imagegen import views as imagegen_views

from . import api, views

app_name = "refinement"

urlpatterns = [
    path("runs/<uuid:run_id>/refine/", views.refine, name="refine"),
    path("refinements/<uuid:job_id>/card/", views.version_card, name="card"),
    # Cancelling and polling work the same for every kind of job.
    path("refinements/<uuid:job_id>/live/", imagegen_views.job_live, name="live"),
    path("refinements/<uuid:job_id>/cancel/", imagegen_views.job_cancel, name="cancel"),
    path("api/v1/runs/<uuid:run_id>/refine", api.refine, name="api_refine"),
    path("api/v1/uploads", api.upload_reference, name="api_uploads"),
    path("api/v1/images/<uuid:image_id>/text", api.image_text, name="api_image_text"),
    path("api/v1/refinements/<uuid:job_id>", api.refinement_detail, name="api_refinement"),
    path("api/v1/refinements/<uuid:job_id>/cancel", imagegen_api.job_cancel, name="api_cancel"),
]
