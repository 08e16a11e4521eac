"""End to end through real processes: uvicorn, a Celery worker, Redis and a WebSocket client."""

import io
import json
import urllib.request

import numpy as np
import pytest
from PIL import Image as PILImage
from websockets.sync.client import connect

from imagegen import services
from imagegen.engine import read_png_parameters
from imagegen.models import Run

pytestmark = pytest.mark.integration


def api(stack, method: str, path: str, token: str, body: dict | None = None):
    request = urllib.request.Request(
        path if path.startswith("http") else stack.base_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


def submit_img2img(stack, token: str, png: bytes, **fields: str) -> tuple[int, dict]:
    """The documented multipart call (`curl -F init_image=@… -F prompt=…`), made by hand."""
    return post_file(stack, token, "/api/generate_img2img", "init_image", png, **fields)


def post_file(stack, token: str, path: str, file_field: str, png: bytes, **fields: str) -> tuple[int, dict]:
    """A multipart POST with one PNG file and text fields, as curl's -F sends it."""
    boundary = "----imagegen-test"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="test.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + png
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    request = urllib.request.Request(
        f"{stack.base_url}{path}",
        method="POST",
        data=b"".join(parts),
        headers={"Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def events_until_closed(ws_url: str, token: str) -> list[dict]:
    events = []
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10) as socket:
        for message in socket:  # ends when the server closes after the job's last event
            events.append(json.loads(message))
    return events


def test_api_submit_progress_and_result_through_a_real_worker(stack):
    token = services.api_token_create(username="api-user")
    loads_before = stack.worker_log_text().count("Loading model")
    # The second: a sampler that calls the model twice a step, clip skip, and A1's prompt syntax.
    heun = {"scheduler": "heun", "clip_skip": 2, "prompt": "a lighthouse, " * 6 + "(at dawn:1.3) [fog]"}
    for seed, settings in ((11, {}), (12, heun)):
        asked = {"prompt": "a lighthouse", "num_inference_steps": 12, "width": 256, "height": 256, "seed": seed}
        status, body = api(stack, "POST", "/api/generate", token, asked | settings)
        assert status == 202
        accepted = json.loads(body)
        assert accepted["ws_url"] == f"{stack.ws_url}/api/v1/ws/{accepted['run_id']}"

        events = events_until_closed(accepted["ws_url"], token)
        steps = [event["step"] for event in events if event["type"] == "job.progress"]
        assert steps, events
        assert steps == sorted(set(steps)) and steps[-1] == 12  # in order, no repeats, up to the last step
        assert all(event["total"] == 12 for event in events if event["type"] == "job.progress")
        assert events[-1]["type"] == "job.result"
        (output,) = events[-1]["outputs"]
        assert (output["width"], output["height"]) == (256, 256)

        status, body = api(stack, "GET", accepted["status_url"], token)
        run = json.loads(body)
        assert (run["status"], run["step"], run["total_steps"]) == ("succeeded", 12, 12)
        assert run["parameters"]["seed"] == seed
        status, png = api(stack, "GET", run["outputs"][0]["url"], token)
        assert png.startswith(b"\x89PNG") and f"Seed: {seed}" in read_png_parameters(png)
        if settings:
            assert "Sampler: Heun," in read_png_parameters(png) and "Clip skip: 2" in read_png_parameters(png)
        stored = Run.objects.get(pk=accepted["run_id"]).outputs.get()
        assert (stack.media_root / stored.file.name).read_bytes() == png

    # The worker loaded the model once (at start, before the first job) and kept it warm.
    assert stack.worker_log_text().count("Loading model") - loads_before == 0
    assert stack.worker_log_text().count("Loading model") >= 1  # loaded when the worker started


def test_text_then_image_to_image_in_one_worker_without_loading_again(stack, tmp_path):
    token = services.api_token_create(username="mixed-user")
    loads_before = stack.worker_log_text().count("Loading model")
    status, body = api(
        stack,
        "POST",
        "/api/generate",
        token,
        {"prompt": "a harbour", "num_inference_steps": 4, "width": 128, "height": 128, "seed": 3},
    )
    assert status == 202
    text_run = json.loads(body)
    assert [event["type"] for event in events_until_closed(text_run["ws_url"], token)][-1] == "job.result"

    # The documented multipart call, with the result of the first run as the init image.
    first_output_url = json.loads(api(stack, "GET", text_run["status_url"], token)[1])["outputs"][0]["url"]
    _, first_png = api(stack, "GET", first_output_url, token)
    init = tmp_path / "test.png"
    init.write_bytes(first_png)
    status, image_run = submit_img2img(
        stack, token, init.read_bytes(), prompt="A watercolor painting", strength="0.5", num_inference_steps="8"
    )
    assert status == 202
    events = events_until_closed(image_run["ws_url"], token)
    steps = [event["step"] for event in events if event["type"] == "job.progress"]
    assert steps[-1] == 4 and all(e["total"] == 4 for e in events if e["type"] == "job.progress")  # int(8 × 0.5)
    assert events[-1]["type"] == "job.result"
    run = Run.objects.get(pk=image_run["run_id"])
    assert (run.generation_type, run.width, run.height) == ("image_to_image", 128, 128)
    assert stack.worker_log_text().count("Loading model") == loads_before


def test_a_run_of_three_images_through_a_real_worker(stack):
    token = services.api_token_create(username="batch-user")
    request = {"prompt": "a lighthouse", "num_inference_steps": 4, "width": 64, "height": 64}

    def made(seed: int, batch_size: int) -> dict:
        status, body = api(stack, "POST", "/api/generate", token, {**request, "seed": seed, "batch_size": batch_size})
        assert status == 202
        accepted = json.loads(body)
        events = events_until_closed(accepted["ws_url"], token)
        assert events[-1]["type"] == "job.result" and len(events[-1]["outputs"]) == batch_size
        return json.loads(api(stack, "GET", accepted["status_url"], token)[1])

    def pixels(png: bytes) -> np.ndarray:
        return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)

    run = made(300, 3)
    assert run["status"] == "succeeded" and run["parameters"]["batch_size"] == 3
    assert [output["seed"] for output in run["outputs"]] == [300, 301, 302]
    pngs = [api(stack, "GET", output["url"], token)[1] for output in run["outputs"]]
    for png, seed in zip(pngs, (300, 301, 302), strict=True):
        assert f"Seed: {seed}," in read_png_parameters(png)
    # Three different images, and image k is the one a run of one makes from seed + k.
    assert np.abs(pixels(pngs[0]) - pixels(pngs[1])).max() > 10
    for place in (1, 2):
        (alone,) = made(300 + place, 1)["outputs"]
        assert np.abs(pixels(pngs[place]) - pixels(api(stack, "GET", alone["url"], token)[1])).max() <= 2
