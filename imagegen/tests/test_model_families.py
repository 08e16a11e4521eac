"""Model families: SD 1.x, SD 2.x and SDXL through the same engine, each with a tiny random model of
its shape built locally (nothing downloaded), the way diffusers' own tests make theirs."""

import dataclasses
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from imagegen import services
from imagegen.api import bind_with_defaults
from imagegen.engine import Engine, GenerationRequest
from imagegen.engine.addons import AddOnError
from imagegen.engine.catalog import parse_models
from imagegen.engine.families import latent_rgb_factors
from imagegen.engine.pipelines import SCHEDULERS, _scheduler
from imagegen.engine.previews import LATENT_RGB_FACTORS, SDXL_LATENT_RGB_FACTORS
from imagegen.engine.prompts import PromptEncoder
from imagegen.engine.tiny import ensure_tiny_model
from imagegen.forms import ApiGenerateForm, GenerateForm
from refinement.editing import Rect, plan_crop
from refinement.stages import STAGES, StageInput
from refinement.tests.pixels import reach

from .engine_support import as_array, small
from .test_addons import write_random_embedding, write_random_lora
from .test_ip_adapter import build_ip_adapter

LONG = "a castle on a hill, " * 5  # 100 characters: past one 77-token window of the byte-level tokenizer


def pixels(engine: Engine, request: GenerationRequest) -> np.ndarray:
    return as_array(engine.generate(request).images[0])


@pytest.fixture(scope="module")
def xl(cache_dir: Path) -> Engine:
    return Engine("tiny-xl", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def xl_prompts(xl: Engine) -> PromptEncoder:
    return PromptEncoder(xl.pipeline, clip_skip=1)


@pytest.mark.parametrize(
    ("model", "family", "side"),
    [("tiny", "StableDiffusion", 512), ("tiny-sd2", "StableDiffusion", 768), ("tiny-xl", "StableDiffusionXL", 1024)],
)
def test_each_family_gets_its_own_pipelines_and_working_size(cache_dir: Path, model: str, family: str, side: int):
    engine = Engine(model, cache_dir=cache_dir)
    assert engine.working_side == side
    assert type(engine.pipeline).__name__ == f"{family}Pipeline"
    assert type(engine.img2img_pipeline).__name__ == f"{family}Img2ImgPipeline"
    assert type(engine.inpaint_pipeline).__name__ == f"{family}InpaintPipeline"
    # The derived pipelines share the model's weights: nothing is loaded twice.
    assert engine.img2img_pipeline.unet is engine.pipeline.unet is engine.inpaint_pipeline.unet
    result = engine.generate(small(steps=2))
    assert result.images[0].size == (64, 64) and result.parameters.endswith(f"Model: {model}")
    # Previews map the latents with the family's own colours.
    assert latent_rgb_factors(engine.pipeline) is (SDXL_LATENT_RGB_FACTORS if side == 1024 else LATENT_RGB_FACTORS)


def test_sd2_keeps_predicting_velocity_whatever_the_sampler(cache_dir: Path):
    engine = Engine("tiny-sd2", cache_dir=cache_dir)
    engine.load()
    for sampler, (_, cls) in SCHEDULERS.items():
        scheduler = _scheduler(GenerationRequest(prompt="", scheduler=sampler), cls, engine._scheduler_config, [0])
        assert scheduler.config.prediction_type == "v_prediction", sampler
    # The same noise read as velocity instead of noise gives another picture.
    epsilon = Engine("tiny", cache_dir=cache_dir)
    request = small(steps=4, scheduler="dpmpp_2m_karras")
    assert np.abs(pixels(engine, request) - pixels(epsilon, request)).mean() > 1


def test_sdxl_prompts_read_as_diffusers_reads_them(xl: Engine, xl_prompts: PromptEncoder):
    pipe = xl.pipeline
    ours = xl_prompts.encode_batch(["a red fox"], ["blurry"])
    with torch.inference_mode():
        theirs = pipe.encode_prompt("a red fox", device="cpu", negative_prompt="blurry")
    names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
    for name, expected in zip(names, theirs, strict=True):
        assert ours[name].shape == expected.shape, name
        assert torch.allclose(ours[name], expected, atol=1e-5), name
    # Both text encoders, side by side (32 features each), and one pooled vector of the second.
    assert ours["prompt_embeds"].shape == (1, 77, 64) and ours["pooled_prompt_embeds"].shape == (1, 32)
    # No negative prompt is nothing at all, as SDXL's own pipelines have it (force_zeros_for_empty_prompt).
    nothing = xl_prompts.encode_batch(["a red fox"], [""])
    assert not nothing["negative_prompt_embeds"].any() and not nothing["negative_pooled_prompt_embeds"].any()
    assert torch.equal(nothing["prompt_embeds"], ours["prompt_embeds"])


def test_sdxl_weights_long_prompts_and_clip_skip(xl: Engine, xl_prompts: PromptEncoder):
    plain = xl_prompts.encode("a red fox")
    weighted = xl_prompts.encode("a red (fox:1.3)")
    for half in (slice(0, 32), slice(32, 64)):  # each text encoder's features
        changed = (weighted[:, half] - plain[:, half]).abs().amax(dim=1) > 1e-3
        assert changed.nonzero().flatten().tolist() == [5, 6, 7]  # f, o, x after the start marker and "a red "
    first, second = LONG + "green hills", LONG + "stormy night"
    assert xl_prompts.encode(first).shape == (2 * 77, 64)
    assert not torch.equal(xl_prompts.encode(first), xl_prompts.encode(second))  # the tail counts
    # The pooled embedding is of the first 75 tokens, where both are alike.
    pooled = [xl_prompts.encode_batch([text], [""])["pooled_prompt_embeds"] for text in (first, second)]
    assert torch.equal(*pooled)
    # Clip skip 2: one layer before SDXL's own (the penultimate), as it is, in both encoders.
    skipping = PromptEncoder(xl.pipeline, clip_skip=2)
    tokens = xl.pipeline.tokenizer("a red fox", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.inference_mode():
        layers = [
            encoder(tokens, output_hidden_states=True).hidden_states
            for encoder in (
                xl.pipeline.text_encoder,
                xl.pipeline.text_encoder_2,
            )
        ]
        assert torch.allclose(skipping.encode("a red fox"), torch.cat([layers[0][-3][0], layers[1][-3][0]], dim=-1))
    assert np.abs(pixels(xl, small(clip_skip=2)) - pixels(xl, small())).mean() > 1
    assert np.abs(pixels(xl, small(prompt="a red (fox:3)")) - pixels(xl, small())).mean() > 0.5


def test_sdxl_batches_image_to_image_inpainting_and_reference(xl: Engine):
    requests = [
        small(prompt=LONG + "(green:1.4) hills", negative_prompt="blurry", seed=1),
        small(prompt="a red fox", seed=2),
        small(prompt="[a blue whale]", seed=3, batch_size=2),
    ]
    for request, result in zip(requests, xl.generate_batch(requests), strict=True):
        for image, alone in zip(result.images, xl.generate(request).images, strict=True):
            assert np.abs(as_array(image) - as_array(alone)).max() <= 2
    init = xl.generate(small(seed=5)).images[0]
    to_image = small(steps=6, init_image=init, strength=0.6)
    assert xl.generate(to_image).parameters.endswith("Model: tiny-xl, Denoising strength: 0.6")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    masked = dataclasses.replace(to_image, mask_image=mask)
    plain = pixels(xl, masked)
    assert plain.shape == (64, 64, 3)
    reference = Image.new("RGB", (96, 80), (240, 200, 30))
    with_reference = dataclasses.replace(masked, reference_image=reference)
    assert np.array_equal(pixels(xl, dataclasses.replace(with_reference, reference_weight=0.0)), plain)
    assert not np.array_equal(pixels(xl, dataclasses.replace(with_reference, reference_weight=0.8)), plain)
    assert np.array_equal(pixels(xl, masked), plain)  # nothing of the reference stays behind


def test_sdxl_loras_and_embeddings(cache_dir: Path, tmp_path: Path):
    write_random_lora(tmp_path, "shiny", cache_dir, model="tiny-xl")
    (tmp_path / "embeddings").mkdir()
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(2))
    save_file({"clip_l": vectors, "clip_g": vectors.flip(0)}, tmp_path / "embeddings" / "fancy.safetensors")
    write_random_embedding(tmp_path, "plain")  # SD 1.x's: one set of vectors
    engine = Engine("tiny-xl", cache_dir=cache_dir, lora_dir=tmp_path)
    without = Engine("tiny-xl", cache_dir=cache_dir)
    before = pixels(engine, small(prompt="a castle"))
    assert np.abs(pixels(engine, small(prompt="a castle <lora:shiny:1>")) - before).mean() > 1
    assert np.array_equal(pixels(engine, small(prompt="a castle")), before)  # unloaded after its job
    fancy = pixels(engine, small(prompt="a fancy castle"))
    assert np.abs(fancy - pixels(without, small(prompt="a fancy castle"))).mean() > 1
    with pytest.raises(AddOnError, match="The embedding 'plain' could not be loaded"):
        engine.generate(small(prompt="a plain castle"))


def test_refining_an_sdxl_image_works_at_its_own_size(xl: Engine, monkeypatch: pytest.MonkeyPatch):
    parent = Image.fromarray(np.random.default_rng(3).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    box = [64, 64, 96, 96]  # with its padding, a 160² crop
    assert plan_crop(Rect.from_bbox(box), parent.size).working_size == (512, 512)  # what an SD 1.5 model gets
    worked_at = []
    generate = xl.generate

    def recording(request, **options):
        worked_at.append(request.init_image.size)
        return generate(request, **options)

    monkeypatch.setattr(xl, "generate", recording)
    given = StageInput(parent=parent, payload={"masks": [{"bbox": box, "prompt": "a door"}]}, creativity=1, seed=3)
    image = np.asarray(STAGES["region"].run(xl, given).image)
    assert worked_at == [(640, 640)]  # a short side of 1024, but enlarged at most 4×
    near = reach(parent.size, [box])
    assert np.array_equal(image[~near], np.asarray(parent)[~near])
    assert (image[64:160, 64:160] != np.asarray(parent)[64:160, 64:160]).any()


def test_a_new_picture_is_made_at_the_chosen_models_own_size(settings, cache_dir: Path):
    folder = ensure_tiny_model(cache_dir, "tiny-xl")
    offered = parse_models(f"tiny; {folder}=An SDXL folder; org/unread-repo")
    # A folder's size is read from its config, without loading it; a repo's is not known before a worker loads it.
    assert [model.working_side for model in offered.values()] == [512, 1024, None]
    settings.IMAGEGEN_MODELS = f"tiny=Test model; tiny-xl=Test SDXL model; {folder}=Folder; org/repo=Repo"
    assert [services.model_size(model) for model in (None, "tiny-xl", "tiny-xl-v1", "org/repo")] == [
        512,
        1024,
        1024,
        512,
    ]
    assert GenerateForm().fields["width"].initial == 512
    settings.IMAGEGEN_MODELS = "tiny-xl=Test SDXL model; tiny=Test model"
    assert GenerateForm().fields["width"].initial == GenerateForm().fields["height"].initial == 1024
    # The API: a request with neither side gets the model's square; one that gives a side keeps it.
    for data, size in (
        ({}, (1024, 1024)),
        ({"model": "tiny"}, (512, 512)),
        ({"model": "tiny-xl", "width": 1216}, (1216, 512)),
        ({"model": 7}, None),  # refused on the model, not a crash
    ):
        form = bind_with_defaults(ApiGenerateForm, {"prompt": "a fox", **data})
        if size is None:
            assert not form.is_valid() and "model" in form.errors
        else:
            assert form.is_valid(), form.errors
            assert (form.cleaned_data["width"], form.cleaned_data["height"]) == size


def test_sdxl_follows_a_reference_through_an_ip_adapter(cache_dir: Path, xl: Engine, tmp_path: Path):
    weights = build_ip_adapter(tmp_path, xl.pipeline.unet)
    engine = Engine("tiny-xl", cache_dir=cache_dir, ip_adapter=weights, ip_adapter_scale=0.6)
    request = small(steps=4)
    plain = pixels(engine, request)
    referenced = engine.generate(
        dataclasses.replace(request, reference_image=Image.new("RGB", (80, 96), (200, 40, 90)))
    )
    assert referenced.reference == "IP-Adapter 0.6"
    assert np.abs(as_array(referenced.images[0]) - plain).mean() > 0.5
    assert np.array_equal(pixels(engine, request), plain)  # the adapter is gone after its job


def test_compiled_workers_warm_up_at_the_default_models_own_size_unless_told(settings, monkeypatch, redis_server):
    settings.IMAGEGEN_MODELS, settings.IMAGEGEN_COMPILE, settings.IMAGEGEN_WARM_SIZES = "tiny-xl=XL", "on", []
    warmed = []
    # The warm-up's work (compiling at each size) is the engine's, tested in test_compiled; here, its sizes.
    monkeypatch.setattr(Engine, "warm_up", lambda engine, *, sizes, batch_sizes: warmed.append(sizes))
    services.engine_warm_up(worker="warm-up-test")
    settings.IMAGEGEN_WARM_SIZES = [(768, 512)]
    services.engine_warm_up(worker="warm-up-test")
    assert warmed == [[(1024, 1024)], [(768, 512)]]


@pytest.mark.django_db
def test_choosing_a_model_on_the_page_moves_an_untouched_size_to_its_own(settings, user_client, page):
    settings.IMAGEGEN_MODELS = "tiny=Test model; tiny-xl=Test SDXL model"
    html = user_client.get("/").content
    assert b'<option value="tiny-xl" data-side="1024">Test SDXL model</option>' in html
    static_root = Path(settings.STATIC_ROOT)

    def serve(route):  # the page as Django rendered it, and the static files it names
        path = urlsplit(route.request.url).path
        if path == "/":
            route.fulfill(body=html, content_type="text/html")
        elif path.startswith(settings.STATIC_URL):
            route.fulfill(path=static_root / path.removeprefix(settings.STATIC_URL))
        else:
            route.abort()

    page.route("http://studio.test/**", serve)
    page.goto("http://studio.test/")
    page.click("details.advanced summary")
    size = lambda: (page.input_value("#id_width"), page.input_value("#id_height"))  # noqa: E731
    assert size() == ("512", "512")
    page.select_option("#id_model", "tiny-xl")
    assert size() == ("1024", "1024")
    page.select_option("#id_model", "tiny")
    assert size() == ("512", "512")
    page.fill("#id_width", "640")  # a size the user chose stays
    page.select_option("#id_model", "tiny-xl")
    assert size() == ("640", "512")
