"""Images, and the jobs that make them: the abstract Job lifecycle and the Run (one generation)."""

import hashlib
import uuid
from typing import ClassVar

from django.apps import apps
from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse

from .engine.requests import (
    DEFAULT_CLIP_SKIP,
    DEFAULT_SCHEDULER,
    MAX_CLIP_SKIP,
    SAMPLER_LABELS,
    HiresFix,
    hires_first_pass_size,
    image_seed,
)
from .validators import validate_hires_scale, validate_strength


class Image(models.Model):
    class Kind(models.TextChoices):
        UPLOAD = "upload", "Upload"
        OUTPUT = "output", "Output"
        REFINEMENT = "refinement", "Refinement result"
        REFERENCE = "reference", "Reference"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(upload_to="images/%Y/%m/", max_length=255)
    # A small WebP for cards and lists, made on first request (services.image_thumbnail_open); empty until then.
    thumbnail = models.FileField(upload_to="thumbnails/", max_length=255, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=10, default="PNG")
    sha256 = models.CharField(max_length=64, db_index=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, db_index=True)
    # Set for a run's outputs (its version 1): the run that made the image, and its place in the
    # batch. A refinement's result is linked from its Refinement instead.
    run = models.ForeignKey("Run", null=True, blank=True, on_delete=models.CASCADE, related_name="outputs")
    index = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "index"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.width}×{self.height} ({self.id})"

    @staticmethod
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    @property
    def seed(self) -> int | None:
        """The seed a run's output was made from (its place in the batch counts on from the run's
        seed); None for an image no run made (an upload, a refinement's result)."""
        if self.run_id is None or self.kind != self.Kind.OUTPUT:
            return None
        return image_seed(self.run.seed, self.index)


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobQuerySet(models.QuerySet):
    def owned_by(self, user) -> "JobQuerySet":
        return self.filter(owner=user)

    def generations(self) -> "JobQuerySet":
        """The jobs that count against the daily quota."""
        return self

    def current_attempt(self, job: "Job") -> "JobQuerySet":
        """The job's row while it is still running the attempt `job` claimed: what a worker's writes
        are conditioned on, so a worker whose job was requeued or cancelled changes nothing."""
        return self.filter(pk=job.pk, status=JobStatus.RUNNING, attempts=job.attempts, worker=job.worker)


class Job(models.Model):
    """What every queued piece of GPU work has: who asked, where it stands, and its history.

    A kind of job declares its Celery task and the names its pages use; the lifecycle
    (imagegen.services.jobs), the live card (templates/partials/job.html), the consumers and
    housekeeping then serve it without knowing which kind it is.
    """

    # The Celery task that runs this kind of job, given the job's id.
    task_name: ClassVar[str]
    # Element ids of the live card start with this ("run-<id>-progress").
    dom_prefix: ClassVar[str]
    # URL names of the live parts (polled without WebSockets) and of the cancel button.
    live_url_name: ClassVar[str]
    cancel_url_name: ClassVar[str]
    # The template partial that renders the live parts (what the WebSocket and polling send).
    live_template: ClassVar[str] = "partials/job.html#job-live"
    # Jobs of this kind equal in these fields can share one pipeline call (a batch); none: never.
    batch_fields: ClassVar[tuple[str, ...]] = ()
    # Jobs of this kind that never share a call, whatever their batch_fields; None: no such jobs.
    unbatchable: ClassVar[models.Q | None] = None
    # The images one job of this kind makes, over its row: what it costs of the daily quota (one
    # generation per image) and of a batch's room (IMAGEGEN_MAX_BATCH).
    image_count: ClassVar[models.F | models.Value] = models.Value(1)
    # The URL name (taking the job's id) that varies one of its images (POST, `image`); none: it offers none.
    variation_url_name: ClassVar[str] = ""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="%(class)ss")
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    step = models.PositiveIntegerField(default=0)
    # The steps the sampler really runs (image-to-image runs int(steps × strength)).
    total_steps = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # When the job's message last reached the broker; empty while the queue was unreachable.
    sent_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["-queued_at"]

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def dom_id(self) -> str:
        return f"{self.dom_prefix}-{self.pk}"

    def live_url(self) -> str:
        return reverse(self.live_url_name, args=[self.pk])

    def cancel_url(self) -> str:
        return reverse(self.cancel_url_name, args=[self.pk])

    def result_images(self) -> list[Image]:
        """The images the job made, once it has succeeded."""
        raise NotImplementedError

    @property
    def output_prefix(self) -> str:
        """Where the job's images are stored: every attempt's files start with this, and nothing else's."""
        raise NotImplementedError

    def result_fields(self, images: list[Image]) -> dict:
        """What to set on the job's row to link the images it made, as it succeeds."""
        return {}


def job_models() -> list[type[Job]]:
    """Every kind of job, whichever app defines it: the registry the lifecycle works through."""
    return [model for model in apps.get_models() if issubclass(model, Job)]


class RunQuerySet(JobQuerySet):
    def generations(self) -> "RunQuerySet":
        # An imported image costs no generation.
        return self.exclude(generation_type=Run.GenerationType.IMPORTED)


# Not a generation type, but a kind of run the gallery and the API's run list filter by as one:
# the runs with versions beyond v1.
REFINED = "refined"


class Run(Job):
    """One generation request and its outputs; or an imported image, which is its only output.

    Every chain of versions has a Run at its root: its output is version 1.
    """

    task_name = "imagegen.tasks.run_job"
    dom_prefix = "run"
    live_url_name = "imagegen:run_live"
    cancel_url_name = "imagegen:run_cancel"
    variation_url_name = "imagegen:run_variation"
    image_count = models.F("batch_size")
    # The same model, pipeline (and strength), size, steps, sampler, guidance, clip skip and hires
    # fix; prompts and seeds may differ.
    batch_fields = (
        "model",
        "generation_type",
        "strength",
        "width",
        "height",
        "steps",
        "scheduler",
        "guidance_scale",
        "clip_skip",
        "hires_scale",
        "hires_strength",
        "hires_steps",
    )
    # A LoRA changes the weights for the whole call (engine.batch_key).
    unbatchable = models.Q(prompt__contains="<lora:")

    class GenerationType(models.TextChoices):
        TEXT_TO_IMAGE = "text_to_image", "Text to image"
        IMAGE_TO_IMAGE = "image_to_image", "Image to image"
        IMPORTED = "imported", "Imported"

    generation_type = models.CharField(
        max_length=20, choices=GenerationType.choices, default=GenerationType.TEXT_TO_IMAGE, db_index=True
    )
    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True)
    # RESTRICT: an upload that runs start from cannot be deleted alone, only with all those runs
    # (deleting their user, say); PROTECT would refuse even that.
    init_image = models.ForeignKey(
        Image, null=True, blank=True, on_delete=models.RESTRICT, related_name="init_for_runs"
    )
    strength = models.DecimalField(
        max_digits=3, decimal_places=2, null=True, blank=True, validators=[validate_strength]
    )
    steps = models.PositiveSmallIntegerField()
    guidance_scale = models.FloatField()
    width = models.PositiveSmallIntegerField()
    height = models.PositiveSmallIntegerField()
    seed = models.BigIntegerField()
    scheduler = models.CharField(max_length=20, choices=list(SAMPLER_LABELS.items()), default=DEFAULT_SCHEDULER)
    # A1's count: 1 reads the prompt from the text encoder's layer the model was trained on (the last;
    # SDXL's penultimate), 2 from the one before.
    clip_skip = models.PositiveSmallIntegerField(
        default=DEFAULT_CLIP_SKIP, validators=[MinValueValidator(1), MaxValueValidator(MAX_CLIP_SKIP)]
    )
    model = models.CharField(max_length=255)
    batch_size = models.PositiveSmallIntegerField(default=1)
    # Hires fix (text to image; all three empty without one): made at first_pass_size, upscaled by
    # hires_scale and redrawn at hires_strength for hires_steps. Width and height are the final size.
    hires_scale = models.DecimalField(
        max_digits=3, decimal_places=2, null=True, blank=True, validators=[validate_hires_scale]
    )
    hires_strength = models.DecimalField(
        max_digits=3, decimal_places=2, null=True, blank=True, validators=[validate_strength]
    )
    hires_steps = models.PositiveSmallIntegerField(null=True, blank=True)

    objects = RunQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.prompt[:60] or 'Imported image'} ({self.get_status_display()})"

    def get_absolute_url(self) -> str:
        return reverse("imagegen:run", args=[self.pk])

    def result_images(self) -> list[Image]:
        # In batch order: sorted here, so that outputs prefetched by the pages cost no query.
        return sorted(self.outputs.all(), key=lambda image: image.index)

    @property
    def output_prefix(self) -> str:
        return f"outputs/{self.pk}/"

    @property
    def root_run_id(self):
        """The run whose chain of versions this job's images belong to: itself."""
        return self.pk

    @property
    def is_imported(self) -> bool:
        return self.generation_type == self.GenerationType.IMPORTED

    @property
    def strength_float(self) -> float | None:
        """The strength as the engine and JSON take it (stored as a two-place decimal)."""
        return float(self.strength) if self.strength is not None else None

    @property
    def sampler_label(self) -> str:
        return SAMPLER_LABELS[self.scheduler]

    @property
    def hires(self) -> HiresFix | None:
        """The run's hires fix, as the engine takes it; None without one."""
        if self.hires_scale is None:
            return None
        return HiresFix(scale=float(self.hires_scale), strength=float(self.hires_strength), steps=self.hires_steps)

    @property
    def first_pass_size(self) -> tuple[int, int]:
        """The size the model draws at: the run's own, or with a hires fix the size it upscales from."""
        if self.hires_scale is None:
            return self.width, self.height
        return hires_first_pass_size(self.width, self.height, float(self.hires_scale))

    @property
    def seeds(self) -> list[int]:
        """The seed of each image the run makes, in order."""
        return [image_seed(self.seed, place) for place in range(self.batch_size)]

    def settings(self) -> dict:
        """Every setting that, with the seed, makes the run again, as the generate form names them
        (and services.run_create takes them): with a hires fix, the size it upscales from. An
        imported image was made elsewhere and has none."""
        width, height = self.first_pass_size
        settings = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "width": width,
            "height": height,
            "seed": self.seed,
            "scheduler": self.scheduler,
            "clip_skip": self.clip_skip,
            "model": self.model,
            "batch_size": self.batch_size,
        }
        if self.strength is not None:
            settings["strength"] = self.strength_float
        if (hires := self.hires) is not None:
            settings |= {"hires_scale": hires.scale, "hires_strength": hires.strength, "hires_steps": hires.steps}
        return settings


class ApiToken(models.Model):
    """A bearer token for the JSON API; only its SHA-256 is stored, the token is shown once."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    # The first characters, so a user can tell their tokens apart without the secret.
    prefix = models.CharField(max_length=8)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked = models.BooleanField(default=False, help_text="A revoked token no longer authenticates.")

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.owner})"

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()


class UserQuota(models.Model):
    """A user's own daily generation limit, overriding the IMAGEGEN_DAILY_QUOTA setting."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota")
    daily_limit = models.PositiveIntegerField(
        help_text="Generations a day (text and image to image, variations, API, batch)."
    )

    class Meta:
        verbose_name = "daily quota"

    def __str__(self) -> str:
        return f"{self.user}: {self.daily_limit} a day"
