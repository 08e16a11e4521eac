"""Reading stored images, where a file the database names may have gone missing from storage."""

from django.http import Http404

from .models import Image


class StoredFileMissing(Http404):
    """A file the database names is gone from storage (removed by hand, a volume lost): a 404 that says so."""

    def __init__(self, image: Image):
        super().__init__(f"The file of image {image.pk} is missing from storage.")


def open_image_file(*, image: Image):
    """The image's stored file, open for reading; StoredFileMissing when it is gone."""
    try:
        return image.file.open("rb")
    except FileNotFoundError:
        raise StoredFileMissing(image) from None
