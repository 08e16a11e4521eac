"""Reading generation settings back from PNGs: this studio's own, AUTOMATIC1111's, Fooocus' (both of its
schemes) and InvokeAI's, as those tools write them."""

import json

import pytest
from PIL import Image

from imagegen.engine import (
    DEFAULT_SCHEDULER,
    SAMPLER_LABELS,
    HiresFix,
    encode_png,
    format_parameters,
    read_generation_settings,
    read_png_text,
)

A1_PARAMETERS = (
    "masterpiece, a lighthouse at dawn\n"
    "oil painting, <lora:detail:0.8>\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3456789012, Size: 640x448, "
    'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.55, Lora hashes: "detail: 1a2b, '
    'style: 3c4d", Version: v1.10.1'
)
FOOOCUS_METADATA = {
    "adm_guidance": "(1.5, 0.8, 0.3)",
    "base_model": "juggernautXL_v8Rundiffusion",
    "base_model_hash": "aeb7e9e689",
    "full_negative_prompt": ["(worst quality, low quality:1.4)"],
    "full_prompt": ["a cat in a hat, intricate, highly detailed"],
    "guidance_scale": 4.0,
    "loras": [],
    "metadata_scheme": "fooocus",
    "negative_prompt": "",
    "performance": "Speed",
    "prompt": "a cat in a hat",
    "refiner_model": "None",
    "resolution": "(1152, 896)",
    "sampler": "euler_ancestral",
    "scheduler": "karras",
    "seed": "1234567",
    "sharpness": 2.0,
    "steps": 30,
    "styles": "['Fooocus V2', 'Fooocus Sharp']",
    "vae": "Default (model)",
    "version": "Fooocus v2.5.5",
}
INVOKEAI_METADATA = {
    "app_version": "3.3.0post3",
    "generation_mode": "img2img",
    "positive_prompt": "landscape, mountains",
    "negative_prompt": "low quality",
    "width": 768,
    "height": 432,
    "seed": 356120443,
    "rand_device": "cpu",
    "cfg_scale": 7.5,
    "steps": 50,
    "scheduler": "euler_a",
    "strength": 0.7,
    "clip_skip": 0,
    "model": {"model_name": "amixx_3Prunedfp16", "base_model": "sd-1", "model_type": "main"},
    "loras": [],
}


def png_with(**chunks: str) -> bytes:
    """A PNG carrying these text chunks, as the tools write them (Pillow, before the pixels)."""
    parameters = chunks.pop("parameters", "")
    return encode_png(Image.new("RGB", (8, 8)), parameters, chunks=chunks)


def test_a1111_parameters_give_every_setting_the_form_has() -> None:
    imported = read_generation_settings(read_png_text(png_with(parameters=A1_PARAMETERS)))
    assert imported.source_label == "AUTOMATIC1111" and imported.model == "v1-5-pruned-emaonly"
    settings = imported.settings
    assert settings["prompt"] == "masterpiece, a lighthouse at dawn\noil painting, <lora:detail:0.8>"
    assert settings["negative_prompt"] == "blurry, lowres"
    assert (settings["steps"], settings["guidance_scale"], settings["seed"]) == (28, 6.5, 3456789012)
    assert (settings["width"], settings["height"], settings["strength"]) == (640, 448, 0.55)
    # "DPM++ 2M" with a Karras schedule: that sampler where it is offered, else plain DPM++ 2M, said so.
    assert SAMPLER_LABELS[settings["scheduler"]] in ("DPM++ 2M Karras", "DPM++ 2M")
    karras_offered = "DPM++ 2M Karras" in SAMPLER_LABELS.values()
    assert any("DPM++ 2M, Karras" in note for note in imported.notes) != karras_offered


def test_older_a1111_names_the_schedule_in_the_sampler_and_quotes_values() -> None:
    text = 'a fox\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x768, Model: "sd, v1"'
    imported = read_generation_settings({"parameters": text})
    assert imported.settings["scheduler"] == "euler_a" and imported.model == "sd, v1"
    assert imported.notes == ()
    assert "negative_prompt" in imported.settings and imported.settings["negative_prompt"] == ""


@pytest.mark.parametrize("scheduler", SAMPLER_LABELS)
def test_this_studios_own_parameters_come_back_as_they_were_written(scheduler) -> None:
    text = format_parameters(
        prompt="a lighthouse\nat dawn",
        negative_prompt="fog",
        steps=31,
        sampler=SAMPLER_LABELS[scheduler],
        guidance_scale=8.5,
        seed=42,
        width=576,
        height=320,
        model="tiny",
        strength=0.35,
        extra={"Mask blur": 16},
    )
    imported = read_generation_settings(read_png_text(png_with(parameters=text)))
    assert imported.settings == {
        "prompt": "a lighthouse\nat dawn",
        "negative_prompt": "fog",
        "steps": 31,
        "guidance_scale": 8.5,
        "seed": 42,
        "width": 576,
        "height": 320,
        "strength": 0.35,
        "scheduler": scheduler,
    }
    assert imported.notes == () and imported.model == "tiny"


def test_a_hires_fix_and_clip_skip_come_back_as_the_forms_fields() -> None:
    text = format_parameters(
        prompt="a lighthouse",
        negative_prompt="",
        steps=20,
        sampler=SAMPLER_LABELS["dpmpp_2m_karras"],
        guidance_scale=7,
        seed=5,
        width=512,
        height=512,
        model="tiny",
        hires=HiresFix(scale=1.5, strength=0.45, steps=12),
        clip_skip=2,
    )
    imported = read_generation_settings(read_png_text(png_with(parameters=text)))
    assert imported.settings | {"prompt": ""} == {
        "prompt": "",
        "negative_prompt": "",
        "steps": 20,
        "guidance_scale": 7.0,
        "seed": 5,
        "width": 512,
        "height": 512,
        "clip_skip": 2,
        "hires_scale": 1.5,
        "hires_strength": 0.45,
        "hires_steps": 12,
        "scheduler": "dpmpp_2m_karras",
    }
    # The strength is the hires pass's, not an image-to-image run's.
    assert "strength" not in imported.settings and imported.notes == ()


def test_an_unknown_sampler_is_the_default_with_a_note() -> None:
    text = "a fox\nSteps: 20, Sampler: Restart, CFG scale: 7, Seed: 1, Size: 512x512"
    imported = read_generation_settings({"parameters": text})
    assert imported.settings["scheduler"] == DEFAULT_SCHEDULER
    assert imported.notes == (
        f"Sampler 'Restart' is not offered here; the form takes the default, {SAMPLER_LABELS[DEFAULT_SCHEDULER]}.",
    )


def test_a_value_that_is_no_number_is_left_out_with_a_note() -> None:
    text = "a fox\nSteps: many, Sampler: Euler, CFG scale: 7, Seed: 1.5, Size: 512x512"
    imported = read_generation_settings({"parameters": text})
    assert "steps" not in imported.settings and "seed" not in imported.settings
    assert imported.settings["guidance_scale"] == 7.0 and imported.settings["scheduler"] == "euler"
    assert len(imported.notes) == 2 and "Steps 'many'" in imported.notes[0]


def test_a_prompt_alone_is_a_prompt() -> None:
    imported = read_generation_settings({"parameters": "just a prompt, nothing else"})
    assert imported.settings == {"prompt": "just a prompt, nothing else", "negative_prompt": ""}


def test_fooocus_json_parameters() -> None:
    data = png_with(parameters=json.dumps(FOOOCUS_METADATA), fooocus_scheme="fooocus")
    imported = read_generation_settings(read_png_text(data))
    assert imported.source_label == "Fooocus" and imported.model == "juggernautXL_v8Rundiffusion"
    settings = imported.settings
    assert (settings["prompt"], settings["negative_prompt"]) == ("a cat in a hat", "")  # what was typed
    assert (settings["steps"], settings["guidance_scale"], settings["seed"]) == (30, 4.0, 1234567)
    assert (settings["width"], settings["height"]) == (1152, 896)
    assert SAMPLER_LABELS[settings["scheduler"]] in ("Euler a Karras", "Euler a")
    assert any("Fooocus styles" in note for note in imported.notes)


def test_fooocus_in_its_a1111_scheme() -> None:
    text = "a cat\nSteps: 30, Sampler: DPM++ 2M SDE Karras, Seed: 7, Size: 1024x1024, CFG scale: 4, Model: juggernaut"
    imported = read_generation_settings(read_png_text(png_with(parameters=text, fooocus_scheme="a1111")))
    assert imported.source_label == "Fooocus" and imported.settings["seed"] == 7
    if "DPM++ 2M SDE Karras" not in SAMPLER_LABELS.values():
        assert imported.settings["scheduler"] == DEFAULT_SCHEDULER and "not offered" in imported.notes[0]


def test_invokeai_metadata() -> None:
    imported = read_generation_settings(read_png_text(png_with(invokeai_metadata=json.dumps(INVOKEAI_METADATA))))
    assert imported.source_label == "InvokeAI" and imported.model == "amixx_3Prunedfp16"
    assert imported.settings == {
        "prompt": "landscape, mountains",
        "negative_prompt": "low quality",
        "steps": 50,
        "guidance_scale": 7.5,
        "seed": 356120443,
        "width": 768,
        "height": 432,
        "strength": 0.7,
        "scheduler": "euler_a",
    }
    assert imported.notes == ()


def test_invokeai_karras_samplers_and_newer_model_records() -> None:
    metadata = {**INVOKEAI_METADATA, "scheduler": "dpmpp_2m_k", "model": {"name": "Juggernaut XL", "base": "sdxl"}}
    imported = read_generation_settings({"invokeai_metadata": json.dumps(metadata)})
    assert imported.model == "Juggernaut XL"
    assert SAMPLER_LABELS[imported.settings["scheduler"]] in ("DPM++ 2M Karras", "DPM++ 2M")


def test_an_image_without_settings_has_none() -> None:
    assert read_generation_settings(read_png_text(png_with())) is None
    assert read_generation_settings({"Software": "GIMP"}) is None
    # InvokeAI's chunk that is no JSON object: the parameters, if any, are read instead.
    assert read_generation_settings({"invokeai_metadata": "[1, 2]"}) is None
