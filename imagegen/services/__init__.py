"""Every write, by concern: the lifecycle of any job (jobs), runs, images, the quota, accounts, and
the worker's warm engine. Callers use `services.<name>`; each name lives in one module below."""

from .accounts import api_token_create, api_tokens_revoke, local_admin_create
from .images import OutputImage, image_open_rgb, image_store, image_thumbnail_open
from .jobs import (
    NOT_SAVED,
    QUEUE_UNAVAILABLE,
    UNEXPECTED_FAILURE,
    WORKER_LOST,
    Heartbeat,
    JobOutcome,
    job_cancel,
    job_claim,
    job_enqueue,
    job_execute,
    job_fail,
    job_finish,
    job_perform,
    jobs_recover,
)
from .quota import QuotaExceededError, daily_quota, quota_claim
from .runs import (
    NothingToVaryError,
    run_create,
    run_delete,
    run_execute,
    run_import,
    run_perform,
    run_variation_create,
)
from .workers import MODEL_UNAVAILABLE, current_engine, engine_warm_up, model_load_failures, worker_beat_start

__all__ = [
    "MODEL_UNAVAILABLE",
    "NOT_SAVED",
    "QUEUE_UNAVAILABLE",
    "UNEXPECTED_FAILURE",
    "WORKER_LOST",
    "Heartbeat",
    "JobOutcome",
    "NothingToVaryError",
    "OutputImage",
    "QuotaExceededError",
    "api_token_create",
    "api_tokens_revoke",
    "current_engine",
    "daily_quota",
    "engine_warm_up",
    "image_open_rgb",
    "image_store",
    "image_thumbnail_open",
    "job_cancel",
    "job_claim",
    "job_enqueue",
    "job_execute",
    "job_fail",
    "job_finish",
    "job_perform",
    "jobs_recover",
    "local_admin_create",
    "model_load_failures",
    "quota_claim",
    "run_create",
    "run_delete",
    "run_execute",
    "run_import",
    "run_perform",
    "run_variation_create",
    "worker_beat_start",
]
