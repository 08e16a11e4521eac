"""Celery tasks: each takes an id, calls a service, and nothing else."""

import os

from celery import shared_task
from celery.signals import worker_init, worker_ready, worker_shutting_down
from django.conf import settings

from . import services


@shared_task(name="imagegen.tasks.run_job", acks_late=True)
def run_job(run_id: str) -> None:
    services.run_execute(run_id=run_id, worker=run_job.request.hostname or "")


@worker_ready.connect
def beat_and_warm_engine(sender=None, **_) -> None:
    # Beating starts before the model loads, so a worker busy loading (minutes for a first
    # download) still reads as alive on /healthz. `sender` is the worker's consumer: the beat keeps
    # it on the queues of the models it holds loaded.
    worker = getattr(sender, "hostname", "") or ""
    services.worker_beat_start(worker, consumer=sender)
    services.engine_warm_up(worker=worker)


@worker_shutting_down.connect
def withdraw_model_queues(sender=None, **_) -> None:
    # A worker shutting down takes no more jobs: its models' jobs go to the others from now on.
    services.worker_beat_withdraw(str(sender or ""))


@worker_init.connect
def lower_priority(**_) -> None:
    # On a machine that also serves the web, a CPU-bound worker must not starve page requests.
    # Threads started later (the pool's, torch's) inherit this priority.
    if settings.IMAGEGEN_WORKER_NICE:
        os.nice(settings.IMAGEGEN_WORKER_NICE)
