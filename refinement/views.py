"""The Refine Image drawer: its four tabs, the submission that switches it to the live log, and the
version cards of the run page."""

from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from imagegen import selectors as imagegen_selectors
from imagegen.models import Run
from imagegen.services import QuotaExceededError
from img2img.uploads import MAX_UPLOAD_BYTES

from . import selectors, services
from .forms import MAX_CORRECTIONS, MAX_RECTANGLES, MIN_TEXT_BOX, PAYLOAD_FORMS, PayloadForm, RefineForm
from .models import Refinement
from .selectors import Version
from .stages import STAGES

# What each tab offers, in the user's words.
MODE_DESCRIPTIONS = {
    Refinement.Type.SUBJECT: "Repair the main subject from a reference image and a description.",
    Refinement.Type.TEXT: "Find the text with OCR, correct the words, and have them rewritten in the same lettering.",
    Refinement.Type.REGION: "Draw rectangles, each with its own prompt; nothing outside them changes.",
    Refinement.Type.GENERAL: "Refine the whole picture with a prompt.",
}


@dataclass
class DrawerTab:
    type: str
    label: str
    description: str
    form: RefineForm
    payload_form: PayloadForm

    @property
    def strengths(self) -> str:
        """Creativity 1, 2, 3 as the strengths this mode uses ("0.30 · 0.50 · 0.75")."""
        strengths = STAGES[self.type].strengths
        return " · ".join(f"{strengths[level]:.2f}" for level in sorted(strengths))


def drawer_tabs(run: Run, parent: Version, submitted: RefineForm | None = None, payload_form=None) -> list[DrawerTab]:
    """The four tabs; the submitted one keeps what was posted (and its errors)."""
    tabs = []
    for refinement_type, label in Refinement.Type.choices:
        if submitted is not None and submitted.data.get("type") == refinement_type:
            # What was posted comes back, rectangles and reference included, even when the error
            # was in the fields every mode shares.
            form = submitted
            payload = payload_form or PAYLOAD_FORMS[refinement_type](submitted.data, prefix=refinement_type)
        else:
            form = RefineForm(
                initial={"type": refinement_type, "parent_image_id": parent.image.pk},
                run=run,
                auto_id=f"id_{refinement_type}_%s",
            )
            payload = PAYLOAD_FORMS[refinement_type](prefix=refinement_type)
        tabs.append(DrawerTab(refinement_type, label, MODE_DESCRIPTIONS[refinement_type], form, payload))
    return tabs


def drawer_context(run: Run, parent: Version, tabs: list[DrawerTab]) -> dict:
    # The limits the page checks before the server does (the server checks them again).
    limits = {
        "max_upload_bytes": MAX_UPLOAD_BYTES,
        "max_rectangles": MAX_RECTANGLES,
        "max_corrections": MAX_CORRECTIONS,
        "min_text_box": MIN_TEXT_BOX,
    }
    return {"run": run, "parent": parent, "tabs": tabs, **limits}


def chosen_version(run: Run, image_id: str | None) -> Version:
    """The version the drawer refines: the image asked for, or the chain's latest; 404 otherwise."""
    version = selectors.version_of_image(run=run, image_id=image_id) if image_id else selectors.latest_version(run=run)
    if version is None:
        raise Http404("No such image in this run.")
    return version


@login_required
@require_http_methods(["GET", "POST"])
def refine(request: HttpRequest, run_id) -> HttpResponse:
    """GET: the drawer for one version (`?image=<id>`). POST: submit a tab's form."""
    run = imagegen_selectors.run_for_user(user=request.user, run_id=run_id)
    if request.method == "GET":
        parent = chosen_version(run, request.GET.get("image"))
        template = "refinement/drawer.html" if request.htmx else "refinement/drawer_page.html"
        return render(request, template, drawer_context(run, parent, drawer_tabs(run, parent)))

    form = RefineForm(request.POST, run=run, auto_id=f"id_{request.POST.get('type', '')}_%s")
    payload_form = form.payload_form(request.POST, prefix=form.cleaned_data["type"]) if form.is_valid() else None
    if payload_form is not None and payload_form.is_valid():
        try:
            refinement = services.refinement_create(**form.refinement_arguments(payload_form))
        except (QuotaExceededError, services.NothingToRefineError) as refusal:
            form.add_error(None, str(refusal))
        else:
            if not request.htmx:
                return redirect(refinement.get_absolute_url())
            return render(request, "refinement/drawer.html#live-log", {"job": refinement, "run": run})
    parent = chosen_version(run, request.POST.get("parent_image_id"))
    context = drawer_context(run, parent, drawer_tabs(run, parent, form, payload_form))
    if not request.htmx:
        return render(request, "refinement/drawer_page.html", context)
    return render(request, "refinement/drawer.html#drawer-body", {**context, "selected": form.data.get("type")})


@login_required
@require_GET
def version_card(request: HttpRequest, job_id) -> HttpResponse:
    """One version's card, for a card that waits for its refinement to end (it polls this)."""
    refinement = selectors.refinement_for_user(user=request.user, job_id=job_id)
    context = {"refinement": refinement, "pending": True}
    return render(request, "refinement/partials/version.html#version-card", context)
