"""Regional refinement: each rectangle repainted with its own prompt, in the order given, and
composited onto the original pixels; nothing farther than FEATHER pixels from a rectangle changes."""

from dataclasses import replace

from imagegen.engine import GenerationRequest

from ..editing import Rect
from .base import Stage, StageInput, StageOutput, counting_from
from .repaint import MASKED_PARAMETERS, repaint

# Creativity 1/2/3 → strength: inside a rectangle the model may change more than over the whole image.
STRENGTHS = {1: 0.50, 2: 0.75, 3: 0.90}


class RegionalRefinement(Stage):
    type = "region"
    strengths = STRENGTHS

    def passes(self, payload: dict) -> int:
        # Progress counts across all rectangles: one sampling pass each.
        return len(payload["masks"])

    def run(self, engine, given: StageInput) -> StageOutput:
        plan = self.plan(payload=given.payload, creativity=given.creativity)
        masks = given.payload["masks"]
        per_rectangle = plan.total_steps // len(masks)
        image, request, result = given.parent, None, None
        for index, mask in enumerate(masks):
            request = GenerationRequest(
                prompt=mask["prompt"],
                negative_prompt=given.payload.get("negative_prompt", ""),
                steps=self.steps,
                # Each rectangle its own noise, repeatable from the refinement's one seed.
                seed=given.seed + index,
                strength=plan.strength,
            )
            on_step = counting_from(index * per_rectangle, plan.total_steps, given.on_step)
            image, result = repaint(
                engine, image, request, Rect.from_bbox(mask["bbox"]), on_step=on_step, preview_every=given.preview_every
            )
        parameters = self.parameters(
            replace(request, seed=given.seed),
            result,
            size=image.size,
            prompt=" | ".join(mask["prompt"] for mask in masks),
            extra=MASKED_PARAMETERS,
        )
        return StageOutput(image=image, parameters=parameters)
