"""Services with the real tiny model in this process: creating, claiming and executing runs."""

import pytest
from django.core.files.storage import default_storage

from imagegen import services
from imagegen.engine import read_png_parameters
from imagegen.models import JobStatus, Run

from .factories import RunFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_run_create_stores_a_seed_when_none_is_given():
    run = services.run_create(owner=UserFactory(), prompt="fox", steps=4, guidance_scale=7.5, width=64, height=64)
    assert run.status == JobStatus.QUEUED
    assert 0 <= run.seed < 2**32
    assert run.total_steps == 4
    assert run.model == "tiny"


def test_run_execute_stores_a_png_with_its_parameters():
    run = RunFactory(prompt="a red fox", negative_prompt="blurry", steps=3, total_steps=3, seed=42, width=64, height=64)
    services.run_execute(run_id=run.pk, worker="test")
    run.refresh_from_db()
    assert run.status == JobStatus.SUCCEEDED
    assert (run.step, run.attempts, run.worker) == (3, 1, "test")
    assert run.started_at <= run.finished_at
    (image,) = run.outputs.all()
    assert (image.width, image.height) == (64, 64)
    with default_storage.open(image.file.name) as stored:
        data = stored.read()
    assert image.sha256 == image.digest(data)
    parameters = read_png_parameters(data)
    assert parameters.startswith("a red fox\nNegative prompt: blurry\n")
    assert "Steps: 3, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: tiny" in parameters


def test_running_the_task_twice_does_the_work_once():
    run = RunFactory(steps=2, total_steps=2)
    services.run_execute(run_id=run.pk, worker="first")
    services.run_execute(run_id=run.pk, worker="second")
    run.refresh_from_db()
    assert (run.status, run.attempts, run.worker) == (JobStatus.SUCCEEDED, 1, "first")
    assert run.outputs.count() == 1


def test_a_cancelled_run_is_not_started():
    run = RunFactory(status=JobStatus.CANCELLED)
    services.run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == JobStatus.CANCELLED and run.attempts == 0 and not run.outputs.exists()


def test_a_model_that_cannot_load_fails_the_run_with_a_readable_message(settings, tmp_path):
    settings.IMAGEGEN_MODEL = str(tmp_path / "no-such-model")
    run = RunFactory(steps=2, total_steps=2)
    services.run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == JobStatus.FAILED
    assert "no-such-model" in run.error and "IMAGEGEN_MODEL" in run.error
    assert not run.outputs.exists()


def test_same_seed_same_image_through_the_service():
    owner = UserFactory()
    runs = [RunFactory(owner=owner, seed=7, steps=2, total_steps=2) for _ in range(2)]
    for run in runs:
        services.run_execute(run_id=run.pk)
    first, second = (Run.objects.get(pk=run.pk).outputs.get() for run in runs)
    assert first.sha256 == second.sha256
