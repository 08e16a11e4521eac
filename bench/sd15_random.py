"""Stable Diffusion 1.5's exact architecture with random weights, built locally for benchmarks without downloads.

Speed and memory depend on the architecture and dtype, not on the weights' values, so this model
times and sizes like the real SD 1.5 (UNet 860M, text encoder 123M, VAE 84M parameters). It is
saved once, in float16 safetensors (about 2.1 GB), to var/models/sd15-random-v1.

The tokenizer is the tiny model's byte-level one (514 tokens, one per character) instead of
CLIP's 49,408 BPE tokens; the text encoder keeps SD 1.5's 49,408-row embedding, so its size and
speed match and every token id fits. Prompts tokenize into more tokens than with CLIP's BPE, but
all are padded or truncated to 77 anyway.
"""

import argparse
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from bench.engine_common import MODELS_DIR
from imagegen.engine.tiny import byte_level_tokenizer

NAME = "sd15-random"
# Bump the suffix whenever the architecture changes so stale caches are not reused.
DIRNAME = "sd15-random-v1"
# The saved model takes about 2.1 GB; building stages a second copy beside the target.
MIN_FREE_BYTES = 5 * 1024**3
SD15_VOCAB_SIZE = 49408


class NotEnoughDiskError(RuntimeError):
    """Too little free disk space to save the model."""


def build_pipeline() -> StableDiffusionPipeline:
    """Return a float32 StableDiffusionPipeline with SD 1.5's configuration and random weights."""
    tokenizer = byte_level_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32,
        flip_sin_to_cos=True,
        freq_shift=0,
        act_fn="silu",
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=512,
        scaling_factor=0.18215,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            vocab_size=SD15_VOCAB_SIZE,
            hidden_act="quick_gelu",
            projection_dim=768,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # SD 1.5's own scheduler config; the engine replaces the scheduler per job anyway.
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def ensure_sd15_random(cache_dir: Path = MODELS_DIR) -> Path:
    """Return the folder of the saved model, building it once if needed (raises NotEnoughDiskError)."""
    cache_dir = Path(cache_dir)
    target = cache_dir / DIRNAME
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache_dir).free
    if free < MIN_FREE_BYTES:
        raise NotEnoughDiskError(
            f"Not building {DIRNAME}: {free / 1024**3:.1f} GB free in {cache_dir}, it needs "
            f"{MIN_FREE_BYTES / 1024**3:.0f} GB (2.1 GB saved plus room to stage it)."
        )
    # Build beside the target and rename into place, so a concurrent reader never sees a half-written model.
    staging = cache_dir / f".{DIRNAME}-{uuid.uuid4().hex}"
    try:
        pipe = build_pipeline()
        pipe.to(torch.float16)
        pipe.save_pretrained(staging, safe_serialization=True)
        os.replace(staging, target)
    except OSError:
        # Another process renamed its copy first (the target is now a non-empty folder): use theirs.
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def model_source(model: str) -> str:
    """Map a benchmark's --model to what Engine takes: "sd15-random" becomes its saved folder."""
    return str(ensure_sd15_random()) if model == NAME else model


def main() -> None:
    parser = argparse.ArgumentParser(description="Build and save the random-weight SD 1.5 model once.")
    parser.parse_args()
    started = time.perf_counter()
    folder = ensure_sd15_random()
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"{folder}: {size / 1024**3:.2f} GiB on disk, ready in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
