"""The daily generation quota: how many jobs a user may start a day, checked under a lock."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from ..models import UserQuota, job_models


class QuotaExceededError(Exception):
    """The user has used today's generations; str() says so in words a user reads."""


def daily_quota(*, user) -> int:
    override = UserQuota.objects.filter(user=user).values_list("daily_limit", flat=True).first()
    return settings.IMAGEGEN_DAILY_QUOTA if override is None else override


def quota_claim(*, user) -> None:
    """Count one generation (a job of any kind) against today's quota, or raise QuotaExceededError.

    Call inside the transaction that creates the job: the user's row is locked first, so two
    requests at the limit are counted one after the other and cannot both pass.
    """
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    start_of_day = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    limit = daily_quota(user=user)
    used = sum(
        model.objects.owned_by(user).generations().filter(queued_at__gte=start_of_day).count() for model in job_models()
    )
    if used >= limit:
        raise QuotaExceededError(
            f"You have used all {limit} generations of your daily quota. It renews at midnight UTC."
        )
