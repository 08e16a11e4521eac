"""Services with the real tiny model in this process: creating, claiming and executing runs."""

import errno
import io
import os
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import DatabaseError, OperationalError
from django.db.models import QuerySet
from django.test import Client
from django.utils import timezone
from PIL import Image as PILImage

from conftest import wait_until
from imagegen import progress, services
from imagegen.engine import read_png_parameters
from imagegen.models import Image, JobStatus, Run, UserQuota
from imagegen.progress import ProgressReporter

from .factories import ImageFactory, RunFactory, UserFactory

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


def test_a_model_that_cannot_load_fails_the_run_with_a_short_message_and_tells_staff(settings, tmp_path, admin_client):
    settings.IMAGEGEN_MODEL = str(tmp_path / "no-such-model")
    run = RunFactory(steps=2, total_steps=2, model="no-such-model")  # as the form records it
    services.run_execute(run_id=run.pk, worker="gpu1@host")
    run.refresh_from_db()
    assert run.status == JobStatus.FAILED
    assert run.error == services.MODEL_UNAVAILABLE
    assert str(tmp_path) not in run.error and "IMAGEGEN_MODEL" not in run.error
    assert not run.outputs.exists()
    client = Client()
    client.force_login(run.owner)
    shown = client.get(f"/runs/{run.pk}/").content.decode() + client.get(f"/api/v1/runs/{run.pk}").content.decode()
    # The model's name (its folder's) is what the run records; where it lives is for staff only.
    assert "The image model is not available right now" in shown and str(tmp_path) not in shown
    page = admin_client.get("/admin/operations/").content.decode()
    assert "Model load failures" in page and "gpu1@host" in page
    assert "no-such-model" in page and "Check IMAGEGEN_MODEL" in page


def test_same_seed_same_image_through_the_service():
    owner = UserFactory()
    runs = [RunFactory(owner=owner, seed=7, steps=2, total_steps=2) for _ in range(2)]
    for run in runs:
        services.run_execute(run_id=run.pk)
    first, second = (Run.objects.get(pk=run.pk).outputs.get() for run in runs)
    assert first.sha256 == second.sha256


def png_upload(width=96, height=64, colour=(200, 40, 40)):
    from img2img.uploads import normalise_upload

    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return normalise_upload(buffer.getvalue())


def test_image_to_image_run_takes_the_init_size_and_counts_real_steps():
    run = services.run_create(
        owner=UserFactory(), prompt="watercolour", steps=50, guidance_scale=7.5, init_upload=png_upload(), strength=0.75
    )
    assert run.generation_type == Run.GenerationType.IMAGE_TO_IMAGE
    assert (run.width, run.height) == (96, 64)
    assert run.total_steps == 37  # int(50 × 0.75): what the sampler really runs
    assert run.init_image.kind == "upload"
    assert default_storage.exists(run.init_image.file.name)


def test_image_to_image_execution_reports_each_real_step():
    run = services.run_create(
        owner=UserFactory(), prompt="watercolour", steps=10, guidance_scale=7.5, init_upload=png_upload(), strength=0.3
    )
    services.run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert (run.status, run.step, run.total_steps) == (JobStatus.SUCCEEDED, 3, 3)
    output = run.outputs.get()
    assert (output.width, output.height) == (96, 64)
    with default_storage.open(output.file.name) as stored:
        assert "Denoising strength: 0.3" in read_png_parameters(stored.read())


def test_variation_keeps_init_image_and_settings_with_a_new_seed():
    run = services.run_create(
        owner=UserFactory(), prompt="fox", steps=8, guidance_scale=5, init_upload=png_upload(), strength=0.5, seed=1
    )
    variation = services.run_variation_create(run=run)
    assert variation.pk != run.pk and variation.seed != run.seed
    assert variation.init_image_id == run.init_image_id
    assert (variation.prompt, variation.steps, variation.guidance_scale, variation.strength) == (
        "fox",
        8,
        5,
        run.strength,
    )


def test_a_variation_of_one_image_starts_from_a_copy_of_it():
    run = RunFactory(prompt="a fox", negative_prompt="blurry", steps=10, batch_size=2, seed=7, status="succeeded")
    first, second = (ImageFactory(owner=run.owner, run=run, index=index) for index in (0, 1))
    variation = services.run_variation_create(run=run, image=second)
    assert variation.generation_type == Run.GenerationType.IMAGE_TO_IMAGE
    assert (variation.prompt, variation.negative_prompt, variation.steps, variation.batch_size) == (
        "a fox",
        "blurry",
        10,
        1,
    )
    assert variation.strength_float == services.VARIATION_STRENGTH and variation.total_steps == 5
    init = variation.init_image
    assert init.kind == Image.Kind.UPLOAD and init.pk not in (first.pk, second.pk)
    with init.file.open("rb") as copy, second.file.open("rb") as original:
        assert PILImage.open(copy).convert("RGB").tobytes() == PILImage.open(original).convert("RGB").tobytes()
    # Each run can go without the other.
    services.run_delete(run=run)
    assert Image.objects.filter(pk=init.pk).exists() and default_storage.exists(init.file.name)
    with pytest.raises(ValueError, match="not an output"):
        services.run_variation_create(run=variation, image=second)


def test_a_run_of_four_counts_four_against_the_daily_quota(settings):
    settings.IMAGEGEN_DAILY_QUOTA = 5
    owner = UserFactory()
    arguments = {"owner": owner, "prompt": "fox", "steps": 2, "guidance_scale": 7.5, "width": 64, "height": 64}
    services.run_create(**arguments, batch_size=4)
    with pytest.raises(services.QuotaExceededError, match="makes 2 images, and 1 generation of your daily quota"):
        services.run_create(**arguments, batch_size=2)
    services.run_create(**arguments)  # the last one
    with pytest.raises(services.QuotaExceededError, match="used all 5 generations"):
        services.run_create(**arguments)
    assert list(Run.objects.order_by("queued_at").values_list("batch_size", flat=True)) == [4, 1]


def test_over_quota_creates_nothing(settings):
    settings.IMAGEGEN_DAILY_QUOTA = 1
    owner = UserFactory()
    arguments = {"prompt": "fox", "steps": 2, "guidance_scale": 7.5, "width": 64, "height": 64}
    services.run_create(owner=owner, **arguments)
    with pytest.raises(services.QuotaExceededError, match="all 1 generations"):
        services.run_create(owner=owner, init_upload=png_upload(), strength=0.5, **arguments)
    assert Run.objects.count() == 1
    assert Image.objects.count() == 0
    assert not default_storage.exists("uploads") or not default_storage.listdir("uploads")[1]


def test_an_image_whose_row_cannot_be_stored_leaves_no_file(monkeypatch):
    def failing_create(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Image.objects, "create", failing_create)
    arguments = {"prompt": "fox", "steps": 2, "guidance_scale": 7.5, "width": 64, "height": 64}
    with pytest.raises(RuntimeError):
        services.run_create(owner=UserFactory(), init_upload=png_upload(), strength=0.5, **arguments)
    assert not Run.objects.exists()
    assert not default_storage.exists("uploads") or not default_storage.listdir("uploads")[1]


def test_quota_override_per_user(settings):
    settings.IMAGEGEN_DAILY_QUOTA = 0
    owner = UserFactory()
    UserQuota.objects.create(user=owner, daily_limit=1)
    services.run_create(owner=owner, prompt="fox", steps=2, guidance_scale=7.5, width=64, height=64)
    assert Run.objects.count() == 1


def test_out_of_memory_fails_the_run_readably_and_the_next_run_works(monkeypatch):
    unet = services.current_engine().pipeline.unet
    real_forward = unet.forward

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(unet, "forward", out_of_memory)
    run = RunFactory(steps=2, total_steps=2)
    services.run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == JobStatus.FAILED
    assert run.error == "Out of memory at 64x64: try a smaller size, fewer images or fewer steps."

    monkeypatch.setattr(unet, "forward", real_forward)
    following = RunFactory(steps=2, total_steps=2)
    services.run_execute(run_id=following.pk)
    following.refresh_from_db()
    assert following.status == JobStatus.SUCCEEDED


def test_an_exception_inside_the_pipeline_fails_the_run_readably(monkeypatch):
    unet = services.current_engine().pipeline.unet
    monkeypatch.setattr(unet, "forward", lambda *args, **kwargs: 1 / 0)
    run = RunFactory(steps=2, total_steps=2)
    services.run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == JobStatus.FAILED
    assert run.error.startswith("The generation failed unexpectedly (ZeroDivisionError). Try again")


def stored_output_files(run) -> list[str]:
    folder = f"outputs/{run.pk}"
    return sorted(default_storage.listdir(folder)[1]) if default_storage.exists(folder) else []


def requeue_as_housekeeping_does(run) -> None:
    """The worker's heartbeat looks lost: housekeeping gives the job to another attempt."""
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert services.jobs_recover()["requeued"] == 1


def test_a_requeued_attempt_cannot_overwrite_the_new_attempts_result():
    run = RunFactory(steps=2, total_steps=2)
    old = services.job_claim(model=Run, job_id=run.pk, worker="old@host")
    old_outcome = services.run_perform(old, ProgressReporter(old))
    requeue_as_housekeeping_does(run)
    new = services.job_claim(model=Run, job_id=run.pk, worker="new@host")
    # The old worker, still alive, reports its last step and fails: neither touches the new attempt.
    layer = get_channel_layer()
    listener = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(progress.group_name(run.pk), listener)
    ProgressReporter(old)(2, 2)
    services.job_fail(job=old, error="the old attempt's failure")
    ProgressReporter(new)(1, 2)
    run.refresh_from_db()
    assert (run.status, run.step, run.error, run.worker) == (JobStatus.RUNNING, 0, "", "new@host")
    first_event = async_to_sync(layer.receive)(listener)
    assert (first_event["type"], first_event["step"]) == ("job.progress", 1)  # the new attempt's: nothing from the old

    services.job_perform(job=new, perform=services.run_perform)
    services.job_perform(job=old, perform=lambda job, on_step: old_outcome)  # the old worker finishes last
    run.refresh_from_db()
    assert (run.status, run.attempts, run.worker) == (JobStatus.SUCCEEDED, 2, "new@host")
    (image,) = run.outputs.all()
    assert image.file.name == f"outputs/{run.pk}/2-0.png"  # the new attempt's, none of the old one's
    assert stored_output_files(run) == ["2-0.png"]


def test_a_crash_between_the_files_and_the_commit_leaves_nothing_and_the_next_attempt_one_set(monkeypatch):
    run = RunFactory(steps=2, total_steps=2, batch_size=2)
    real_create = Image.objects.create
    created = []

    def second_row_fails(**fields):
        created.append(fields)
        if len(created) == 2:
            raise DatabaseError("the database went away during the commit")
        return real_create(**fields)

    monkeypatch.setattr(Image.objects, "create", second_row_fails)
    services.run_execute(run_id=run.pk, worker="w1")
    run.refresh_from_db()
    assert (run.status, run.outputs.count(), stored_output_files(run)) == (JobStatus.FAILED, 0, [])
    assert run.error.startswith("The generation failed unexpectedly (DatabaseError)")

    # A worker that died after writing its files, before its commit, leaves them behind too...
    monkeypatch.undo()
    Run.objects.filter(pk=run.pk).update(status=JobStatus.RUNNING, error="", attempts=2, worker="w2")
    default_storage.save(f"outputs/{run.pk}/2-0.png", ContentFile(b"written by attempt 2, which died"))
    requeue_as_housekeeping_does(run)
    # ...and the next attempt that succeeds leaves exactly its own set.
    services.run_execute(run_id=run.pk, worker="w3")
    run.refresh_from_db()
    assert (run.status, run.attempts) == (JobStatus.SUCCEEDED, 3)
    assert sorted(image.file.name for image in run.outputs.all()) == [
        f"outputs/{run.pk}/3-0.png",
        f"outputs/{run.pk}/3-1.png",
    ]
    assert stored_output_files(run) == ["3-0.png", "3-1.png"]


def test_a_storage_that_cannot_write_fails_the_job_with_its_own_message_and_stores_nothing(monkeypatch):
    real_save = FileSystemStorage._save
    saved = []

    def disk_full_on_the_second_file(self, name, content):
        if saved:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/srv/media/" + name)
        saved.append(name)
        return real_save(self, name, content)

    monkeypatch.setattr(FileSystemStorage, "_save", disk_full_on_the_second_file)
    run = RunFactory(steps=2, total_steps=2, batch_size=2)
    services.run_execute(run_id=run.pk, worker="w1")
    run.refresh_from_db()
    assert run.status == JobStatus.FAILED
    assert run.error.startswith("The images could not be saved: no space left on device.")
    assert "/srv/media" not in run.error
    assert saved and not run.outputs.exists() and stored_output_files(run) == []


def test_an_s3_error_fails_the_job_with_the_storage_message(monkeypatch):
    from botocore.exceptions import ClientError

    def access_denied(self, name, content):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObject")

    monkeypatch.setattr(FileSystemStorage, "_save", access_denied)
    run = RunFactory(steps=2, total_steps=2)
    services.run_execute(run_id=run.pk, worker="w1")
    run.refresh_from_db()
    assert (run.status, run.error) == (
        JobStatus.FAILED,
        services.NOT_SAVED.format(reason="the storage answered AccessDenied"),
    )
    assert not Image.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_survives_a_database_error(settings, monkeypatch, caplog):
    settings.IMAGEGEN_HEARTBEAT_INTERVAL = 0.05
    run = RunFactory(steps=2, total_steps=2)
    job = services.job_claim(model=Run, job_id=run.pk, worker="w1")
    Run.objects.filter(pk=run.pk).update(heartbeat_at=None)
    real_update = QuerySet.update
    failures = []

    def first_beat_fails(self, **fields):
        if "heartbeat_at" in fields and not failures:
            failures.append(fields)
            raise OperationalError("server closed the connection unexpectedly")
        return real_update(self, **fields)

    monkeypatch.setattr(QuerySet, "update", first_beat_fails)
    with services.Heartbeat(job):
        wait_until(lambda: Run.objects.get(pk=run.pk).heartbeat_at, timeout=5, what="a heartbeat after the error")
    assert failures
    assert "Heartbeat of" in caplog.text and "retrying" in caplog.text
