"""Subject repair: the instructions as prompt, over the whole image or only a box, conditioned on an
optional reference image (reference-only attention, or an IP-Adapter when one is configured)."""

from dataclasses import replace

from imagegen.engine import GenerationRequest, effective_steps, format_parameters
from imagegen.engine.reference import DEFAULT_REFERENCE_WEIGHT

from ..editing import Rect, fit_to_size
from .base import Plan, Stage, StageInput, StageOutput
from .masked import MASKED_PARAMETERS, repaint_rectangle

STEPS = 30
STRENGTHS = {1: 0.40, 2: 0.55, 3: 0.70}


class SubjectRepair(Stage):
    type = "subject"
    strengths = STRENGTHS

    def plan(self, *, payload: dict, creativity: int) -> Plan:
        strength = self.strengths[creativity]
        return Plan(strength=strength, total_steps=effective_steps(STEPS, strength))

    def run(self, engine, given: StageInput) -> StageOutput:
        plan = self.plan(payload=given.payload, creativity=given.creativity)
        request = GenerationRequest(
            prompt=given.payload["instructions"],
            steps=STEPS,
            seed=given.seed,
            strength=plan.strength,
            reference_image=given.reference,
            reference_weight=DEFAULT_REFERENCE_WEIGHT,
        )
        bbox = given.payload.get("bbox")
        progress = {"on_step": given.on_step, "preview_every": given.preview_every}
        if bbox:
            image, result = repaint_rectangle(engine, given.parent, Rect.from_bbox(bbox), request, **progress)
        else:
            result = engine.generate(replace(request, init_image=given.parent), **progress)
            image = fit_to_size(result.images[0], given.parent.size)
        extra = dict(MASKED_PARAMETERS) if bbox else {}
        if result.reference:
            extra["Reference"] = result.reference  # "reference-only 0.5" or "IP-Adapter 0.6"
        parameters = format_parameters(
            prompt=request.prompt,
            negative_prompt="",
            steps=STEPS,
            sampler=result.sampler,
            guidance_scale=request.guidance_scale,
            seed=given.seed,
            width=image.width,
            height=image.height,
            model=result.model,
            strength=plan.strength,
            extra=extra,
        )
        return StageOutput(image=image, parameters=parameters)
