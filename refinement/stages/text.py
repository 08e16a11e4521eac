"""Text repair: each correction's old lettering erased and the right words drawn in the same font,
size, colour and place; optionally a light diffusion pass so the letters take on the picture's
texture. Every correction is read back with OCR, and what was read is reported with it."""

import numpy as np
from PIL import Image

from imagegen.engine import GenerationRequest, effective_steps, format_parameters

from .. import lettering, ocr
from ..editing import Rect, bbox_union
from .base import Plan, Stage, StageInput, StageOutput, counting_from
from .repaint import repaint

# Creativity 1 draws the text as it is; 2 and 3 blend it lightly into the picture.
STRENGTHS = {1: 0.0, 2: 0.15, 3: 0.25}
# After a blend, the middle of the letters' strokes keeps this much of the drawn text, so a blend
# can take on texture but not wash the letters out.
CORE_KEEP = 0.6


class TextRepair(Stage):
    type = "text"
    strengths = STRENGTHS

    def passes(self, payload: dict) -> int:
        return len(payload["corrections"])

    def plan(self, *, payload: dict, creativity: int) -> Plan:
        strength = self.strengths[creativity]
        # Each correction counts one step for drawing, and its blend's sampled steps.
        per_correction = 1 + (effective_steps(self.steps, strength) if strength else 0)
        return Plan(strength=strength, total_steps=per_correction * self.passes(payload))

    def run(self, engine, given: StageInput) -> StageOutput:
        plan = self.plan(payload=given.payload, creativity=given.creativity)
        corrections = given.payload["corrections"]
        per_correction = plan.total_steps // len(corrections)
        image, checks, model, sampler = given.parent, [], "none", "none"
        for index, correction in enumerate(corrections):
            done = index * per_correction
            image, check, result = self.repair(engine, image, correction, given, plan.strength, done, plan.total_steps)
            checks.append(check)
            if result is not None:
                model, sampler = result.model, result.sampler
        fonts = sorted({f"{check['font']} {check['size']}" for check in checks})
        parameters = format_parameters(
            prompt=given.payload.get("instructions") or " | ".join(c["text"] for c in corrections),
            negative_prompt="",
            steps=self.steps if plan.strength else 0,
            sampler=sampler,
            guidance_scale=7.5,
            seed=given.seed,
            width=image.width,
            height=image.height,
            model=model,
            strength=plan.strength,
            extra={"Text repair": ", ".join(fonts), "Verified": f"{sum(c['verified'] for c in checks)}/{len(checks)}"},
        )
        return StageOutput(image=image, parameters=parameters, report={"checks": checks})

    def repair(self, engine, image, correction: dict, given: StageInput, strength: float, done: int, total: int):
        """One correction on `image`: the new image, its check, and the engine's result if it blended."""
        bbox, text = correction["bbox"], correction["text"]
        # What the box says now, to match the lettering's font by drawing those same words.
        before = ocr.read_line(image, bbox)
        found = lettering.find_lettering(image, bbox)
        style = lettering.match_style(found, before.text)
        drawn = lettering.draw(lettering.erase(image, found), text, style)
        ink = found.ink_box  # left, top, right, bottom
        old_letters = (ink[0], ink[1], ink[2] - ink[0], ink[3] - ink[1]) if ink else None
        area = bbox_union(box for box in (bbox, drawn.box, old_letters) if box is not None)
        candidate, method, result = drawn.image, "render", None
        reading = ocr.read_line(candidate, area)
        if given.on_step is not None:
            given.on_step(done + 1, total, None)
        if strength:
            blended, result = self.blend(engine, drawn, area, text, given, strength, done + 1, total)
            blended_reading = ocr.read_line(blended, area)
            # The blend is kept only when it reads at least as well as the drawn text.
            if ocr.ned(blended_reading.text, text) >= ocr.ned(reading.text, text):
                candidate, method, reading = blended, "blend", blended_reading
        exact = ocr.normalise(reading.text) == ocr.normalise(text)
        reason = "" if exact else ("the text does not fit in the image" if not drawn.fits else "it reads differently")
        check = {
            "bbox": list(bbox),
            # Where the repair drew: the box, the old letters and the new ones ([x, y, w, h]).
            "area": list(area),
            "text": text,
            "read": reading.text,
            "exact": exact,
            "ned": round(ocr.ned(reading.text, text), 4),
            "verified": exact,
            "reason": reason,
            "method": method,
            "font": style.font.name,
            "size": drawn.size,
            "was": before.text,
        }
        return candidate, check, result

    def blend(self, engine, drawn, area, text: str, given: StageInput, strength: float, done: int, total: int):
        """A light image-to-image pass over the text's area (composited back with a feathered edge),
        with the letters' stroke cores kept mostly as drawn."""
        request = GenerationRequest(
            prompt=given.payload.get("instructions") or f'the words "{text}"',
            steps=self.steps,
            seed=given.seed,
            strength=strength,
        )
        blended, result = repaint(
            engine,
            drawn.image,
            request,
            Rect(*area),
            on_step=counting_from(done, total, given.on_step),
            preview_every=given.preview_every,
        )
        cores = drawn.cores(drawn.image.size)[..., None]
        mixed = CORE_KEEP * np.asarray(drawn.image, np.float32) + (1 - CORE_KEEP) * np.asarray(blended, np.float32)
        pixels = np.where(cores, np.rint(mixed), np.asarray(blended, np.float32))
        return Image.fromarray(pixels.astype(np.uint8)), result
