"""Stored images: writing them through Django's storage API and reading them back. Deleting an Image
row deletes its files once committed (django-cleanup), whatever deleted it."""

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from ..models import Image, Run


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
    width, height = size
    try:
        return Image.objects.create(
            owner=owner,
            file=stored_name,
            width=width,
            height=height,
            format=format,
            sha256=Image.digest(data),
            kind=kind,
            run=run,
            index=index,
        )
    except BaseException:
        default_storage.delete(stored_name)
        raise


def image_open_rgb(image: Image) -> PILImage.Image:
    """The stored image's pixels, decoded, as RGB."""
    with image.file.open("rb") as file:
        return PILImage.open(file).convert("RGB")
