"""Build tiny, randomly initialised Stable Diffusion pipelines (SD 1.x-, SD 2.x- and SDXL-shaped) for
tests and development without downloads."""

import os
import shutil
import uuid
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.models.resnet import ResnetBlock2D
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from .catalog import TINY_MODELS, TinyModel

# The folder of a built-in model (catalog.TINY_MODELS) is its name and this suffix: bump it whenever
# an architecture changes so stale caches are not reused.
VERSION_SUFFIX = "-v1"


def byte_level_tokenizer() -> CLIPTokenizer:
    # Byte-level vocabulary with no merges: every prompt tokenizes into single characters, so
    # nothing has to be downloaded and any text is representable.
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _make_vae_faithful(vae: AutoencoderKL) -> None:
    # An untrained VAE scrambles images and samples latents mostly from noise, which would make
    # image-to-image ignore its input; these edits make it keep the image, like a trained one.
    with torch.no_grad():
        # A zeroed residual branch turns a ResNet block into its skip connection, so images pass
        # through (almost) linearly instead of through a stack of random non-linear blocks.
        for module in vae.modules():
            if isinstance(module, ResnetBlock2D):
                module.conv2.weight.zero_()
                module.conv2.bias.zero_()
        # The second half of quant_conv's outputs is the posterior log-variance: pin it to the
        # minimum so encoding is (near) deterministic.
        vae.quant_conv.weight[vae.config.latent_channels :].zero_()
        vae.quant_conv.bias[vae.config.latent_channels :].fill_(-30.0)


def _text_encoder(tokenizer: CLIPTokenizer, *, projection: bool = False, seed: int = 0) -> CLIPTextModel:
    """A small random CLIP text encoder; with `projection`, one that also gives the pooled, projected
    embedding SDXL's second text encoder gives."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=32,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _vae() -> AutoencoderKL:
    torch.manual_seed(0)
    # Four blocks give the same 8x downscale as real SD, so sizes and latents behave the same.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=512,
        # SD scales latents to about unit variance (its 0.18215); this VAE's latents have std ~0.26.
        scaling_factor=4.0,
        # Attention over every latent pixel is the slowest part of a decode and adds nothing untrained.
        mid_block_add_attention=False,
    )
    _make_vae_faithful(vae)
    return vae


def _unet(model: TinyModel, *, inpainting: bool = False) -> UNet2DConditionModel:
    """The UNet of a family's shape: what its pipelines and our code read of it (the working side
    its sample size gives, SD 2's linear projections, SDXL's pooled-text conditioning)."""
    shape: dict = {
        "sample_size": model.side // 8,  # in latents: the VAE downscales 8×
        "cross_attention_dim": 32,
        "attention_head_dim": 2,
    }
    if model.family == "sd2":
        shape |= {"use_linear_projection": True, "attention_head_dim": (2, 4)}
    elif model.family == "sdxl":
        shape |= {
            "use_linear_projection": True,
            # The two text encoders' features side by side.
            "cross_attention_dim": 64,
            # SDXL conditions on the pooled text embedding (32) and six size numbers (8 each).
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 6 * 8 + 32,
        }
    torch.manual_seed(0)
    return UNet2DConditionModel(
        in_channels=9 if inpainting else 4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        **shape,
    )


def _build(folder: Path, model: TinyModel, *, inpainting: bool = False) -> None:
    tokenizer = byte_level_tokenizer()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        # SD 2's 768-px models predict the velocity, not the noise.
        prediction_type="v_prediction" if model.family == "sd2" else "epsilon",
    )
    parts = {"vae": _vae(), "unet": _unet(model, inpainting=inpainting), "scheduler": scheduler}
    if model.family == "sdxl":
        pipeline_class = StableDiffusionXLInpaintPipeline if inpainting else StableDiffusionXLPipeline
        parts |= {
            "text_encoder": _text_encoder(tokenizer),
            "tokenizer": tokenizer,
            "text_encoder_2": _text_encoder(tokenizer, projection=True, seed=1),
            "tokenizer_2": tokenizer,
        }
    else:
        pipeline_class = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
        parts |= {
            "text_encoder": _text_encoder(tokenizer),
            "tokenizer": tokenizer,
            "safety_checker": None,
            "feature_extractor": None,
            "requires_safety_checker": False,
        }
    pipeline_class(**parts).save_pretrained(folder)


def ensure_tiny_model(cache_dir: Path, name: str = "tiny", *, inpainting: bool = False) -> Path:
    """Return the folder of the built-in model `name` (one of catalog.TINY_MODELS), or of its inpainting twin
    (a UNet that also takes the mask and the masked image, 9 input channels, as SD's inpainting
    models: for tests of IMAGEGEN_INPAINT_MODEL), building it once if needed."""
    cache_dir = Path(cache_dir)
    dirname = f"{name}{'-inpainting' if inpainting else ''}{VERSION_SUFFIX}"
    target = cache_dir / dirname
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename into place, so a concurrent reader never sees a
    # half-written model; rename is atomic on the same filesystem.
    staging = cache_dir / f".{dirname}-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        _build(staging, TINY_MODELS[name], inpainting=inpainting)
        os.replace(staging, target)
    except OSError:
        # Another process renamed its copy first (the target is now a non-empty folder): use theirs.
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
