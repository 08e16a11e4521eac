"""The pages: generate, gallery, run, and the owner-checked image files."""

import mimetypes
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.contrib.contenttypes import views as contenttype_views
from django.core.cache import caches
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from img2img.forms import StudioForm
from img2img.uploads import MAX_UPLOAD_BYTES

from . import selectors, services
from .forms import GALLERY_TYPES, GalleryFilterForm
from .models import Run
from .storedfiles import StoredFileMissing, open_image_file

RECENT_RUNS_ON_GENERATE_PAGE = 12
GALLERY_PAGE_SIZE = 24
# Thumbnails are named by their image's id and never rewritten: the browser keeps them a year.
THUMBNAIL_MAX_AGE = 365 * 24 * 3600


@login_required
@require_http_methods(["GET", "POST"])
def generate(request: HttpRequest) -> HttpResponse:
    """The form and the recent runs. `?from=<run id>` ("Use these settings") fills the form with one
    of the user's runs' settings; another user's run is missing (404)."""
    reused_run = reused_run_for(request) if request.method == "GET" else None
    initial = StudioForm.initial_from_run(reused_run) if reused_run else None
    form = StudioForm(request.POST or None, request.FILES or None, owner=request.user, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            if form.import_mode:
                run = services.run_import(owner=request.user, **form.run_arguments())
            else:
                run = services.run_create(owner=request.user, **form.run_arguments())
        except services.QuotaExceededError as refusal:
            form.add_error(None, str(refusal))
        else:
            if not run.is_finished and run.sent_at is None:  # an import is finished: it waits for no queue
                messages.warning(request, services.QUEUE_UNAVAILABLE)
            if request.htmx:
                # The new card goes on top of the list; the form keeps its values for the next try.
                return render(request, "imagegen/generate.html#new-run", {"run": run})
            return redirect("imagegen:run", run_id=run.pk)
    context = {"form": form, "max_upload_bytes": MAX_UPLOAD_BYTES, "reused_run": reused_run}
    if request.method == "POST" and request.htmx:
        response = render(request, "imagegen/generate.html#generate-form", context)
        response["HX-Retarget"] = "#generate-form"
        response["HX-Reswap"] = "outerHTML"
        return response
    context["runs"] = selectors.runs_for_user(user=request.user)[:RECENT_RUNS_ON_GENERATE_PAGE]
    return render(request, "imagegen/generate.html", context)


def reused_run_for(request: HttpRequest) -> Run | None:
    """The run `?from=` names, if it is the user's; None without one."""
    run_id = request.GET.get("from")
    if not run_id:
        return None
    try:
        run_id = uuid.UUID(run_id)
    except ValueError:
        raise Http404("No such run.") from None
    return selectors.run_for_user(user=request.user, run_id=run_id)


def cached_part(key: str, digest: str, render_part: Callable[[], Any]) -> Any:
    """A rendered part of a page from the "pages" cache, rendered and kept on a miss.

    The digest sums up the rows the part shows (selectors.jobs_state), so a change made by any
    process (another web process, the worker, housekeeping) is simply another key: nothing has to
    be invalidated across processes. Entries expire after IMAGEGEN_PAGE_CACHE_SECONDS.
    """
    pages = caches["pages"]
    key = f"{key}:{digest}"
    part = pages.get(key)
    if part is None:
        part = render_part()
        pages.set(key, part)
    return part


@login_required
@require_GET
def gallery(request: HttpRequest) -> HttpResponse:
    """Every run of the user's as cards; `q` searches the prompts, `model` and `type` filter."""
    filter_form = GalleryFilterForm(request.GET)
    filters = filter_form.filters()
    state = selectors.gallery_state(user=request.user, **filters)
    # The page number as Paginator corrects it, from the count alone (no query): one key per real page.
    number = Paginator(range(state["count"]), GALLERY_PAGE_SIZE).get_page(request.GET.get("page")).number

    def render_part() -> str:
        query = QueryDict(mutable=True)
        query.update(filter_form.parameters())
        runs = selectors.gallery_runs(user=request.user, **filters)
        page = Paginator(runs, GALLERY_PAGE_SIZE).get_page(number)
        context = {
            "runs": page,
            "page": page,
            "filters": filter_form.parameters(),
            "query": query,  # what the links keep: the filters (each page link sets its own page)
            "models": selectors.gallery_models(user=request.user),
            "generation_types": GALLERY_TYPES,
        }
        return render_to_string("imagegen/gallery.html#filtered-grid", context)

    # The filters are part of the key: a search never gets another search's cards. They are hashed,
    # so a long or odd search is as good a key as any.
    key = f"gallery:{request.user.pk}:{selectors.state_digest(sorted(filters.items()))}:{number}"
    return render(request, "imagegen/gallery.html", {"grid": mark_safe(cached_part(key, state["digest"], render_part))})


@login_required
@require_GET
def run_detail(request: HttpRequest, run_id) -> HttpResponse:
    run, digest = selectors.run_page_state(user=request.user, run_id=run_id)

    def render_parts() -> tuple[str, str, str]:
        refinements = selectors.run_page_versions(run=run)
        card = render_to_string("imagegen/partials/run_card.html#run-card", {"run": run})
        parameters = render_to_string("imagegen/run.html#parameters", {"run": run})
        versions = render_to_string("refinement/partials/version.html#versions", {"refinements": refinements})
        return card, parameters, versions

    card, parameters, versions = cached_part(f"run:{run.pk}", digest, render_parts)
    context = {
        "run": run,
        "run_card": mark_safe(card),
        "parameters": mark_safe(parameters),
        "versions": mark_safe(versions),
    }
    return render(request, "imagegen/run.html", context)


@login_required
@require_POST
def run_variation(request: HttpRequest, run_id) -> HttpResponse:
    """A variation of the run, or with `image` of that one of its images; then its page. From a
    card (htmx) the browser is told to go there."""
    run = selectors.run_for_user(user=request.user, run_id=run_id)
    image = None
    if "image" in request.POST:
        image = selectors.run_output(run=run, image_id=request.POST["image"])
        if image is None:
            raise Http404("No such image in this run.")
    try:
        variation = services.run_variation_create(run=run, image=image)
    except (services.QuotaExceededError, services.NothingToVaryError) as refusal:
        messages.error(request, str(refusal))
        target = run
    else:
        target = variation
    if request.htmx:
        return HttpResponseClientRedirect(target.get_absolute_url())
    return redirect(target)


@login_required
@require_POST
def run_delete(request: HttpRequest, run_id) -> HttpResponse:
    """Delete one of the user's runs with all it made. From a card, htmx swaps the card out; from
    the run's own page the browser goes to the gallery."""
    run = selectors.run_for_user(user=request.user, run_id=run_id)
    run_page = run.get_absolute_url()
    services.run_delete(run=run)
    if request.htmx and request.htmx.current_url_abs_path != run_page:
        return HttpResponse("")  # the card's outerHTML: it goes
    messages.success(request, "The run and its images were deleted.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("imagegen:gallery"))
    return redirect("imagegen:gallery")


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_id) -> HttpResponse:
    """Cancel any of the user's jobs (a run, a refinement) from its card's Cancel button."""
    job = selectors.job_for_user(user=request.user, job_id=job_id)
    services.job_cancel(job=job)
    if request.htmx:
        return render(request, job.live_template, {"job": job, "oob": True})
    return redirect(job.get_absolute_url())


@login_required
@require_GET
def run_download(request: HttpRequest, run_id) -> HttpResponse:
    """A zip of the original, the generated images and the parameters."""
    run = selectors.run_for_user(user=request.user, run_id=run_id)
    response = HttpResponse(selectors.run_archive(run=run), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="run-{run.pk}.zip"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_GET
def job_live(request: HttpRequest, job_id) -> HttpResponse:
    """The live parts of any job's card, for pages that poll because they have no WebSocket."""
    job = selectors.job_for_user(user=request.user, job_id=job_id)
    return render(request, job.live_template, {"job": job, "oob": True})


@login_required
@require_GET
def image_file(request: HttpRequest, image_id) -> FileResponse:
    image = selectors.image_for_user(user=request.user, image_id=image_id)
    download = "download" in request.GET
    filename = selectors.image_download_name(image=image) if download else None
    return stored_file_response(
        open_image_file(image=image), name=image.file.name, max_age=3600, as_attachment=download, filename=filename
    )


@login_required
@require_GET
def image_thumbnail(request: HttpRequest, image_id) -> FileResponse:
    """The image's small WebP for cards, made on first request; a thumbnail never changes."""
    return thumbnail_response(selectors.image_for_user(user=request.user, image_id=image_id))


def thumbnail_response(image) -> FileResponse:
    """The image's thumbnail (made now if it has none yet), which browsers may keep for good."""
    try:
        thumbnail = services.image_thumbnail_open(image=image)
    except FileNotFoundError:  # the image's own file is gone, so no thumbnail can be made
        raise StoredFileMissing(image) from None
    return stored_file_response(thumbnail, name=thumbnail.name, max_age=THUMBNAIL_MAX_AGE, immutable=True)


def stored_file_response(opened, *, name: str, max_age: int, immutable: bool = False, **options) -> FileResponse:
    """A stored file, open, for its owner's browser only (private), which may keep it `max_age` seconds."""
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    response = FileResponse(opened, content_type=content_type, **options)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = f"private, max-age={max_age}" + (", immutable" if immutable else "")
    return response


@admin.site.admin_view
def view_on_site(request: HttpRequest, content_type_id: str, object_id: str) -> HttpResponse:
    """The admin's "View on site" link. Django's own lets the ValidationError of an id that is not
    a UUID through as a 500; here it is the 404 of any other id that names nothing."""
    try:
        return contenttype_views.shortcut(request, content_type_id, object_id)
    except ValidationError:
        raise Http404(f"No object {object_id!r} of this type.") from None


@staff_member_required
@require_GET
def operations(request: HttpRequest) -> HttpResponse:
    """For operators: are the workers alive, what are they running, how long are the queues."""
    context = {**admin.site.each_context(request), "title": "Operations", **selectors.operations_overview()}
    return render(request, "admin/operations.html", context)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """For load balancers and compose: 200 when database, Redis, storage and a worker are fine,
    503 naming what is not. Public, so it says nothing but ok or not (selectors.health)."""
    report = selectors.health()
    response = JsonResponse(report, status=503 if report["failed"] else 200)
    response["Cache-Control"] = "no-store"
    return response
