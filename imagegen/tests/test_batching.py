"""Batching compatible jobs into one pipeline call: in the engine, then in the job lifecycle."""

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image
from PIL import Image as PILImage

from imagegen import services
from imagegen.engine import Engine, GenerationCancelled, OutOfMemoryError, read_png_parameters
from imagegen.engine.pipelines import batch_key
from imagegen.engine.previews import PreviewPacer
from imagegen.models import JobStatus, Run
from imagegen.progress import ProgressReporter

from .engine_support import PIXEL_TOLERANCE, as_array, small
from .factories import ImageFactory, RunFactory, UserFactory


def assert_same_pixels(batched: Image.Image, alone: Image.Image) -> None:
    assert np.abs(as_array(batched) - as_array(alone)).max() <= PIXEL_TOLERANCE


@pytest.mark.parametrize("scheduler", ["euler_a", "dpmpp_2m", "dpmpp_sde_karras", "lcm"])
def test_each_job_of_a_batch_gets_the_images_it_makes_alone(engine: Engine, scheduler: str) -> None:
    # Euler a and LCM draw fresh noise at every step: only a generator per image keeps a job's noise
    # its own; DPM++ SDE draws it from Brownian trees, one per image, seeded like its generator.
    requests = [
        small(prompt="a red fox", seed=1, scheduler=scheduler),
        small(prompt="a blue whale", negative_prompt="blurry", seed=2, scheduler=scheduler),
        small(prompt="a green frog", seed=3, scheduler=scheduler, batch_size=2),
    ]
    batched = engine.generate_batch(requests)
    for request, result in zip(requests, batched, strict=True):
        alone = engine.generate(request)
        assert len(result.images) == request.batch_size
        for image, image_alone in zip(result.images, alone.images, strict=True):
            assert_same_pixels(image, image_alone)
        assert result.image_parameters == alone.image_parameters
    # …and they are not one image three times.
    assert np.abs(as_array(batched[0].images[0]) - as_array(batched[1].images[0])).max() > 10


def test_image_to_image_jobs_with_the_same_strength_share_a_call(engine: Engine) -> None:
    init_a = engine.generate(small(seed=5)).images[0]
    init_b = engine.generate(small(seed=6, prompt="a castle")).images[0]
    requests = [
        small(init_image=init_a, strength=0.6, prompt="a watercolour", seed=7),
        small(init_image=init_b, strength=0.6, prompt="an oil painting", seed=8),
    ]
    for request, result in zip(requests, engine.generate_batch(requests), strict=True):
        assert_same_pixels(result.images[0], engine.generate(request).images[0])


def test_the_images_of_one_run_have_consecutive_seeds(engine: Engine) -> None:
    both = engine.generate(small(seed=40, batch_size=2))
    assert_same_pixels(both.images[1], engine.generate(small(seed=41)).images[0])
    assert "Seed: 40," in both.image_parameters[0] and "Seed: 41," in both.image_parameters[1]
    # Image to image too: every image starts from the same init image, each from its own seed.
    init = both.images[0]
    three = engine.generate(small(init_image=init, strength=0.6, seed=60, batch_size=3))
    for place in (0, 2):
        alone = engine.generate(small(init_image=init, strength=0.6, seed=60 + place))
        assert_same_pixels(three.images[place], alone.images[0])
        assert three.image_parameters[place] == alone.image_parameters[0]


def test_a_cancelled_job_is_dropped_and_the_others_finish(engine: Engine) -> None:
    requests = [small(seed=11, steps=4), small(seed=12, steps=4), small(seed=13, steps=4)]
    steps: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def reporter(job: int):
        def on_step(step: int, total: int, preview) -> None:
            steps[job].append(step)
            if job == 1 and step == 2:
                raise GenerationCancelled("Cancelled.")

        return on_step

    results = engine.generate_batch(requests, on_steps=[reporter(job) for job in range(3)])
    assert results[1] is None
    assert steps == {0: [1, 2, 3, 4], 1: [1, 2], 2: [1, 2, 3, 4]}  # no calls after its cancel
    for job in (0, 2):
        assert_same_pixels(results[job].images[0], engine.generate(requests[job]).images[0])


def test_every_job_cancelled_stops_the_call(engine: Engine) -> None:
    calls: list[int] = []

    def cancel(step: int, total: int, preview) -> None:
        calls.append(step)
        raise GenerationCancelled("Cancelled.")

    assert engine.generate_batch([small(seed=1, steps=6), small(seed=2, steps=6)], on_steps=[cancel, cancel]) == [
        None,
        None,
    ]
    assert calls == [1, 1]


def test_each_job_sees_a_preview_of_its_own_image(engine: Engine) -> None:
    previews: dict[int, Image.Image] = {}

    def keep(job: int):
        return lambda step, total, preview: previews.setdefault(job, preview) if preview else None

    engine.generate_batch(
        [small(seed=1, steps=2), small(seed=99, steps=2)], on_steps=[keep(0), keep(1)], preview_every=1
    )
    assert previews[0].size == previews[1].size == (8, 8)
    assert previews[0].tobytes() != previews[1].tobytes()


def test_a_run_of_several_images_previews_them_all_two_to_a_row(engine: Engine) -> None:
    previews: dict[int, Image.Image] = {}

    def keep(job: int):
        return lambda step, total, preview: previews.setdefault(job, preview) if preview else None

    requests = [small(seed=1, steps=2), small(seed=5, steps=2, batch_size=3)]
    engine.generate_batch(requests, on_steps=[keep(0), keep(1)], preview_every=1)
    assert previews[0].size == (8, 8)
    grid = as_array(previews[1])
    assert grid.shape[:2] == (16, 16)  # three images, two to a row
    alone: dict[int, Image.Image] = {}
    engine.generate(
        small(seed=6, steps=2), on_step=lambda step, total, preview: alone.setdefault(0, preview), preview_every=1
    )
    # The second tile is the second image's own preview (seed 6); the fourth cell stays empty.
    assert np.abs(grid[:8, 8:] - as_array(alone[0])).max() <= PIXEL_TOLERANCE
    assert not grid[8:, 8:].any()


def test_incompatible_requests_are_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="cannot share"):
        engine.generate_batch([small(steps=3), small(steps=4)])
    mask = Image.new("L", (64, 64), 255)
    init = Image.new("RGB", (64, 64))
    assert batch_key(small(init_image=init, strength=0.5, mask_image=mask)) is None
    assert batch_key(small(reference_image=init)) is None
    differing = [
        {"width": 128},
        {"guidance_scale": 5.0},
        {"scheduler": "ddim"},
        {"clip_skip": 2},
        {"init_image": init, "strength": 0.5},
    ]
    for change in differing:
        assert batch_key(small(**change)) != batch_key(small())
    assert batch_key(small(prompt="other", seed=9, negative_prompt="x", batch_size=2)) == batch_key(small())


def test_previews_are_paced_by_time_as_well_as_by_steps() -> None:
    now = [0.0]
    pacer = PreviewPacer(2, clock=lambda: now[0])
    due = []
    for step in range(1, 9):
        now[0] += 0.03  # 30 ms a step: every 2 steps would be 60 ms, faster than pushes go out
        due.append(pacer.due(step))
    assert due == [False, True, False, False, False, True, False, False]
    assert not any(PreviewPacer(0).due(step) for step in range(1, 5))


# The job lifecycle: compatible queued runs claimed together, each keeping a life of its own.


def output_pixels(run: Run) -> list[np.ndarray]:
    return [as_array(PILImage.open(image.file)) for image in run.outputs.order_by("index")]


def made_alone(run: Run) -> list[np.ndarray]:
    """The run's images as a run with the same request makes them on its own."""
    twin = RunFactory(
        owner=run.owner, prompt=run.prompt, negative_prompt=run.negative_prompt, seed=run.seed, steps=run.steps
    )
    services.job_perform(
        job=services.job_claim(model=Run, job_id=twin.pk, worker="alone"), perform=services.run_perform
    )
    return output_pixels(twin)


@pytest.mark.django_db
def test_compatible_queued_runs_are_claimed_and_made_together(settings):
    settings.IMAGEGEN_MAX_BATCH = 3
    user = UserFactory()
    runs = [
        RunFactory(owner=user, prompt=prompt, seed=seed)
        for prompt, seed in (("a red fox", 1), ("a blue whale", 2), ("a green frog", 3), ("a grey owl", 4))
    ]
    services.run_execute(run_id=runs[0].pk, worker="gpu1")
    for run in runs:
        run.refresh_from_db()
    # The first three made in one call (MAX_BATCH counts jobs), the fourth left for the next message.
    assert [(run.status, run.worker, run.attempts) for run in runs[:3]] == [(JobStatus.SUCCEEDED, "gpu1", 1)] * 3
    assert runs[3].status == JobStatus.QUEUED
    for run in runs[:3]:
        (batched,) = output_pixels(run)
        (alone,) = made_alone(run)
        assert np.abs(batched - alone).max() <= PIXEL_TOLERANCE
        assert f"Seed: {run.seed}," in read_png_parameters(run.outputs.get().file.open().read())
    # A companion's own message, delivered later, finds it made and does nothing.
    services.run_execute(run_id=runs[1].pk, worker="gpu2")
    runs[1].refresh_from_db()
    assert (runs[1].worker, runs[1].attempts, runs[1].outputs.count()) == ("gpu1", 1, 1)


@pytest.mark.django_db
def test_a_run_cancelled_during_its_batch_ends_alone(settings, monkeypatch):
    settings.IMAGEGEN_MAX_BATCH = 3
    user = UserFactory()
    runs = [RunFactory(owner=user, seed=seed, steps=6, total_steps=6) for seed in (21, 22, 23)]
    report = ProgressReporter.__call__

    def cancel_the_second_at_step_3(reporter, step, total, preview=None):
        if reporter.job.pk == runs[1].pk and step == 3:
            services.job_cancel(job=runs[1])  # as its user's Cancel button does, from the web process
        return report(reporter, step, total, preview)

    monkeypatch.setattr(ProgressReporter, "__call__", cancel_the_second_at_step_3)
    services.run_execute(run_id=runs[0].pk, worker="gpu1")
    monkeypatch.undo()
    for run in runs:
        run.refresh_from_db()
    assert [run.status for run in runs] == [JobStatus.SUCCEEDED, JobStatus.CANCELLED, JobStatus.SUCCEEDED]
    assert runs[1].step < 6 and not runs[1].outputs.exists()
    assert not default_storage.exists(runs[1].output_prefix) or not default_storage.listdir(runs[1].output_prefix)[1]
    for run in (runs[0], runs[2]):
        assert np.abs(output_pixels(run)[0] - made_alone(run)[0]).max() <= PIXEL_TOLERANCE


@pytest.mark.django_db
def test_a_batch_that_fails_fails_each_of_its_runs_readably(settings, monkeypatch):
    settings.IMAGEGEN_MAX_BATCH = 2
    runs = [RunFactory(seed=seed) for seed in (1, 2)]

    def out_of_memory(*args, **kwargs):
        raise OutOfMemoryError("Out of memory at 64x64: try a smaller size, fewer images or fewer steps.")

    monkeypatch.setattr(Engine, "generate_batch", out_of_memory)
    services.run_execute(run_id=runs[0].pk, worker="gpu1")
    for run in runs:
        run.refresh_from_db()
        assert (run.status, run.error) == (
            JobStatus.FAILED,
            "Out of memory at 64x64: try a smaller size, fewer images or fewer steps.",
        )


@pytest.mark.django_db
def test_runs_that_cannot_share_a_call_are_never_claimed_together(settings):
    init = ImageFactory()
    base = {"owner": UserFactory(), "steps": 4, "width": 64, "height": 64, "guidance_scale": 7.5}
    job = services.job_claim(model=Run, job_id=RunFactory(**base).pk, worker="gpu1")
    img2img = {"generation_type": Run.GenerationType.IMAGE_TO_IMAGE, "init_image": init, "strength": "0.50"}
    others = {}
    for change in (
        {"steps": 5},
        {"width": 128},
        {"height": 128},
        {"guidance_scale": 5.0},
        {"scheduler": "ddim"},
        {"clip_skip": 2},
        {"model": "another-model"},
        img2img,
    ):
        others[next(iter(change))] = RunFactory(**(base | change))
    for status in (JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.SUCCEEDED):
        RunFactory(**base, status=status)
    assert services.job_claim_companions(job=job, limit=7) == []
    alike = RunFactory(**base, prompt="another prompt", negative_prompt="blurry", seed=99)
    assert [companion.pk for companion in services.job_claim_companions(job=job, limit=7)] == [alike.pk]

    # Image to image batches only with the same strength (the init images may differ).
    first = services.job_claim(model=Run, job_id=RunFactory(**(base | img2img)).pk, worker="gpu1")
    RunFactory(**(base | img2img | {"strength": "0.60"}))
    same_strength = RunFactory(**(base | img2img | {"init_image": ImageFactory(owner=init.owner)}))
    expected = [others["generation_type"].pk, same_strength.pk]
    assert [companion.pk for companion in services.job_claim_companions(job=first, limit=7)] == expected


@pytest.mark.django_db
def test_the_batch_limit_defaults_to_none_on_a_cpu(settings):
    settings.IMAGEGEN_MAX_BATCH = 0
    settings.IMAGEGEN_DEVICE = "cpu"
    assert services.batch_limit() == 1
    settings.IMAGEGEN_MAX_BATCH = 4
    assert services.batch_limit() == 4


@pytest.mark.django_db
def test_a_run_of_several_images_shares_a_call_with_others_each_image_as_made_alone(settings):
    settings.IMAGEGEN_MAX_BATCH = 4  # images: the run of 3 and the run of 1
    user = UserFactory()
    several = RunFactory(owner=user, prompt="a red fox", seed=50, batch_size=3)
    single = RunFactory(owner=user, prompt="a blue whale", seed=7)
    services.run_execute(run_id=several.pk, worker="gpu1")
    several.refresh_from_db()
    single.refresh_from_db()
    assert (several.status, single.status, single.worker) == (JobStatus.SUCCEEDED, JobStatus.SUCCEEDED, "gpu1")
    batched = output_pixels(several)
    assert len(batched) == 3
    for place, pixels in enumerate(batched):
        (alone,) = made_alone(RunFactory.build(owner=user, prompt="a red fox", seed=50 + place))
        assert np.abs(pixels - alone).max() <= PIXEL_TOLERANCE
    assert np.abs(output_pixels(single)[0] - made_alone(single)[0]).max() <= PIXEL_TOLERANCE


@pytest.mark.django_db
def test_a_batch_holds_at_most_imagegen_max_batch_images(settings):
    settings.IMAGEGEN_MAX_BATCH = 8
    base = {"owner": UserFactory(), "steps": 4, "width": 64, "height": 64, "guidance_scale": 7.5}
    job = services.job_claim(model=Run, job_id=RunFactory(**base, batch_size=4).pk, worker="gpu1")
    three, _, _, one = (RunFactory(**base, batch_size=size) for size in (3, 3, 2, 1))
    # 4 images of its own leave room for 4: the first 3 fit, the next 3 and 2 do not, then 1 does.
    assert [companion.pk for companion in services.job_claim_companions(job=job)] == [three.pk, one.pk]
    assert Run.objects.filter(status=JobStatus.QUEUED).count() == 2
