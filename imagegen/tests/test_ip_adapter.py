"""Tests of IP-Adapter conditioning (imagegen/engine/ip_adapter.py) on the tiny CPU model.

The adapter and its CLIP image encoder are built here with random weights, the way diffusers' own
tests build them (`create_ip_adapter_state_dict` in tests/models/unets/test_models_unet_2d_condition.py),
and saved in the h94/IP-Adapter layout; nothing is downloaded.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from diffusers.models.attention_processor import IPAdapterAttnProcessor
from diffusers.models.embeddings import ImageProjection
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from imagegen.engine import Engine, GenerationCancelled, GenerationRequest, ModelLoadError
from imagegen.engine.ip_adapter import IMAGE_ENCODER_FOLDER
from imagegen.engine.tiny import ensure_tiny_model
from imagegen.services import current_engine


def build_ip_adapter(folder: Path, unet: UNet2DConditionModel) -> Path:
    """A random IP-Adapter for `unet` in the h94/IP-Adapter layout; returns its weights file."""
    torch.manual_seed(0)
    cross_attention_dim = unet.config.cross_attention_dim
    tensors: dict[str, torch.Tensor] = {}
    # ip_adapter.<n>.to_k_ip / to_v_ip for each cross-attention layer, numbered 1, 3, 5, ... in the
    # order of unet.attn_processors (the original numbering counts self-attention layers too).
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden_size = unet.config.block_out_channels[-1]
        elif name.startswith("up_blocks"):
            hidden_size = list(reversed(unet.config.block_out_channels))[int(name[len("up_blocks.")])]
        else:
            hidden_size = unet.config.block_out_channels[int(name[len("down_blocks.")])]
        layer = IPAdapterAttnProcessor(hidden_size=hidden_size, cross_attention_dim=cross_attention_dim).state_dict()
        tensors[f"ip_adapter.{key_id}.to_k_ip.weight"] = layer["to_k_ip.0.weight"]
        tensors[f"ip_adapter.{key_id}.to_v_ip.weight"] = layer["to_v_ip.0.weight"]
        key_id += 2
    # image_proj: the image embedding (the encoder's projection_dim) to 4 tokens of the text's width.
    projection = ImageProjection(
        cross_attention_dim=cross_attention_dim, image_embed_dim=cross_attention_dim, num_image_text_embeds=4
    ).state_dict()
    tensors |= {
        "image_proj.proj.weight": projection["image_embeds.weight"],
        "image_proj.proj.bias": projection["image_embeds.bias"],
        "image_proj.norm.weight": projection["norm.weight"],
        "image_proj.norm.bias": projection["norm.bias"],
    }
    weights = folder / "ip-adapter_test.safetensors"
    save_file({key: value.contiguous() for key, value in tensors.items()}, weights)
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=4,
            projection_dim=cross_attention_dim,
        )
    )
    encoder.save_pretrained(folder / IMAGE_ENCODER_FOLDER)
    return weights


@pytest.fixture(scope="module")
def plain_engine(cache_dir: Path) -> Engine:
    return Engine("tiny", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, plain_engine: Engine) -> Path:
    return build_ip_adapter(tmp_path_factory.mktemp("IP-Adapter"), plain_engine.pipeline.unet)


@pytest.fixture(scope="module")
def engine(cache_dir: Path, adapter: Path) -> Engine:
    return Engine("tiny", cache_dir=cache_dir, ip_adapter=adapter, ip_adapter_scale=0.6)


@pytest.fixture
def fresh_engine(cache_dir: Path, adapter: Path) -> Engine:
    """An engine that has not loaded its adapter yet."""
    return Engine("tiny", cache_dir=cache_dir, ip_adapter=adapter, ip_adapter_scale=0.6)


def gradient(size: int) -> Image.Image:
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    return Image.fromarray(
        np.stack(
            [np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 128, np.uint8)], -1
        )
    )


def reference_image() -> Image.Image:
    ramp = np.linspace(0, 255, 96, dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(ramp, (80, 1))] * 3, -1))


def square_mask(size: int, inner: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, inner)
    return mask


JOBS = {
    "txt2img": {},
    "img2img": {"strength": 0.7},
    "inpaint": {"strength": 0.7, "mask_image": square_mask(64, (8, 8, 56, 56))},
}


def job(kind: str, **overrides: object) -> GenerationRequest:
    inputs = {"init_image": gradient(64), **JOBS[kind]} if JOBS[kind] else {}
    return GenerationRequest(**{"prompt": "a red fox", "steps": 6, "width": 64, "height": 64, **inputs, **overrides})


def pixels(engine: Engine, request: GenerationRequest) -> np.ndarray:
    return np.asarray(engine.generate(request).images[0]).astype(np.int16)


def state_of(engine: Engine) -> dict[str, object]:
    """What a reference job may change: the UNet's processors, image projection and weights, and each
    pipeline's image encoder and feature extractor (attribute and registered config)."""
    unet = engine.pipeline.unet
    pipes = {"txt2img": engine.pipeline, "img2img": engine.img2img_pipeline, "inpaint": engine.inpaint_pipeline}
    return {
        "processors": unet.attn_processors,  # the objects themselves: they compare by identity
        "encoder_hid_proj": unet.encoder_hid_proj,
        "encoder_hid_dim_type": unet.config.encoder_hid_dim_type,
        "weights": sorted(unet.state_dict()),
        **{
            f"{kind}.{name}": (getattr(pipe, name), pipe.config[name])
            for kind, pipe in pipes.items()
            for name in ("image_encoder", "feature_extractor")
        },
    }


@pytest.mark.parametrize("kind", list(JOBS))
def test_scale_zero_gives_the_pixels_of_no_adapter_and_more_changes_them(
    plain_engine: Engine, engine: Engine, cache_dir: Path, adapter: Path, kind: str
) -> None:
    plain = pixels(plain_engine, job(kind))
    with_reference = job(kind, reference_image=reference_image())
    at_zero = Engine("tiny", cache_dir=cache_dir, ip_adapter=adapter, ip_adapter_scale=0.0)
    result = at_zero.generate(with_reference)
    assert result.reference == "IP-Adapter 0"  # it did go through the adapter
    # Bit-identical, no tolerance needed: at scale 0 diffusers' IP processor skips the image branch and
    # the rest is the same arithmetic as the plain processor (diffusers' own test allows 9e-4 on floats).
    assert np.array_equal(np.asarray(result.images[0]), plain)
    result = engine.generate(with_reference)
    assert result.reference == "IP-Adapter 0.6"
    assert np.abs(np.asarray(result.images[0]).astype(np.int16) - plain).max() > 1


def test_the_result_says_how_the_reference_was_followed(plain_engine: Engine, engine: Engine) -> None:
    assert engine.generate(job("txt2img")).reference == ""
    assert plain_engine.generate(job("txt2img", reference_image=reference_image())).reference == "reference-only 0.5"
    assert engine.generate(job("img2img", reference_image=reference_image())).reference == "IP-Adapter 0.6"


def test_a_reference_job_leaves_nothing_behind_for_the_next_job(fresh_engine: Engine) -> None:
    before = {kind: pixels(fresh_engine, job(kind, seed=9)) for kind in JOBS}
    state = state_of(fresh_engine)
    for kind in JOBS:
        pixels(fresh_engine, job(kind, reference_image=reference_image()))
        assert state_of(fresh_engine) == state
    for kind in JOBS:
        assert np.array_equal(pixels(fresh_engine, job(kind, seed=9)), before[kind]), kind
    assert fresh_engine.pipeline.unet.encoder_hid_proj is None
    assert not any("IPAdapter" in type(p).__name__ for p in fresh_engine.pipeline.unet.attn_processors.values())


def test_a_reference_job_that_fails_still_takes_the_adapter_away(engine: Engine) -> None:
    state = state_of(engine)

    def stop(step: int, total: int, preview) -> None:
        raise GenerationCancelled()

    with pytest.raises(GenerationCancelled):
        engine.generate(job("img2img", reference_image=reference_image()), on_step=stop)
    assert state_of(engine) == state


def test_the_adapter_loads_once_on_the_first_reference_job_and_plain_jobs_never_encode_images(
    fresh_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[Path] = []
    encoded: list[torch.Tensor] = []
    load_ip_adapter = StableDiffusionPipeline.load_ip_adapter
    encode = CLIPVisionModelWithProjection.forward

    def counting_load(pipe, folder, *args, **kwargs):
        loads.append(folder)
        return load_ip_adapter(pipe, folder, *args, **kwargs)

    def counting_encode(model, pixel_values, *args, **kwargs):
        encoded.append(pixel_values)
        return encode(model, pixel_values, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "load_ip_adapter", counting_load)
    monkeypatch.setattr(CLIPVisionModelWithProjection, "forward", counting_encode)
    for kind in JOBS:
        fresh_engine.generate(job(kind))
    assert (loads, encoded) == ([], [])
    fresh_engine.generate(job("txt2img", reference_image=reference_image()))
    fresh_engine.generate(job("inpaint", reference_image=reference_image()))
    assert len(loads) == 1
    assert len(encoded) == 2  # once per reference job: the spy sees the encoder
    for kind in JOBS:
        fresh_engine.generate(job(kind))
    assert (len(loads), len(encoded)) == (1, 2)


def test_a_missing_adapter_fails_only_the_jobs_with_a_reference(cache_dir: Path, adapter: Path, tmp_path: Path) -> None:
    alone = tmp_path / adapter.name  # the weights without their image encoder
    alone.write_bytes(adapter.read_bytes())
    for weights in (tmp_path / "missing.safetensors", alone):
        engine = Engine("tiny", cache_dir=cache_dir, ip_adapter=weights)
        assert engine.generate(job("txt2img")).images[0].size == (64, 64)
        state = state_of(engine)
        with pytest.raises(ModelLoadError, match="IMAGEGEN_IP_ADAPTER"):
            engine.generate(job("img2img", reference_image=reference_image()))
        assert state_of(engine) == state


def test_an_inpainting_checkpoint_follows_the_reference_too(cache_dir: Path, adapter: Path) -> None:
    checkpoint = str(ensure_tiny_model(cache_dir, inpainting=True))
    without = Engine("tiny", cache_dir=cache_dir, inpaint_model=checkpoint)
    engine = Engine("tiny", cache_dir=cache_dir, inpaint_model=checkpoint, ip_adapter=adapter)
    for loaded in (without, engine):
        loaded.load()  # as get_engine does: jobs take their scheduler config from the main model
    plain = pixels(without, job("inpaint"))
    unet = engine.inpaint_pipeline.unet
    processors = unet.attn_processors
    result = engine.generate(job("inpaint", reference_image=reference_image()))
    assert (result.model, result.reference) == ("tiny-inpainting-v1", "IP-Adapter 0.6")
    assert not np.array_equal(np.asarray(result.images[0]), plain)
    assert unet.attn_processors == processors and unet.encoder_hid_proj is None
    assert np.array_equal(pixels(engine, job("inpaint")), plain)


def test_workers_take_the_adapter_and_its_scale_from_settings(settings, cache_dir: Path, adapter: Path) -> None:
    settings.IMAGEGEN_MODEL, settings.IMAGEGEN_DEVICE, settings.IMAGEGEN_MODEL_CACHE = "tiny", "cpu", cache_dir
    settings.IMAGEGEN_IP_ADAPTER, settings.IMAGEGEN_IP_ADAPTER_SCALE = str(adapter), 0.3
    assert current_engine().generate(job("img2img", reference_image=reference_image())).reference == "IP-Adapter 0.3"
    settings.IMAGEGEN_IP_ADAPTER = ""
    assert (
        current_engine().generate(job("img2img", reference_image=reference_image())).reference == "reference-only 0.5"
    )
