"""The image-to-image request (the text-to-image fields plus an init image and a strength), the
generate page's form with its three modes, and the import of an image to edit."""

from django import forms

from imagegen import limits
from imagegen.forms import ApiGenerateForm, GenerateForm
from imagegen.models import Run
from imagegen.validators import validate_strength

from .uploads import InitImageField

UPLOAD_HELP = "PNG, JPEG or WebP, up to 10 MB."
# The hires fix redraws a text-to-image picture larger: image to image has none.
HIRES_FIELDS = ("hires_scale", "hires_strength", "hires_steps")


class ImageToImageFields(forms.Form):
    init_image = InitImageField(label="Init image", help_text=UPLOAD_HELP)
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
    # Width and height follow the init image; the hires fix is for text to image.
    width = None
    height = None
    hires_scale = hires_strength = hires_steps = None


class ApiImageToImageForm(ImageToImageFields, ApiGenerateForm):
    width = None
    height = None
    hires_scale = hires_strength = hires_steps = None


class StudioForm(ImageToImageFields, GenerateForm):
    """The generate page's form: three modes in one, the mode toggle saying which fields count.

    Fields of the other modes are disabled, so what the browser posts for them is ignored. An
    import takes only the image (the init image field, the page's one drop zone).
    """

    mode = forms.ChoiceField(
        choices=[
            (Run.GenerationType.TEXT_TO_IMAGE, Run.GenerationType.TEXT_TO_IMAGE.label),
            (Run.GenerationType.IMAGE_TO_IMAGE, Run.GenerationType.IMAGE_TO_IMAGE.label),
            # The toggle offers an action; the run it makes is labelled "Imported".
            (Run.GenerationType.IMPORTED, "Import"),
        ],
        initial=Run.GenerationType.TEXT_TO_IMAGE,
        required=False,  # absent means text to image
        widget=forms.RadioSelect,
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.import_mode:
            unused = [name for name in self.fields if name not in ("mode", "init_image")]
        elif self.image_mode:
            unused = ["width", "height", *HIRES_FIELDS]
        else:
            unused = ["init_image", "strength"]
        for name in unused:
            self.fields[name].disabled = True
            self.fields[name].required = False

    @property
    def image_mode(self) -> bool:
        return self["mode"].value() == Run.GenerationType.IMAGE_TO_IMAGE

    @property
    def import_mode(self) -> bool:
        return self["mode"].value() == Run.GenerationType.IMPORTED

    @property
    def takes_image(self) -> bool:
        """Whether the mode shows the image drop zone."""
        return self.image_mode or self.import_mode

    def run_arguments(self) -> dict:
        """The cleaned values as keyword arguments of services.run_create (for an import, run_import)."""
        if self.import_mode:
            return {"upload": self.cleaned_data["init_image"]}
        if self.image_mode:
            arguments = super().run_arguments()
        else:
            arguments = GenerateForm.run_arguments(self)
            del arguments["init_image"], arguments["strength"]
        del arguments["mode"]
        return arguments


class ImageUploadForm(forms.Form):
    """An image the user brings (one to edit, or a reference), checked by the same rules as an init image."""

    image = InitImageField(label="Image", help_text=UPLOAD_HELP)
