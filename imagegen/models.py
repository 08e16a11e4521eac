"""Images, and the jobs that make them: the abstract Job lifecycle and the Run (one generation)."""

import hashlib
import uuid

from django.conf import settings
from django.db import models

from .engine.requests import DEFAULT_SCHEDULER, SAMPLER_LABELS
from .validators import validate_strength


class Image(models.Model):
    class Kind(models.TextChoices):
        UPLOAD = "upload", "Upload"
        OUTPUT = "output", "Output"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(upload_to="images/%Y/%m/", max_length=255)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=10, default="PNG")
    sha256 = models.CharField(max_length=64, db_index=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, db_index=True)
    # Set for outputs: the run that made the image, and its place in the batch.
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


class Job(models.Model):
    """What every queued piece of GPU work has: who asked, where it stands, and its history."""

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


class Run(Job):
    """One generation request and its outputs."""

    class GenerationType(models.TextChoices):
        TEXT_TO_IMAGE = "text_to_image", "Text to image"
        IMAGE_TO_IMAGE = "image_to_image", "Image to image"

    generation_type = models.CharField(
        max_length=20, choices=GenerationType.choices, default=GenerationType.TEXT_TO_IMAGE, db_index=True
    )
    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True)
    init_image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.PROTECT, related_name="init_for_runs")
    strength = models.DecimalField(
        max_digits=3, decimal_places=2, null=True, blank=True, validators=[validate_strength]
    )
    steps = models.PositiveSmallIntegerField()
    guidance_scale = models.FloatField()
    width = models.PositiveSmallIntegerField()
    height = models.PositiveSmallIntegerField()
    seed = models.BigIntegerField()
    scheduler = models.CharField(max_length=20, choices=list(SAMPLER_LABELS.items()), default=DEFAULT_SCHEDULER)
    model = models.CharField(max_length=255)
    batch_size = models.PositiveSmallIntegerField(default=1)

    def __str__(self) -> str:
        return f"{self.prompt[:60]} ({self.get_status_display()})"

    @property
    def strength_float(self) -> float | None:
        """The strength as the engine and JSON take it (stored as a two-place decimal)."""
        return float(self.strength) if self.strength is not None else None

    @property
    def sampler_label(self) -> str:
        return SAMPLER_LABELS[self.scheduler]


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


class LoginFailure(models.Model):
    """A failed log-in, kept for a while to slow down password guessing."""

    username = models.CharField(max_length=150, db_index=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.username} from {self.ip_address} at {self.at:%Y-%m-%d %H:%M:%S}"
