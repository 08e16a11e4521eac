"""The refinement modes as stages with one interface, chosen by the refinement's type.

A refinement runs `load_base_image` → its mode's stage → `save_outputs` (the shared steps live in
refinement.services). A stage knows nothing of Django: given the parent image, the payload,
creativity, seed and a step callback, it returns the new image and what it wants recorded, so it
can be tested and benchmarked on the engine alone. A mode is available once its stage is here.
"""

from .base import Plan, Stage, StageInput, StageOutput, StepCallback
from .general import GeneralRefinement
from .region import RegionalRefinement
from .subject import SubjectRepair
from .text import TextRepair

# Every mode, by type.
STAGES: dict[str, Stage] = {
    stage.type: stage for stage in (GeneralRefinement(), RegionalRefinement(), SubjectRepair(), TextRepair())
}

__all__ = ["STAGES", "Plan", "Stage", "StageInput", "StageOutput", "StepCallback"]
