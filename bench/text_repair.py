"""Text repair on a set of synthetic misspelt signs: does the repair read right, how close is it to
the ideal, does anything change away from the text, and how long does it take.

Each case draws a misspelt line (flat, gradient, noisy, striped or blurred-shape background;
regular, bold, serif or monospace lettering; 20–64 px; light or dark) and the ideal image (the
right words in the same font, size, colour and place on the same background). The correction's
box is what OCR finds, as the drawer offers it, or the letters' own box where OCR misses the line
(as a user would draw it). Creativity 1 draws the text; creativity 2 also blends it with the
model (the built-in tiny one unless --model says otherwise).

    .venv/bin/python -m bench.text_repair [--quick] [--model tiny|sd15-random|folder] [--no-blend]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from bench.engine_common import MODELS_DIR, median, write_result
from bench.sd15_random import model_source
from refinement import ocr
from refinement.stages import STAGES, StageInput

FONTS = Path("/usr/share/fonts/truetype")
LETTERING = [
    ("regular", "dejavu/DejaVuSans.ttf"),
    ("regular", "liberation/LiberationSans-Regular.ttf"),
    ("regular", "noto/NotoSans-Regular.ttf"),
    ("bold", "dejavu/DejaVuSans-Bold.ttf"),
    ("bold", "liberation/LiberationSans-Bold.ttf"),
    ("serif", "liberation/LiberationSerif-Regular.ttf"),
    ("serif", "noto/NotoSerif-Bold.ttf"),
    ("monospace", "dejavu/DejaVuSansMono.ttf"),
    ("monospace", "liberation/LiberationMono-Regular.ttf"),
]
BACKGROUNDS = ["flat", "gradient", "noisy", "striped", "blurred shapes"]
SIZES = [20, 24, 28, 32, 40, 48, 56, 64]
LINES = [
    ("GRAND OPENNING", "GRAND OPENING"),
    ("Sumer Sale", "Summer Sale"),
    ("Fresh coffe", "Fresh coffee"),
    ("Open 7 days a weak", "Open 7 days a week"),
    ("HAPPY BRITHDAY", "HAPPY BIRTHDAY"),
    ("Welcom Home", "Welcome Home"),
    ("Resturant", "Restaurant"),
    ("Public Libary", "Public Library"),
    ("Untill Friday", "Until Friday"),
    ("Free Wifi Acess", "Free Wifi Access"),
    ("Thankyou for visiting", "Thank you for visiting"),
    ("Recieve a gift", "Receive a gift"),
]
WIDTH, HEIGHT = 768, 256
# The guarantee: nothing changes farther than this from a correction's area.
REACH = 32


def background(kind: str, rng: np.random.Generator, dark_text: bool) -> np.ndarray:
    """A background the text stands out from: light under dark text, dark under light text."""
    base = 205.0 if dark_text else 50.0
    if kind == "flat":
        pixels = np.full((HEIGHT, WIDTH, 3), base, np.float32) * rng.uniform(0.85, 1.1, 3)
    elif kind == "gradient":
        ramp = np.linspace(base - 35, base + 35, WIDTH, dtype=np.float32)
        pixels = np.stack([np.tile(ramp, (HEIGHT, 1))] * 3, -1) * rng.uniform(0.85, 1.1, 3)
    elif kind == "noisy":
        pixels = np.full((HEIGHT, WIDTH, 3), base, np.float32) + rng.normal(0, 14, (HEIGHT, WIDTH, 3))
    elif kind == "striped":
        pixels = np.full((HEIGHT, WIDTH, 3), base, np.float32)
        pixels[(np.arange(HEIGHT) // 5) % 2 == 0] += 24 if dark_text else -24
    else:  # soft blobs of colour, as out-of-focus shapes behind a sign's words
        canvas = Image.new("RGB", (WIDTH, HEIGHT), (int(base),) * 3)
        draw = ImageDraw.Draw(canvas)
        for _ in range(12):
            x, y, r = rng.integers(0, WIDTH), rng.integers(0, HEIGHT), rng.integers(20, 70)
            shade = tuple(int(np.clip(base + rng.normal(0, 30), 0, 255)) for _ in range(3))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=shade)
        pixels = np.asarray(canvas.filter(ImageFilter.GaussianBlur(18)), np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def cases(count: int) -> list[dict]:
    rng = np.random.default_rng(7)
    found = []
    for index in range(count):
        kind = BACKGROUNDS[index % len(BACKGROUNDS)]
        style, font = LETTERING[index % len(LETTERING)]
        size = SIZES[(index * 3) % len(SIZES)]
        dark_text = index % 2 == 0
        wrong, right = LINES[index % len(LINES)]
        colour = tuple(int(v) for v in (rng.integers(0, 60, 3) if dark_text else rng.integers(200, 256, 3)))
        face = ImageFont.truetype(str(FONTS / font), size)
        # Room for the longer, right text to the right of the same left edge.
        origin = (
            int(rng.integers(10, max(11, WIDTH - face.getlength(right) - 10))),
            int(rng.integers(size + 10, HEIGHT - 20)),
        )
        pixels = background(kind, rng, dark_text)
        images = []
        for text in (wrong, right):
            image = Image.fromarray(pixels.copy())
            ImageDraw.Draw(image).text(origin, text, font=face, fill=colour, anchor="ls")
            images.append(image)
        ink = face.getbbox(wrong, anchor="ls")
        true_box = [origin[0] + ink[0], origin[1] + ink[1], ink[2] - ink[0], ink[3] - ink[1]]
        found.append(
            {
                "name": f"{kind}, {style} {Path(font).stem} {size}px, {'dark' if dark_text else 'light'} text",
                "original": images[0],
                "ideal": images[1],
                "wrong": wrong,
                "right": right,
                "true_box": true_box,
            }
        )
    return found


def correction_box(case: dict) -> tuple[list[int], bool]:
    """The box OCR offers for the line (the one overlapping the letters most), else the letters' own."""
    x, y, w, h = case["true_box"]
    best, best_overlap = None, 0
    for line in ocr.detect_lines(case["original"]):
        lx, ly, lw, lh = line.bbox
        overlap = max(0, min(x + w, lx + lw) - max(x, lx)) * max(0, min(y + h, ly + lh) - max(y, ly))
        if overlap > best_overlap:
            best, best_overlap = line, overlap
    if best is not None and best_overlap >= 0.5 * w * h:
        return list(best.bbox), True
    return case["true_box"], False


def measure(stage, engine, case: dict, box: list[int], creativity: int) -> dict:
    payload = {"corrections": [{"bbox": box, "text": case["right"]}]}
    started = time.perf_counter()
    output = stage.run(engine, StageInput(parent=case["original"], payload=payload, creativity=creativity, seed=1))
    seconds = time.perf_counter() - started
    (check,) = output.report["checks"]
    original, ideal, repaired = (
        np.asarray(image, np.float32) for image in (case["original"], case["ideal"], output.image)
    )
    # Inside the edited area: where the repair or the ideal differs from the original.
    edited = (np.abs(repaired - original).sum(-1) > 0) | (np.abs(ideal - original).sum(-1) > 0)
    x, y, w, h = check["area"]
    reach = np.zeros(edited.shape, bool)
    reach[max(0, y - REACH) : y + h + REACH, max(0, x - REACH) : x + w + REACH] = True
    return {
        "exact": check["exact"],
        "ned": ocr.ned(check["read"], case["right"]),
        "read": check["read"],
        "method": check["method"],
        "font": f"{check['font']} {check['size']}",
        "mae_repaired": float(np.abs(repaired - ideal)[edited].mean()) if edited.any() else 0.0,
        "mae_unrepaired": float(np.abs(original - ideal)[edited].mean()) if edited.any() else 0.0,
        "untouched_beyond_reach": bool(np.array_equal(repaired[~reach], original[~reach])),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 cases instead of 48")
    parser.add_argument("--model", default="tiny", help='the blend\'s model: "tiny", "sd15-random" or a folder')
    parser.add_argument("--no-blend", action="store_true", help="creativity 1 only (no model)")
    args = parser.parse_args()
    stage = STAGES["text"]
    engine = None
    if not args.no_blend:
        from imagegen.engine import Engine

        engine = Engine(model_source(args.model), cache_dir=MODELS_DIR)
        engine.load()
    all_cases = cases(10 if args.quick else 48)
    rows = []
    for case in all_cases:
        box, detected = correction_box(case)
        row = {"case": case["name"], "wrong": case["wrong"], "right": case["right"], "detected": detected}
        for creativity in (1, 2) if engine else (1,):
            row[f"creativity_{creativity}"] = measure(stage, engine, case, box, creativity)
        rows.append(row)
        first = row["creativity_1"]
        print(
            f"{'✓' if first['exact'] else '✗'} {case['name']}: read {first['read']!r} ({first['seconds']:.2f} s)",
            flush=True,
        )

    def figures(creativity: int) -> dict:
        results = [row[f"creativity_{creativity}"] for row in rows]
        return {
            "sentence_accuracy": sum(r["exact"] for r in results) / len(results),
            "ned": sum(r["ned"] for r in results) / len(results),
            "mae_inside_repaired": sum(r["mae_repaired"] for r in results) / len(results),
            "mae_inside_unrepaired": sum(r["mae_unrepaired"] for r in results) / len(results),
            "untouched_beyond_32px": sum(r["untouched_beyond_reach"] for r in results) / len(results),
            "seconds_per_correction_median": median(r["seconds"] for r in results),
            "seconds_per_correction_max": max(r["seconds"] for r in results),
            "blended_kept": sum(r["method"] == "blend" for r in results),
        }

    summary_parts, by_creativity = [], {}
    for creativity in (1, 2) if engine else (1,):
        found = by_creativity[creativity] = figures(creativity)
        summary_parts.append(
            f"creativity {creativity}: {found['sentence_accuracy']:.0%} exact, NED {found['ned']:.3f}, "
            f"MAE inside {found['mae_inside_repaired']:.1f} vs {found['mae_inside_unrepaired']:.1f} unrepaired, "
            f"{found['untouched_beyond_32px']:.0%} untouched beyond 32 px, "
            f"{found['seconds_per_correction_median']:.2f} s a correction"
        )
    detected = sum(row["detected"] for row in rows) / len(rows)
    summary = f"text repair, {len(rows)} cases (OCR found {detected:.0%} of the lines): " + "; ".join(summary_parts)
    write_result(
        "text_repair",
        summary,
        {
            "model": args.model if engine else None,
            "cases": len(rows),
            "ocr_found": detected,
            "by_creativity": by_creativity,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
