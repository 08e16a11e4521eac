"""The image-to-image request: the text-to-image fields plus an init image and a strength."""

from django import forms

from imagegen import limits
from imagegen.forms import ApiGenerateForm, GenerateForm
from imagegen.models import Run
from imagegen.validators import validate_strength

from .uploads import InitImageField


class ImageToImageFields(forms.Form):
    init_image = InitImageField(label="Init image", help_text="PNG, JPEG or WebP, up to 10 MB.")
    strength = forms.FloatField(
        initial=limits.DEFAULT_STRENGTH,
        validators=[validate_strength],
        help_text="0 keeps the original, 1 transforms it completely.",
        widget=forms.NumberInput(
            attrs={
                "type": "range",
                "min": limits.MIN_STRENGTH,
                "max": limits.MAX_STRENGTH,
                "step": limits.STRENGTH_STEP,
            }
        ),
    )

    def run_arguments(self) -> dict:
        arguments = super().run_arguments()
        # The output takes the normalised init image's size.
        arguments.pop("width", None)
        arguments.pop("height", None)
        arguments["init_upload"] = arguments.pop("init_image")
        return arguments


class ImageToImageForm(ImageToImageFields, GenerateForm):
    # Width and height follow the init image.
    width = None
    height = None


class ApiImageToImageForm(ImageToImageFields, ApiGenerateForm):
    width = None
    height = None


class StudioForm(ImageToImageFields, GenerateForm):
    """The generate page's form: both modes in one, the mode toggle saying which fields count.

    Fields of the other mode are disabled, so what the browser posts for them is ignored.
    """

    mode = forms.ChoiceField(
        choices=Run.GenerationType.choices,
        initial=Run.GenerationType.TEXT_TO_IMAGE,
        required=False,  # absent means text to image
        widget=forms.RadioSelect,
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in ("width", "height") if self.image_mode else ("init_image", "strength"):
            self.fields[name].disabled = True
            self.fields[name].required = False

    @property
    def image_mode(self) -> bool:
        return self["mode"].value() == Run.GenerationType.IMAGE_TO_IMAGE

    def run_arguments(self) -> dict:
        if self.image_mode:
            arguments = super().run_arguments()
        else:
            arguments = GenerateForm.run_arguments(self)
            del arguments["init_image"], arguments["strength"]
        del arguments["mode"]
        return arguments
