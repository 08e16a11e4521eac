"""The forms that validate a refinement: what every request has, and one payload form per mode.

The drawer, the API and the admin's retry validate through them, so each rule lives once. In the
API the payload is a JSON object; on the page each tab posts its payload fields with the mode's
name as prefix ("general-prompt").
"""

from django import forms
from django.core.exceptions import ValidationError

from imagegen import limits
from imagegen.models import Image, Run

from .models import DEFAULT_CREATIVITY, MAX_CREATIVITY, MIN_CREATIVITY, Refinement
from .selectors import version_of_image
from .stages import STAGES

CREATIVITY_LABELS = {1: "Subtle", 2: "Balanced", 3: "Strong"}


class TextField(forms.CharField):
    """A CharField that refuses numbers, lists and objects from JSON instead of turning them into text."""

    def to_python(self, value):
        if value not in self.empty_values and not isinstance(value, str):
            raise ValidationError("Must be text.", code="not_text")
        return super().to_python(value)


class PayloadForm(forms.Form):
    """A mode's payload; `payload()` is what the Refinement stores and the stage reads."""

    def payload(self) -> dict:
        # Optional fields left empty are left out, as the seed's payload shapes have them.
        return {name: value for name, value in self.cleaned_data.items() if value not in ("", None, [])}


class GeneralPayloadForm(PayloadForm):
    prompt = TextField(
        max_length=limits.MAX_PROMPT_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "The same scene at golden hour, warmer light"}),
        help_text="What the whole picture should become.",
    )
    negative_prompt = TextField(
        max_length=limits.MAX_PROMPT_LENGTH, required=False, widget=forms.Textarea(attrs={"rows": 2})
    )


# Each mode's payload form; a mode is offered once it has a stage (refinement.stages) and a form here.
PAYLOAD_FORMS: dict[str, type[PayloadForm]] = {"general": GeneralPayloadForm}


def mode_available(refinement_type: str) -> bool:
    return refinement_type in STAGES and refinement_type in PAYLOAD_FORMS


class RefineForm(forms.Form):
    """What every refinement request has beside its payload: the mode, creativity, parent and seed."""

    type = forms.ChoiceField(choices=Refinement.Type.choices)
    creativity = forms.IntegerField(
        min_value=MIN_CREATIVITY,
        max_value=MAX_CREATIVITY,
        initial=DEFAULT_CREATIVITY,
        widget=forms.RadioSelect(choices=[(level, f"{level} · {label}") for level, label in CREATIVITY_LABELS.items()]),
        help_text="How far the new version may move from its parent.",
    )
    parent_image_id = forms.UUIDField(required=False, help_text="Which version to refine; the latest when empty.")
    seed = forms.IntegerField(min_value=0, max_value=limits.MAX_SEED, required=False)

    def __init__(self, *args, run: Run, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.run = run

    def clean_type(self) -> str:
        refinement_type = self.cleaned_data["type"]
        if not mode_available(refinement_type):
            label = Refinement.Type(refinement_type).label
            raise ValidationError(f"{label} is not available yet.", code="not_available")
        return refinement_type

    def clean_parent_image_id(self) -> Image | None:
        image_id = self.cleaned_data["parent_image_id"]
        if image_id is None:
            return None
        if not Image.objects.filter(pk=image_id, owner=self.run.owner).exists():
            # Another user's image is reported as missing, so its existence does not leak.
            raise ValidationError("No such image.", code="not_found")
        version = version_of_image(run=self.run, image_id=image_id)
        if version is None:
            raise ValidationError("This image is not a version of this run.", code="not_in_chain")
        return version.image

    def payload_form(self, data, *, prefix: str | None = None) -> PayloadForm | None:
        """The chosen mode's payload form bound to `data`; None while the mode itself is invalid."""
        refinement_type = self.cleaned_data.get("type") if hasattr(self, "cleaned_data") else None
        if refinement_type is None:
            return None
        return PAYLOAD_FORMS[refinement_type](data, prefix=prefix)

    def refinement_arguments(self, payload_form: PayloadForm) -> dict:
        """Keyword arguments of services.refinement_create (with owner and run)."""
        return {
            "owner": self.run.owner,
            "run": self.run,
            "type": self.cleaned_data["type"],
            "payload": payload_form.payload(),
            "creativity": self.cleaned_data["creativity"],
            "parent_image": self.cleaned_data["parent_image_id"],
            "seed": self.cleaned_data["seed"],
        }
