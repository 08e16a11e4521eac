"""Celery tasks of the refinement app: each takes an id, calls a service, and nothing else."""

from celery import shared_task

from . import services


@shared_task(name="refinement.tasks.refine_job", acks_late=True)
def refine_job(refinement_id: str) -> None:
    services.refinement_execute(refinement_id=refinement_id, worker=refine_job.request.hostname or "")
