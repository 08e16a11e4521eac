"""Compiled mode on the CPU: torch.compile of the tiny model's UNet gives the images eager mode gives,
keeps its caches in the model cache folder, and falls back to eager when compiling fails."""

import logging

import numpy as np
import pytest
import torch
from django.conf import settings
from PIL import Image

from imagegen.engine import Engine, GenerationRequest

# Compiled kernels add up in another order, and fused QKV projections round once less.
PIXEL_TOLERANCE = 3


def request(**overrides: object) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red fox", "steps": 3, "width": 64, "height": 64, "seed": 7, **overrides})


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def eager() -> Engine:
    return Engine("tiny", cache_dir=settings.IMAGEGEN_MODEL_CACHE, compile="off")


def test_the_compiled_unet_gives_the_eager_images_and_keeps_its_caches_in_the_model_folder(eager: Engine) -> None:
    # The model cache folder is the tests' own (var/models unless set), so reruns reuse the compile.
    compiled = Engine("tiny", cache_dir=settings.IMAGEGEN_MODEL_CACHE, compile="on")
    compiled.warm_up(sizes=[(64, 64)], batch_sizes=[1])
    assert compiled.compile
    assert isinstance(compiled.pipeline.unet, torch._dynamo.eval_frame.OptimizedModule)
    for given in (request(), request(prompt="a blue whale", seed=8, scheduler="dpmpp_2m")):
        difference = as_array(compiled.generate(given).images[0]) - as_array(eager.generate(given).images[0])
        assert np.abs(difference).max() <= PIXEL_TOLERANCE
    cache = settings.IMAGEGEN_MODEL_CACHE / "torch-compile"
    assert any(path.is_file() for path in cache.rglob("*"))

    # A reference job runs its own attention on the uncompiled UNet, then the compiled one is back.
    reference = request(reference_image=Image.new("RGB", (64, 64), (200, 40, 40)), reference_weight=0.8)
    difference = as_array(compiled.generate(reference).images[0]) - as_array(eager.generate(reference).images[0])
    assert np.abs(difference).max() <= PIXEL_TOLERANCE
    assert isinstance(compiled.pipeline.unet, torch._dynamo.eval_frame.OptimizedModule)


def test_a_compile_that_fails_logs_once_and_the_worker_runs_eager(
    eager: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(torch.nn.Module):
        def __init__(self, unet: torch.nn.Module) -> None:
            super().__init__()
            self._orig_mod = unet

        def forward(self, *args, **kwargs):
            raise RuntimeError("inductor: C++ compile error (as on a host without a compiler)")

        def __getattr__(self, name: str):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self._orig_mod, name)

    monkeypatch.setattr(torch, "compile", lambda module, **options: Broken(module))
    engine = Engine("tiny", cache_dir=settings.IMAGEGEN_MODEL_CACHE, compile="on")
    with caplog.at_level(logging.ERROR, logger="imagegen.engine"):
        engine.warm_up(sizes=[(64, 64)], batch_sizes=[1, 2])
    failures = [record for record in caplog.records if "runs it uncompiled" in record.getMessage()]
    assert len(failures) == 1
    assert not engine.compile
    difference = as_array(engine.generate(request()).images[0]) - as_array(eager.generate(request()).images[0])
    assert np.abs(difference).max() <= PIXEL_TOLERANCE  # its projections stay fused: a level or two
    assert not isinstance(engine.pipeline.unet, Broken)
