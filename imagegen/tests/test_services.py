"""Services with the real tiny model in this process: creating, claiming and executing runs."""

import io
import threading

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from PIL import Image as PILImage

from imagegen import services
from imagegen.engine import read_png_parameters
from imagegen.models import Image, JobStatus, Run, UserQuota

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


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_at_the_limit_cannot_both_pass(settings):
    """Eight threads, each with its own database connection, race for the last two generations."""
    settings.IMAGEGEN_DAILY_QUOTA = 3
    owner = UserFactory()
    services.run_create(owner=owner, prompt="first", steps=2, guidance_scale=7.5, width=64, height=64)
    barrier = threading.Barrier(8)
    outcomes = []

    def attempt(number: int) -> None:
        barrier.wait()
        try:
            services.run_create(owner=owner, prompt=f"racer {number}", steps=2, guidance_scale=7.5, width=64, height=64)
            outcomes.append("created")
        except services.QuotaExceededError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] * 2 + ["refused"] * 6
    assert Run.objects.filter(owner=owner).count() == 3


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
