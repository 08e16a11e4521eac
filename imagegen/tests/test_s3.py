"""Media in an S3-compatible bucket: a real stack against moto's S3 server, over HTTP and WebSocket."""

import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile

import boto3
import pytest
from django.urls import reverse
from PIL import Image as PILImage

from conftest import start_stack, use_redis, wait_until
from imagegen import services
from imagegen.engine import read_png_parameters
from imagegen.localredis import free_port
from imagegen.localstack import die_with_parent
from imagegen.models import Run

from .test_integration import events_until_closed, submit_img2img

pytestmark = pytest.mark.integration

BUCKET = "imagegen-media-test"
# moto accepts any credentials; these keep boto3 from looking for real ones.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """moto's standalone S3 server on loopback, with an empty bucket; yields its URL."""
    folder = tmp_path_factory.mktemp("moto")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(folder / "moto.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    try:
        wait_until(
            lambda: urllib.request.urlopen(url, timeout=2).status == 200,
            timeout=30,
            what="moto's S3 server",
            log=folder / "moto.log",
        )
        boto3.client("s3", endpoint_url=url, **CREDENTIALS).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def s3_stack(django_db_setup, redis_server, s3_endpoint, tmp_path_factory):
    # Redis database 2, so this stack's worker never takes the other stack's jobs.
    stack = start_stack(
        tmp_path_factory.mktemp("s3-stack"),
        redis_server.url(2),
        IMAGEGEN_STORAGE="s3",
        AWS_STORAGE_BUCKET_NAME=BUCKET,
        AWS_S3_ENDPOINT_URL=s3_endpoint,
        AWS_ACCESS_KEY_ID=CREDENTIALS["aws_access_key_id"],
        AWS_SECRET_ACCESS_KEY=CREDENTIALS["aws_secret_access_key"],
        AWS_S3_REGION_NAME=CREDENTIALS["region_name"],
    )
    yield stack
    stack.stop()


@pytest.fixture
def stack(s3_stack, redis_server, transactional_db):
    """The S3 stack for one test: committed rows, and this process's broker pointed at its Redis."""
    use_redis(s3_stack.redis_url)
    yield s3_stack
    use_redis(redis_server.url(1))


def get(stack, path: str, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        path if path.startswith("http") else stack.base_url + path, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def small_png() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (128, 96), (40, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_to_image_keeps_media_in_the_bucket_and_serves_it_only_to_its_owner(stack, s3_endpoint):
    token = services.api_token_create(username="s3-user")
    status, accepted = submit_img2img(
        stack, token, small_png(), prompt="a lighthouse in fog", strength="0.5", num_inference_steps="4"
    )
    assert status == 202

    events = events_until_closed(accepted["ws_url"], token)
    assert events[-1]["type"] == "job.result", events
    status, body = get(stack, accepted["status_url"], token)
    run_status = json.loads(body)
    assert (status, run_status["status"]) == (200, "succeeded")
    output_url = run_status["outputs"][0]["url"]
    status, png = get(stack, output_url, token)
    assert status == 200
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and "Denoising strength: 0.5" in read_png_parameters(png)

    # Both the normalised upload and the output are objects in the bucket, and nothing is on disk.
    run = Run.objects.get(pk=accepted["run_id"])
    upload_key, output_key = run.init_image.file.name, f"outputs/{run.pk}/1-0.png"
    assert upload_key.startswith("uploads/") and upload_key.endswith(".png")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert keys == {upload_key, output_key}
    assert s3.get_object(Bucket=BUCKET, Key=output_key)["Body"].read() == png
    with PILImage.open(s3.get_object(Bucket=BUCKET, Key=upload_key)["Body"]) as upload:
        assert upload.size == (128, 96)
    assert not [path for path in stack.media_root.rglob("*") if path.is_file()]

    # The zip download reads the same objects.
    status, archive = get(stack, reverse("imagegen:run_download", args=[run.pk]), token)
    assert status == 200
    with zipfile.ZipFile(io.BytesIO(archive)) as files:
        assert files.read("generated-1.png") == png
        assert files.read("original.png") == s3.get_object(Bucket=BUCKET, Key=upload_key)["Body"].read()

    # The objects are private and the view checks the owner: another user's token finds nothing.
    other_token = services.api_token_create(username="s3-other-user")
    assert get(stack, output_url, other_token)[0] == 404
    grants = s3.get_object_acl(Bucket=BUCKET, Key=output_key)["Grants"]
    assert not [grant for grant in grants if grant["Grantee"].get("URI", "").endswith("/AllUsers")]
