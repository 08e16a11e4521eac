"""General refinement: image to image over the whole parent with a free prompt."""

from imagegen.engine import GenerationRequest

from .base import Stage, StageInput, StageOutput
from .repaint import repaint

# Creativity 1/2/3 → strength: subtle, Fooocus' "Vary (Subtle)", A1's default.
STRENGTHS = {1: 0.30, 2: 0.50, 3: 0.75}


class GeneralRefinement(Stage):
    type = "general"
    strengths = STRENGTHS

    def run(self, engine, given: StageInput) -> StageOutput:
        plan = self.plan(payload=given.payload, creativity=given.creativity)
        request = GenerationRequest(
            prompt=given.payload["prompt"],
            negative_prompt=given.payload.get("negative_prompt", ""),
            steps=self.steps,
            seed=given.seed,
            strength=plan.strength,
        )
        image, result = repaint(engine, given.parent, request, on_step=given.on_step, preview_every=given.preview_every)
        return StageOutput(image=image, parameters=self.parameters(request, result, size=image.size))
