"""Image maths every refinement mode shares, free of Django: sizes now; crops, masks and
compositing onto the original pixels as the masked modes arrive."""

from PIL import Image


def fit_to_size(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The image at exactly `size`: a version always keeps its parent's size.

    The pipelines work in multiples of 8 pixels; stored images already are, so this only resizes
    when a model hands back another size.
    """
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)
