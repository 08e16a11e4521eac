"""Reads that are more than a filter: what a user may see, and the shapes pages and the API show."""

import functools
import hashlib
import io
import json
import logging
import uuid
import zipfile
from typing import TypeVar

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DEFAULT_DB_ALIAS, connection, connections, models
from django.db.models import Exists, OuterRef, Prefetch, QuerySet, prefetch_related_objects
from django.http import Http404
from django.urls import reverse

from refinement.models import Refinement
from refinement.selectors import Version, refinement_record, refinements_of_run, run_versions

from . import liveness
from .engine import format_parameters
from .models import REFINED, ApiToken, Image, Job, JobStatus, Run, job_models
from .storedfiles import open_image_file

logger = logging.getLogger("imagegen.health")

M = TypeVar("M", bound=models.Model)


def user_for_api_token(*, token: str):
    """The active user an API token belongs to, or None for an unknown or revoked token."""
    api_token = (
        ApiToken.objects.select_related("owner")
        .filter(key_hash=ApiToken.hash_key(token), revoked=False, owner__is_active=True)
        .first()
    )
    return api_token.owner if api_token else None


def runs_for_user(*, user) -> QuerySet[Run]:
    runs = (
        Run.objects.owned_by(user)
        .select_related("init_image")
        .prefetch_related(
            Prefetch("outputs", queryset=Image.objects.order_by("index")),
            # The run's chain beyond v1, for the cards' latest version and count.
            Prefetch(
                "refinements",
                queryset=Refinement.objects.succeeded().select_related("result").order_by("version"),
                to_attr="refined_versions",
            ),
        )
    )
    return runs.order_by("-queued_at")


# What a job's card shows that can change: added or removed, its status, step, attempt, whether its
# message was sent, when it started and ended. Plain SQL, because the same aggregates through the
# ORM took longer to compile (about 4 ms a request) than the query took to run.
_JOBS_STATE_COLUMNS = ", ".join(
    [
        "COUNT(*)",
        "SUM(step)",
        "SUM(attempts)",
        "SUM(CASE WHEN sent_at IS NULL THEN 1 ELSE 0 END)",
        "MAX(queued_at)",
        "MAX(started_at)",
        "MAX(finished_at)",
    ]
    + [f"SUM(CASE WHEN status = '{status}' THEN 1 ELSE 0 END)" for status in JobStatus.values]
)


def jobs_state(model: type[Job], *, counting: dict | None = None, **equal) -> tuple:
    """Aggregates over the jobs of a kind whose fields equal the given values, that change whenever
    one of their cards would. Read from the rows themselves, so no writer (web, worker,
    housekeeping, admin) has to remember to invalidate a cache; what they leave out (an admin
    editing a prompt) shows once a cached page expires (IMAGEGEN_PAGE_CACHE_SECONDS).

    With `counting` (field → value), one more number at the end: how many of those jobs also
    have those values (the gallery's filtered count, in the same query)."""
    database = connections[DEFAULT_DB_ALIAS]
    fields, where = _where_equal(model, tuple(equal), database.vendor)
    params = _prep_values(fields, equal.values(), database)
    columns = _JOBS_STATE_COLUMNS
    if counting:
        counted_fields, counted_where = _where_equal(model, tuple(counting), database.vendor)
        columns += f", COALESCE(SUM(CASE WHEN {counted_where} THEN 1 ELSE 0 END), 0)"
        params = _prep_values(counted_fields, counting.values(), database) + params  # SELECT's come first
    table = database.ops.quote_name(model._meta.db_table)
    with database.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {table} WHERE {where}", params)
        return tuple(cursor.fetchone())


def _prep_values(fields: list, values, database) -> list:
    """The values as the database takes them for those fields, converted as the ORM converts them."""
    return [field.get_db_prep_value(value, database) for field, value in zip(fields, values, strict=True)]


def row_by(model: type[M], **equal) -> M | None:
    """The row of `model` whose fields equal the given values (a unique key: the first row if not),
    read with plain SQL. For the reads made on every request (the session, the user, the run page's
    run): through the ORM, building and compiling the query took ten times as long as running it.
    The values are converted as the ORM converts them."""
    database = connections[DEFAULT_DB_ALIAS]
    select, converters = _row_select(model, database.vendor)
    fields, where = _where_equal(model, tuple(equal), database.vendor)
    params = _prep_values(fields, equal.values(), database)
    with database.cursor() as cursor:
        cursor.execute(f"{select} WHERE {where} LIMIT 1", params)
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for index, column, field_converters in converters:
        for convert in field_converters:
            values[index] = convert(values[index], column, database)
    return model.from_db(DEFAULT_DB_ALIAS, None, values)


# Both are cached per model and database vendor: what they return depends on nothing else.
@functools.cache
def _where_equal(model: type[models.Model], names: tuple[str, ...], vendor: str) -> tuple[list, str]:
    """The fields named (`pk` for the primary key) and `column = %s AND …` over them."""
    fields = [model._meta.pk if name == "pk" else model._meta.get_field(name) for name in names]
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    return fields, " AND ".join(f"{quote(field.column)} = %s" for field in fields)


@functools.cache
def _row_select(model: type[models.Model], vendor: str) -> tuple[str, list]:
    """SELECT of every column of the model, and for each column that needs them, the converters the
    ORM applies to its values (on SQLite: datetimes, UUIDs, booleans)."""
    database = connections[DEFAULT_DB_ALIAS]
    quote = database.ops.quote_name
    columns = [field.get_col(model._meta.db_table) for field in model._meta.concrete_fields]
    converters = []
    for index, column in enumerate(columns):
        # The backend's converters take the connection as an argument; the ones bound to this
        # thread's connection use only its settings, which every connection shares.
        functions = database.ops.get_db_converters(column) + column.get_db_converters(database)
        if functions:
            converters.append((index, column, functions))
    names = ", ".join(quote(column.target.column) for column in columns)
    return f"SELECT {names} FROM {quote(model._meta.db_table)}", converters


def state_digest(*states) -> str:
    return hashlib.blake2b(repr(states).encode(), digest_size=16).hexdigest()


def gallery_runs(*, user, query: str = "", model: str = "", run_type: str = "") -> QuerySet[Run]:
    """The user's runs the gallery shows, newest first: those whose prompt contains `query` (in any
    case), made with `model`, of `run_type` (a generation type, or "refined": with versions beyond v1)."""
    runs = runs_for_user(user=user)
    if query:
        runs = runs.filter(prompt__icontains=query)
    if model:
        runs = runs.filter(model=model)
    if run_type == REFINED:
        runs = runs.filter(Exists(Refinement.objects.succeeded().filter(run=OuterRef("pk"))))
    elif run_type:
        runs = runs.filter(generation_type=run_type)
    return runs


def gallery_models(*, user) -> list[str]:
    """The models the user's runs were made with, for the gallery's model filter."""
    models = Run.objects.owned_by(user).exclude(model="").values_list("model", flat=True)
    return sorted(models.order_by().distinct())


def gallery_state(*, user, query: str = "", model: str = "", run_type: str = "") -> dict:
    """How many runs the gallery lists with these filters, and a digest of everything its cards and
    its filters show that can change (every run of the user's, and their refinements for the runs'
    latest versions): with the filters, its cached part's key.

    The filters that compare for equality (model, generation type) are counted in the same query;
    a prompt search or "refined" costs one COUNT more."""
    counting = {"model": model} if model else {}
    if run_type and run_type != REFINED:
        counting["generation_type"] = run_type
    runs = jobs_state(Run, counting=counting, owner=user.pk)
    count = runs[-1] if counting else runs[0]
    if query or run_type == REFINED:
        count = gallery_runs(user=user, query=query, model=model, run_type=run_type).order_by().count()
    return {"count": count, "digest": state_digest(runs, jobs_state(Refinement, owner=user.pk))}


def run_page_state(*, user, run_id) -> tuple[Run, str]:
    """The user's run (its own row, for the page's parameters) and a digest of what its card and
    its versions show; another user's run is missing (404)."""
    run = row_by(Run, pk=run_id, owner=user.pk)
    if run is None:
        raise Http404("No such run.")
    own = (run.status, run.step, run.attempts, run.sent_at, run.started_at, run.finished_at)
    return run, state_digest(own, jobs_state(Refinement, run=run.pk))


def run_page_versions(*, run: Run) -> list[Refinement]:
    """Every refinement of the run for its page's versions list; the run gets its init image, its
    outputs and, as run.refined_versions, the succeeded ones its card counts (as runs_for_user
    gives): two queries, three for an image-to-image run."""
    prefetch_related_objects([run], "init_image", Prefetch("outputs", queryset=Image.objects.order_by("index")))
    refinements = list(refinements_of_run(run=run))
    run.refined_versions = [refinement for refinement in refinements if refinement.status == JobStatus.SUCCEEDED]
    return refinements


def run_for_user(*, user, run_id) -> Run:
    """The user's run; another user's run is reported as missing so its existence does not leak."""
    run = runs_for_user(user=user).filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run.")
    return run


def job_for_user(*, user, job_id) -> Job:
    """The user's job of any kind (a run, a refinement…) with this id; another user's is missing too."""
    for model in job_models():
        job = model.objects.owned_by(user).filter(pk=job_id).first()
        if job is not None:
            return job
    raise Http404("No such job.")


def job_queue_position(*, job: Job) -> int | None:
    """Where a queued job stands in the one line every kind of job waits in (1: it starts next),
    counted by when they were queued; None for a job that is not waiting. One COUNT, whatever
    the number of kinds: the queued jobs ahead of it, from every kind's table at once."""
    if job.status != JobStatus.QUEUED:
        return None
    first, *others = [
        model.objects.filter(status=JobStatus.QUEUED, queued_at__lt=job.queued_at).order_by().values("pk")
        for model in job_models()
    ]
    return first.union(*others, all=True).count() + 1


def image_for_user(*, user, image_id) -> Image:
    image = Image.objects.filter(pk=image_id, owner=user).first()
    if image is None:
        raise Http404("No such image.")
    return image


def run_output(*, run: Run, image_id) -> Image | None:
    """One of the run's own images (v1), by its id as a page posts it; None for any other id, or
    for text that is no id."""
    try:
        image_id = uuid.UUID(str(image_id))
    except ValueError:
        return None
    return next((image for image in run.outputs.all() if image.pk == image_id), None)


def image_download_name(*, image: Image) -> str:
    """<run id>-<index>.png for a run's output, <run id>-v<N>.png for a refinement's, upload-0.png else."""
    if image.run_id:
        return f"{image.run_id}-{image.index}.png"
    refinement = Refinement.objects.filter(result=image).only("run_id", "version").first()
    return f"{refinement.run_id}-v{refinement.version}.png" if refinement else f"upload-{image.index}.png"


def run_parameters(*, run: Run) -> dict:
    """Every setting that, with the seed, reproduces the run (shown on the run page and in the API).

    An imported image was made elsewhere: it has only its type and size.
    """
    if run.is_imported:
        return {"generation_type": run.generation_type, "width": run.width, "height": run.height}
    # As a request gives them: with a hires fix, the size it upscales from (its outputs have the final one).
    settings = run.settings()
    settings["num_inference_steps"] = settings.pop("steps")
    del settings["scheduler"]
    return {"generation_type": run.generation_type, **settings, "sampler": run.sampler_label}


def run_archive(*, run: Run) -> bytes:
    """The run as a zip: original.png (image to image), its versions (version_file_name), history.json
    (the chain: how each version was made) and parameters.txt/json."""
    buffer = io.BytesIO()
    parameters = run_parameters(run=run)
    history = []
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        if run.init_image:
            with open_image_file(image=run.init_image) as original:
                archive.writestr("original.png", original.read())
        for version in run_versions(run=run):
            name = version_file_name(run, version)
            with open_image_file(image=version.image) as image:
                archive.writestr(name, image.read())
            record = refinement_record(refinement=version.refinement) if version.refinement else {"version": 1}
            history.append({**record, "file": name, "sha256": version.image.sha256})
        archive.writestr("history.json", json.dumps({"run_id": str(run.pk), "versions": history}, indent=2))
        archive.writestr("parameters.json", json.dumps(parameters, indent=2))
        archive.writestr("parameters.txt", run_parameters_text(run=run))
    return buffer.getvalue()


def version_file_name(run: Run, version: Version) -> str:
    """A version's name in the zip: generated-N.png (or imported.png) for v1, then v2.png, v3.png…"""
    if version.refinement:
        return f"v{version.number}.png"
    return "imported.png" if run.is_imported else f"generated-{version.image.index + 1}.png"


def run_parameters_text(*, run: Run) -> str:
    """The parameters in the text format other Stable Diffusion tools read (as in the PNGs)."""
    if run.is_imported:
        return f"Imported image (no generation parameters)\nSize: {run.width}x{run.height}"
    width, height = run.first_pass_size
    return format_parameters(
        prompt=run.prompt,
        negative_prompt=run.negative_prompt,
        steps=run.steps,
        sampler=run.sampler_label,
        guidance_scale=run.guidance_scale,
        seed=run.seed,
        width=width,
        height=height,
        model=run.model,
        strength=run.strength_float,
        hires=run.hires,
        clip_skip=run.clip_skip,
    )


def admin_change_url(job: Job | None) -> str:
    return reverse(f"admin:{job._meta.app_label}_{job._meta.model_name}_change", args=[job.pk]) if job else ""


def operations_overview() -> dict:
    """Workers, what each is running, and queue lengths, from Celery's inspection API and Redis.

    Workers answer inspection while busy (their job runs in a pool thread). Anything that cannot
    be reached is reported as such, not raised: this page is for the moment things go wrong.
    """
    from kombu.exceptions import OperationalError
    from redis.exceptions import RedisError

    from .celery import app
    from .services.workers import model_load_failures

    overview = {"workers": [], "queues": [], "error": "", "model_load_failures": []}
    running = {
        str(job.pk): job
        for model in job_models()
        for job in model.objects.filter(status=JobStatus.RUNNING).select_related("owner")
    }
    try:
        inspector = app.control.inspect(timeout=1.0)
        active = inspector.active() or {}
        queues = inspector.active_queues() or {}
        redis = liveness.redis_client(timeout=1.0)
        queue_names = sorted({queue["name"] for listened in queues.values() for queue in listened} | {"gpu", "light"})
        overview["queues"] = [{"name": name, "waiting": redis.llen(name)} for name in queue_names]
        overview["model_load_failures"] = model_load_failures()
    except (OSError, RedisError, OperationalError) as error:
        overview["error"] = f"The broker could not be reached: {error}"
        return overview
    for worker in sorted(set(active) | set(queues)):
        jobs = []
        for task in active.get(worker, []):
            job_id = (task.get("args") or [None])[0]
            job = running.get(str(job_id))
            jobs.append({"task": task.get("name"), "job_id": job_id, "job": job, "admin_url": admin_change_url(job)})
        overview["workers"].append(
            {"name": worker, "queues": [queue["name"] for queue in queues.get(worker, [])], "jobs": jobs}
        )
    overview["queued_jobs"] = sum(model.objects.filter(status=JobStatus.QUEUED).count() for model in job_models())
    overview["running_jobs"] = len(running)
    return overview


def health() -> dict:
    """Can this installation do its work: database, Redis, storage, and a worker that beat lately.

    Each check gives up within a second or two and says only ok or not, with no addresses, names
    or error texts (the endpoint is public); the details go to the log.
    """
    checks: dict[str, dict] = {}

    def check(name: str, probe) -> None:
        try:
            checks[name] = {"ok": True, **(probe() or {})}
        except Exception as error:  # any failure of a dependency is an answer here, not a 500
            logger.warning("Health check %s failed: %r", name, error)
            checks[name] = {"ok": False, "error": f"{name} is unreachable"}

    def database() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    def storage() -> None:
        name = default_storage.save(f"healthz/{uuid.uuid4().hex}", ContentFile(b"ok"))
        default_storage.delete(name)

    check("database", database)
    check("storage", storage)
    client = liveness.redis_client(timeout=1.0)
    check("redis", lambda: {"ok": client.ping()})
    if checks["redis"]["ok"]:
        check("worker", lambda: {"last_beat_seconds_ago": liveness.newest_worker_beat_age(client)})
        age = checks["worker"].get("last_beat_seconds_ago")
        limit = settings.IMAGEGEN_HEARTBEAT_TIMEOUT
        if checks["worker"]["ok"] and (age is None or age > limit):
            checks["worker"]["ok"] = False
            checks["worker"]["error"] = (
                "no worker has reported" if age is None else f"no worker has reported for over {limit:g} s"
            )
        if age is not None:
            checks["worker"]["last_beat_seconds_ago"] = round(age, 1)
    else:
        checks["worker"] = {"ok": False, "error": "unknown while redis is unreachable"}
    failed = [name for name, result in checks.items() if not result["ok"]]
    return {"status": "unhealthy" if failed else "ok", "failed": failed, "checks": checks}
