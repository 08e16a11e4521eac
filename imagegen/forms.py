"""The forms that validate a generation request; the page, the API and commands all use them."""

from django import forms
from django.conf import settings

from . import limits
from .engine.addons import AddOnError, AddOnFolder
from .engine.requests import DEFAULT_CLIP_SKIP, DEFAULT_SCHEDULER, MAX_CLIP_SKIP, SAMPLER_LABELS, hires_size
from .models import REFINED, Run
from .services.catalog import default_model, model_size, models_offered
from .validators import validate_hires_scale, validate_side, validate_strength

PROMPT_SYNTAX = (
    "AUTOMATIC1111's syntax: (word:1.3) or (word) weighs a word more, [word] less; BREAK starts a new 75-token chunk."
)


class ModelSelect(forms.Select):
    """The model choice, each option with the side its model works best at (data-side), which the
    page moves an untouched size to when the choice changes (see app.js)."""

    def create_option(self, name, value, *args, **kwargs) -> dict:
        option = super().create_option(name, value, *args, **kwargs)
        if value:
            option["attrs"]["data-side"] = model_size(value)
        return option


class GenerateForm(forms.Form):
    prompt = forms.CharField(
        max_length=limits.MAX_PROMPT_LENGTH,
        strip=True,
        # The page names the LoRAs and embeddings this server offers instead (see __init__).
        help_text=f"{PROMPT_SYNTAX} `<lora:name:weight>` applies one of the server's LoRAs (weight -4 to 4, "
        "default 1); an embedding's name calls it.",
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
    model = forms.ChoiceField(
        # Read at each use, so the list follows IMAGEGEN_MODELS.
        choices=lambda: [(model.id, model.label) for model in models_offered().values()],
        required=False,
        help_text="Leave empty for the default (the first).",
        widget=ModelSelect,
    )
    scheduler = forms.ChoiceField(
        label="Sampler", choices=list(SAMPLER_LABELS.items()), initial=DEFAULT_SCHEDULER, required=False
    )
    batch_size = forms.IntegerField(
        label="Batch size",
        min_value=limits.MIN_BATCH_SIZE,
        max_value=limits.MAX_BATCH_SIZE,
        initial=limits.DEFAULT_BATCH_SIZE,
        required=False,  # absent: one image
        help_text="Images in one run, each from the next seed.",
    )

    hires_scale = forms.FloatField(
        label="Hires fix: upscale by",
        initial=limits.HIRES_OFF,
        required=False,
        validators=[validate_hires_scale],
        help_text=f"{limits.HIRES_OFF:g} is off; {limits.MIN_HIRES_SCALE:g}–{limits.MAX_HIRES_SCALE:g}: made at "
        f"Width × Height, then upscaled and redrawn (at most {limits.MAX_HIRES_SIDE} px a side).",
        widget=forms.NumberInput(
            attrs={"step": limits.HIRES_SCALE_STEP, "min": limits.HIRES_OFF, "max": limits.MAX_HIRES_SCALE}
        ),
    )
    hires_strength = forms.FloatField(
        label="Hires strength",
        initial=limits.DEFAULT_HIRES_STRENGTH,
        required=False,
        validators=[validate_strength],
        help_text="How much the hires pass redraws: 0 keeps the upscale, 1 redraws it all.",
        widget=forms.NumberInput(
            attrs={"step": limits.STRENGTH_STEP, "min": limits.MIN_STRENGTH, "max": limits.MAX_STRENGTH}
        ),
    )
    hires_steps = forms.IntegerField(
        label="Hires steps",
        min_value=limits.MIN_STEPS,
        max_value=limits.MAX_STEPS,
        required=False,
        help_text="Of the hires pass (it runs steps × strength). Empty: as many as Steps.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # A new picture is made at the default model's own size unless told (1024 for SDXL); image
        # to image has no size of its own (it takes the init image's).
        side = model_size(None)
        for name in ("width", "height"):
            if name in self.fields:
                self.fields[name].initial = side
        addons = AddOnFolder(settings.IMAGEGEN_LORA_DIR)
        offered = [
            f"LoRAs, as <lora:name:weight>: {', '.join(names)}." if (names := addons.lora_names()) else "",
            f"Embeddings, by name: {', '.join(names)}." if (names := addons.embedding_names()) else "",
        ]
        self.fields["prompt"].help_text = " ".join(part for part in (PROMPT_SYNTAX, *offered) if part)

    @property
    def offers_models(self) -> bool:
        """Whether users have a model to choose (the page shows the choice only then)."""
        return len(models_offered()) > 1

    def clean_prompt(self) -> str:
        prompt = self.cleaned_data["prompt"]
        try:
            AddOnFolder(settings.IMAGEGEN_LORA_DIR).check_prompt(prompt)
        except (ValueError, AddOnError) as error:
            raise forms.ValidationError(str(error), code="lora") from None
        return prompt

    def clean_model(self) -> str:
        return self.cleaned_data["model"] or default_model().id

    clip_skip = forms.IntegerField(
        min_value=1,
        max_value=MAX_CLIP_SKIP,
        initial=DEFAULT_CLIP_SKIP,
        required=False,
        help_text="1 reads the prompt from the text encoder's layer the model was trained on (the last; SDXL's "
        "penultimate); 2, the one before, suits many anime models.",
    )

    def clean_scheduler(self) -> str:
        return self.cleaned_data["scheduler"] or DEFAULT_SCHEDULER

    def clean_clip_skip(self) -> int:
        clip_skip = self.cleaned_data["clip_skip"]
        return DEFAULT_CLIP_SKIP if clip_skip is None else clip_skip

    def clean_batch_size(self) -> int:
        batch_size = self.cleaned_data["batch_size"]
        return limits.DEFAULT_BATCH_SIZE if batch_size is None else batch_size

    def clean_hires_scale(self) -> float | None:
        """None when the hires fix is off (left empty, or 1); else to the two decimals a run stores,
        so the final size checked here is the one the run gets."""
        scale = self.cleaned_data["hires_scale"]
        return None if scale is None or scale == limits.HIRES_OFF else round(scale, 2)

    def clean_hires_strength(self) -> float:
        strength = self.cleaned_data["hires_strength"]
        return limits.DEFAULT_HIRES_STRENGTH if strength is None else strength

    def clean(self) -> dict:
        cleaned = super().clean()
        scale, width, height = cleaned.get("hires_scale"), cleaned.get("width"), cleaned.get("height")
        if width and height and width * height > limits.MAX_PIXELS:
            self.add_error(
                "height",
                f"{width}×{height} has more pixels than 1024×1024, the most a picture may have: choose a smaller "
                "size (the sizes SDXL models are made for, such as 1216×832 or 1344×768, fit).",
            )
        if scale and width and height:
            final_width, final_height = hires_size(width, height, scale)
            if max(final_width, final_height) > limits.MAX_HIRES_SIDE:
                self.add_error(
                    "hires_scale",
                    f"{width}×{height} upscaled by {scale:g} is {final_width}×{final_height}; the hires fix "
                    f"ends at {limits.MAX_HIRES_SIDE} px a side at most: choose a smaller scale or size.",
                )
        return cleaned

    def run_arguments(self) -> dict:
        """The cleaned values as keyword arguments of services.run_create."""
        return dict(self.cleaned_data)


class ApiGenerateForm(GenerateForm):
    """The JSON API's names and defaults for the same rules (as other Stable Diffusion APIs use)."""

    @staticmethod
    def defaults_for(data: dict) -> dict:
        """A request that gives neither width nor height gets a square of the chosen model's own
        size (see services.model_size): 512 for SD 1.x, 1024 for SDXL."""
        if "width" in data or "height" in data:
            return {}
        model = data.get("model")
        side = model_size(model if isinstance(model, str) else None)
        return {"width": side, "height": side}

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
