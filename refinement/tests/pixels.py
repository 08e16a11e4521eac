"""What the tests of the masked modes check pixels against."""

import numpy as np

from refinement.editing import Rect, feather_alpha


def reach(size: tuple[int, int], bboxes) -> np.ndarray:
    """The pixels an edit of these rectangles may change: within FEATHER of one of them (H×W bool)."""
    near = np.zeros(size[::-1], bool)
    for bbox in bboxes:
        near |= feather_alpha(size, Rect.from_bbox(bbox)) > 0
    return near
