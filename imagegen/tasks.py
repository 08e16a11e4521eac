"""Celery tasks: each takes an id, calls a service, and nothing else."""

from celery import shared_task
from celery.signals import worker_ready

from . import services


@shared_task(name="imagegen.tasks.run_job", acks_late=True)
def run_job(run_id: str) -> None:
    services.run_execute(run_id=run_id, worker=run_job.request.hostname or "")


@worker_ready.connect
def warm_engine(**_) -> None:
    services.engine_warm_up()
