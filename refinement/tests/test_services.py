"""Refinement services with the real tiny model in this process: versions, chains, execution, quota."""

import io
import json
import threading

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from PIL import Image as PILImage

from imagegen import services
from imagegen.engine import read_png_parameters
from imagegen.models import Image, JobStatus
from imagegen.tests.factories import RunFactory
from refinement import services as refinement_services
from refinement.models import Refinement
from refinement.selectors import run_versions
from refinement.services import RECORD_CHUNK

from .factories import finished_run, refinement_of

pytestmark = pytest.mark.django_db

GENERAL = {"prompt": "the same harbour at dusk"}


def refine(run, **arguments) -> Refinement:
    arguments = {"type": "general", "payload": GENERAL, "creativity": 1, **arguments}
    return refinement_services.refinement_create(owner=run.owner, run=run, **arguments)


def execute(refinement: Refinement) -> Refinement:
    refinement_services.refinement_execute(refinement_id=refinement.pk, worker="test")
    refinement.refresh_from_db()
    return refinement


def test_a_refinement_is_the_next_version_with_its_plan_and_a_seed(django_capture_on_commit_callbacks):
    run = finished_run()
    with django_capture_on_commit_callbacks(execute=True):
        refinement = refine(run, creativity=2)
    refinement.refresh_from_db()
    assert (refinement.version, refinement.parent_version) == (2, 1)
    assert refinement.parent_image == run.outputs.get()
    assert (refinement.strength, refinement.total_steps) == (0.5, 15)
    assert refinement.status == JobStatus.QUEUED and refinement.sent_at is not None  # sent once committed
    assert 0 <= refinement.seed < 2**32 and refinement.model == "tiny"


def test_executing_stores_the_new_version_with_its_recipe_in_the_png():
    run = finished_run()
    refinement = execute(refine(run, seed=99))
    assert refinement.status == JobStatus.SUCCEEDED, refinement.error
    assert (refinement.step, refinement.total_steps, refinement.attempts) == (9, 9, 1)
    result = refinement.result
    assert (result.kind, result.owner, result.run) == (Image.Kind.REFINEMENT, run.owner, None)
    assert (result.width, result.height) == (64, 64)  # the parent's size
    with default_storage.open(result.file.name) as stored:
        data = stored.read()
    assert result.sha256 == Image.digest(data)
    parameters = read_png_parameters(data)
    assert parameters.startswith("the same harbour at dusk\n")
    assert "Seed: 99, Size: 64x64, Model: tiny, Denoising strength: 0.3" in parameters
    record = json.loads(PILImage.open(io.BytesIO(data)).text[RECORD_CHUNK])
    assert record == {
        "version": 2,
        "parent_version": 1,
        "parent_sha256": run.outputs.get().sha256,
        "run_id": str(run.pk),
        "job_id": str(refinement.pk),
        "type": "general",
        "payload": GENERAL,
        "creativity": 1,
        "strength": 0.3,
        "seed": 99,
        "model": "tiny",
    }


def test_a_refinement_delivered_twice_runs_once_and_a_cancelled_one_never_starts():
    run = finished_run()
    refinement = execute(refine(run))
    first_result = refinement.result
    refinement = execute(refinement)  # the same message again
    assert (refinement.status, refinement.attempts, refinement.result) == (JobStatus.SUCCEEDED, 1, first_result)
    assert Image.objects.filter(kind=Image.Kind.REFINEMENT).count() == 1
    cancelled = refine(run)
    services.job_cancel(job=cancelled)
    cancelled = execute(cancelled)
    assert (cancelled.status, cancelled.attempts, cancelled.result) == (JobStatus.CANCELLED, 0, None)


def test_chain_v1_v2_v3_and_a_branch_from_v2():
    run = finished_run()
    v2 = execute(refine(run))
    v3 = execute(refine(run))  # no parent given: the chain's latest version, v2
    assert (v3.version, v3.parent_version, v3.parent_image) == (3, 2, v2.result)
    v4 = execute(refine(run, parent_image=v2.result))  # a second edit of v2
    assert (v4.version, v4.parent_version) == (4, 2)
    versions = run_versions(run=run)
    assert [(version.number, version.parent_version) for version in versions] == [(1, None), (2, 1), (3, 2), (4, 2)]
    assert [version.image for version in versions] == [run.outputs.get(), v2.result, v3.result, v4.result]


def test_failed_and_running_refinements_keep_their_numbers_but_are_not_versions_yet():
    run = finished_run()
    failed = refine(run)
    Refinement.objects.filter(pk=failed.pk).update(status=JobStatus.FAILED, error="boom")
    running = refine(run)
    assert (failed.version, running.version) == (2, 3)
    assert [version.number for version in run_versions(run=run)] == [1]
    assert refine(run).parent_version == 1  # the latest version that exists


def test_a_run_without_an_image_cannot_be_refined_and_nothing_is_stored():
    run = RunFactory(status=JobStatus.RUNNING)
    with pytest.raises(refinement_services.NothingToRefineError, match=r"no image to refine yet \(it is running\)"):
        refine(run)
    assert not Refinement.objects.exists()


def test_refinements_count_against_the_daily_quota(settings):
    run = finished_run()
    settings.IMAGEGEN_DAILY_QUOTA = 2  # the run and one refinement
    refine(run)
    with pytest.raises(services.QuotaExceededError, match="all 2 generations"):
        refine(run)
    with pytest.raises(services.QuotaExceededError):
        services.run_create(owner=run.owner, prompt="fox", steps=2, guidance_scale=7.5, width=64, height=64)
    assert Refinement.objects.count() == 1


def test_a_mode_this_worker_does_not_know_fails_readably():
    # A refinement of a mode from a newer version of the studio, reaching an older worker.
    run = finished_run()
    refinement = refinement_of(run, type="sketch", payload={"strokes": []}, total_steps=1)
    refinement = execute(refinement)
    assert (refinement.status, refinement.error) == (JobStatus.FAILED, "sketch is not available yet.")
    assert refinement.result is None


def test_retry_is_a_new_version_with_the_same_parent_payload_and_seed():
    run = finished_run()
    first = refine(run, seed=5, creativity=3)
    Refinement.objects.filter(pk=first.pk).update(status=JobStatus.FAILED)
    retry = refinement_services.refinement_retry(refinement=first)
    assert (retry.version, retry.parent_image, retry.payload, retry.seed, retry.creativity) == (
        3,
        first.parent_image,
        GENERAL,
        5,
        3,
    )


@pytest.mark.django_db(transaction=True)
def test_eight_concurrent_submissions_get_eight_distinct_versions(settings):
    """Eight threads, each with its own database connection, refine the same run at once."""
    settings.IMAGEGEN_MAX_ACTIVE_JOBS = settings.IMAGEGEN_SUBMISSIONS_PER_MINUTE = 0  # the chain's lock is tested
    run = finished_run()
    barrier = threading.Barrier(8)
    versions, errors = [], []

    def submit() -> None:
        barrier.wait()
        try:
            versions.append(refine(run).version)
        except Exception as error:  # any failure is a lost submission
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(versions) == list(range(2, 10))
    assert sorted(Refinement.objects.filter(run=run).values_list("version", flat=True)) == list(range(2, 10))
