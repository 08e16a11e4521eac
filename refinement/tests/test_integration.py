"""Refinements end to end through real processes: uvicorn, a Celery worker, Redis, channels_redis
and a WebSocket client, the same job core as runs (progress, cancel, crash recovery)."""

import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from websockets.sync.client import connect

from imagegen import services
from imagegen.engine import read_png_parameters
from imagegen.models import JobStatus, Run
from imagegen.tests.test_integration import api, events_until_closed, post_file
from imagegen.tests.test_reliability import (
    finished,
    kill_the_worker_running,
    record,
    running_at_step,
    wait_for_job,
    wait_for_run,
)
from refinement.models import Refinement
from refinement.services import RECORD_CHUNK
from refinement.tests.pixels import reach

pytestmark = pytest.mark.integration


def generate(stack, token: str, size: int = 128, steps: int = 4) -> str:
    body = {"prompt": "a harbour at noon", "num_inference_steps": steps, "width": size, "height": size, "seed": 3}
    status, accepted = api(stack, "POST", "/api/generate", token, body)
    assert status == 202
    run_id = json.loads(accepted)["run_id"]
    assert wait_for_run(run_id, finished).status == JobStatus.SUCCEEDED
    return run_id


def refine(stack, token: str, run_id: str, **body) -> dict:
    body = {"type": "general", "payload": {"prompt": "the same harbour at dusk"}, **body}
    status, accepted = api(stack, "POST", f"/api/v1/runs/{run_id}/refine", token, body)
    assert status == 201
    return json.loads(accepted)


def fetch(stack, token: str, url: str) -> dict:
    return json.loads(api(stack, "GET", url, token)[1])


def test_refine_streams_ordered_progress_and_the_result_over_the_api_websocket(stack):
    token = services.api_token_create(username="refine-api-user")
    run_id = generate(stack, token)
    accepted = refine(stack, token, run_id, creativity=2, seed=77)
    assert accepted["version"] == 2 and accepted["ws_url"] == f"{stack.ws_url}/api/v1/ws/{accepted['job_id']}"

    events = events_until_closed(accepted["ws_url"], token)
    steps = [event["step"] for event in events if event["type"] == "job.progress"]
    assert steps and steps == sorted(set(steps)) and steps[-1] == 15  # int(30 × 0.50), in order
    assert all(event["total"] == 15 for event in events if event["type"] == "job.progress")
    assert events[-1]["type"] == "job.result"
    (output,) = events[-1]["outputs"]
    assert (output["width"], output["height"]) == (128, 128)  # the parent's size

    detail = fetch(stack, token, accepted["status_url"])
    assert (detail["status"], detail["step"], detail["total_steps"], detail["version"]) == ("succeeded", 15, 15, 2)
    _, png = api(stack, "GET", detail["result"]["url"], token)
    assert "Seed: 77" in read_png_parameters(png) and "Denoising strength: 0.5" in read_png_parameters(png)
    assert json.loads(PILImage.open(io.BytesIO(png)).text[RECORD_CHUNK])["parent_version"] == 1
    run = fetch(stack, token, f"/api/v1/runs/{run_id}")
    assert [version["version"] for version in run["versions"]] == [1, 2]


def test_chain_v1_v2_v3_each_from_the_one_before(stack):
    token = services.api_token_create(username="chain-user")
    run_id = generate(stack, token)
    v2 = refine(stack, token, run_id, creativity=1)
    events_until_closed(v2["ws_url"], token)
    v2_image = fetch(stack, token, v2["status_url"])["result"]["image_id"]
    v3 = refine(stack, token, run_id, creativity=1, parent_image_id=v2_image)
    assert events_until_closed(v3["ws_url"], token)[-1]["type"] == "job.result"
    versions = fetch(stack, token, f"/api/v1/runs/{run_id}")["versions"]
    assert [(v["version"], v["parent_version"], v["type"]) for v in versions] == [
        (1, None, "text_to_image"),
        (2, 1, "general"),
        (3, 2, "general"),
    ]
    assert versions[1]["image_id"] == v2_image
    pixels = [np.asarray(PILImage.open(io.BytesIO(api(stack, "GET", v["url"], token)[1]))) for v in versions]
    assert not np.array_equal(pixels[0], pixels[1]) and not np.array_equal(pixels[1], pixels[2])


def test_cancel_a_running_refinement_stops_it_within_a_step_and_the_next_job_starts(stack):
    token = services.api_token_create(username="refine-cancel-user")
    headers = {"Authorization": f"Bearer {token}"}
    run_id = generate(stack, token, size=1024, steps=1)
    accepted = refine(stack, token, run_id, creativity=3)  # 22 steps at 1024×1024
    wait_for_job(Refinement, accepted["job_id"], running_at_step(2))
    with connect(accepted["ws_url"], additional_headers=headers, open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["status"] == "running"
        socket.recv(timeout=10)  # a progress event: it is stepping
        status, body = api(stack, "POST", f"/api/v1/refinements/{accepted['job_id']}/cancel", token)
        assert (status, json.loads(body)["status"]) == (200, "cancelled")
        after_cancel = [json.loads(message) for message in socket]
    assert len([event for event in after_cancel if event["type"] == "job.progress"]) <= 1
    assert after_cancel[-1]["type"] == "job.status" and after_cancel[-1]["status"] == "cancelled"
    stopped = Refinement.objects.get(pk=accepted["job_id"])
    assert stopped.status == JobStatus.CANCELLED and stopped.step < 22 and stopped.result is None
    assert not (stack.media_root / "outputs" / run_id / "refinements").exists()
    following = refine(stack, token, run_id, creativity=1)
    assert wait_for_job(Refinement, following["job_id"], finished, timeout=30).status == JobStatus.SUCCEEDED
    record(jobs_cancelled=1)


def test_a_worker_killed_during_a_refinement_loses_nothing(stack):
    token = services.api_token_create(username="refine-crash-user")
    run_id = generate(stack, token, size=1024, steps=1)
    accepted = refine(stack, token, run_id, creativity=3)
    wait_for_job(Refinement, accepted["job_id"], running_at_step(3))
    killed = kill_the_worker_running(stack, accepted["job_id"], model=Refinement)
    stack.start_worker(f"{killed}-after-refinement-crash")
    refinement = wait_for_job(Refinement, accepted["job_id"], finished, timeout=120)
    assert (refinement.status, refinement.attempts) == (JobStatus.SUCCEEDED, 2), refinement.error
    assert refinement.worker.startswith(f"{killed}-after-refinement-crash@")
    assert refinement.version == 2 and refinement.result is not None
    files = list((stack.media_root / "outputs" / run_id / "refinements").iterdir())
    assert [path.name for path in files] == [f"{refinement.pk}-2-0.png"]  # attempt 2's, and only it
    record(jobs_killed=1, jobs_recovered=1)


def test_import_then_refine(stack, tmp_path):
    token = services.api_token_create(username="import-user")
    photo = io.BytesIO()
    PILImage.new("RGB", (200, 136), (30, 120, 200)).save(photo, format="PNG")
    status, imported = post_file(stack, token, "/api/v1/imports", "image", photo.getvalue())
    assert status == 201 and (imported["width"], imported["height"]) == (200, 136)
    run = Run.objects.get(pk=imported["run_id"])
    assert (run.generation_type, run.status) == ("imported", JobStatus.SUCCEEDED)

    accepted = refine(stack, token, imported["run_id"], creativity=1)
    assert accepted["version"] == 2
    assert events_until_closed(accepted["ws_url"], token)[-1]["type"] == "job.result"
    detail = fetch(stack, token, accepted["status_url"])
    assert detail["parent_image_id"] == imported["image_id"]
    assert (detail["result"]["width"], detail["result"]["height"]) == (200, 136)


def test_regional_refinement_repaints_its_rectangles_and_nothing_else(stack):
    token = services.api_token_create(username="region-user")
    run_id = generate(stack, token, size=256)
    masks = [{"bbox": [20, 30, 60, 40], "prompt": "a red door"}, {"bbox": [150, 120, 80, 90], "prompt": "a cat"}]
    accepted = refine(stack, token, run_id, type="region", payload={"masks": masks}, creativity=1)
    events = events_until_closed(accepted["ws_url"], token)
    steps = [event["step"] for event in events if event["type"] == "job.progress"]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # int(30 × 0.50) for each of the two rectangles
    assert events[-1]["type"] == "job.result"

    run = fetch(stack, token, f"/api/v1/runs/{run_id}")
    v1, v2 = (np.asarray(PILImage.open(io.BytesIO(api(stack, "GET", v["url"], token)[1]))) for v in run["versions"])
    near = reach((256, 256), [mask["bbox"] for mask in masks])
    assert np.array_equal(v2[~near], v1[~near])  # bit for bit beyond 16 px of the rectangles
    assert (v2[30:70, 20:80] != v1[30:70, 20:80]).any() and (v2[120:210, 150:230] != v1[120:210, 150:230]).any()
    _, png = api(stack, "GET", run["versions"][1]["url"], token)
    parameters = read_png_parameters(png)
    assert "Inpaint area: Only masked" in parameters and "Masked area padding: 32" in parameters


def test_subject_repair_with_an_uploaded_reference_and_a_box(stack):
    token = services.api_token_create(username="subject-user")
    run_id = generate(stack, token, size=128)
    reference = io.BytesIO()
    PILImage.new("RGB", (96, 96), (240, 200, 30)).save(reference, format="PNG")
    status, uploaded = post_file(stack, token, "/api/v1/uploads", "image", reference.getvalue())
    assert status == 201 and set(uploaded) == {"file_id", "url"}
    payload = {"referenceFileId": uploaded["file_id"], "instructions": "a golden retriever", "bbox": [30, 30, 50, 40]}
    accepted = refine(stack, token, run_id, type="subject", payload=payload, creativity=2)
    events = events_until_closed(accepted["ws_url"], token)
    assert [e["step"] for e in events if e["type"] == "job.progress"][-1] == 16  # int(30 × 0.55)
    detail = fetch(stack, token, accepted["status_url"])
    assert detail["status"] == "succeeded" and detail["payload"] == payload
    run = fetch(stack, token, f"/api/v1/runs/{run_id}")
    v1, v2 = (np.asarray(PILImage.open(io.BytesIO(api(stack, "GET", v["url"], token)[1]))) for v in run["versions"])
    near = reach((128, 128), [payload["bbox"]])
    assert np.array_equal(v2[~near], v1[~near]) and (v2[30:70, 30:80] != v1[30:70, 30:80]).any()
    _, png = api(stack, "GET", run["versions"][1]["url"], token)
    assert "Reference: reference-only 0.5" in read_png_parameters(png)


def test_text_repair_finds_the_text_rewrites_it_and_says_it_reads_right(stack):
    token = services.api_token_create(username="text-user")
    sign = PILImage.new("RGB", (640, 240), (236, 232, 220))
    ImageDraw.Draw(sign).text(
        (30, 60),
        "GRAND OPENNING",
        font=ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 44),
        fill=(160, 20, 20),
    )
    photo = io.BytesIO()
    sign.save(photo, format="PNG")
    _, imported = post_file(stack, token, "/api/v1/imports", "image", photo.getvalue())
    lines = fetch(stack, token, f"/api/v1/images/{imported['image_id']}/text")["lines"]
    assert [line["text"] for line in lines] == ["GRAND OPENNING"]
    correction = {"bbox": lines[0]["bbox"], "text": "GRAND OPENING"}
    accepted = refine(
        stack, token, imported["run_id"], type="text", payload={"corrections": [correction]}, creativity=1
    )
    events = events_until_closed(accepted["ws_url"], token)
    assert events[-1]["type"] == "job.result"
    detail = fetch(stack, token, accepted["status_url"])
    (check,) = detail["checks"]
    assert (check["read"], check["verified"], check["font"], check["size"]) == (
        "GRAND OPENING",
        True,
        "DejaVu Sans Bold",
        44,
    )
    _, png = api(stack, "GET", detail["result"]["url"], token)
    assert (
        fetch(stack, token, f"/api/v1/images/{detail['result']['image_id']}/text")["lines"][0]["text"]
        == "GRAND OPENING"
    )
    assert "Verified: 1/1" in read_png_parameters(png)
