"""LoRAs and textual-inversion embeddings from a local folder, named in prompts as AUTOMATIC1111 does.

A prompt applies a LoRA with `<lora:name:weight>` (the weight defaults to 1) and an embedding by
writing its name as a word. The folder (IMAGEGEN_LORA_DIR) holds the LoRAs as
`<name>.safetensors` and the embeddings in its `embeddings/` sub-folder as
`<name>.safetensors`, `.pt` or `.bin`, as AUTOMATIC1111 keeps them in two folders.

Kept free of torch and diffusers, so the web process can check a prompt against the folder.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import EngineError

# <lora:name> or <lora:name:weight>; the name may hold anything but ':' and '>'.
LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^>]*))?>")
LORA_SUFFIX = ".safetensors"
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
# AUTOMATIC1111 accepts any weight; past these, a LoRA only breaks the image.
MIN_LORA_WEIGHT, MAX_LORA_WEIGHT = -4.0, 4.0


class AddOnError(EngineError):
    """A prompt names a LoRA or embedding that is not in the folder, or that cannot be loaded."""


@dataclass(frozen=True)
class PromptLora:
    name: str
    weight: float


def split_loras(prompt: str) -> tuple[str, tuple[PromptLora, ...]]:
    """The prompt without its LoRA tags, and the LoRAs they name in order (a name given twice:
    its last weight). Raises ValueError for a weight that is not a number in range."""
    loras: dict[str, float] = {}
    for match in LORA_TAG.finditer(prompt):
        name, weight_text = match.group(1).strip(), (match.group(2) or "1").strip()
        try:
            weight = float(weight_text)
        except ValueError:
            raise ValueError(f"The weight of <lora:{name}> must be a number, not {weight_text!r}.") from None
        if not MIN_LORA_WEIGHT <= weight <= MAX_LORA_WEIGHT:
            raise ValueError(
                f"The weight of <lora:{name}> must be between {MIN_LORA_WEIGHT:g} and {MAX_LORA_WEIGHT:g}."
            )
        loras[name] = weight
    text = " ".join(LORA_TAG.sub(" ", prompt).split())
    return text, tuple(PromptLora(name, weight) for name, weight in loras.items())


class AddOnFolder:
    """The LoRAs and embeddings of a folder; an empty path means the deployment offers none."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None

    def lora_names(self) -> list[str]:
        return sorted(self._files(self.path, (LORA_SUFFIX,)))

    def embedding_names(self) -> list[str]:
        return sorted(self.embedding_files())

    def lora_file(self, name: str) -> Path:
        """The file of the LoRA called name; AddOnError (naming what there is) when it has none."""
        if self.path is None:
            raise AddOnError(f"This server offers no LoRAs, so <lora:{name}> cannot be applied.")
        files = self._files(self.path, (LORA_SUFFIX,))
        if name not in files:
            available = ", ".join(sorted(files)) or "none"
            raise AddOnError(f"There is no LoRA called {name!r} (available: {available}).")
        return files[name]

    def embedding_files(self) -> dict[str, Path]:
        """Each embedding's name (the word that calls it in a prompt) and its file."""
        return self._files(self.path / "embeddings" if self.path else None, EMBEDDING_SUFFIXES)

    def check_prompt(self, prompt: str) -> None:
        """Raise ValueError or AddOnError, with a message for the user, unless every LoRA the
        prompt names is here, each with a valid weight."""
        for lora in split_loras(prompt)[1]:
            self.lora_file(lora.name)

    @staticmethod
    def _files(folder: Path | None, suffixes: tuple[str, ...]) -> dict[str, Path]:
        if folder is None or not folder.is_dir():
            return {}
        # A name must be one word for a prompt to call it (and a ':' would end a LoRA tag).
        return {
            entry.stem: entry
            for entry in sorted(folder.iterdir())
            if entry.suffix in suffixes and entry.is_file() and re.fullmatch(r"[\w.\-]+", entry.stem)
        }
