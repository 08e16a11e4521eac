"""LoRAs and textual-inversion embeddings from IMAGEGEN_LORA_DIR, named in prompts as A1 does."""

import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image
from safetensors.torch import save_file

from imagegen import services
from imagegen.engine import Engine, GenerationRequest, read_png_parameters
from imagegen.engine.addons import AddOnError, AddOnFolder, PromptLora, split_loras
from imagegen.engine.pipelines import batch_key
from imagegen.engine.tiny import ensure_tiny_model
from imagegen.forms import GenerateForm
from imagegen.models import JobStatus, Run

from .factories import RunFactory, UserFactory
from .test_integration import api, events_until_closed


def write_random_lora(folder: Path, name: str, cache_dir: Path, *, model: str = "tiny") -> None:
    """A LoRA for a tiny model's UNet with random weights, saved as diffusers saves one (the way
    diffusers' own tests make them: nothing downloaded)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(ensure_tiny_model(cache_dir, model) / "unet")
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    unet.add_adapter(config)
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet), weight_name=f"{name}.safetensors"
    )


def write_random_embedding(folder: Path, name: str) -> None:
    """A two-vector textual-inversion embedding for the tiny model's text encoder (A1's format)."""
    (folder / "embeddings").mkdir(exist_ok=True)
    save_file(
        {"emb_params": torch.randn(2, 32, generator=torch.Generator().manual_seed(1))},
        folder / "embeddings" / f"{name}.safetensors",
    )


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    write_random_lora(folder, "shiny", cache_dir)
    write_random_embedding(folder, "fancy")
    return folder


@pytest.fixture(scope="module")
def engine(cache_dir: Path, lora_dir: Path) -> Engine:
    return Engine("tiny", cache_dir=cache_dir, lora_dir=lora_dir)


def pixels(engine: Engine, prompt: str, **overrides) -> np.ndarray:
    request = GenerationRequest(**{"prompt": prompt, "steps": 3, "width": 64, "height": 64, "seed": 5, **overrides})
    return np.asarray(engine.generate(request).images[0], dtype=np.int16)


def test_lora_tags_are_read_as_a1_writes_them():
    assert split_loras("a castle <lora:shiny:0.8>, <lora:old> at dusk") == (
        "a castle , at dusk",
        (PromptLora("shiny", 0.8), PromptLora("old", 1.0)),
    )
    assert split_loras("a castle") == ("a castle", ())
    for bad in ("<lora:shiny:lots>", "<lora:shiny:9>"):
        with pytest.raises(ValueError, match="weight of <lora:shiny>"):
            split_loras(bad)


def test_a_lora_changes_the_image_at_its_weight_and_is_gone_after_the_job(engine: Engine):
    plain = pixels(engine, "a castle")
    with_lora = pixels(engine, "a castle <lora:shiny:0.8>")
    assert np.abs(with_lora - plain).mean() > 2
    # At weight 0 the LoRA does nothing and its tag is not read as words: the plain prompt's image.
    assert np.array_equal(pixels(engine, "a castle <lora:shiny:0>"), plain)
    assert not np.array_equal(pixels(engine, "a castle <lora:shiny:0.4>"), with_lora)
    # Unloaded after each job: the next plain prompt makes exactly what it made before.
    assert np.array_equal(pixels(engine, "a castle"), plain)
    assert not [name for name, _ in engine.pipeline.unet.named_modules() if "lora" in name]


def test_a_lora_applies_to_image_to_image_and_its_parameters_keep_the_tag(engine: Engine):
    init = Image.fromarray(pixels(engine, "a castle").astype(np.uint8))
    plain = pixels(engine, "a castle", init_image=init, strength=0.8)
    assert np.abs(pixels(engine, "a castle <lora:shiny:1>", init_image=init, strength=0.8) - plain).mean() > 2
    result = engine.generate(GenerationRequest(prompt="a castle <lora:shiny:0.8>", steps=2, width=64, height=64))
    assert result.parameters.startswith("a castle <lora:shiny:0.8>\n")


def test_an_unknown_lora_fails_the_job_with_its_name(engine: Engine):
    with pytest.raises(AddOnError, match="no LoRA called 'missing' \\(available: shiny\\)"):
        pixels(engine, "a castle <lora:missing:1>")
    assert np.array_equal(pixels(engine, "a castle"), pixels(engine, "a castle"))


def test_an_embedding_is_called_by_its_name(engine: Engine, cache_dir: Path):
    without_folder = Engine("tiny", cache_dir=cache_dir)  # "fancy" is just letters to it
    assert np.abs(pixels(engine, "a fancy castle") - pixels(without_folder, "a fancy castle")).mean() > 2
    assert np.array_equal(pixels(engine, "a castle"), pixels(without_folder, "a castle"))


def test_jobs_with_a_lora_never_share_a_call():
    assert batch_key(GenerationRequest(prompt="a castle <lora:shiny:1>")) is None
    assert batch_key(GenerationRequest(prompt="a castle")) is not None


@pytest.mark.django_db
def test_runs_with_a_lora_are_never_claimed_together(settings):
    base = {"owner": UserFactory(), "steps": 4, "width": 64, "height": 64, "guidance_scale": 7.5}
    with_lora = services.job_claim(model=Run, job_id=RunFactory(**base, prompt="a <lora:shiny>").pk, worker="w")
    RunFactory(**base, prompt="a fox")
    assert services.job_claim_companions(job=with_lora, limit=7) == []
    plain = services.job_claim(model=Run, job_id=RunFactory(**base, prompt="a cat").pk, worker="w")
    RunFactory(**base, prompt="a fox <lora:shiny:0.5>")
    assert [run.prompt for run in services.job_claim_companions(job=plain, limit=7)] == ["a fox"]


def test_the_form_names_what_the_folder_offers_and_refuses_anything_else(settings, lora_dir: Path):
    settings.IMAGEGEN_LORA_DIR = str(lora_dir)
    base = {"steps": 20, "guidance_scale": 7.5, "width": 512, "height": 512}
    assert GenerateForm(base | {"prompt": "a fox <lora:shiny:0.7> fancy"}).is_valid()
    form = GenerateForm(base | {"prompt": "a fox <lora:missing:0.7>"})
    assert form.errors["prompt"] == ["There is no LoRA called 'missing' (available: shiny)."]
    form = GenerateForm(base | {"prompt": "a fox <lora:shiny:strong>"})
    assert form.errors["prompt"] == ["The weight of <lora:shiny> must be a number, not 'strong'."]
    assert "<lora:name:weight>: shiny." in form.fields["prompt"].help_text
    assert "Embeddings, by name: fancy." in form.fields["prompt"].help_text
    settings.IMAGEGEN_LORA_DIR = ""
    form = GenerateForm(base | {"prompt": "a fox <lora:shiny>"})
    assert form.errors["prompt"] == ["This server offers no LoRAs, so <lora:shiny> cannot be applied."]
    assert AddOnFolder("").lora_names() == [] and "LoRAs, as" not in form.fields["prompt"].help_text


def test_a_lora_and_an_embedding_through_the_api_and_a_real_worker(stack, cache_dir: Path):
    folder = Path(stack.env["IMAGEGEN_LORA_DIR"])
    write_random_lora(folder, "shiny", cache_dir)
    write_random_embedding(folder, "fancy")
    token = services.api_token_create(username="lora-user")
    outputs = {}
    for prompt in ("a fancy lighthouse", "a fancy lighthouse <lora:shiny:0.9>", "a lighthouse <lora:nothing:1>"):
        body = {"prompt": prompt, "num_inference_steps": 4, "width": 64, "height": 64, "seed": 9}
        if "nothing" in prompt:
            with pytest.raises(urllib.error.HTTPError) as refused:
                api(stack, "POST", "/api/generate", token, body)
            assert refused.value.code == 400
            errors = json.loads(refused.value.read())["errors"]
            assert errors["prompt"] == ["There is no LoRA called 'nothing' (available: shiny)."]
            continue
        status, answer = api(stack, "POST", "/api/generate", token, body)
        assert status == 202, answer
        accepted = json.loads(answer)
        assert events_until_closed(accepted["ws_url"], token)[-1]["type"] == "job.result"
        run = Run.objects.get(pk=accepted["run_id"])
        assert run.status == JobStatus.SUCCEEDED
        output = run.outputs.get()
        png = (stack.media_root / output.file.name).read_bytes()
        assert read_png_parameters(png).startswith(f"{prompt}\n")
        outputs[prompt] = np.asarray(Image.open(stack.media_root / output.file.name), dtype=np.int16)
    assert np.abs(outputs["a fancy lighthouse"] - outputs["a fancy lighthouse <lora:shiny:0.9>"]).mean() > 2
