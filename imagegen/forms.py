"""The forms that validate a generation request; the page, the API and commands all use them."""

from django import forms

from . import limits
from .engine.requests import DEFAULT_CLIP_SKIP, DEFAULT_SCHEDULER, MAX_CLIP_SKIP, SAMPLER_LABELS
from .validators import validate_side


class GenerateForm(forms.Form):
    prompt = forms.CharField(
        max_length=limits.MAX_PROMPT_LENGTH,
        strip=True,
        help_text="AUTOMATIC1111's syntax: (word:1.3) or (word) weighs a word more, [word] less; "
        "BREAK starts a new 75-token chunk.",
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

    clip_skip = forms.IntegerField(
        min_value=1,
        max_value=MAX_CLIP_SKIP,
        initial=DEFAULT_CLIP_SKIP,
        required=False,
        help_text="1 reads the prompt from the text encoder's last layer; 2 (the one before) suits many anime models.",
    )

    def clean_scheduler(self) -> str:
        return self.cleaned_data["scheduler"] or DEFAULT_SCHEDULER

    def clean_clip_skip(self) -> int:
        clip_skip = self.cleaned_data["clip_skip"]
        return DEFAULT_CLIP_SKIP if clip_skip is None else clip_skip

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
