"""The models a deployment offers (IMAGEGEN_MODELS): what users choose from, and where each one is.

Kept free of torch and diffusers, so the web process can list and check them.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePath
from typing import NamedTuple


class TinyModel(NamedTuple):
    family: str  # whose shape it has: "sd", "sd2" or "sdxl"
    side: int  # its working side (engine.tiny builds its UNet for it)


# The built-in models with random weights (engine.tiny builds them), by the source that names them:
# SD 1.x-shaped (the default model of tests and development), SD 2.x-shaped (v-prediction, 768 px)
# and SDXL-shaped (two text encoders, 1024 px).
TINY_MODELS = {"tiny": TinyModel("sd", 512), "tiny-sd2": TinyModel("sd2", 768), "tiny-xl": TinyModel("sdxl", 1024)}


@dataclass(frozen=True)
class OfferedModel:
    id: str  # what runs record, forms and the API take, and PNG parameters print
    source: str  # a local folder or a Hugging Face repo id, as the engine loads it
    label: str  # what the page shows

    @property
    def is_tiny(self) -> bool:
        """Whether it is a built-in model with random weights (its images are noise)."""
        return self.source in TINY_MODELS

    @property
    def working_side(self) -> int | None:
        """The side it works best at (see working_side), for a built-in model or a local folder;
        None for a repo id, whose config only the worker that loads it reads."""
        if self.is_tiny:
            return TINY_MODELS[self.source].side
        return _folder_working_side(self.source)


def working_side(unet_config: Mapping, vae_config: Mapping) -> int:
    """The short side, in pixels, a model was trained at and works best at: its UNet's sample size
    in latents, times the VAE's downscale (2 for each of its blocks but the first). 512 for SD 1.x,
    768 for SD 2.x's 768-px models, 1024 for SDXL."""
    return unet_config["sample_size"] * 2 ** (len(vae_config["block_out_channels"]) - 1)


@cache
def _folder_working_side(source: str) -> int | None:
    folder = Path(source)
    try:
        configs = [json.loads((folder / part / "config.json").read_text()) for part in ("unet", "vae")]
        return working_side(*configs)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def model_id(source: str) -> str:
    """A model's id: a local folder by its name (users never see the server's paths), anything
    else (a repo id such as "org/name", or "tiny") as written."""
    if source.startswith(("/", "./", "../", "~")):
        return PurePath(source).name
    return source


def parse_models(text: str) -> dict[str, OfferedModel]:
    """Models written "source=label; source=label" (a label may be left out: the id is shown),
    in the order given; the first is the default. Raises ValueError for an empty list or two
    models with one id."""
    offered: dict[str, OfferedModel] = {}
    for entry in text.replace("\n", ";").split(";"):
        source, _, label = (part.strip() for part in entry.partition("="))
        if not source:
            continue
        identifier = model_id(source)
        if identifier in offered:
            raise ValueError(f"Two models are called {identifier!r}; give one of them another folder name.")
        offered[identifier] = OfferedModel(id=identifier, source=source, label=label or identifier)
    if not offered:
        raise ValueError(f"No model is listed in {text!r}; write source=label; source=label.")
    return offered
