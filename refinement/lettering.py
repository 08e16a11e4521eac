"""Text repair's image maths, free of Django: find the lettering in a box, match its font, size and
colour among the installed fonts, erase it, and draw the corrected words in its place.

The lettering is what stands out from the box's local background in one direction (darker or
lighter), so gradients and light-on-dark text work alike. The font is chosen by drawing the words
the box holds now in each candidate font, at the size that gives them the original's ink height,
and keeping the one whose shape overlaps the original's most. The correction is then drawn with
the same left edge and baseline; a longer text runs further right and shrinks only when it would
leave the image.
"""

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# The candidates, as (name, file); the ones installed are used (DejaVu comes with the system,
# Liberation and Noto are in the Makefile's packages).
FONT_FILES = [
    ("DejaVu Sans", "dejavu/DejaVuSans.ttf"),
    ("DejaVu Sans Bold", "dejavu/DejaVuSans-Bold.ttf"),
    ("DejaVu Sans Oblique", "dejavu/DejaVuSans-Oblique.ttf"),
    ("DejaVu Serif", "dejavu/DejaVuSerif.ttf"),
    ("DejaVu Serif Bold", "dejavu/DejaVuSerif-Bold.ttf"),
    ("DejaVu Sans Mono", "dejavu/DejaVuSansMono.ttf"),
    ("DejaVu Sans Mono Bold", "dejavu/DejaVuSansMono-Bold.ttf"),
    ("Liberation Sans", "liberation/LiberationSans-Regular.ttf"),
    ("Liberation Sans Bold", "liberation/LiberationSans-Bold.ttf"),
    ("Liberation Sans Italic", "liberation/LiberationSans-Italic.ttf"),
    ("Liberation Serif", "liberation/LiberationSerif-Regular.ttf"),
    ("Liberation Serif Bold", "liberation/LiberationSerif-Bold.ttf"),
    ("Liberation Serif Italic", "liberation/LiberationSerif-Italic.ttf"),
    ("Liberation Mono", "liberation/LiberationMono-Regular.ttf"),
    ("Liberation Mono Bold", "liberation/LiberationMono-Bold.ttf"),
    ("Noto Sans", "noto/NotoSans-Regular.ttf"),
    ("Noto Sans Bold", "noto/NotoSans-Bold.ttf"),
    ("Noto Serif", "noto/NotoSerif-Regular.ttf"),
    ("Noto Serif Bold", "noto/NotoSerif-Bold.ttf"),
]
FONT_ROOT = Path("/usr/share/fonts/truetype")
# Around the box, the lettering may reach further (descenders, a tight box): at most this far.
MAX_MARGIN = 24
# The smallest size a correction may shrink to when it would leave the image.
MIN_SIZE = 8


@dataclass(frozen=True)
class Font:
    name: str
    path: str


@cache
def installed_fonts() -> tuple[Font, ...]:
    return tuple(Font(name, str(FONT_ROOT / file)) for name, file in FONT_FILES if (FONT_ROOT / file).is_file())


@cache
def _truetype(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


@dataclass
class Lettering:
    """The lettering found in a box."""

    region: tuple[int, int, int, int]  # left, top, right, bottom: the box and a margin, in the image
    mask: np.ndarray  # bool, region-sized: the glyphs' pixels
    colour: tuple[int, int, int]  # the letters' colour
    stroke: float  # typical stroke width in pixels

    @property
    def ink_box(self) -> tuple[int, int, int, int] | None:
        """left, top, right, bottom of the glyphs, in the image; None when there are none."""
        box = _ink(self.mask)
        if box is None:
            return None
        left, top = self.region[:2]
        return left + box[0], top + box[1], left + box[2], top + box[3]


def find_lettering(image: Image.Image, bbox) -> Lettering:
    """The glyphs in `bbox` (and just around it): what differs from the local background, in the
    direction most of the box's strongest differences go (dark text or light text)."""
    x, y, w, h = (int(value) for value in bbox)
    margin = min(MAX_MARGIN, max(4, round(0.4 * h)))
    right, bottom = min(image.width, x + w + margin), min(image.height, y + h + margin)
    region = (max(0, x - margin), max(0, y - margin), right, bottom)
    pixels = np.asarray(image.crop(region).convert("RGB"), dtype=np.float32)
    luminance = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    difference = luminance - _background(luminance)
    inside = np.zeros(difference.shape, bool)
    inside[y - region[1] : y - region[1] + h, x - region[0] : x - region[0] + w] = True
    strongest = np.abs(difference[inside])
    cut = np.quantile(strongest, 0.9) if strongest.size else 0
    polarity = 1.0 if difference[inside][strongest >= cut].mean() >= 0 else -1.0
    signed = np.clip(polarity * difference, 0, None)
    level, _ = cv2.threshold(np.clip(signed, 0, 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    mask = signed > max(level, 12)
    # Lone specks (noise) out; a symmetric filter, so the letters do not move by a pixel.
    mask = cv2.medianBlur(mask.astype(np.uint8) * 255, 3) > 0
    mask = _touching(mask, inside)
    strong = mask & (signed >= np.quantile(signed[mask], 0.5)) if mask.any() else mask
    colour = tuple(int(v) for v in np.median(pixels[strong], axis=0)) if strong.any() else (0, 0, 0)
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    stroke = float(2 * np.median(distance[distance >= np.quantile(distance[mask], 0.75)])) if mask.any() else 1.0
    return Lettering(region=region, mask=mask, colour=colour, stroke=max(1.0, stroke))


def _background(luminance: np.ndarray) -> np.ndarray:
    """The region's background without its letters: a plane (flat or a gradient) fitted to the
    region's outer ring, where the margin leaves only background, refitted without its outliers."""
    height, width = luminance.shape
    ring = np.zeros(luminance.shape, bool)
    band = max(2, min(height, width) // 10)
    ring[:band], ring[-band:], ring[:, :band], ring[:, -band:] = True, True, True, True
    rows, columns = np.nonzero(ring)
    design = np.column_stack([columns, rows, np.ones(len(rows))]).astype(np.float64)
    values = luminance[ring].astype(np.float64)
    keep = np.ones(len(values), bool)
    for _ in range(2):
        plane, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
        residual = np.abs(values - design @ plane)
        keep = residual <= max(4.0, np.quantile(residual, 0.8))
    grid_y, grid_x = np.mgrid[0:height, 0:width]
    return (plane[0] * grid_x + plane[1] * grid_y + plane[2]).astype(np.float32)


def _touching(mask: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The parts of `mask` (connected components) that reach into `inside`."""
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    keep = np.unique(labels[inside & mask])
    return np.isin(labels, keep[keep > 0])


def text_mask(text: str, font: Font, size: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The text drawn at the origin with anchor left-baseline: its coverage (0–1) and the box
    (left, top, right, bottom) of that array relative to the origin."""
    face = _truetype(font.path, size)
    left, top, right, bottom = face.getbbox(text, anchor="ls")
    left, top, right, bottom = left - 2, top - 2, right + 2, bottom + 2
    canvas = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(canvas).text((-left, -top), text, font=face, fill=255, anchor="ls")
    return np.asarray(canvas, dtype=np.float32) / 255.0, (left, top, right, bottom)


def _ink(coverage: np.ndarray) -> tuple[int, int, int, int] | None:
    """left, top, right, bottom of the pixels more than half covered (or set, in a bool mask)."""
    rows, columns = np.flatnonzero((coverage > 0.5).any(axis=1)), np.flatnonzero((coverage > 0.5).any(axis=0))
    if not len(rows):
        return None
    return columns[0], rows[0], columns[-1] + 1, rows[-1] + 1


@dataclass(frozen=True)
class Style:
    """How to draw: the font, its size, where the left edge and the baseline are, and the colour."""

    font: Font
    size: int
    origin: tuple[int, int]  # x of the left edge's origin, y of the baseline
    colour: tuple[int, int, int]
    score: float  # how well it matched the original lettering (overlap, 0–1)


def match_style(lettering: Lettering, original_text: str) -> Style:
    """The installed font and size that draw `original_text` most like the lettering, and where.

    Each font is tried at every size within 5 % of the one that gives the text the original's ink
    height; the drawn text, blurred by about a stroke, is slid over the blurred original
    (normalised cross-correlation), which finds both how alike they are and where it sits best.
    """
    ink = lettering.ink_box
    if ink is None or not original_text.strip():
        return _default_style(lettering)
    sigma = max(1.0, lettering.stroke / 3)
    target = cv2.GaussianBlur(lettering.mask.astype(np.float32), (0, 0), sigma)
    ink_height = ink[3] - ink[1]
    best: Style | None = None
    for font in installed_fonts():
        probe, _ = text_mask(original_text, font, 100)
        probe_ink = _ink(probe)
        if probe_ink is None:
            continue
        base = 100 * ink_height / (probe_ink[3] - probe_ink[1])
        for size in range(max(MIN_SIZE, round(base * 0.95)), max(MIN_SIZE, round(base * 1.05)) + 1):
            coverage, (left, top, _, _) = text_mask(original_text, font, size)
            template = cv2.GaussianBlur(coverage, (0, 0), sigma)
            # Room to slide: the original's region, padded so that any drawn text fits in it.
            pad_y = max(0, template.shape[0] - target.shape[0]) + 1
            pad_x = max(0, template.shape[1] - target.shape[1]) + 1
            canvas = cv2.copyMakeBorder(target, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_CONSTANT, value=0)
            _, score, _, (at_x, at_y) = cv2.minMaxLoc(cv2.matchTemplate(canvas, template, cv2.TM_CCOEFF_NORMED))
            if best is None or score > best.score:
                origin = (lettering.region[0] + at_x - pad_x - left, lettering.region[1] + at_y - pad_y - top)
                best = Style(font, size, origin, lettering.colour, float(score))
    return best or _default_style(lettering)


def _default_style(lettering: Lettering) -> Style:
    """For a box whose words are unknown: DejaVu Sans (bold for thick strokes), sized to the ink."""
    fonts = {font.name: font for font in installed_fonts()}
    bold = lettering.stroke > 0.14 * max(1, lettering.mask.any(axis=1).sum())
    font = fonts.get("DejaVu Sans Bold" if bold else "DejaVu Sans") or installed_fonts()[0]
    ink = lettering.ink_box or lettering.region
    height = max(MIN_SIZE, ink[3] - ink[1])
    # Cap height is about 0.73 of the size in DejaVu Sans; a box of unknown words is taken as capitals.
    size = max(MIN_SIZE, round(height / 0.73))
    return Style(font, size, (ink[0], ink[3]), lettering.colour, 0.0)


def erase(image: Image.Image, lettering: Lettering) -> Image.Image:
    """The image with the lettering's pixels (and a stroke's width around them) filled in from the
    surrounding background by OpenCV's inpainting."""
    if not lettering.mask.any():
        return image
    grow = max(2, round(lettering.stroke / 2) + 1)
    mask = cv2.dilate(lettering.mask.astype(np.uint8), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    left, top = lettering.region[:2]
    region = np.asarray(image.crop(lettering.region).convert("RGB"))
    filled = cv2.inpaint(region, mask, max(3, grow * 2), cv2.INPAINT_TELEA)
    result = image.convert("RGB").copy()
    result.paste(Image.fromarray(filled), (left, top))
    return result


@dataclass(frozen=True)
class Drawn:
    image: Image.Image
    box: tuple[int, int, int, int]  # [x, y, w, h] of the new text's extent in the image
    size: int
    fits: bool  # False when even at MIN_SIZE the text leaves the image
    coverage: np.ndarray  # the text's coverage (0–1) over `box`

    def cores(self, image_size: tuple[int, int]) -> np.ndarray:
        """The middle of the new letters' strokes, as an image-sized bool mask."""
        x, y, w, h = self.box
        cores = np.zeros(image_size[::-1], bool)
        inner = cv2.erode((self.coverage > 0.6).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        cores[y : y + h, x : x + w] = inner[:h, :w]
        return cores


def draw(image: Image.Image, text: str, style: Style) -> Drawn:
    """`text` drawn with `style` (same left edge and baseline), shrunk only if it would leave the image."""
    size = style.size
    while True:
        coverage, (left, top, _, _) = text_mask(text, style.font, size)
        x0, y0 = style.origin[0] + left, style.origin[1] + top
        fits = x0 >= 0 and y0 >= 0 and x0 + coverage.shape[1] <= image.width and y0 + coverage.shape[0] <= image.height
        if fits or size <= MIN_SIZE:
            break
        size = max(MIN_SIZE, int(size * 0.92))
    result = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    # The part of the text inside the image (all of it, when it fits).
    cx0, cy0 = max(0, -x0), max(0, -y0)
    cx1 = min(coverage.shape[1], image.width - x0)
    cy1 = min(coverage.shape[0], image.height - y0)
    if cx1 > cx0 and cy1 > cy0:
        alpha = coverage[cy0:cy1, cx0:cx1, None]
        target = result[y0 + cy0 : y0 + cy1, x0 + cx0 : x0 + cx1]
        target[:] = target * (1 - alpha) + np.array(style.colour, dtype=np.float32) * alpha
    left, top = max(0, x0), max(0, y0)
    box = (left, top, min(image.width, x0 + coverage.shape[1]) - left, min(image.height, y0 + coverage.shape[0]) - top)
    inside = coverage[cy0 : cy0 + box[3], cx0 : cx0 + box[2]]
    return Drawn(Image.fromarray(np.rint(result).astype(np.uint8)), box, size, fits, inside)
