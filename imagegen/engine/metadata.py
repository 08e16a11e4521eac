"""Describe generation settings in the AUTOMATIC1111 "parameters" text and embed it in PNG files;
read them back from the PNGs of this studio and of other tools (A1, Fooocus, InvokeAI)."""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import BinaryIO

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .requests import DEFAULT_SCHEDULER, HIRES_UPSCALER, SAMPLER_LABELS, HiresFix

# The tEXt keyword AUTOMATIC1111 and most other tools read generation settings from.
PARAMETERS_KEY = "parameters"


def format_parameters(
    *,
    prompt: str,
    negative_prompt: str,
    steps: int,
    sampler: str,
    guidance_scale: float,
    seed: int,
    width: int,
    height: int,
    model: str,
    strength: float | None = None,
    hires: HiresFix | None = None,
    clip_skip: int = 1,
    extra: Mapping[str, object] | None = None,
) -> str:
    """Return the settings as AUTOMATIC1111 "parameters" text; `extra` adds settings of its own
    (a masked edit's "Mask blur", "Inpaint area", "Masked area padding").

    With a hires fix, as A1 writes it: Size is the first pass's, "Denoising strength" the second
    pass's, then "Hires upscale", "Hires steps" and "Hires upscaler".
    """
    if hires is not None:
        strength = hires.strength
        extra = {
            "Hires upscale": f"{hires.scale:g}",
            "Hires steps": hires.steps,
            "Hires upscaler": HIRES_UPSCALER,
            **(extra or {}),
        }
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    settings = (
        f"Steps: {steps}, Sampler: {sampler}, CFG scale: {guidance_scale:g}, Seed: {seed}, "
        f"Size: {width}x{height}, Model: {model}"
    )
    if strength is not None:
        settings += f", Denoising strength: {strength:g}"
    if clip_skip > 1:  # A1 names it only when set
        settings += f", Clip skip: {clip_skip}"
    for name, value in (extra or {}).items():
        settings += f", {name}: {value}"
    lines.append(settings)
    return "\n".join(lines)


def encode_png(image: Image.Image, parameters: str, *, chunks: Mapping[str, str] | None = None) -> bytes:
    """Return PNG bytes of image with parameters stored in a "parameters" text chunk.

    `chunks` adds further text chunks (keyword → text), such as a refinement's own record.
    """
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, parameters)
    for keyword, text in (chunks or {}).items():
        info.add_text(keyword, text)  # Pillow writes iTXt (UTF-8) for text that Latin-1 cannot hold
    buffer = BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_png_parameters(data: bytes | BinaryIO) -> str | None:
    """Return the "parameters" text stored in a PNG, or None when it has none."""
    return read_png_text(data).get(PARAMETERS_KEY)


# Reading settings back: what this studio, AUTOMATIC1111, Fooocus and InvokeAI store in a PNG.

# The text chunks those tools write their settings in.
FOOOCUS_SCHEME_KEY = "fooocus_scheme"
INVOKEAI_KEY = "invokeai_metadata"
SOURCE_LABELS = {"a1111": "AUTOMATIC1111", "fooocus": "Fooocus", "invokeai": "InvokeAI"}

# One "Name: value" of A1's last line; a value holding commas is quoted as JSON.
_SETTING = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^\s*(\d+)\s*[x×]\s*(\d+)\s*$")
_PAIR = re.compile(r"^\s*\(?\s*(\d+)\s*[,*x×]\s*(\d+)\s*\)?\s*$")
# A1 writes a schedule type that is not a sampler's own as "Schedule type: Karras"; older versions
# and Fooocus name it in the sampler ("DPM++ 2M Karras").
_DEFAULT_SCHEDULES = {"", "automatic", "normal", "default"}
# Fooocus (ComfyUI's sampler names) and InvokeAI name samplers by key; A1's labels are what
# SAMPLER_LABELS knows, so each key maps to the label A1 prints for the same sampler.
_FOOOCUS_SAMPLERS = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "heun": "Heun",
    "dpm_2": "DPM2",
    "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS",
    "dpm_fast": "DPM fast",
    "dpm_adaptive": "DPM adaptive",
    "dpmpp_2s_ancestral": "DPM++ 2S a",
    "dpmpp_sde": "DPM++ SDE",
    "dpmpp_sde_gpu": "DPM++ SDE",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_2m_sde_gpu": "DPM++ 2M SDE",
    "dpmpp_3m_sde": "DPM++ 3M SDE",
    "dpmpp_3m_sde_gpu": "DPM++ 3M SDE",
    "ddim": "DDIM",
    "uni_pc": "UniPC",
    "uni_pc_bh2": "UniPC",
    "lcm": "LCM",
}
_INVOKEAI_SAMPLERS = {
    "ddim": "DDIM",
    "ddpm": "DDPM",
    "deis": "DEIS",
    "lms": "LMS",
    "pndm": "PNDM",
    "heun": "Heun",
    "euler": "Euler",
    "euler_a": "Euler a",
    "kdpm_2": "DPM2",
    "kdpm_2_a": "DPM2 a",
    "dpmpp_2s": "DPM++ 2S",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_sde": "DPM++ SDE",
    "dpmpp_3m": "DPM++ 3M",
    "unipc": "UniPC",
    "lcm": "LCM",
    "tcd": "TCD",
}


@dataclass(frozen=True)
class ImportedSettings:
    """Generation settings read from an image: `settings` under GenerationRequest's names (prompt,
    negative_prompt, steps, guidance_scale, width, height, seed, scheduler, strength), only those the
    image states; `notes` say what could not be taken as it was."""

    source: str  # a key of SOURCE_LABELS
    settings: dict[str, object]
    model: str = ""
    notes: tuple[str, ...] = ()

    @property
    def source_label(self) -> str:
        return SOURCE_LABELS[self.source]


def read_png_text(data: bytes | BinaryIO) -> dict[str, str]:
    """The PNG's text chunks (keyword → text) that come before its pixels, where every tool writes
    its settings; the pixels are not decoded."""
    with Image.open(BytesIO(data) if isinstance(data, bytes) else data, formats=["PNG"]) as image:
        return {key: value for key, value in image.info.items() if isinstance(value, str)}


def read_generation_settings(texts: Mapping[str, str]) -> ImportedSettings | None:
    """The settings an image's text chunks state, in whichever tool's format, or None when they
    state none: InvokeAI's JSON, Fooocus' JSON (its scheme "fooocus"), or A1's text (which this
    studio and Fooocus' scheme "a1111" write)."""
    if INVOKEAI_KEY in texts:
        metadata = _json_object(texts[INVOKEAI_KEY])
        if metadata is not None:
            return _from_invokeai(metadata)
    parameters = texts.get(PARAMETERS_KEY, "")
    if not parameters.strip():
        return None
    metadata = _json_object(parameters)
    if metadata is not None:
        return _from_fooocus(metadata)
    return _from_a1111(parameters, source="fooocus" if texts.get(FOOOCUS_SCHEME_KEY) == "a1111" else "a1111")


def parse_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """A1 "parameters" text as (prompt, negative prompt, settings by name as written)."""
    *lines, last = text.strip().split("\n")
    if len(_SETTING.findall(last)) < 3:  # no settings line: every line is prompt
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line.removeprefix("Negative prompt:").strip()
        (negative if in_negative else prompt).append(line)
    settings = {}
    for name, value in _SETTING.findall(last):
        if len(value) > 1 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        settings[name.strip()] = value.strip()
    return "\n".join(prompt), "\n".join(negative), settings


class _Reader:
    """Collects settings and notes, converting each value or noting why it was left out."""

    def __init__(self) -> None:
        self.settings: dict[str, object] = {}
        self.notes: list[str] = []

    def take(self, name: str, label: str, value, convert) -> None:
        if value is None or value == "":
            return
        try:
            self.settings[name] = convert(value)
        except (TypeError, ValueError):
            self.notes.append(f"{label} {value!r} is not a number the form takes; left out.")

    def size(self, width, height) -> None:
        self.take("width", "Width", width, _whole)
        self.take("height", "Height", height, _whole)

    def sampler(self, names: list[str], as_written: str) -> None:
        """The first of `names` (A1 labels, most specific first) that this studio offers; none:
        the default sampler, noted."""
        if not names[-1]:
            return
        offered = {label.lower(): key for key, label in SAMPLER_LABELS.items()}
        for name in names:
            if name.lower() in offered:
                self.settings["scheduler"] = offered[name.lower()]
                if name.lower() != names[0].lower():
                    nearest = f"the form takes the nearest, {name}"
                    self.notes.append(f"Sampler {as_written!r} is not offered here; {nearest}.")
                return
        self.settings["scheduler"] = DEFAULT_SCHEDULER
        default = SAMPLER_LABELS[DEFAULT_SCHEDULER]
        self.notes.append(f"Sampler {as_written!r} is not offered here; the form takes the default, {default}.")

    def result(self, source: str, model) -> ImportedSettings:
        return ImportedSettings(source=source, settings=self.settings, model=str(model or ""), notes=tuple(self.notes))


def _from_a1111(text: str, *, source: str) -> ImportedSettings:
    prompt, negative_prompt, written = parse_parameters(text)
    reader = _Reader()
    reader.settings["prompt"] = prompt
    reader.settings["negative_prompt"] = negative_prompt
    reader.take("steps", "Steps", written.get("Steps"), _whole)
    reader.take("guidance_scale", "CFG scale", written.get("CFG scale"), float)
    reader.take("seed", "Seed", written.get("Seed"), _whole)
    if size := _SIZE.match(written.get("Size", "")):
        reader.size(*size.groups())
    reader.take("clip_skip", "Clip skip", written.get("Clip skip"), _whole)
    if "Hires upscale" in written:
        # With a hires fix, "Denoising strength" is its second pass's; A1's "Hires steps: 0" is as many as Steps.
        reader.take("hires_scale", "Hires upscale", written.get("Hires upscale"), float)
        reader.take("hires_strength", "Denoising strength", written.get("Denoising strength"), float)
        if written.get("Hires steps", "0") != "0":
            reader.take("hires_steps", "Hires steps", written.get("Hires steps"), _whole)
    else:
        reader.take("strength", "Denoising strength", written.get("Denoising strength"), float)
    sampler = written.get("Sampler", "")
    schedule = written.get("Schedule type", "")
    if schedule.lower() in _DEFAULT_SCHEDULES:
        reader.sampler([sampler], sampler)
    else:
        reader.sampler([f"{sampler} {schedule}", sampler], f"{sampler}, {schedule}")
    return reader.result(source, written.get("Model"))


def _from_fooocus(metadata: dict) -> ImportedSettings:
    reader = _Reader()
    reader.settings["prompt"] = str(metadata.get("prompt") or "")
    reader.settings["negative_prompt"] = str(metadata.get("negative_prompt") or "")
    reader.take("steps", "Steps", metadata.get("steps"), _whole)
    reader.take("guidance_scale", "Guidance scale", metadata.get("guidance_scale"), float)
    reader.take("seed", "Seed", metadata.get("seed"), _whole)
    if size := _PAIR.match(str(metadata.get("resolution", ""))):  # "(1152, 896)": width, height
        reader.size(*size.groups())
    sampler = _FOOOCUS_SAMPLERS.get(str(metadata.get("sampler", "")), str(metadata.get("sampler", "")))
    scheduler = str(metadata.get("scheduler", ""))
    if scheduler.lower() == "karras":
        reader.sampler([f"{sampler} Karras", sampler], f"{metadata.get('sampler')}, {scheduler}")
    else:
        reader.sampler([sampler], str(metadata.get("sampler", "")))
    if metadata.get("styles") not in (None, "", "[]"):
        reader.notes.append(f"Fooocus styles {metadata['styles']} are not applied here: the prompt is the one typed.")
    return reader.result("fooocus", metadata.get("base_model"))


def _from_invokeai(metadata: dict) -> ImportedSettings:
    reader = _Reader()
    reader.settings["prompt"] = str(metadata.get("positive_prompt") or "")
    reader.settings["negative_prompt"] = str(metadata.get("negative_prompt") or "")
    reader.take("steps", "Steps", metadata.get("steps"), _whole)
    reader.take("guidance_scale", "CFG scale", metadata.get("cfg_scale"), float)
    reader.take("seed", "Seed", metadata.get("seed"), _whole)
    reader.size(metadata.get("width"), metadata.get("height"))
    reader.take("strength", "Strength", metadata.get("strength"), float)
    key = str(metadata.get("scheduler", ""))
    # InvokeAI marks a Karras schedule with "_k": dpmpp_2m_k is A1's "DPM++ 2M Karras".
    base = _INVOKEAI_SAMPLERS.get(key.removesuffix("_k"), key)
    reader.sampler([f"{base} Karras", base] if key.endswith("_k") else [base], key)
    model = metadata.get("model")
    if isinstance(model, dict):  # {"name": …} since InvokeAI 4, {"model_name": …} in 3
        model = model.get("name") or model.get("model_name")
    return reader.result("invokeai", model)


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _whole(value) -> int:
    """A whole number, as text or number ("20", 20, 20.0), refusing fractions."""
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)
