"""Load a Stable Diffusion model once per process and run text-to-image and image-to-image jobs on it."""

import gc
import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.models.attention_processor import FusedAttnProcessor2_0
from PIL import Image
from safetensors.torch import load_file

from .addons import AddOnError, AddOnFolder, PromptLora
from .catalog import TINY_MODELS
from .errors import GenerationCancelled, ModelLoadError, OutOfMemoryError
from .families import is_sdxl, latent_rgb_factors, working_side
from .ip_adapter import DEFAULT_IP_ADAPTER_SCALE, IPAdapter, ip_adapter_attention, load_ip_adapter
from .metadata import format_parameters
from .previews import PreviewPacer, job_preview
from .prompts import PromptEncoder
from .reference import reference_attention, unfused_processor
from .requests import SAMPLER_LABELS, GenerationRequest, effective_steps, hires_size, image_seed
from .tiny import ensure_tiny_model

logger = logging.getLogger("imagegen.engine")
# torchsde (DPM++ SDE's noise) warns at every job that a time is past its interval's end by a
# float rounding (4.116698265075684 against 4.116698); it is harmless, and A1 prints it too.
warnings.filterwarnings("ignore", message="Should have tb<=t1", module="torchsde")

_SCHEDULER_CLASSES: dict[str, type] = {
    "euler_a": EulerAncestralDiscreteScheduler,
    "euler": EulerDiscreteScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "dpmpp_2m_karras": DPMSolverMultistepScheduler,
    "dpmpp_sde_karras": DPMSolverSDEScheduler,  # needs torchsde
    "ddim": DDIMScheduler,
    "unipc": UniPCMultistepScheduler,
    "heun": HeunDiscreteScheduler,
    "lms": LMSDiscreteScheduler,  # needs scipy
    "lcm": LCMScheduler,
    "pndm": PNDMScheduler,
}
# Sampler key → (label printed in parameters, diffusers scheduler class).
SCHEDULERS: dict[str, tuple[str, type]] = {key: (SAMPLER_LABELS[key], cls) for key, cls in _SCHEDULER_CLASSES.items()}

# What makes a scheduler the sampler A1 names, whatever the model's own scheduler config says
# (a model may ship a DPM-Solver config of another order or algorithm, or Karras sigmas on).
_DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}
_SCHEDULER_OVERRIDES: dict[str, dict[str, Any]] = {
    "euler": {"use_karras_sigmas": False},
    "dpmpp_2m": _DPMPP_2M | {"use_karras_sigmas": False},
    "dpmpp_2m_karras": _DPMPP_2M | {"use_karras_sigmas": True},
    "dpmpp_sde_karras": {"use_karras_sigmas": True},
    "heun": {"use_karras_sigmas": False},
    "lms": {"use_karras_sigmas": False},
    # PNDM's Runge-Kutta warm-up adds extra model calls (and fails for very few steps); SD's own
    # configs skip it, and so must we for a model saved with another scheduler, or the step
    # count would no longer match what the user asked for.
    "pndm": {"skip_prk_steps": True},
}
# LCM picks its steps from the 50 its models were distilled on, and refuses more than those.
_LCM_ORIGINAL_STEPS = 50

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Error texts of allocation failures that PyTorch reports as plain RuntimeErrors (CPU, MPS, Windows).
_OOM_MARKERS = ("out of memory", "can't allocate memory", "not enough memory")

StepCallback = Callable[[int, int, Image.Image | None], None]

_load_count = 0

# In compiled mode, how many shapes torch compiles the UNet for before it runs new ones uncompiled.
RECOMPILE_LIMIT = 8

# Every torch call of the process runs on this one thread. torch's CPU backend (OpenMP, libgomp)
# gives each thread that calls into it a team of threads of its own, and once a process holds
# more of those than it has cores, libgomp stops spin-waiting between operations: a worker that
# warmed up on its main thread and ran jobs on a pool thread sampled 45 % slower on 2 cores.
_torch_local = threading.local()
_torch_thread = ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="torch", initializer=lambda: setattr(_torch_local, "here", True)
)


def _on_the_torch_thread_now() -> bool:
    return getattr(_torch_local, "here", False)


def on_torch_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Call function(*args) on the process's torch thread and return its result."""
    if _on_the_torch_thread_now():
        return function(*args)
    return _torch_thread.submit(function, *args).result()


_engines: dict[tuple, "Engine"] = {}
_engines_lock = threading.Lock()


@dataclass
class GenerationResult:
    """Images of one job plus what is needed to reproduce and describe them."""

    images: list[Image.Image]
    seed: int
    total_steps: int
    image_parameters: list[str]  # each image's parameters, as its PNG carries them (each has its own seed)
    seconds: float
    model: str  # the name of the model that made them (an inpainting checkpoint's, for a masked job)
    sampler: str  # its label, as parameters print it
    # How the job followed its reference image, for parameters to print: "" (no reference),
    # "reference-only 0.5" (the request's weight) or "IP-Adapter 0.6" (the engine's scale).
    reference: str = ""

    @property
    def parameters(self) -> str:
        """The first image's parameters (a job of one image has no other)."""
        return self.image_parameters[0]


def model_load_count() -> int:
    """Return how many times this process has loaded a model from disk or the hub."""
    return _load_count


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        # Half precision halves memory and is much faster on accelerators; CPUs lack fast fp16 kernels.
        return torch.float32 if device == "cpu" else torch.float16
    if dtype not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of auto, {', '.join(_DTYPES)}.")
    return _DTYPES[dtype]


def _is_out_of_memory(exc: RuntimeError) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or any(m in str(exc) for m in _OOM_MARKERS)


class Engine:
    """A Stable Diffusion model loaded lazily once, with the pipelines that share its weights."""

    def __init__(
        self,
        model: str = "tiny",
        *,
        device: str = "auto",
        dtype: str = "auto",
        cache_dir: str | Path,
        inpaint_model: str | None = None,
        ip_adapter: str | Path | None = None,
        ip_adapter_scale: float = DEFAULT_IP_ADAPTER_SCALE,
        compile: str = "off",
        lora_dir: str | Path | None = None,
    ) -> None:
        self.model = model
        self.cache_dir = Path(cache_dir)
        self.device = resolve_device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
        self.is_tiny = model in TINY_MODELS
        # Compiled mode (see _compile): "on", "off", or "auto" (on with a CUDA GPU).
        if compile not in ("on", "off", "auto"):
            raise ValueError(f"compile must be on, off or auto, not {compile!r}.")
        self.compile = compile == "on" or (compile == "auto" and self.device.startswith("cuda"))
        self.model_name = _model_name(model)
        # An inpainting checkpoint (a UNet that also takes the mask) for masked edits; without one,
        # the model's own UNet inpaints through a derived pipeline.
        self.inpaint_model = inpaint_model or None
        self._inpaint_checkpoint: DiffusionPipeline | None = None
        # IP-Adapter weights (a file, its image encoder in image_encoder/ beside it) for jobs with a
        # reference image; without them those jobs use reference-only attention.
        if ip_adapter_scale < 0:
            raise ValueError(f"The IP-Adapter scale must be 0 or more, not {ip_adapter_scale}.")
        self.ip_adapter = str(ip_adapter) if ip_adapter else None
        self.ip_adapter_scale = ip_adapter_scale
        self._ip_adapter: IPAdapter | None = None
        # LoRAs and textual-inversion embeddings that prompts name (see addons).
        self.addons = AddOnFolder(lora_dir)
        self._pipeline: DiffusionPipeline | None = None
        self._derived: dict[type, DiffusionPipeline] = {}
        self._scheduler_config: Any = None
        # Reentrant because the derived-pipeline properties load the base pipeline under it;
        # it also serialises jobs, since pipelines keep per-run state (scheduler, interrupt flag).
        self._lock = threading.RLock()

    def load(self) -> None:
        """Load the model unless it is already loaded."""
        if self._pipeline is None:
            on_torch_thread(self._load)

    @property
    def loaded(self) -> bool:
        return self._pipeline is not None

    def unload(self) -> None:
        """Let go of the model's weights (and its inpainting checkpoint's and IP-Adapter's); a
        later job loads it again."""
        on_torch_thread(self._unload)

    def _unload(self) -> None:
        with self._lock:
            self._pipeline, self._derived, self._inpaint_checkpoint, self._ip_adapter = None, {}, None, None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def weight_bytes(self) -> int:
        """The memory the loaded weights take (0 when not loaded): the model's modules, shared by
        its derived pipelines, and an inpainting checkpoint's."""
        modules = {
            id(module): module
            for pipe in (self._pipeline, self._inpaint_checkpoint)
            if pipe is not None
            for module in pipe.components.values()
            if isinstance(module, torch.nn.Module)
        }
        return sum(
            tensor.numel() * tensor.element_size()
            for module in modules.values()
            for tensor in (*module.parameters(), *module.buffers())
        )

    def _load(self) -> None:
        global _load_count
        with self._lock:
            if self._pipeline is not None:
                return
            dtype_name = str(self.dtype).removeprefix("torch.")
            logger.info("Loading model %s on %s (%s)", self.model_name, self.device, dtype_name)
            with _engines_lock:
                _load_count += 1
            source = ensure_tiny_model(self.cache_dir, self.model) if self.is_tiny else self.model
            # The family's own pipelines (SD 1.x and 2.x, SDXL), as the model's folder names them.
            pipe = self._from_pretrained(AutoPipelineForText2Image, source, setting="IMAGEGEN_MODEL")
            # Jobs build their schedulers from the model's own config, never from a previous job's.
            self._scheduler_config = pipe.scheduler.config
            if self.compile:
                self._compile(pipe)
            self._pipeline = pipe

    def _compile(self, pipe: DiffusionPipeline) -> None:
        """Compiled mode: the UNet in channels_last with its attention's query, key and value
        projections fused, under torch.compile (CUDA graphs on a CUDA GPU).

        torch compiles on the UNet's first call at each new shape, which is why workers warm up
        (warm_up) before taking jobs. Its caches live in the model cache folder, so a restart
        reuses what an earlier start compiled. Compiling is best effort: a failure here or at the
        warm-up logs once and the worker runs the UNet uncompiled, and a later shape that fails
        to compile runs uncompiled (torch._dynamo's suppress_errors); past RECOMPILE_LIMIT shapes,
        torch runs new ones uncompiled instead of compiling again.
        """
        # Read by inductor at each use (the FX graph, autotuning and Triton caches live under it).
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.cache_dir / "torch-compile")
        torch._dynamo.config.suppress_errors = True
        torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
        mode = "reduce-overhead" if self.device.startswith("cuda") else None
        try:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.fuse_qkv_projections(vae=False)
            pipe.unet = torch.compile(pipe.unet, mode=mode)
        except Exception:
            logger.exception("Could not compile the UNet; it runs uncompiled")
            self.compile = False

    def _uncompile(self) -> None:
        """Run the uncompiled UNet from now on, in every pipeline that shares it."""
        for pipe in (self._pipeline, *self._derived.values()):
            pipe.unet = getattr(pipe.unet, "_orig_mod", pipe.unet)
        self.compile = False

    def warm_up(self, *, sizes: list[tuple[int, int]], batch_sizes: list[int]) -> None:
        """Make a short text-to-image batch at each size and batch size, so no user's job pays
        torch's one-time set-up, nor (in compiled mode) a compile: torch compiles the first batch
        size it meets (and 1) for that size alone and the next with a dynamic batch dimension,
        which then serves every other size.

        A compile that fails here logs once and the worker goes on uncompiled.
        """
        for width, height in sizes:
            for batch_size in batch_sizes:
                requests = [
                    GenerationRequest(prompt="", steps=2, width=width, height=height, seed=seed)
                    for seed in range(batch_size)
                ]
                started = time.perf_counter()
                try:
                    self.generate_batch(requests)
                except Exception:
                    if not self.compile:
                        raise
                    logger.exception("The compiled UNet failed at its warm-up; this worker runs it uncompiled")
                    on_torch_thread(self._uncompile)
                    self.generate_batch(requests)
                logger.info(
                    "Warmed up at %sx%s, batches of %s%s in %.1f s",
                    width,
                    height,
                    batch_size,
                    " (compiled)" if self.compile else "",
                    time.perf_counter() - started,
                )

    def _from_pretrained(self, cls: type[DiffusionPipeline], source, *, setting: str) -> DiffusionPipeline:
        """A pipeline loaded from a folder or the hub onto this engine's device; `setting` names the
        setting to check when it cannot be loaded."""
        try:
            # SD 1.x and 2.x models may come with a safety checker, which is never loaded (it would
            # blank images); SDXL's pipelines have none, and warn at being told about one.
            has_checker = "safety_checker" in cls.load_config(source)
            no_checker = {"safety_checker": None, "requires_safety_checker": False} if has_checker else {}
            pipe = cls.from_pretrained(source, dtype=self.dtype, **no_checker)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"Could not load model {str(source)!r}: {exc}. Check {setting}.") from exc
        pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @property
    def pipeline(self) -> DiffusionPipeline:
        """The text-to-image pipeline, loading the model on first use."""
        self.load()
        return self._pipeline

    @property
    def working_side(self) -> int:
        """The short side, in pixels, the model works best at (see families.working_side)."""
        return working_side(self.pipeline)

    @property
    def img2img_pipeline(self) -> DiffusionPipeline:
        """The image-to-image pipeline, sharing the text-to-image pipeline's weights."""
        return self._derive(AutoPipelineForImage2Image)

    @property
    def inpaint_pipeline(self) -> DiffusionPipeline:
        """The inpainting pipeline: the inpainting checkpoint's when one is set, else one sharing
        the text-to-image pipeline's weights."""
        if self.inpaint_model is None:
            return self._derive(AutoPipelineForInpainting)
        self.load()  # jobs take their scheduler from the main model's config
        with self._lock:
            if self._inpaint_checkpoint is None:
                logger.info("Loading inpainting model %s on %s", _model_name(self.inpaint_model), self.device)
                self._inpaint_checkpoint = self._from_pretrained(
                    AutoPipelineForInpainting, self.inpaint_model, setting="IMAGEGEN_INPAINT_MODEL"
                )
            return self._inpaint_checkpoint

    def _loaded_ip_adapter(self) -> IPAdapter:
        """The IP-Adapter's loaded parts, loading them on first use (on the torch thread, like every load)."""
        with self._lock:
            if self._ip_adapter is None:
                logger.info("Loading IP-Adapter %s on %s", self.ip_adapter, self.device)
                try:
                    self._ip_adapter = load_ip_adapter(self.pipeline, self.ip_adapter)
                except (OSError, ValueError, KeyError) as exc:
                    raise ModelLoadError(
                        f"Could not load the IP-Adapter {self.ip_adapter!r}: {exc}. Check IMAGEGEN_IP_ADAPTER."
                    ) from exc
            return self._ip_adapter

    def _conditioning(
        self, pipe: DiffusionPipeline, request: GenerationRequest
    ) -> tuple[AbstractContextManager, dict[str, Any], str]:
        """How a job follows its reference image: the context to call pipe in, the extra inputs of
        the call, and the description GenerationResult.reference gives of it."""
        if request.reference_image is None:
            return nullcontext(), {}, ""
        if self.ip_adapter is not None:
            adapter = self._loaded_ip_adapter()
            context = ip_adapter_attention(pipe, adapter, scale=self.ip_adapter_scale)
            inputs = {"ip_adapter_image": request.reference_image.convert("RGB")}
            described = f"IP-Adapter {self.ip_adapter_scale:g}"
        else:
            context = reference_attention(
                pipe, request.reference_image, weight=request.reference_weight, seed=request.seed
            )
            inputs, described = {}, f"reference-only {request.reference_weight:g}"
        # Both swap the UNet's attention processors for the call, which a compiled UNet would
        # recompile for at every job: they run on the uncompiled one (entered first, so they see it).
        return _stacked(_uncompiled_unet(pipe), context), inputs, described

    def _prompt_texts(self, pipe: DiffusionPipeline, texts: list[str]) -> list[str]:
        """The texts as pipe's tokenizer is to read them: each embedding they name loaded (see
        _load_embeddings) and, when it has several vectors, written out as its several tokens (what
        diffusers does for prompts it encodes itself; ours go to the pipeline as embeddings)."""
        if self._load_embeddings(pipe, texts):
            return [pipe.maybe_convert_prompt(text, pipe.tokenizer) for text in texts]
        return texts

    def _load_embeddings(self, pipe: DiffusionPipeline, texts: list[str]) -> bool:
        """Load into pipe's tokenizer and text encoder the folder's embeddings that the texts name
        and it lacks; whether pipe has any. They stay loaded: a word calls its embedding in every
        later prompt, as it would have if loaded at start (the tokenizer matches added words
        anywhere in a text, so any text containing the name loads it)."""
        files = self.addons.embedding_files()
        if not files:
            return bool(pipe.tokenizer.get_added_vocab())
        loaded = pipe.tokenizer.get_added_vocab()
        for name, path in files.items():
            if name in loaded or not any(name in text for text in texts):
                continue
            logger.info("Loading embedding %s", name)
            try:
                if is_sdxl(pipe):
                    _load_sdxl_embedding(pipe, path, name)
                else:
                    pipe.load_textual_inversion(str(path), token=name)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                logger.error("Could not load the embedding %s from %s: %s", name, path, exc)
                raise AddOnError(f"The embedding {name!r} could not be loaded.") from exc
        return bool(pipe.tokenizer.get_added_vocab())

    @contextmanager
    def _loras_applied(self, pipe: DiffusionPipeline, loras: tuple[PromptLora, ...]) -> Iterator[None]:
        """Within the block, pipe's UNet and text encoder carry the LoRAs at their weights; after
        it, none (the next job gets the model's own weights)."""
        if not loras:
            yield
            return
        adapters: list[str] = []
        # LoRA layers replace the UNet's modules, which a compiled UNet would recompile for at
        # every job, and project queries, keys and values separately, which fused attention skips.
        with _stacked(_uncompiled_unet(pipe), _separate_projections(pipe)):
            try:
                for index, lora in enumerate(loras):
                    path = self.addons.lora_file(lora.name)
                    try:
                        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=f"lora{index}")
                    except (OSError, ValueError, KeyError, RuntimeError) as exc:
                        logger.error("Could not load the LoRA %s from %s: %s", lora.name, path, exc)
                        raise AddOnError(f"The LoRA {lora.name!r} could not be loaded.") from exc
                    adapters.append(f"lora{index}")
                pipe.set_adapters(adapters, adapter_weights=[lora.weight for lora in loras])
                yield
            finally:
                if adapters:
                    pipe.unload_lora_weights()

    def _derive(self, cls: type) -> DiffusionPipeline:
        """The pipeline of the model's family for another task (an AutoPipeline class), sharing the
        text-to-image pipeline's modules as they are (AutoPipelines' from_pipe neither copies nor casts them)."""
        with self._lock:
            if cls not in self._derived:
                pipe = cls.from_pipe(self.pipeline)
                pipe.set_progress_bar_config(disable=True)
                self._derived[cls] = pipe
            return self._derived[cls]

    def generate(
        self, request: GenerationRequest, *, on_step: StepCallback | None = None, preview_every: int = 0
    ) -> GenerationResult:
        """Run one job; on_step(step, total, preview) may raise GenerationCancelled to stop it."""
        (result,) = self.generate_batch([request], on_steps=[on_step], preview_every=preview_every)
        if result is None:
            raise GenerationCancelled("Cancelled.")
        return result

    def generate_batch(
        self,
        requests: list[GenerationRequest],
        *,
        on_steps: list[StepCallback | None] | None = None,
        preview_every: int = 0,
    ) -> list[GenerationResult | None]:
        """Run several jobs that can share one pipeline call (see `batch_key`) as one call (or one
        call per length of their encoded prompts, see _generate).

        Each image has a generator of its own, seeded with its request's seed plus its place in
        the request's batch, so every job's images are those it makes alone. Each request has
        its own step callback; one that raises GenerationCancelled drops its job, whose result is
        None (its images are discarded; the others' go on), and once every job is dropped the
        call stops. The call runs on the torch thread; the callbacks run on the caller's thread
        (their database connections are that thread's), between two steps exactly as if inline.
        """
        keys = [batch_key(request) for request in requests]
        if len(requests) > 1 and (None in keys or len(set(keys)) > 1):
            raise ValueError("These requests cannot share one pipeline call.")
        callbacks = list(on_steps) if on_steps is not None else [None] * len(requests)
        if all(callback is None for callback in callbacks) or _on_the_torch_thread_now():
            return on_torch_thread(self._generate, requests, callbacks, preview_every)
        calls: queue.SimpleQueue = queue.SimpleQueue()
        verdicts: queue.SimpleQueue = queue.SimpleQueue()

        def relay(index: int) -> StepCallback:
            def on_step(step: int, total: int, preview: Image.Image | None) -> None:
                # On the torch thread: hand the step to the caller and wait until it has dealt with it.
                calls.put((callbacks[index], step, total, preview))
                error = verdicts.get()
                if error is not None:
                    raise error

            return on_step

        relays = [relay(index) if callback else None for index, callback in enumerate(callbacks)]
        job = _torch_thread.submit(self._generate, requests, relays, preview_every)
        job.add_done_callback(lambda _: calls.put(None))
        while (call := calls.get()) is not None:
            callback, *arguments = call
            try:
                callback(*arguments)
            except BaseException as error:
                verdicts.put(error)
            else:
                verdicts.put(None)
        return job.result()

    def _generate(
        self, requests: list[GenerationRequest], on_steps: list[StepCallback | None], preview_every: int
    ) -> list[GenerationResult | None]:
        if len(requests) == 1:
            return self._generate_call(requests, on_steps, preview_every)
        # Jobs that share calls never take an inpainting checkpoint (masked jobs cannot share): the
        # model's own text encoder reads their prompts.
        pipe = self.pipeline
        prompts = PromptEncoder(pipe, clip_skip=requests[0].clip_skip)
        with self._lock, torch.inference_mode():
            # One look at the embeddings folder for the whole batch: prompts, then negative prompts.
            texts = self._prompt_texts(
                pipe, [request.prompt_text for request in requests] + [request.negative_prompt for request in requests]
            )
            count = len(requests)
            lengths = [prompts.length(*pair) for pair in zip(texts[:count], texts[count:], strict=True)]
        # A prompt padded to a longer companion's length (a call's prompts must have one length) would
        # make other images than it makes alone: jobs whose prompts fill another number of 77-token
        # windows get a call of their own, one after the other.
        results: list[GenerationResult | None] = [None] * len(requests)
        for length in dict.fromkeys(lengths):
            group = [index for index, each in enumerate(lengths) if each == length]
            outcomes = self._generate_call(
                [requests[index] for index in group], [on_steps[index] for index in group], preview_every, prompts
            )
            for index, result in zip(group, outcomes, strict=True):
                results[index] = result
        return results

    def _generate_call(
        self,
        requests: list[GenerationRequest],
        on_steps: list[StepCallback | None],
        preview_every: int,
        prompts: PromptEncoder | None = None,
    ) -> list[GenerationResult | None]:
        """One pipeline call; `prompts` encodes the requests' prompts when the caller has one already."""
        first = requests[0]  # the requests agree on everything batch_key names
        img2img = first.init_image is not None
        inpaint = first.mask_image is not None
        total = first.total_steps
        width, height = first.init_image.size if img2img else (first.width, first.height)
        sampler, _ = SCHEDULERS[first.scheduler]
        # Where each request's images lie in the batch.
        offsets = [sum(request.batch_size for request in requests[:index]) for index in range(len(requests))]
        dropped: set[int] = set()
        previews = PreviewPacer(preview_every)
        step = 0
        # The step the current pass ends at (a hires fix's second pass goes on counting to total).
        pass_end = effective_steps(first.steps, first.strength if img2img else None)

        def callback(pipe: DiffusionPipeline, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            nonlocal step
            # A second-order sampler (Heun, DPM++ SDE) calls the model twice a step, and the pipeline
            # calls back after each: a step is done once the sampler is back at its first half (Heun's
            # last step, down to no noise, has only one).
            halfway = not getattr(pipe.scheduler, "state_in_first_order", True) and index < pipe.num_timesteps - 1
            # PNDM's warm-up evaluates one timestep twice, so its pipeline calls back once more than
            # there are steps: report each step once and never past the pass's end.
            if step == pass_end or halfway:
                return tensors
            step += 1
            due = previews.due(step)
            for job, on_step in enumerate(on_steps):
                if on_step is None or job in dropped:
                    continue
                count = requests[job].batch_size
                preview = (
                    job_preview(tensors["latents"], start=offsets[job], count=count, factors=latent_rgb_factors(pipe))
                    if due
                    else None
                )
                try:
                    on_step(step, total, preview)
                except GenerationCancelled:
                    dropped.add(job)
            if len(dropped) == len(requests):
                # Interrupting lets the pipeline wind down cleanly; raising here would skip its cleanup.
                pipe._interrupt = True
            return tensors

        def each(value: Callable[[GenerationRequest], Any]) -> list[Any]:
            """One value per image of the batch: each request's, repeated over its images."""
            return [value(request) for request in requests for _ in range(request.batch_size)]

        def call(
            pipe: DiffusionPipeline, steps: int, inputs: dict[str, Any], size: tuple[int, int]
        ) -> tuple[Any, float, str]:
            """One pipeline call over the whole batch: (its output, its seconds, the reference's description)."""
            return self._call(
                pipe,
                first,
                prompts=each(lambda request: request.prompt_text),
                negative_prompts=each(lambda request: request.negative_prompt),
                seeds=[image_seed(request.seed, place) for request in requests for place in range(request.batch_size)],
                steps=steps,
                callback=callback if any(on_steps) else None,
                previews=preview_every > 0,
                inputs=inputs,
                size=size,
                encoder=prompts if pipe.text_encoder is self.pipeline.text_encoder else None,
            )

        if img2img:
            pipe = self.inpaint_pipeline if inpaint else self.img2img_pipeline
            image = torch.cat(each(lambda request: _pixels(request.init_image, "RGB")))
            inputs = {"image": image, "strength": _pipeline_strength(first.steps, first.strength)}
            if inpaint:
                inputs |= {"mask_image": _pixels(first.mask_image, "L"), "width": width, "height": height}
                if pipe.unet.config.in_channels == 4:
                    # Only a UNet that takes the masked image (an inpainting checkpoint's) needs it
                    # encoded: giving the pipeline latents instead spares a VAE encode.
                    latent_size = (height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
                    inputs["masked_image_latents"] = torch.zeros(len(image), 4, *latent_size, dtype=self.dtype)
        else:
            pipe = self.pipeline
            inputs = {"width": width, "height": height}
        output, seconds, reference = call(pipe, first.steps, inputs, (width, height))
        images = output.images
        # The size actually produced: the pipelines round sides down to a multiple of 8.
        width, height = images[0].size

        hires = first.hires
        if hires is not None and len(dropped) < len(requests):
            # The second pass: the first images upscaled in pixel space (what works with any model,
            # no extra weights), then redrawn at that size by image to image with the same prompts,
            # seeds and sampler, so the detail a bigger picture needs is drawn, not interpolated.
            size = hires_size(width, height, hires.scale)
            upscaled = torch.cat([_pixels(image.resize(size, Image.Resampling.LANCZOS), "RGB") for image in images])
            pass_end = total
            inputs = {"image": upscaled, "strength": _pipeline_strength(hires.steps, hires.strength)}
            output, more_seconds, _ = call(self.img2img_pipeline, hires.steps, inputs, size)
            images, seconds = output.images, seconds + more_seconds

        model = _model_name(self.inpaint_model) if inpaint and self.inpaint_model else self.model_name
        results: list[GenerationResult | None] = []
        for job, request in enumerate(requests):
            if job in dropped:
                results.append(None)
                continue
            image_parameters = [
                format_parameters(
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt,
                    steps=request.steps,
                    sampler=sampler,
                    guidance_scale=request.guidance_scale,
                    seed=image_seed(request.seed, place),
                    width=width,  # with a hires fix, the first pass's size (as A1 writes it)
                    height=height,
                    model=model,
                    strength=request.strength if img2img else None,
                    hires=request.hires,
                    clip_skip=request.clip_skip,
                )
                for place in range(request.batch_size)
            ]
            results.append(
                GenerationResult(
                    images=images[offsets[job] : offsets[job] + request.batch_size],
                    seed=request.seed,
                    total_steps=total,
                    image_parameters=image_parameters,
                    seconds=seconds,
                    model=model,
                    sampler=sampler,
                    reference=reference,
                )
            )
        return results

    def _call(
        self,
        pipe: DiffusionPipeline,
        request: GenerationRequest,
        *,
        prompts: list[str],
        negative_prompts: list[str],
        seeds: list[int],
        steps: int,
        callback: Callable | None,
        previews: bool,
        inputs: dict[str, Any],
        size: tuple[int, int],
        encoder: PromptEncoder | None = None,
    ) -> tuple[Any, float, str]:
        """Call pipe once for a batch with the request's settings, a fresh scheduler and a generator
        per image: (its output, its seconds, how it followed the request's reference image).
        `encoder` reads the prompts when the caller has one for pipe's text encoder already."""
        _, scheduler_cls = SCHEDULERS[request.scheduler]
        conditioning, conditioning_inputs, reference = self._conditioning(pipe, request)
        texts = self._prompt_texts(pipe, [*prompts, *negative_prompts])
        # Generators on MPS are unreliable for reproducibility, so seed on the CPU there too.
        generator_device = self.device if self.device.startswith("cuda") else "cpu"
        generators = [torch.Generator(device=generator_device).manual_seed(seed) for seed in seeds]
        with self._lock:
            started = time.perf_counter()
            pipe.scheduler = _scheduler(request, scheduler_cls, self._scheduler_config, seeds)
            if encoder is None:
                # The pipe's own text encoder: an inpainting checkpoint may bring its own.
                encoder = PromptEncoder(pipe, clip_skip=request.clip_skip)
            try:
                # A LoRA may change the text encoder too: the prompts are read with it applied.
                with self._loras_applied(pipe, request.loras), torch.inference_mode(), conditioning:
                    embeddings = encoder.encode_batch(texts[: len(prompts)], texts[len(prompts) :])
                    output = pipe(
                        **embeddings,
                        num_inference_steps=steps,
                        guidance_scale=request.guidance_scale,
                        generator=generators,
                        callback_on_step_end=callback,
                        callback_on_step_end_tensor_inputs=["latents"] if previews else [],
                        **inputs,
                        **conditioning_inputs,
                    )
            except RuntimeError as exc:
                if _is_out_of_memory(exc):
                    # Give the failed job's memory back, so the next job starts from a clean slate.
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    width, height = size
                    raise OutOfMemoryError(
                        f"Out of memory at {width}x{height}: try a smaller size, fewer images or fewer steps."
                    ) from exc
                raise
            return output, time.perf_counter() - started, reference


def _load_sdxl_embedding(pipe: DiffusionPipeline, path: Path, name: str) -> None:
    """Load an SDXL embedding, which holds vectors for each text encoder ("clip_l" for the first,
    "clip_g" for the second, as A1 and ComfyUI save them), into both; raises KeyError for one made
    for SD 1.x or 2.x."""
    if path.suffix == ".safetensors":
        vectors = load_file(path)
    else:
        vectors = torch.load(path, map_location="cpu", weights_only=True)
    if not {"clip_l", "clip_g"} <= vectors.keys():
        raise KeyError("not an SDXL embedding: it has no clip_l and clip_g vectors")
    pipe.load_textual_inversion(vectors["clip_l"], token=name, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(
        vectors["clip_g"], token=name, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
    )


@contextmanager
def _uncompiled_unet(pipe: DiffusionPipeline) -> Iterator[None]:
    """Within the block, pipe runs its UNet uncompiled (the UNet itself when it is not compiled)."""
    unet = pipe.unet
    pipe.unet = getattr(unet, "_orig_mod", unet)
    try:
        yield
    finally:
        pipe.unet = unet


@contextmanager
def _separate_projections(pipe: DiffusionPipeline) -> Iterator[None]:
    """Within the block, pipe's attention projects queries, keys and values with the layers' own
    separate projections (which fusing keeps) instead of the fused one compiled mode installs."""
    unet = pipe.unet
    originals = unet.attn_processors
    if not any(isinstance(processor, FusedAttnProcessor2_0) for processor in originals.values()):
        yield
        return
    unet.set_attn_processor({name: unfused_processor(processor) for name, processor in originals.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(originals)


@contextmanager
def _stacked(*contexts: AbstractContextManager) -> Iterator[None]:
    """The contexts entered in order (each one sees what the ones before it set up), left in reverse."""
    with ExitStack() as stack:
        for context in contexts:
            stack.enter_context(context)
        yield


def _pipeline_strength(steps: int, strength: float) -> float:
    """The strength to give an image-to-image pipeline so that it runs effective_steps(steps, strength).

    diffusers runs int(steps * strength) steps and fails on 0; any strength in [1/steps, 2/steps)
    gives exactly one step at the lowest noise level, and the midpoint is safe from float rounding.
    """
    return strength if int(steps * strength) else min(1.0, 1.5 / steps)


def _scheduler(request: GenerationRequest, cls: type, config: Any, seeds: list[int]) -> Any:
    """A fresh scheduler of the request's sampler, from the model's scheduler config, for a call
    whose images have these seeds."""
    options = dict(_SCHEDULER_OVERRIDES.get(request.scheduler, {}))
    if request.scheduler == "dpmpp_sde_karras":
        # Its noise comes from Brownian trees that diffusers seeds at random unless told: one tree
        # per image, seeded like the image's generator, keeps each image repeatable and its own in a batch.
        options["noise_sampler_seed"] = seeds
    if request.scheduler == "lcm":
        options["original_inference_steps"] = max(_LCM_ORIGINAL_STEPS, request.steps)
    return cls.from_config(config, **options)


def batch_key(request: GenerationRequest) -> tuple | None:
    """What requests must agree on to share one pipeline call; None for one that cannot share
    (a mask, a reference image or a LoRA conditions the whole call)."""
    if request.mask_image is not None or request.reference_image is not None or request.loras:
        return None
    size = request.init_image.size if request.init_image is not None else (request.width, request.height)
    pipeline = "text-to-image" if request.init_image is None else "image-to-image"
    return (
        pipeline,
        request.strength,
        size,
        request.steps,
        request.scheduler,
        request.guidance_scale,
        request.clip_skip,
        request.hires,
    )


def _pixels(image: Image.Image, mode: str) -> torch.Tensor:
    """The image as the pipelines' image processors take a tensor: 1 × channels × H × W in [0, 1].

    Given a PIL image they would resize it to the size it already has, with LANCZOS, and only then
    convert it: about 17 ms for an image and as much for a mask at 512² (measured on an H100 host).
    """
    array = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def _model_name(model: str) -> str:
    """How parameters name a model: a local folder by its name, anything else as given."""
    return Path(model).name if Path(model).is_dir() else model


def get_engine(model: str, *, memory_budget: int | None = None, **options: Any) -> Engine:
    """Return this process's loaded Engine for this model and these options (Engine's keyword
    arguments: cache_dir, device, inpaint_model…), creating and loading it on first use.

    With a memory budget (bytes), the process keeps the engines it has loaded while their weights
    fit in it together, and unloads the ones used longest ago to make room: before loading a new
    one (assuming it is as large as the largest loaded) and again once it is loaded.
    """
    key = (model, *sorted((name, str(value)) for name, value in options.items()))
    with _engines_lock:
        engine = _engines.pop(key, None)
        if engine is None:
            engine = Engine(model, **options)
        _engines[key] = engine  # the most recently used last
    if engine.loaded:  # the usual case, every job: nothing to weigh
        return engine
    if memory_budget is not None:
        sizes = {id(other): other.weight_bytes() for other in loaded_engines()}
        _unload_over_budget(memory_budget - max(sizes.values(), default=0), sizes, keep=engine)
    engine.load()
    if memory_budget is not None:
        _unload_over_budget(memory_budget, sizes | {id(engine): engine.weight_bytes()}, keep=engine)
    return engine


def loaded_engines() -> list[Engine]:
    """The engines this process holds loaded, the one used longest ago first."""
    with _engines_lock:
        return [engine for engine in _engines.values() if engine.loaded]


def _unload_over_budget(budget: int, sizes: dict[int, int], *, keep: Engine) -> None:
    """Unload engines, the one used longest ago first, until the weights of those left (`sizes`,
    by engine id, measured once by the caller) fit in `budget`."""
    with _engines_lock:
        for key, engine in list(_engines.items()):
            if sum(sizes.values()) <= budget:
                return
            if engine is not keep and id(engine) in sizes:
                logger.info("Unloading model %s to make room (IMAGEGEN_MODEL_MEMORY_GB)", engine.model_name)
                engine.unload()
                del _engines[key]
                del sizes[id(engine)]
