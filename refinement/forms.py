"""The forms that validate a refinement: what every request has, and one payload form per mode.

The drawer, the API and the admin's retry validate through them, so each rule lives once. In the
API the payload is a JSON object; on the page each tab posts its payload fields with the mode's
name as prefix ("general-prompt").
"""

import json

from django import forms
from django.core.exceptions import ValidationError

from imagegen import limits
from imagegen.models import Image, Run

from .editing import Rect
from .models import DEFAULT_CREATIVITY, MAX_CREATIVITY, MIN_CREATIVITY, Refinement
from .selectors import latest_version, version_of_image

CREATIVITY_LABELS = {1: "Subtle", 2: "Balanced", 3: "Strong"}
MAX_RECTANGLES = 8
# Text repair: at most this many corrections, this many characters each, in boxes at least this big.
MAX_CORRECTIONS, MAX_CORRECTION_LENGTH, MIN_TEXT_BOX = 20, 200, 4


class TextField(forms.CharField):
    """A CharField that refuses numbers, lists and objects from JSON instead of turning them into text."""

    def to_python(self, value):
        if value not in self.empty_values and not isinstance(value, str):
            raise ValidationError("Must be text.", code="not_text")
        return super().to_python(value)


def json_value(value):
    """A value the page posts as JSON text (a hidden input kept by the canvas), or the API's own."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise ValidationError("Must be JSON.", code="invalid") from None


def bbox_value(value, *, what: str) -> list[int]:
    """[x, y, width, height] in whole pixels, or ValidationError naming `what`."""
    whole = isinstance(value, list | tuple) and all(type(number) is int for number in value)
    if not whole or len(value) != 4:
        raise ValidationError(f"{what} must be [x, y, width, height] in whole pixels.", code="bbox")
    return list(value)


def rectangle_problem(bbox: list[int], image_size: tuple[int, int], *, what: str, min_side: int) -> str:
    """Why `bbox` cannot be edited in an image of this size (too small, or reaching outside), or ""."""
    width, height = image_size
    if bbox[2] < min_side or bbox[3] < min_side:
        if bbox[2] <= 0 or bbox[3] <= 0:
            return f"{what} is empty: its width and height must be at least {min_side} pixel(s)."
        return f"{what} is {bbox[2]}×{bbox[3]} pixels: its width and height must be at least {min_side} pixels."
    if not Rect.from_bbox(bbox).fits(image_size):
        return f"{what} {bbox} reaches outside the image ({width}×{height})."
    return ""


def bbox_schema(*, min_side: int) -> dict:
    """[x, y, width, height] as the API's description shows it (imagegen.openapi)."""
    return {
        "type": "array",
        "items": {"type": "integer"},
        "minItems": 4,
        "maxItems": 4,
        "description": f"[x, y, width, height] in whole pixels, inside the image being refined; "
        f"width and height at least {min_side}.",
    }


class BoxField(forms.Field):
    """An optional rectangle, [x, y, width, height]."""

    widget = forms.HiddenInput
    min_side = 1

    def json_schema(self) -> dict:
        return bbox_schema(min_side=self.min_side)

    def to_python(self, value):
        value = json_value(value)
        return None if value in self.empty_values else bbox_value(value, what="The box")

    def boxes(self, value) -> list[tuple[str, list[int]]]:
        """The rectangles in a cleaned value, each with its name in messages."""
        return [("The box", value)] if value else []


class RectanglesField(forms.Field):
    """1 to `most` rectangles, each {"bbox": [x, y, w, h], <words>: text}: a region's rectangles with
    their prompts, or text repair's boxes with their corrected text."""

    widget = forms.HiddenInput

    def __init__(
        self, *, words: str, need: str, none: str, most: int, longest: int, noun: str, min_side: int = 1, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.words, self.need, self.none, self.most, self.longest, self.noun = words, need, none, most, longest, noun
        self.min_side = min_side

    def json_schema(self) -> dict:
        return {
            "type": "array",
            "minItems": 1,
            "maxItems": self.most,
            "items": {
                "type": "object",
                "properties": {
                    "bbox": bbox_schema(min_side=self.min_side),
                    self.words: {"type": "string", "minLength": 1, "maxLength": self.longest},
                },
                "required": ["bbox", self.words],
                "additionalProperties": False,
            },
        }

    def to_python(self, value):
        value = json_value(value)
        if value in self.empty_values:
            return []
        if not isinstance(value, list):
            raise ValidationError(f'Must be a list of {{"bbox": [x, y, w, h], "{self.words}": …}}.', code="invalid")
        return [self.rectangle(number, item) for number, item in enumerate(value, start=1)]

    def rectangle(self, number: int, item) -> dict:
        what = f"{self.noun} {number}"
        if not isinstance(item, dict):
            raise ValidationError(f'{what} must be {{"bbox": [x, y, w, h], "{self.words}": …}}.', code="invalid")
        unknown = sorted(set(item) - {"bbox", self.words})
        if unknown:
            raise ValidationError(f"{what} has an unknown field: {unknown[0]}.", code="invalid")
        bbox = bbox_value(item.get("bbox"), what=f"{what}'s bbox")
        words = item.get(self.words)
        if not isinstance(words, str) or not words.strip():
            raise ValidationError(f"{what} needs {self.need}.", code="words")
        if len(words) > self.longest:
            raise ValidationError(f"{what}'s {self.words} is longer than {self.longest} characters.", code="long")
        return {"bbox": bbox, self.words: words.strip()}

    def validate(self, value) -> None:
        if not value:
            raise ValidationError(self.none, code="required")
        if len(value) > self.most:
            raise ValidationError(f"At most {self.most} {self.noun.lower()}s (got {len(value)}).", code="too_many")

    def boxes(self, value) -> list[tuple[str, list[int]]]:
        return [(f"{self.noun} {number}", item["bbox"]) for number, item in enumerate(value or [], start=1)]


class PayloadForm(forms.Form):
    """A mode's payload; `payload()` is what the Refinement stores and the stage reads.

    It knows the size of the image it will edit (rectangles must lie inside it) and whose the
    refinement is (a reference image must be theirs).
    """

    def __init__(self, *args, image_size: tuple[int, int] | None = None, owner=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.image_size = image_size
        self.owner = owner

    def payload(self) -> dict:
        # Optional fields left empty are left out, as the seed's payload shapes have them.
        return {name: value for name, value in self.cleaned_data.items() if value not in ("", None, [])}

    def clean(self) -> dict:
        # Every rectangle of every field must fit the image. Without an image (the run has none
        # yet) the submission is refused later, with a reason.
        cleaned = super().clean()
        if self.image_size is None:
            return cleaned
        for name, field in self.fields.items():
            if name not in cleaned or not hasattr(field, "boxes"):
                continue
            for what, bbox in field.boxes(cleaned[name]):
                if problem := rectangle_problem(bbox, self.image_size, what=what, min_side=field.min_side):
                    self.add_error(name, ValidationError(problem, code="outside"))
                    break
        return cleaned


class GeneralPayloadForm(PayloadForm):
    prompt = TextField(
        max_length=limits.MAX_PROMPT_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "The same scene at golden hour, warmer light"}),
        help_text="What the whole picture should become.",
    )
    negative_prompt = TextField(
        max_length=limits.MAX_PROMPT_LENGTH, required=False, widget=forms.Textarea(attrs={"rows": 2})
    )


class RegionPayloadForm(PayloadForm):
    masks = RectanglesField(
        words="prompt",
        need="a prompt: what should it become?",
        none="Draw at least one rectangle.",
        most=MAX_RECTANGLES,
        longest=limits.MAX_PROMPT_LENGTH,
        noun="Rectangle",
        label="Rectangles",
        help_text="Drag on the image to draw; each has its own prompt.",
    )
    negative_prompt = TextField(
        max_length=limits.MAX_PROMPT_LENGTH,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="What none of the rectangles should show.",
    )


class SubjectPayloadForm(PayloadForm):
    # The seed's payload names the reference "referenceFileId"; the API keeps its name.
    referenceFileId = forms.UUIDField(  # noqa: N815
        label="Reference image", required=False, widget=forms.HiddenInput, help_text="From POST /api/v1/uploads."
    )
    instructions = TextField(
        max_length=limits.MAX_PROMPT_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Make the dog look like the one in the reference"}),
        help_text="What to repair, in words: they are the prompt.",
    )
    bbox = BoxField(required=False, label="Box", help_text="Optional: only this part of the image changes.")

    def clean_referenceFileId(self) -> str | None:  # noqa: N802 - Django names it after the field
        file_id = self.cleaned_data["referenceFileId"]
        if file_id is None:
            return None
        if not Image.objects.filter(pk=file_id, owner=self.owner).exists():
            # Another user's image is reported as missing, so its existence does not leak.
            raise ValidationError("No such image: upload the reference with POST /api/v1/uploads.", code="not_found")
        return str(file_id)


class TextPayloadForm(PayloadForm):
    corrections = RectanglesField(
        words="text",
        need="its text: what should the box say?",
        none="Give at least one correction: a box and what it should say.",
        most=MAX_CORRECTIONS,
        longest=MAX_CORRECTION_LENGTH,
        noun="Correction",
        min_side=MIN_TEXT_BOX,
        label="Corrections",
        help_text="Each box with what it should say; draw a box around text that was not found.",
    )
    instructions = TextField(
        max_length=limits.MAX_PROMPT_LENGTH,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Chalk lettering on a blackboard"}),
        help_text="Optional: how the lettering should look when it is blended in (creativity 2 and 3).",
    )


# Each mode's payload form (its stage is in refinement.stages).
PAYLOAD_FORMS: dict[str, type[PayloadForm]] = {
    "general": GeneralPayloadForm,
    "region": RegionPayloadForm,
    "subject": SubjectPayloadForm,
    "text": TextPayloadForm,
}


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
        # Every version of a chain has the run's size; the parent's is what rectangles must fit.
        parent = self.cleaned_data.get("parent_image_id") or getattr(latest_version(run=self.run), "image", None)
        image_size = (parent.width, parent.height) if parent else None
        return PAYLOAD_FORMS[refinement_type](data, prefix=prefix, image_size=image_size, owner=self.run.owner)

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
