"""The hires fix: made at the model's size, upscaled, redrawn by image to image; in the engine, the
form and the API, the service and its batching, and the pages."""

import json
from decimal import Decimal
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image

from imagegen import services
from imagegen.engine import (
    Engine,
    GenerationCancelled,
    HiresFix,
    hires_first_pass_size,
    hires_size,
    read_png_parameters,
)
from imagegen.engine.pipelines import batch_key
from imagegen.engine.previews import PreviewPacer
from imagegen.forms import GenerateForm
from imagegen.models import JobStatus, Run
from imagegen.selectors import run_parameters, run_parameters_text

from .engine_support import PIXEL_TOLERANCE, as_array, small
from .factories import RunFactory, UserFactory

# The engine.


def test_the_result_has_the_upscaled_size_and_is_redrawn_not_just_resized(engine: Engine) -> None:
    plain = engine.generate(small(seed=5)).images[0]
    hires = engine.generate(small(seed=5, hires=HiresFix(scale=2.0, strength=0.5, steps=3))).images[0]
    assert (plain.size, hires.size) == ((64, 64), (128, 128))
    resized = plain.resize((128, 128), Image.Resampling.LANCZOS)
    # The second pass ran: the picture is not the first one upscaled.
    assert np.abs(as_array(hires) - as_array(resized)).mean() > 5
    # …and it is the same picture for the same seed.
    again = engine.generate(small(seed=5, hires=HiresFix(scale=2.0, strength=0.5, steps=3))).images[0]
    assert np.array_equal(as_array(hires), as_array(again))


def test_progress_counts_both_passes_with_previews_in_each(engine: Engine, monkeypatch) -> None:
    monkeypatch.setattr(PreviewPacer, "MIN_SECONDS", 0)
    calls: list[tuple[int, int, tuple[int, int] | None]] = []
    request = small(steps=3, hires=HiresFix(scale=2.0, strength=0.5, steps=4))
    assert request.total_steps == 3 + 2  # the first pass's steps and int(4 × 0.5)
    result = engine.generate(
        request, on_step=lambda step, total, preview: calls.append((step, total, preview.size)), preview_every=1
    )
    assert result.total_steps == 5
    # Previews of the first pass's 8×8 latents, then of the second pass's 16×16 ones.
    assert calls == [(1, 5, (8, 8)), (2, 5, (8, 8)), (3, 5, (8, 8)), (4, 5, (16, 16)), (5, 5, (16, 16))]


def test_cancelling_during_the_second_pass_stops_the_job(engine: Engine) -> None:
    steps: list[int] = []

    def on_step(step: int, total: int, preview: Image.Image | None) -> None:
        steps.append(step)
        if step == 4:
            raise GenerationCancelled()

    with pytest.raises(GenerationCancelled):
        engine.generate(small(steps=3, hires=HiresFix(scale=2.0, strength=1.0, steps=4)), on_step=on_step)
    assert steps == [1, 2, 3, 4]
    # Nothing of the interrupted pass is left for the next job.
    assert engine.generate(small(init_image=Image.new("RGB", (64, 64)), strength=1.0)).images[0].size == (64, 64)


def test_the_parameters_say_the_hires_settings_as_automatic1111_writes_them(engine: Engine) -> None:
    result = engine.generate(small(seed=9, hires=HiresFix(scale=2.0, strength=0.5, steps=4)))
    assert "Seed: 9, Size: 64x64, Model: tiny, " in result.parameters  # Size: the first pass's, as A1 writes it
    assert result.parameters.endswith(
        ", Denoising strength: 0.5, Hires upscale: 2, Hires steps: 4, Hires upscaler: Lanczos"
    )


def test_hires_jobs_batch_only_with_the_same_hires_fix(engine: Engine) -> None:
    hires = HiresFix(scale=2.0, strength=0.5, steps=3)
    assert batch_key(small()) != batch_key(small(hires=hires))
    assert batch_key(small(hires=hires)) != batch_key(small(hires=HiresFix(scale=1.5, strength=0.5, steps=3)))
    assert batch_key(small(hires=hires, seed=1)) == batch_key(small(hires=hires, seed=2, prompt="a castle"))
    with pytest.raises(ValueError, match="cannot share"):
        engine.generate_batch([small(), small(hires=hires)])
    # A batch of them gives each job the picture it makes alone, through both passes.
    requests = [small(hires=hires, seed=1), small(hires=hires, seed=2, prompt="a castle")]
    for request, result in zip(requests, engine.generate_batch(requests), strict=True):
        alone = engine.generate(request).images[0]
        assert np.abs(as_array(result.images[0]) - as_array(alone)).max() <= PIXEL_TOLERANCE


def test_the_first_pass_size_is_recovered_from_every_final_size() -> None:
    for side in range(64, 1025, 8):
        for hundredths in range(125, 201):
            scale = hundredths / 100
            final = hires_size(side, side + 8, scale)
            assert all(value % 8 == 0 for value in final)
            assert hires_first_pass_size(*final, scale) == (side, side + 8), (side, scale)


def test_image_to_image_has_no_hires_fix() -> None:
    with pytest.raises(ValueError, match="text to image"):
        small(init_image=Image.new("RGB", (64, 64)), strength=0.5, hires=HiresFix(scale=2.0, strength=0.5, steps=3))


# The form and the API.

VALID = {"prompt": "a fox", "steps": 20, "guidance_scale": 7.5, "width": 512, "height": 512}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"hires_scale": 3}, "hires_scale", "between 1.25 and 2"),
        ({"hires_scale": 1.1}, "hires_scale", "1 (off) or between"),
        ({"hires_scale": 2, "hires_strength": 1.5}, "hires_strength", "between 0 and 1"),
        ({"hires_scale": 2, "hires_steps": 0}, "hires_steps", "greater than or equal to 1"),
        ({"hires_scale": 2, "width": 1024}, "hires_scale", "1024×512 upscaled by 2 is 2048×1024"),
    ],
)
def test_the_form_refuses_what_the_hires_fix_cannot_do_naming_the_field(change, field, words):
    form = GenerateForm({**VALID, **change})
    assert not form.is_valid()
    assert list(form.errors) == [field]
    assert words in form.errors[field][0]


def test_the_form_turns_the_hires_fix_on_only_above_1():
    assert GenerateForm(VALID).is_valid() and GenerateForm({**VALID, "hires_scale": 1}).is_valid()
    for data in (VALID, {**VALID, "hires_scale": 1, "hires_strength": 0.8}):
        form = GenerateForm(data)
        assert form.is_valid() and form.run_arguments()["hires_scale"] is None
    form = GenerateForm({**VALID, "hires_scale": 1.5, "width": 1024, "height": 1024})  # 1536 px: the cap
    assert form.is_valid(), form.errors
    assert {key: form.run_arguments()[key] for key in ("hires_scale", "hires_strength")} == {
        "hires_scale": 1.5,
        "hires_strength": 0.5,
    }


def post_json(client, body, token):
    return client.post(
        "/api/generate",
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hires_scale": 3}, "hires_scale"),
        ({"hires_scale": 2, "hires_strength": 1.5}, "hires_strength"),
        ({"hires_scale": 2, "width": 1024, "height": 1024}, "hires_scale"),
    ],
)
def test_the_api_refuses_them_with_a_400_naming_the_field_and_stores_nothing(client, change, field):
    token = services.api_token_create(username="alice")
    response = post_json(client, {"prompt": "a fox", **change}, token)
    assert response.status_code == 400 and response.json()["field"] == field
    assert not Run.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_api_takes_a_hires_fix_and_shows_it_in_the_run(client):
    token = services.api_token_create(username="alice")
    body = {"prompt": "a fox", "width": 64, "height": 96, "num_inference_steps": 4, "hires_scale": 2}
    response = post_json(client, body, token)
    assert response.status_code == 202, response.content
    run = Run.objects.get(pk=response.json()["run_id"])
    # The run records the final size; its steps are both passes' (4, then int(4 × 0.5)).
    assert (run.width, run.height, run.total_steps) == (128, 192, 6)
    assert (run.hires_scale, run.hires_strength, run.hires_steps) == (Decimal("2.00"), Decimal("0.50"), 4)
    detail = client.get(f"/api/v1/runs/{run.pk}", headers={"Authorization": f"Bearer {token}"}).json()
    parameters = detail["parameters"]
    # As a request gives them, so sending them again makes the same run.
    assert (parameters["width"], parameters["height"]) == (64, 96)
    assert (parameters["hires_scale"], parameters["hires_strength"], parameters["hires_steps"]) == (2.0, 0.5, 4)


# The service, its batching and the pages.


@pytest.mark.django_db
def test_a_hires_run_ends_at_the_final_size_with_its_progress_at_the_total():
    owner = UserFactory()
    run = services.run_create(
        owner=owner, prompt="a red fox", steps=3, guidance_scale=7.5, width=64, height=64, seed=4, hires_scale=2
    )
    assert (run.width, run.height, run.hires_steps, run.total_steps) == (128, 128, 3, 3 + 1)
    services.run_execute(run_id=run.pk, worker="test")
    run.refresh_from_db()
    assert run.status == JobStatus.SUCCEEDED
    assert run.step == run.total_steps == 4
    (image,) = run.outputs.all()
    assert (image.width, image.height) == (128, 128)
    with default_storage.open(image.file.name) as stored:
        data = stored.read()
    assert Image.open(BytesIO(data)).size == (128, 128)
    parameters = read_png_parameters(data)
    assert "Size: 64x64" in parameters and "Hires upscale: 2, Hires steps: 3, Hires upscaler: Lanczos" in parameters
    # The zip's parameters.txt says the same as the PNG.
    assert run_parameters_text(run=run) == parameters
    # A variation is the same request again: the same first pass, hires fix and final size.
    variation = services.run_variation_create(run=run)
    assert run_parameters(run=variation) | {"seed": run.seed} == run_parameters(run=run)
    assert (variation.width, variation.height, variation.total_steps) == (128, 128, 4)


@pytest.mark.django_db
def test_a_hires_run_and_a_plain_run_are_never_made_together():
    # The same final size (and every other setting) either way: only the hires fix differs.
    base = {"owner": UserFactory(), "steps": 4, "width": 128, "height": 128, "guidance_scale": 7.5}
    hires = {"hires_scale": "2.00", "hires_strength": "0.50", "hires_steps": 4}
    plain = RunFactory(**base)
    other_strength = RunFactory(**base, **(hires | {"hires_strength": "0.60"}))
    other_steps = RunFactory(**base, **(hires | {"hires_steps": 8}))
    alike = RunFactory(**base, **hires, prompt="a castle", seed=7)
    job = services.job_claim(model=Run, job_id=RunFactory(**base, **hires).pk, worker="gpu1")
    assert [companion.pk for companion in services.job_claim_companions(job=job, limit=7)] == [alike.pk]
    plain_job = services.job_claim(model=Run, job_id=RunFactory(**base).pk, worker="gpu1")
    assert [companion.pk for companion in services.job_claim_companions(job=plain_job, limit=7)] == [plain.pk]
    assert {other_strength.status, other_steps.status} == {JobStatus.QUEUED}


@pytest.mark.django_db
def test_the_page_offers_the_hires_fix_and_the_run_page_shows_it(user_client):
    page = user_client.get("/").content.decode()
    for name in ("hires_scale", "hires_strength", "hires_steps"):
        assert f'name="{name}"' in page
    response = user_client.post("/", {**VALID, "width": 64, "height": 64, "steps": 4, "hires_scale": "1.5"})
    run = Run.objects.get()
    assert response["Location"] == f"/runs/{run.pk}/"
    assert (run.width, run.height, run.hires_scale) == (96, 96, Decimal("1.50"))
    page = user_client.get(response["Location"]).content.decode()
    assert "96×96" in page and "upscaled ×1.5 from 64×64, strength 0.5, 4 steps" in page


@pytest.mark.django_db
def test_the_page_refuses_a_final_size_over_the_cap_in_the_form(user_client):
    response = user_client.post("/", {**VALID, "width": 1024, "hires_scale": "2"})
    assert response.status_code == 200
    assert "the hires fix ends at 1536 px a side at most" in response.content.decode()
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_image_to_image_on_the_page_ignores_the_hires_fields(user_client, tmp_path: Path):
    upload = tmp_path / "init.png"
    Image.new("RGB", (64, 64), "teal").save(upload)
    with upload.open("rb") as init_image:
        data = {**VALID, "mode": "image_to_image", "strength": 0.5, "hires_scale": "2", "init_image": init_image}
        response = user_client.post("/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    run = Run.objects.get()
    assert (run.width, run.height, run.hires_scale) == (64, 64, None)
