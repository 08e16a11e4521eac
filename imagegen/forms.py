"""The forms that validate a generation request; the page, the API and commands all use them."""

from django import forms

from . import limits
from .engine.requests import DEFAULT_SCHEDULER, SAMPLER_LABELS
from .models import REFINED, Run
from .validators import validate_side


class GenerateForm(forms.Form):
    prompt = forms.CharField(
        max_length=limits.MAX_PROMPT_LENGTH,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "A lighthouse at dawn, oil painting"}),
    )
    negative_prompt = forms.CharField(
        max_length=limits.MAX_PROMPT_LENGTH, required=False, strip=True, widget=forms.Textarea(attrs={"rows": 2})
    )
    steps = forms.IntegerField(min_value=limits.MIN_STEPS, max_value=limits.MAX_STEPS, initial=limits.DEFAULT_STEPS)
    guidance_scale = forms.FloatField(
        min_value=limits.MIN_GUIDANCE,
        max_value=limits.MAX_GUIDANCE,
        initial=limits.DEFAULT_GUIDANCE,
        widget=forms.NumberInput(attrs={"step": "0.5"}),
    )
    width = forms.IntegerField(
        min_value=limits.MIN_SIDE,
        max_value=limits.MAX_SIDE,
        initial=limits.DEFAULT_SIDE,
        validators=[validate_side],
        widget=forms.NumberInput(attrs={"step": limits.SIDE_MULTIPLE}),
    )
    height = forms.IntegerField(
        min_value=limits.MIN_SIDE,
        max_value=limits.MAX_SIDE,
        initial=limits.DEFAULT_SIDE,
        validators=[validate_side],
        widget=forms.NumberInput(attrs={"step": limits.SIDE_MULTIPLE}),
    )
    seed = forms.IntegerField(
        min_value=0,
        max_value=limits.MAX_SEED,
        required=False,
        help_text="Leave empty for a random seed.",
    )
    scheduler = forms.ChoiceField(
        label="Sampler", choices=list(SAMPLER_LABELS.items()), initial=DEFAULT_SCHEDULER, required=False
    )

    def clean_scheduler(self) -> str:
        return self.cleaned_data["scheduler"] or DEFAULT_SCHEDULER

    def run_arguments(self) -> dict:
        """The cleaned values as keyword arguments of services.run_create."""
        return dict(self.cleaned_data)


class ApiGenerateForm(GenerateForm):
    """The JSON API's names and defaults for the same rules (as other Stable Diffusion APIs use)."""

    steps = None
    num_inference_steps = forms.IntegerField(
        min_value=limits.MIN_STEPS, max_value=limits.MAX_STEPS, initial=limits.API_DEFAULT_STEPS
    )

    def run_arguments(self) -> dict:
        arguments = super().run_arguments()
        arguments["steps"] = arguments.pop("num_inference_steps")
        return arguments


# The gallery's type filter: the generation types, and the runs that have versions beyond v1.
GALLERY_TYPES = [*Run.GenerationType.choices, (REFINED, "Refined")]


class GalleryFilterForm(forms.Form):
    """The gallery's search and filters (GET parameters, also the API's run list's): a value that is
    not valid is ignored, as if it were not there."""

    q = forms.CharField(label="Prompt contains", max_length=limits.MAX_PROMPT_LENGTH, required=False, strip=True)
    model = forms.CharField(max_length=255, required=False, strip=True)
    type = forms.ChoiceField(choices=GALLERY_TYPES, required=False)

    # Each field's keyword argument of selectors.gallery_runs.
    arguments = {"q": "query", "model": "model", "type": "run_type"}

    def parameters(self) -> dict[str, str]:
        """The valid, non-empty ones, by their GET names: what the page's links keep."""
        self.is_valid()
        return {name: value for name, value in self.cleaned_data.items() if value and name in self.arguments}

    def filters(self) -> dict[str, str]:
        """The same as keyword arguments of selectors.gallery_runs (and gallery_state)."""
        return {self.arguments[name]: value for name, value in self.parameters().items()}


class ApiRunListForm(GalleryFilterForm):
    """The API's run list: the gallery's filters, where a value that is not valid is a 400, and a page."""

    page = forms.IntegerField(min_value=1, required=False, help_text="1 is the newest runs.")
