"""General refinement: image to image over the whole parent with a free prompt."""

from imagegen.engine import GenerationRequest

from ..editing import fit_to_size
from .base import Stage, StageInput, StageOutput

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
            init_image=given.parent,
            strength=plan.strength,
        )
        result = engine.generate(request, on_step=given.on_step, preview_every=given.preview_every)
        return StageOutput(image=fit_to_size(result.images[0], given.parent.size), parameters=result.parameters)
