"""Finding and reading lines of text with Tesseract (through pytesseract), free of Django.

`detect_lines` finds the lines of an image (for the drawer's Text Repair tab and the API);
`read_line` reads one box (text repair's verification). Tesseract on the raw picture misses text
on busy or gradient backgrounds and reads small text badly, so both try several preparations
(adaptive thresholds of both polarities, enlargement of small text) and keep the best reading.
Tesseract processes run in parallel with one OpenMP thread each: measured here, two passes over a
1024² image took 0.18 s that way against 0.52 s one after the other with Tesseract's own threads.
"""

import os
import unicodedata
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import pytesseract
from PIL import Image

from .editing import bbox_union

# Only the tesseract processes get one thread each: pytesseract starts them with this
# environment. Setting it in os.environ would also cap torch's OpenMP in a worker.
pytesseract.pytesseract.environ = {**os.environ, "OMP_THREAD_LIMIT": "1"}

# Words Tesseract is less sure of than this are noise (texture read as letters).
MIN_WORD_CONFIDENCE = 55
# Text lower than this is enlarged before it is read: Tesseract reads best at 30–40 px.
SMALL_TEXT = 32
# A line read at least this surely (and not small) is not read a second time.
SURE = 90
# Lines lower than this are texture read as letters, not text anyone could read.
MIN_LINE_HEIGHT = 6
_pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="ocr")


@dataclass(frozen=True)
class Line:
    """A line of text: its box [x, y, w, h] in the image's pixels, what it says, how sure (0–100)."""

    bbox: tuple[int, int, int, int]
    text: str
    confidence: float


@dataclass(frozen=True)
class Word:
    left: int
    top: int
    width: int
    height: int
    text: str
    confidence: float

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height


def normalise(text: str) -> str:
    """Text as compared: Unicode-normalised, runs of white space as one space, no edge spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def ned(read: str, expected: str) -> float:
    """Normalised edit similarity: 1 - Levenshtein distance / the longer length (1.0: identical)."""
    read, expected = normalise(read), normalise(expected)
    if not read and not expected:
        return 1.0
    previous = list(range(len(expected) + 1))
    for i, a in enumerate(read, start=1):
        current = [i]
        for j, b in enumerate(expected, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return 1.0 - previous[-1] / max(len(read), len(expected))


def _gray(image: Image.Image) -> np.ndarray:
    # A 3×3 median keeps letters and drops the noise Tesseract would read as specks.
    return cv2.medianBlur(np.asarray(image.convert("L")), 3)


def _binary(gray: np.ndarray, *, dark_text: bool, block: int) -> np.ndarray:
    """Black text on white, whatever the background does: an adaptive threshold follows gradients."""
    source = gray if dark_text else 255 - gray
    return cv2.adaptiveThreshold(source, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, block | 1, 10)


def _words(pixels: np.ndarray, *, psm: int, scale: float = 1.0) -> list[Word]:
    data = pytesseract.image_to_data(
        Image.fromarray(pixels), config=f"--psm {psm}", output_type=pytesseract.Output.DICT
    )
    words = []
    for index, text in enumerate(data["text"]):
        confidence = float(data["conf"][index])
        if text.strip() and confidence >= 0:
            box = [round(data[key][index] / scale) for key in ("left", "top", "width", "height")]
            words.append(Word(*box, text=text.strip(), confidence=confidence))
    return words


def _lines(words: Iterable[Word]) -> list[Line]:
    """Words grouped into lines: overlapping vertically by half their height, and close in x."""
    lines: list[list[Word]] = []
    for word in sorted(words, key=lambda w: w.left):
        for line in lines:
            last = line[-1]
            overlap = min(last.bottom, word.bottom) - max(last.top, word.top)
            height = max(last.height, word.height)
            if overlap >= 0.5 * min(last.height, word.height) and word.left - last.right <= 1.5 * height:
                line.append(word)
                break
        else:
            lines.append([word])
    result = []
    for line in lines:
        left, top = min(w.left for w in line), min(w.top for w in line)
        right, bottom = max(w.right for w in line), max(w.bottom for w in line)
        text = " ".join(w.text for w in line)
        # A line is as sure as its least sure word: one misread letter makes it wrong.
        confidence = min(w.confidence for w in line)
        result.append(Line((left, top, right - left, bottom - top), text, round(confidence, 1)))
    return result


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """How much of the smaller box the two share (0 to 1)."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    return width * height / min(a[2] * a[3], b[2] * b[3])


def detect_lines(image: Image.Image) -> list[Line]:
    """The lines of text in the image, top to bottom; small or uncertain ones re-read on their own."""
    gray = _gray(image)
    block = max(15, min(gray.shape) // 32)
    # The plain pass reads text on noise (where thresholds turn noise into specks); the thresholded
    # ones read text on gradients and small text, each in one polarity.
    passes = [gray, _binary(gray, dark_text=True, block=block), _binary(gray, dark_text=False, block=block)]
    found: list[Line] = []
    for words in _pool.map(lambda pixels: _words(pixels, psm=11), passes):
        kept = [w for w in words if w.confidence >= MIN_WORD_CONFIDENCE and any(c.isalnum() for c in w.text)]
        found += [Line(_tightened(gray, line.bbox), line.text, line.confidence) for line in _lines(kept)]
    # The passes find the same line, often each a part of it ("GRAND OPEN", "GRAND OPENNING"):
    # a line is what they found together, and where they disagree it is read again as a whole.
    lines, unsure = [], []
    for group in _groups(found):
        box = _tightened(gray, bbox_union(line.bbox for line in group))
        if box[3] < MIN_LINE_HEIGHT:
            continue
        surest = max(group, key=lambda line: (line.bbox[2], line.confidence))
        agreed = len({line.text for line in group}) == 1 and surest.bbox == box
        if not (agreed and surest.confidence >= SURE and box[3] >= SMALL_TEXT):
            unsure.append(len(lines))
        lines.append(Line(box, surest.text, surest.confidence))
    for index, again in zip(unsure, read_lines(image, [lines[index].bbox for index in unsure]), strict=True):
        if again.text and again.confidence >= MIN_WORD_CONFIDENCE:
            lines[index] = Line(lines[index].bbox, again.text, again.confidence)
    return sorted(lines, key=lambda line: (line.bbox[1] // max(8, line.bbox[3] // 2), line.bbox[0]))


def _groups(lines: list[Line]) -> list[list[Line]]:
    """The lines put together where they overlap (by half of the smaller one, directly or in a chain)."""
    groups: list[list[Line]] = []
    for line in lines:
        touching = [group for group in groups if any(_overlap(line.bbox, other.bbox) >= 0.5 for other in group)]
        merged = [line] + [other for group in touching for other in group]
        groups = [group for group in groups if group not in touching] + [merged]
    return groups


def _tightened(gray: np.ndarray, bbox: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The box shrunk to the band of rows, then the columns, that hold the line's ink: Tesseract's
    word boxes on a busy background take in specks around the letters. The ink is the box's Otsu
    class that covers less of it (letters cover less than their background)."""
    x, y, w, h = bbox
    crop = gray[y : y + h, x : x + w]
    if crop.size == 0:
        return bbox
    _, dark = cv2.threshold(crop, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    ink = dark > 0
    if ink.mean() > 0.5:
        ink = ~ink
    rows = ink.sum(axis=1)
    if not rows.any():
        return bbox
    inked = np.flatnonzero(rows >= 0.15 * rows.max())
    top, bottom = inked[0], inked[-1] + 1
    columns = np.flatnonzero(ink[top:bottom].any(axis=0))
    left, right = columns[0], columns[-1] + 1
    return (int(x + left), int(y + top), int(right - left), int(bottom - top))


@dataclass(frozen=True)
class Reading:
    text: str
    confidence: float


def read_line(image: Image.Image, bbox) -> Reading:
    """What the one line of text in `bbox` says: the surest of several preparations' readings."""
    return read_lines(image, [bbox])[0]


def read_lines(image: Image.Image, boxes) -> list[Reading]:
    """read_line for several boxes, all their preparations read in parallel."""
    jobs = [(index, pixels) for index, bbox in enumerate(boxes) for pixels in _preparations(image, bbox)]
    readings: list[list[Reading]] = [[] for _ in boxes]
    for (index, _), words in zip(jobs, _pool.map(lambda job: _words(job[1], psm=7), jobs), strict=True):
        if words:
            text = " ".join(word.text for word in words)
            confidence = sum(word.confidence * len(word.text) for word in words) / sum(len(w.text) for w in words)
            readings[index].append(Reading(normalise(text), round(confidence, 1)))
    return [max(found, key=lambda reading: reading.confidence, default=Reading("", 0.0)) for found in readings]


def _preparations(image: Image.Image, bbox) -> list[np.ndarray]:
    """The box with a margin, enlarged if its text is small: as it is, and thresholded."""
    x, y, w, h = (int(value) for value in bbox)
    margin = max(4, h // 3)
    left, top = max(0, x - margin), max(0, y - margin)
    crop = image.crop((left, top, min(image.width, x + w + margin), min(image.height, y + h + margin)))
    scale = min(4.0, SMALL_TEXT / max(1, h)) if h < SMALL_TEXT else 1.0
    if scale > 1:
        crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.Resampling.LANCZOS)
    gray = _gray(crop)
    block = max(15, round(h * scale) * 2)
    return [gray, _binary(gray, dark_text=_dark_text(gray), block=block)]


def _dark_text(gray: np.ndarray) -> bool:
    """Whether the crop's letters are darker than their background: the letters are the Otsu class
    that covers less of the crop."""
    level, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return bool((gray <= level).mean() < 0.5)
