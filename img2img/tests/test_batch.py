"""`manage.py batch_img2img`: a folder through the real queue and worker, resumed, and refused when wrong."""

import io
import json
import random
import threading
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from PIL import Image as PILImage

from imagegen import services
from imagegen.models import Run, UserQuota
from imagegen.services import quota
from imagegen.tests.factories import RunFactory, UserFactory
from img2img.management.commands import batch_img2img

pytestmark = pytest.mark.integration

# A stuck run fails its image within a minute instead of hanging the test until pytest's timeout.
FAST = ("--steps", "4", "--strength", "0.5", "--seed", "1", "--timeout", "60")


def picture(path: Path, size: tuple[int, int], colour: tuple[int, int, int], image_format: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", size, colour).save(path, format=image_format)


def batch(*args: str) -> tuple[int, str, str]:
    """Run the command as a user would; returns its exit status, stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        call_command("batch_img2img", *args, stdout=stdout, stderr=stderr)
        status = 0
    except CommandError as error:
        status = error.returncode
        stderr.write(str(error))
    return status, stdout.getvalue(), stderr.getvalue()


def png_text(path: Path) -> tuple[dict[str, str], tuple[int, int]]:
    """A PNG's text chunks, and its size."""
    with PILImage.open(path) as image:
        assert image.format == "PNG"
        return dict(image.text), image.size


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    picture(folder / "red.png", (64, 64), (200, 30, 30), "PNG")
    picture(folder / "green.jpg", (96, 64), (30, 200, 30), "JPEG")
    picture(folder / "blue.WEBP", (100, 70), (30, 30, 200), "WEBP")  # normalised to 96×64
    (folder / "broken.jpg").write_bytes(random.Random(1).randbytes(2048))
    (folder / "notes.txt").write_text("not a candidate")
    return folder


def test_a_folder_is_made_then_skipped_on_rerun(stack, photos, tmp_path):
    owner = UserFactory()
    out = tmp_path / "out"
    command = (str(photos), str(out), "--prompt", "a watercolour", *FAST, "--user", owner.username)

    status, stdout, stderr = batch(*command)

    assert status == 1, stdout + stderr
    assert "Done: 3, skipped: 0, failed: 1\n" in stdout
    assert "broken.jpg: Not a PNG, JPEG or WebP image." in stdout
    assert "4/4" in stderr  # the images progress bar reached the end
    assert sorted(path.name for path in out.iterdir()) == ["blue.png", "green.png", "red.png"]
    sizes = {"red.png": (64, 64), "green.png": (96, 64), "blue.png": (96, 64)}
    for name, size in sizes.items():
        text, actual_size = png_text(out / name)
        assert "Denoising strength: 0.5" in text["parameters"] and "Seed: 1" in text["parameters"]
        assert actual_size == size
        assert json.loads(text["imagegen-batch"])["prompt"] == "a watercolour"
    runs = Run.objects.all()
    assert len(runs) == 3
    assert {(run.generation_type, run.status, run.owner_id) for run in runs} == {
        ("image_to_image", "succeeded", owner.pk)
    }
    made = {name: (out / name).read_bytes() for name in sizes}

    status, stdout, stderr = batch(*command)

    assert status == 1
    assert "Done: 0, skipped: 3, failed: 1\n" in stdout
    assert Run.objects.count() == 3
    assert {name: (out / name).read_bytes() for name in sizes} == made


def test_a_changed_prompt_makes_the_image_again(stack, tmp_path):
    owner = UserFactory()
    picture(tmp_path / "in" / "trip" / "harbour.jpg", (64, 80), (90, 90, 160), "JPEG")
    out = tmp_path / "out"

    def run_batch(prompt: str, *options: str) -> str:
        status, stdout, stderr = batch(
            str(tmp_path / "in"), str(out), "--recursive", "--prompt", prompt, *FAST, "--user", owner.username, *options
        )
        assert status == 0, stdout + stderr
        return stdout

    assert "Done: 1, skipped: 0, failed: 0\n" in run_batch("a harbour at noon")
    assert "Done: 0, skipped: 1, failed: 0\n" in run_batch("a harbour at noon")
    assert "Done: 1, skipped: 0, failed: 0\n" in run_batch("a harbour at night")

    output = out / "trip" / "harbour.png"  # the sub-folder is kept
    assert png_text(output)[0]["parameters"].startswith("a harbour at night\n")
    # Another sampler or clip skip is another image too.
    changed = run_batch("a harbour at night", "--sampler", "unipc", "--clip-skip", "2")
    assert "Done: 1, skipped: 0, failed: 0\n" in changed
    assert "Sampler: UniPC," in png_text(output)[0]["parameters"]
    assert "Clip skip: 2" in png_text(output)[0]["parameters"]
    assert Run.objects.count() == 3


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--strength", "1.5", "--strength: Must be between 0 and 1 (got 1.5)."),
        ("--steps", "0", "--steps: Ensure this value is greater than or equal to 1."),
        ("--guidance", "lots", "--guidance: Enter a number."),
        ("--seed", "-1", "--seed: Ensure this value is greater than or equal to 0."),
        ("--user", "nobody", "--user: There is no user 'nobody'."),
        ("--sampler", "dpm3", "--sampler: Select a valid choice. dpm3 is not one of the available choices."),
        ("--clip-skip", "13", "--clip-skip: Ensure this value is less than or equal to 12."),
        ("--model", "sdxl", "--model: Select a valid choice. sdxl is not one of the available choices."),
    ],
)
def test_bad_option_values_are_refused_before_anything_is_made(db, photos, tmp_path, option, value, message):
    UserFactory(username="admin", is_superuser=True)
    with pytest.raises(CommandError) as refused:
        call_command("batch_img2img", str(photos), str(tmp_path / "out"), "--prompt", "fox", option, value)
    assert str(refused.value) == message
    assert not Run.objects.exists()
    assert not (tmp_path / "out").exists()


def test_without_a_superuser_the_user_must_be_named(db, photos, tmp_path):
    UserFactory()
    with pytest.raises(CommandError, match="Pass --user USERNAME"):
        call_command("batch_img2img", str(photos), str(tmp_path / "out"), "--prompt", "fox")


def test_a_used_up_quota_stops_the_batch(db, photos, tmp_path):
    owner = UserFactory(is_superuser=True)
    UserQuota.objects.create(user=owner, daily_limit=0)

    status, stdout, _ = batch(str(photos), str(tmp_path / "out"), "--prompt", "fox", *FAST)

    assert status == 1
    assert "blue.WEBP: You have used all 0 generations of your daily quota." in stdout
    assert "Done: 0, skipped: 0, failed: 1, not attempted: 3\n" in stdout
    assert not Run.objects.exists()


def test_the_batch_waits_while_the_owner_has_every_slot_taken(stack, tmp_path, settings, monkeypatch):
    settings.IMAGEGEN_MAX_ACTIVE_JOBS = 1
    monkeypatch.setattr(quota, "ACTIVE_JOBS_RETRY_SECONDS", 1)
    owner = UserFactory()
    elsewhere = RunFactory(owner=owner, status="queued")  # the owner's job from the web, never sent here
    picture(tmp_path / "in" / "a.png", (64, 64), (0, 0, 0), "PNG")
    threading.Timer(2, lambda: (services.job_cancel(job=elsewhere), connection.close())).start()

    status, stdout, _ = batch(
        str(tmp_path / "in"), str(tmp_path / "out"), "--prompt", "fox", *FAST, "--user", owner.username
    )

    assert status == 0, stdout
    assert "Waiting 1 s: You have 1 job queued or running, the most you may have at once." in stdout
    assert "Done: 1, skipped: 0, failed: 0\n" in stdout
    assert (tmp_path / "out" / "a.png").exists()


# With the `db` fixture the test's transaction never commits, so no run reaches a worker: it stays queued.


def test_a_run_that_takes_too_long_is_cancelled(db, tmp_path):
    owner = UserFactory()
    picture(tmp_path / "in" / "slow.png", (64, 64), (0, 0, 0), "PNG")
    args = (str(tmp_path / "in"), str(tmp_path / "out"), "--prompt", "fox", *FAST, "--user", owner.username)

    status, stdout, _ = batch(*args, "--timeout", "0.3")

    assert status == 1
    assert "slow.png: Timed out after 0.3 s; the run was cancelled." in stdout
    assert Run.objects.get().status == "cancelled"
    assert list((tmp_path / "out").iterdir()) == []


def test_ctrl_c_cancels_the_current_run_and_reports(db, tmp_path, monkeypatch):
    owner = UserFactory()
    picture(tmp_path / "in" / "a.png", (64, 64), (0, 0, 0), "PNG")
    picture(tmp_path / "in" / "b.png", (64, 64), (255, 255, 255), "PNG")

    def interrupt(run, **options) -> None:
        raise KeyboardInterrupt  # pressed while the first image's run is waiting

    monkeypatch.setattr(batch_img2img, "wait_for", interrupt)
    status, stdout, _ = batch(str(tmp_path / "in"), str(tmp_path / "out"), "--prompt", "fox", "--user", owner.username)

    assert status == 130
    assert "Interrupted; the current run was cancelled." in stdout
    assert "Done: 0, skipped: 0, failed: 0, not attempted: 2\n" in stdout
    assert Run.objects.get().status == "cancelled"
    assert list((tmp_path / "out").iterdir()) == []
