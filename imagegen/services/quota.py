"""Fair use: what each user may submit (a day's generations, jobs at once, jobs a minute), checked
under a lock on the user's row whenever a job of any kind is created."""

import math
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Min, Q, Sum
from django.utils import timezone

from ..models import JobStatus, UserQuota, job_models

SUBMISSION_WINDOW = timedelta(minutes=1)
# How soon to ask again when every slot is taken: no one knows when a job will end.
ACTIVE_JOBS_RETRY_SECONDS = 5


class QuotaExceededError(Exception):
    """The user may not submit this job now; str() says why, in words a user reads.

    `retry_after`: seconds after which the same submission may pass (None: not today).
    """

    def __init__(self, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def jobs(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def daily_quota(*, user) -> int:
    override = UserQuota.objects.filter(user=user).values_list("daily_limit", flat=True).first()
    return settings.IMAGEGEN_DAILY_QUOTA if override is None else override


def generations(count: int) -> str:
    return f"{count} generation" if count == 1 else f"{count} generations"


def quota_claim(*, user, images: int = 1) -> None:
    """Count a job that makes `images` images against the user's limits, or raise QuotaExceededError:

    - jobs queued or running at once, IMAGEGEN_MAX_ACTIVE_JOBS (a slot frees when one ends or is
      cancelled), so one user cannot hold every GPU for hours;
    - jobs submitted within the last minute, IMAGEGEN_SUBMISSIONS_PER_MINUTE, so one user cannot
      flood the queue with jobs cancelled as fast as they are made;
    - today's generations, the daily quota (IMAGEGEN_DAILY_QUOTA or the user's own). A generation
      is an image: a run of 4 counts 4 (Job.image_count), and a job that would go past the quota
      is refused whole rather than cut short.

    0 turns the first two off. Imports generate nothing and count for none of them. Call inside
    the transaction that creates the job: the user's row is locked first, so two requests at a
    limit are counted one after the other and cannot both pass.
    """
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    now = timezone.now()
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    window_start = now - SUBMISSION_WINDOW
    counts = [
        model.objects.owned_by(user)
        .generations()
        .aggregate(
            active=Count("pk", filter=Q(status__in=(JobStatus.QUEUED, JobStatus.RUNNING))),
            last_minute=Count("pk", filter=Q(queued_at__gte=window_start)),
            first_in_window=Min("queued_at", filter=Q(queued_at__gte=window_start)),
            today=Sum(model.image_count, filter=Q(queued_at__gte=start_of_day)),
        )
        for model in job_models()
    ]
    active = sum(count["active"] for count in counts)
    most_active = settings.IMAGEGEN_MAX_ACTIVE_JOBS
    if most_active and active >= most_active:
        raise QuotaExceededError(
            f"You have {jobs(active)} queued or running, the most you may have at once. "
            "Submit this one when one of them has finished, or cancel one.",
            retry_after=ACTIVE_JOBS_RETRY_SECONDS,
        )
    last_minute = sum(count["last_minute"] for count in counts)
    most_a_minute = settings.IMAGEGEN_SUBMISSIONS_PER_MINUTE
    if most_a_minute and last_minute >= most_a_minute:
        first = min(count["first_in_window"] for count in counts if count["first_in_window"] is not None)
        wait = max(1, math.ceil((first + SUBMISSION_WINDOW - now).total_seconds()))
        raise QuotaExceededError(
            f"You have submitted {jobs(last_minute)} in the last minute, the most you may. "
            f"Try again in {wait} seconds.",
            retry_after=wait,
        )
    limit = daily_quota(user=user)
    used = sum(count["today"] or 0 for count in counts)
    if used >= limit:
        raise QuotaExceededError(
            f"You have used all {limit} generations of your daily quota. It renews at midnight UTC."
        )
    if used + images > limit:
        raise QuotaExceededError(
            f"This job makes {images} images, and {generations(limit - used)} of your daily quota of "
            f"{limit} are left. Make fewer images at once, or wait until it renews at midnight UTC."
        )
