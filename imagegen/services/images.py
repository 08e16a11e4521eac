"""Stored images: writing them through Django's storage API and reading them back. Deleting an Image
row deletes its files once committed (django-cleanup), whatever deleted it."""

from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from ..engine import encode_thumbnail
from ..models import Image, Run


@dataclass
class OutputImage:
    """An image made but not stored yet: its encoded data and what its row records."""

    data: bytes
    size: tuple[int, int]
    kind: str
    index: int = 0
    # Set for a run's outputs, which belong to their run (see Image.run).
    run: Run | None = None
    format: str = "PNG"


def image_store(
    *,
    owner,
    data: bytes,
    kind: str,
    name: str,
    size: tuple[int, int],
    run: Run | None = None,
    index: int = 0,
    format: str = "PNG",
) -> Image:
    """Write the file, then its row; a row that cannot be stored takes its file with it."""
    stored_name = default_storage.save(name, ContentFile(data))
    image = OutputImage(data=data, size=size, kind=kind, index=index, run=run, format=format)
    try:
        return image_row_create(owner_id=owner.pk, name=stored_name, image=image)
    except BaseException:
        default_storage.delete(stored_name)
        raise


def image_row_create(*, owner_id, name: str, image: OutputImage) -> Image:
    """The row of an image whose file is stored under `name`."""
    width, height = image.size
    return Image.objects.create(
        owner_id=owner_id,
        file=name,
        width=width,
        height=height,
        format=image.format,
        sha256=Image.digest(image.data),
        kind=image.kind,
        run=image.run,
        index=image.index,
    )


def image_thumbnail_open(*, image: Image):
    """The image's thumbnail, open for reading: made and stored the first time it is asked for.

    Made here, on the first request, rather than when the image is stored: every image then has
    one (those stored before thumbnails existed, uploads, versions, references) without a
    backfill, and no worker spends a job's time on it. Two first requests at the same moment may
    both encode, but the conditional update keeps one file and the other is deleted at once.
    """
    if image.thumbnail:
        try:
            return image.thumbnail.open("rb")
        except FileNotFoundError:  # media moved without thumbnails/: make it again
            Image.objects.filter(pk=image.pk, thumbnail=image.thumbnail.name).update(thumbnail="")
            image.thumbnail.name = ""
    with image.file.open("rb") as file:
        data = encode_thumbnail(file)
    name = default_storage.save(f"thumbnails/{image.pk}.webp", ContentFile(data))
    if Image.objects.filter(pk=image.pk, thumbnail="").update(thumbnail=name):
        image.thumbnail.name = name
    else:
        default_storage.delete(name)
        image.refresh_from_db(fields=["thumbnail"])
    return image.thumbnail.open("rb")


def image_open_rgb(image: Image) -> PILImage.Image:
    """The stored image's pixels, decoded, as RGB."""
    with image.file.open("rb") as file:
        return PILImage.open(file).convert("RGB")
