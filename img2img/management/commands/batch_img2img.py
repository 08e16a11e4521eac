"""Image to image over a folder of pictures, through the same queue and workers as the web, resumably."""

import hashlib
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo
from tqdm import tqdm

from imagegen import limits, services
from imagegen.engine.metadata import PARAMETERS_KEY
from imagegen.models import JobStatus, Run
from img2img.forms import ApiImageToImageForm
from img2img.uploads import UploadError, normalise_upload

INPUT_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp"}
# The PNG text chunk recording which input and settings made an output, so a rerun can skip it.
BATCH_KEY = "imagegen-batch"
POLL_SECONDS = 0.2
# The request form's field names, and the options a user types for them.
OPTION_NAMES = {
    "prompt": "--prompt",
    "negative_prompt": "--negative-prompt",
    "strength": "--strength",
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance",
    "seed": "--seed",
    "scheduler": "--sampler",
    "clip_skip": "--clip-skip",
    "model": "--model",
}


class ImageError(Exception):
    """This image could not be made; str() says why. The batch goes on with the next one."""


class BatchStoppedError(ImageError):
    """This image could not be made, and every later one would fail the same way."""


@dataclass(frozen=True)
class BatchSettings:
    prompt: str
    negative_prompt: str
    strength: float
    steps: int
    guidance_scale: float
    seed: int | None
    scheduler: str
    clip_skip: int
    model: str

    def job_key(self, *, source_sha256: str) -> dict:
        """What makes an output: the same key means a rerun would make the same image again."""
        return {
            "source_sha256": source_sha256,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "strength": round(self.strength, 2),  # as services.run_create stores it
            "steps": self.steps,
            "guidance": self.guidance_scale,
            "seed": self.seed,
            "sampler": self.scheduler,
            "clip_skip": self.clip_skip,
            "model": self.model,
        }


@dataclass
class BatchReport:
    total: int
    done: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def not_attempted(self) -> int:
        return self.total - self.done - self.skipped - len(self.failures)

    def summary(self) -> str:
        line = f"Done: {self.done}, skipped: {self.skipped}, failed: {len(self.failures)}"
        return line + (f", not attempted: {self.not_attempted}" if self.not_attempted else "")


class Command(BaseCommand):
    help = (
        "Run image to image on every PNG, JPEG and WebP file in INPUT_DIR, writing OUTPUT_DIR/<name>.png. "
        "Runs go through the same queue and workers as the web. Outputs made earlier from the same file "
        "and settings are skipped, so an interrupted batch can simply be started again."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("input_dir", metavar="INPUT_DIR")
        parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="Created if missing.")
        # Numbers are parsed by the request form, so the command reports what the web and API would.
        parser.add_argument("--prompt", required=True, metavar="TEXT")
        parser.add_argument("--negative-prompt", default="", metavar="TEXT")
        parser.add_argument("--strength", default=limits.DEFAULT_STRENGTH, help="0 keeps the image, 1 replaces it.")
        parser.add_argument(
            "--steps", default=limits.API_DEFAULT_STEPS, help="Sampler steps; image to image runs steps × strength."
        )
        parser.add_argument("--guidance", default=limits.DEFAULT_GUIDANCE, help="Guidance (CFG) scale.")
        parser.add_argument("--seed", default=None, help="The same seed for every image; random when left out.")
        parser.add_argument("--sampler", default="", help="A sampler key (see the README); Euler a when left out.")
        parser.add_argument("--clip-skip", default="", help="1 (the default) to 12, as AUTOMATIC1111 counts it.")
        parser.add_argument("--model", default="", help="A model offered (IMAGEGEN_MODELS); the default when left out.")
        parser.add_argument(
            "--user", default=None, metavar="USERNAME", help="Who owns the runs; the first superuser when left out."
        )
        parser.add_argument("--recursive", action="store_true", help="Include sub-folders, mirrored in OUTPUT_DIR.")
        parser.add_argument(
            "--timeout", type=float, default=600, metavar="SECONDS", help="Seconds to wait for each image (600)."
        )

    def handle(self, *args, input_dir: str, output_dir: str, recursive: bool, timeout: float, **options) -> None:
        batch = validated_settings(options)
        if timeout <= 0:
            raise CommandError(f"--timeout: Must be more than 0 seconds (got {timeout:g}).")
        owner = batch_owner(options["user"])
        input_path, output_path = Path(input_dir), Path(output_dir)
        if not input_path.is_dir():
            raise CommandError(f"INPUT_DIR {input_dir} is not a folder.")
        if input_path.resolve().is_relative_to(output_path.resolve()):
            raise CommandError("OUTPUT_DIR must not be INPUT_DIR or contain it: outputs could replace inputs.")
        inputs = find_inputs(input_path, output_path, recursive=recursive)
        output_path.mkdir(parents=True, exist_ok=True)
        if not inputs:
            self.stdout.write(f"No PNG, JPEG or WebP files in {input_dir}.")

        self.progress_stream = options.get("stderr") or sys.stderr
        self.current_run: Run | None = None
        report = BatchReport(total=len(inputs))
        interrupted = stopped = cancelled = False
        outputs_taken: dict[str, str] = {}
        images_bar = tqdm(total=len(inputs), unit="image", file=self.progress_stream, position=0)
        steps_bar = tqdm(total=0, unit="step", file=self.progress_stream, position=1, leave=False)
        try:
            for relative in inputs:
                name = relative.as_posix()
                output_relative = relative.with_suffix(".png")
                images_bar.set_postfix_str(name)
                try:
                    # Two inputs differing only in extension (or case) would overwrite each other's output.
                    earlier = outputs_taken.setdefault(output_relative.as_posix().lower(), name)
                    if earlier != name:
                        raise ImageError(f"{earlier} has the same output, {output_relative.as_posix()}; rename one.")
                    made = self.make_output(
                        source=input_path / relative,
                        output=output_path / output_relative,
                        batch=batch,
                        owner=owner,
                        timeout=timeout,
                        steps_bar=steps_bar,
                    )
                except ImageError as error:
                    report.failures.append((name, str(error)))
                    self.say(f"{name}: {error}")
                    if isinstance(error, BatchStoppedError):
                        stopped = True
                        break
                else:
                    if made:
                        report.done += 1
                        self.say(f"{name}: done, {output_path / output_relative}")
                    else:
                        report.skipped += 1
                        self.say(f"{name}: skipped, made earlier with the same settings")
                images_bar.update()
        except KeyboardInterrupt:
            interrupted = True
            if self.current_run is not None:
                cancelled = services.job_cancel(job=self.current_run)
        finally:
            steps_bar.close()
            images_bar.close()

        if interrupted:
            self.stdout.write("Interrupted; the current run was cancelled." if cancelled else "Interrupted.")
        elif stopped:
            self.stdout.write("Stopped: the remaining images would fail the same way.")
        self.stdout.write(report.summary())
        if report.failures:
            self.stdout.write("Failed:")
            for name, reason in report.failures:
                self.stdout.write(f"  {name}: {reason}")
        if interrupted:
            raise CommandError("Interrupted.", returncode=130)
        if report.failures:
            raise CommandError(f"{len(report.failures)} of {report.total} images failed.", returncode=1)

    def say(self, line: str) -> None:
        """Write a line to stdout without tearing the progress bars when both share a terminal."""
        with tqdm.external_write_mode(file=self.progress_stream):
            self.stdout.write(line)

    def make_output(
        self, *, source: Path, output: Path, batch: BatchSettings, owner, timeout: float, steps_bar: tqdm
    ) -> bool:
        """Make one output image; False when an output from the same file and settings is already there."""
        self.current_run = None
        try:
            with source.open("rb") as handle:
                job_key = batch.job_key(source_sha256=hashlib.file_digest(handle, "sha256").hexdigest())
                if stored_job_key(output) == job_key:
                    return False
                init_upload = normalise_upload(File(handle))
        except UploadError as error:
            raise ImageError(str(error)) from error
        except OSError as error:
            raise ImageError(f"The file could not be read ({error.strerror or error}).") from error
        self.current_run = self.submit_when_allowed(owner=owner, batch=batch, init_upload=init_upload)
        wait_for(self.current_run, timeout=timeout, steps_bar=steps_bar)
        write_output(self.current_run, output=output, job_key=job_key)
        return True

    def submit_when_allowed(self, *, owner, batch: BatchSettings, init_upload) -> Run:
        """The run, submitted as soon as the owner's fair-use limits allow: the batch counts like any
        other submission (it holds one slot at a time), and waits while the owner's jobs fill every
        slot or the minute's submissions are used up. The daily quota stops it: that takes a day."""
        while True:
            try:
                return services.run_create(
                    owner=owner,
                    prompt=batch.prompt,
                    negative_prompt=batch.negative_prompt,
                    steps=batch.steps,
                    guidance_scale=batch.guidance_scale,
                    seed=batch.seed,
                    init_upload=init_upload,
                    strength=batch.strength,
                    scheduler=batch.scheduler,
                    clip_skip=batch.clip_skip,
                    model=batch.model,
                )
            except services.QuotaExceededError as error:
                if error.retry_after is None:
                    raise BatchStoppedError(str(error)) from error
                self.say(f"Waiting {error.retry_after} s: {error}")
                time.sleep(error.retry_after)


def validated_settings(options: dict) -> BatchSettings:
    """The request settings, checked by the same form the image-to-image API uses."""
    form = ApiImageToImageForm(
        {
            "prompt": options["prompt"],
            "negative_prompt": options["negative_prompt"],
            "strength": options["strength"],
            "num_inference_steps": options["steps"],
            "guidance_scale": options["guidance"],
            "seed": "" if options["seed"] is None else options["seed"],
            "scheduler": options["sampler"],
            "clip_skip": options["clip_skip"],
            "model": options["model"],
        }
    )
    form.is_valid()  # the init image is missing here by design; each file is checked on its own
    errors = [
        f"{option}: {' '.join(form.errors[name])}" for name, option in OPTION_NAMES.items() if name in form.errors
    ]
    if errors:
        raise CommandError("\n".join(errors))
    cleaned = form.cleaned_data
    return BatchSettings(
        prompt=cleaned["prompt"],
        negative_prompt=cleaned["negative_prompt"],
        strength=cleaned["strength"],
        steps=cleaned["num_inference_steps"],
        guidance_scale=cleaned["guidance_scale"],
        seed=cleaned["seed"],
        scheduler=cleaned["scheduler"],
        clip_skip=cleaned["clip_skip"],
        model=cleaned["model"],
    )


def batch_owner(username: str | None):
    user_model = get_user_model()
    if username is None:
        owner = user_model.objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
        if owner is None:
            raise CommandError("There is no superuser to own the runs. Pass --user USERNAME.")
        return owner
    try:
        owner = user_model.objects.get_by_natural_key(username)
    except user_model.DoesNotExist:
        raise CommandError(f"--user: There is no user {username!r}.") from None
    if not owner.is_active:
        raise CommandError(f"--user: The user {username!r} is inactive.")
    return owner


def find_inputs(input_dir: Path, output_dir: Path, *, recursive: bool) -> list[Path]:
    """Candidate files by extension, relative to input_dir and sorted; hidden files and outputs left out."""
    output_dir = output_dir.resolve()
    found = []
    for path in input_dir.rglob("*") if recursive else input_dir.iterdir():
        relative = path.relative_to(input_dir)
        if path.suffix.lower() not in INPUT_EXTENSIONS or any(part.startswith(".") for part in relative.parts):
            continue
        # An OUTPUT_DIR inside INPUT_DIR holds this command's own outputs, never inputs.
        if path.is_file() and not path.resolve().is_relative_to(output_dir):
            found.append(relative)
    return sorted(found, key=lambda relative: relative.as_posix())


def stored_job_key(output: Path) -> dict | None:
    """The job key recorded in an earlier output, or None when there is no readable one."""
    try:
        with PILImage.open(output) as picture:
            text = getattr(picture, "text", {}).get(BATCH_KEY)
        return json.loads(text) if text else None
    except (OSError, SyntaxError, ValueError):
        return None


def wait_for(run: Run, *, timeout: float, steps_bar: tqdm) -> None:
    """Poll the run until it succeeds; raise ImageError when it fails, is cancelled or takes too long."""
    deadline = time.monotonic() + timeout
    steps_bar.reset(total=run.total_steps)
    while True:
        run.refresh_from_db()
        steps_bar.update(run.step - steps_bar.n)
        if run.status == JobStatus.SUCCEEDED:
            return
        if run.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise ImageError(run.error or f"The run was {run.get_status_display().lower()}.")
        # job_cancel is False when the run finished meanwhile: the next poll sees how.
        if time.monotonic() >= deadline and services.job_cancel(job=run):
            raise ImageError(f"Timed out after {timeout:g} s; the run was cancelled.")
        time.sleep(POLL_SECONDS)


def write_output(run: Run, *, output: Path, job_key: dict) -> None:
    """The worker's PNG with its parameters, plus the job key; replaced in one step, never half written."""
    with run.outputs.get().file.open("rb") as stored, PILImage.open(stored) as picture:
        picture.load()
        info = PngInfo()
        if PARAMETERS_KEY in picture.text:
            info.add_text(PARAMETERS_KEY, picture.text[PARAMETERS_KEY])
        info.add_text(BATCH_KEY, json.dumps(job_key, sort_keys=True))
        output.parent.mkdir(parents=True, exist_ok=True)
        # A hidden name without an input extension, so neither a rerun nor --recursive picks it up.
        partial = output.with_name(f".{output.name}.{uuid.uuid4().hex}.part")
        try:
            with partial.open("xb") as file:
                picture.save(file, format="PNG", pnginfo=info)
            partial.replace(output)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
