"""The image-to-image request (the text-to-image fields plus an init image and a strength), the
generate page's form with its three modes (and how a run's or an image's settings fill it), and the
import of an image to edit."""

from collections.abc import Mapping

from django import forms
from django.core.exceptions import ValidationError

from imagegen import limits
from imagegen.forms import ApiGenerateForm, GenerateForm
from imagegen.models import Image, Run
from imagegen.validators import validate_strength

from .uploads import InitImageField, UploadError, read_text_chunks

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
    # Image to image again from an init image the user uploaded before ("Use these settings" on an
    # image-to-image run): its id instead of a file. A file, when one is chosen, comes first.
    init_image_id = forms.ModelChoiceField(
        queryset=Image.objects.none(),
        required=False,
        widget=forms.HiddenInput,
        error_messages={"invalid_choice": "That init image is gone: choose one again."},
    )

    def __init__(self, *args, owner=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if owner is not None:
            # Only the owner's own uploads that are not an import's image (deleting that run would
            # take the image with it).
            uploads = Image.objects.filter(owner=owner, kind=Image.Kind.UPLOAD, run__isnull=True)
            self.fields["init_image_id"].queryset = uploads
        if self.import_mode:
            unused = [name for name in self.fields if name not in ("mode", "init_image")]
        elif self.image_mode:
            unused = ["width", "height", *HIRES_FIELDS]
            if self["init_image_id"].value():
                self.fields["init_image"].required = False
        else:
            unused = ["init_image", "strength", "init_image_id"]
        for name in unused:
            self.fields[name].disabled = True
            self.fields[name].required = False

    @classmethod
    def initial_from_settings(cls, settings: Mapping[str, object]) -> tuple[dict, list[str]]:
        """The settings (a run's, or those read from an image) that the form's own fields accept, as
        its initial values, and a note for each one it refuses (out of range here, say)."""
        initial, notes = {}, []
        for name, value in settings.items():
            field = cls.base_fields.get(name)
            if field is None:
                continue
            try:
                if value != "":  # an empty prompt is what the image says: the form says the rest
                    field.clean(value)
            except ValidationError as refusal:
                label = field.label or name.replace("_", " ").capitalize()
                shown = str(value) if len(str(value)) <= 40 else f"{str(value)[:40]}…"
                notes.append(f"{label} {shown}: {' '.join(refusal.messages)} Left as it was.")
            else:
                initial[name] = value
        return initial, notes

    @classmethod
    def initial_from_run(cls, run: Run) -> dict:
        """What "Use these settings" fills in: the run's mode and every setting, its seed included,
        and for image to image its init image. An imported image has no settings."""
        if run.is_imported:
            return {}
        settings = {"mode": run.generation_type, **run.settings()}
        initial, _ = cls.initial_from_settings(settings)
        if run.init_image_id:
            initial["init_image_id"] = run.init_image_id
        return initial

    @property
    def stored_init_image(self) -> Image | None:
        """The earlier upload the form starts image to image from (init_image_id), if any."""
        value = self["init_image_id"].value()
        if not value or not self.image_mode:
            return None
        try:
            return self.fields["init_image_id"].clean(value)
        except ValidationError:
            return None

    def clean(self) -> dict:
        cleaned = super().clean()
        no_image = not cleaned.get("init_image") and not cleaned.get("init_image_id")
        if self.image_mode and no_image and not {"init_image", "init_image_id"} & set(self.errors):
            self.add_error("init_image", forms.Field.default_error_messages["required"])
        return cleaned

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
            stored = arguments.pop("init_image_id")
            if arguments["init_upload"] is None:
                del arguments["init_upload"]
                arguments["init_image"] = stored
        else:
            arguments = GenerateForm.run_arguments(self)
            del arguments["init_image"], arguments["strength"], arguments["init_image_id"]
        del arguments["mode"]
        return arguments


class ImageUploadForm(forms.Form):
    """An image the user brings (one to edit, or a reference), checked by the same rules as an init image."""

    image = InitImageField(label="Image", help_text=UPLOAD_HELP)


class SettingsImageForm(forms.Form):
    """An image to read generation settings from (POST /api/v1/parameters): judged by its content
    like any upload, and only its text is read, never its pixels."""

    image = forms.FileField(label="Image", help_text="A PNG that carries generation settings, up to 10 MB.")

    def clean_image(self) -> dict[str, str]:
        try:
            return read_text_chunks(self.cleaned_data["image"])
        except UploadError as error:
            raise ValidationError(str(error), code="invalid_image") from error
