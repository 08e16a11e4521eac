"""A Refinement: one edit of one version of a run's image, which makes the next version of its chain."""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse

from imagegen.models import Image, Job, JobQuerySet, JobStatus, Run

MIN_CREATIVITY, MAX_CREATIVITY = 1, 3
DEFAULT_CREATIVITY = 2


class RefinementQuerySet(JobQuerySet):
    def succeeded(self) -> "RefinementQuerySet":
        return self.filter(status=JobStatus.SUCCEEDED)


class Refinement(Job):
    """An edit of a parent image (any version of the run's chain) in one of four modes.

    The root run's output is version 1; each refinement of the run takes the next number when it
    is created (v2, v3, … in creation order, under a lock on the run) and records its parent's
    version, so a branch shows as "v4 from v2".
    """

    class Type(models.TextChoices):
        SUBJECT = "subject", "Subject repair"
        TEXT = "text", "Text repair"
        REGION = "region", "Regional"
        GENERAL = "general", "General"

    task_name = "refinement.tasks.refine_job"
    dom_prefix = "refinement"
    live_url_name = "refinement:live"
    cancel_url_name = "refinement:cancel"
    # The drawer's live log, which also refreshes the run page's versions when the job succeeds.
    live_template = "refinement/partials/version.html#refinement-live"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="refinements")
    # RESTRICT: an image that others were made from cannot be deleted alone, only with its run.
    parent_image = models.ForeignKey(Image, on_delete=models.RESTRICT, related_name="refinements")
    parent_version = models.PositiveIntegerField()
    version = models.PositiveIntegerField()
    type = models.CharField(max_length=10, choices=Type.choices, db_index=True)
    # The mode's request, as validated by its payload form (refinement.forms).
    payload = models.JSONField(default=dict)
    creativity = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(MIN_CREATIVITY), MaxValueValidator(MAX_CREATIVITY)]
    )
    # The denoising strength the mode used for this creativity.
    strength = models.FloatField()
    seed = models.BigIntegerField()
    model = models.CharField(max_length=255)
    result = models.OneToOneField(
        Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="made_by_refinement"
    )
    # What the mode reports beside its image (text repair's OCR checks).
    report = models.JSONField(default=dict, blank=True)

    objects = RefinementQuerySet.as_manager()

    class Meta(Job.Meta):
        ordering = ["run", "version"]
        constraints = [models.UniqueConstraint(fields=["run", "version"], name="one_refinement_per_version")]

    def __str__(self) -> str:
        return f"v{self.version} of {self.run_id}: {self.get_type_display()} ({self.get_status_display()})"

    def get_absolute_url(self) -> str:
        return f"{reverse('imagegen:run', args=[self.run_id])}#{self.dom_id}"

    def result_images(self) -> list[Image]:
        return [self.result] if self.result_id else []

    @property
    def output_prefix(self) -> str:
        return f"outputs/{self.run_id}/refinements/{self.pk}-"

    def result_fields(self, images: list[Image]) -> dict:
        (image,) = images
        return {"result": image}

    @property
    def root_run_id(self):
        return self.run_id

    # A refinement keeps its parent's size.
    @property
    def width(self) -> int:
        return self.parent_image.width

    @property
    def height(self) -> int:
        return self.parent_image.height

    @property
    def prompt(self) -> str:
        """The words the user gave the mode: a prompt, instructions, or each rectangle's prompt."""
        rectangles = " | ".join(mask.get("prompt", "") for mask in self.payload.get("masks", []))
        return self.payload.get("prompt") or self.payload.get("instructions") or rectangles
