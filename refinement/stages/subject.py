"""Subject repair: the instructions as prompt, over the whole image or only a box, conditioned on an
optional reference image (reference-only attention, or an IP-Adapter when one is configured)."""

from imagegen.engine import GenerationRequest
from imagegen.engine.reference import DEFAULT_REFERENCE_WEIGHT

from ..editing import Rect
from .base import Stage, StageInput, StageOutput
from .repaint import MASKED_PARAMETERS, repaint

STRENGTHS = {1: 0.40, 2: 0.55, 3: 0.70}


class SubjectRepair(Stage):
    type = "subject"
    strengths = STRENGTHS

    def run(self, engine, given: StageInput) -> StageOutput:
        plan = self.plan(payload=given.payload, creativity=given.creativity)
        request = GenerationRequest(
            prompt=given.payload["instructions"],
            steps=self.steps,
            seed=given.seed,
            strength=plan.strength,
            reference_image=given.reference,
            reference_weight=DEFAULT_REFERENCE_WEIGHT,
        )
        bbox = given.payload.get("bbox")
        rect = Rect.from_bbox(bbox) if bbox else None
        image, result = repaint(
            engine, given.parent, request, rect, on_step=given.on_step, preview_every=given.preview_every
        )
        extra = dict(MASKED_PARAMETERS) if rect else {}
        if result.reference:
            extra["Reference"] = result.reference  # "reference-only 0.5" or "IP-Adapter 0.6"
        return StageOutput(image=image, parameters=self.parameters(request, result, size=image.size, extra=extra))
