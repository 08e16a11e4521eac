"""Rows refinement tests need: a finished run with its image (v1), made by the real service, and
refinements of it in any state."""

from imagegen import services
from imagegen.models import Image, JobStatus, Run
from imagegen.tests.factories import ImageFactory, RunFactory
from refinement.models import Refinement


def finished_run(**overrides) -> Run:
    """A run that has really been generated (tiny model, 64×64, 2 steps): its output is v1."""
    run = RunFactory(**{"steps": 2, "total_steps": 2, "width": 64, "height": 64, **overrides})
    services.run_execute(run_id=run.pk, worker="test")
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    return run


def refinement_of(run, *, version: int = 2, parent=None, **fields) -> Refinement:
    """A general refinement of the run (queued, of v1 unless told), as the drawer would have made it."""
    values = {
        "owner": run.owner,
        "run": run,
        "parent_image": parent or run.outputs.get(),
        "parent_version": 1,
        "version": version,
        "type": Refinement.Type.GENERAL,
        "payload": {"prompt": f"edit number {version}"},
        "creativity": 2,
        "strength": 0.5,
        "total_steps": 15,
        "seed": 7,
        "model": "tiny",
        "status": JobStatus.QUEUED,
    }
    return Refinement.objects.create(**{**values, **fields})


def succeeded_refinement(run, **fields) -> Refinement:
    result = ImageFactory(owner=run.owner, kind=Image.Kind.REFINEMENT)
    return refinement_of(run, status=JobStatus.SUCCEEDED, step=15, result=result, **fields)
