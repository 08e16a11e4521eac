"""The interface every refinement mode implements (see the package's docstring)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from imagegen.engine import GenerationRequest, effective_steps, format_parameters

# step, total, optional preview: the engine's step callback (it may raise GenerationCancelled).
StepCallback = Callable[[int, int, Image.Image | None], None]


@dataclass(frozen=True)
class Plan:
    """What a refinement will do, known when it is submitted: its strength and sampler steps."""

    strength: float
    total_steps: int


@dataclass(frozen=True)
class StageInput:
    parent: Image.Image  # RGB, the version being refined
    payload: dict[str, Any]  # validated by the mode's payload form
    creativity: int  # 1 (subtle) to 3 (strong)
    seed: int
    on_step: StepCallback | None = None
    preview_every: int = 0
    reference: Image.Image | None = None  # RGB, the reference image a mode may take (subject repair)


@dataclass
class StageOutput:
    image: Image.Image  # the new version, at the parent's size
    parameters: str  # the A1 "parameters" text of how it was made
    report: dict[str, Any] = field(default_factory=dict)  # what the mode checked (text repair's OCR)


class Stage:
    """One refinement mode."""

    type: str
    # Creativity 1/2/3 → the denoising strength this mode uses.
    strengths: dict[int, float]
    # Every mode asks for this many steps and samples int(steps × strength) of them per pass.
    steps = 30

    def passes(self, payload: dict[str, Any]) -> int:
        """How many times the mode samples (regional: once per rectangle)."""
        return 1

    def plan(self, *, payload: dict[str, Any], creativity: int) -> Plan:
        strength = self.strengths[creativity]
        return Plan(strength=strength, total_steps=effective_steps(self.steps, strength) * self.passes(payload))

    def run(self, engine, given: StageInput) -> StageOutput:
        raise NotImplementedError

    def parameters(
        self, request: GenerationRequest, result, *, size: tuple[int, int], prompt: str | None = None, extra=None
    ) -> str:
        """The A1 parameters of an image the mode assembled itself (the engine's describe one pass):
        the request's settings, the model and sampler that ran, the final size, anything extra."""
        return format_parameters(
            prompt=request.prompt if prompt is None else prompt,
            negative_prompt=request.negative_prompt,
            steps=request.steps,
            sampler=result.sampler,
            guidance_scale=request.guidance_scale,
            seed=request.seed,
            width=size[0],
            height=size[1],
            model=result.model,
            strength=request.strength,
            clip_skip=request.clip_skip,
            extra=extra,
        )


def counting_from(done: int, total: int, on_step: StepCallback | None) -> StepCallback | None:
    """The step callback of one pass of a mode that samples several times, reporting the steps of
    the whole refinement (`done` before this pass, `total` in all)."""
    if on_step is None:
        return None
    return lambda step, _pass_total, preview: on_step(done + step, total, preview)
