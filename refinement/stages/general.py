"""General refinement: image to image over the whole parent with a free prompt."""

from imagegen.engine import GenerationRequest, effective_steps

from ..editing import fit_to_size
from .base import Plan, Stage, StageInput, StageOutput

# 30 sampler steps before strength, so creativity 2 (0.50) samples 15 of them.
STEPS = 30
# Creativity 1/2/3 → strength: subtle, Fooocus' "Vary (Subtle)", A1's default.
STRENGTHS = {1: 0.30, 2: 0.50, 3: 0.75}


class GeneralRefinement(Stage):
    type = "general"
    strengths = STRENGTHS

    def plan(self, *, payload: dict, creativity: int) -> Plan:
        strength = self.strengths[creativity]
        return Plan(strength=strength, total_steps=effective_steps(STEPS, strength))

    def run(self, engine, given: StageInput) -> StageOutput:
        plan = self.plan(payload=given.payload, creativity=given.creativity)
        request = GenerationRequest(
            prompt=given.payload["prompt"],
            negative_prompt=given.payload.get("negative_prompt", ""),
            steps=STEPS,
            seed=given.seed,
            init_image=given.parent,
            strength=plan.strength,
        )
        result = engine.generate(request, on_step=given.on_step, preview_every=given.preview_every)
        return StageOutput(image=fit_to_size(result.images[0], given.parent.size), parameters=result.parameters)
