"""What the engine's tests share: small requests for the tiny model, and pixels to compare."""

import numpy as np
from PIL import Image

from imagegen.engine import GenerationRequest

# Batched convolutions add up in another order than a batch of one: a pixel may move by a level or two.
PIXEL_TOLERANCE = 2


def small(**overrides: object) -> GenerationRequest:
    """A 64×64, 3-step text-to-image request: seconds on the CPU with the tiny model."""
    return GenerationRequest(**{"prompt": "a red fox", "steps": 3, "width": 64, "height": 64, **overrides})


def as_array(image: Image.Image) -> np.ndarray:
    """Signed pixels, so differences do not wrap around."""
    return np.asarray(image, dtype=np.int16)
