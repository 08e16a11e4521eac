"""Which queue a job goes to (services.routing): its model's while a live worker holds that model
loaded, else the queue every worker reads. Against the tests' real Redis; the workers' beats are
written as a worker writes them (liveness.record_worker_beat)."""

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis import Redis

from conftest import NO_FAIR_USE_LIMITS, use_redis, wait_until
from imagegen import liveness, services
from imagegen.engine.tiny import ensure_tiny_model
from imagegen.localstack import start_stack
from imagegen.models import JobStatus, Run
from imagegen.services import workers
from imagegen.services.routing import job_queue, model_queue
from refinement.models import Refinement

from .factories import RunFactory
from .test_integration import api

MODELS = "tiny=Test model; /models/sd15=Stable Diffusion 1.5; Lykon/dreamshaper-8=DreamShaper"


@pytest.fixture
def beats(settings):
    settings.IMAGEGEN_MODELS = MODELS
    client = Redis.from_url(settings.REDIS_URL)
    yield client
    # No other test's job may be sent to these workers, which do not exist.
    client.delete(*client.keys("imagegen:queue-consumers:*"), liveness.WORKER_BEATS_KEY)


def test_each_model_has_a_queue_of_its_own_whatever_signs_its_id_holds():
    assert model_queue("gpu", "sd15") == "gpu.model.sd15"
    assert model_queue("gpu", "Lykon/dreamshaper-8") == "gpu.model.Lykon%2Fdreamshaper-8"
    assert model_queue("gpu", "a/b") != model_queue("gpu", "a_b")


@pytest.mark.django_db
def test_a_job_goes_to_a_live_worker_that_holds_its_model_and_to_any_worker_otherwise(beats, settings):
    run = RunFactory(model="Lykon/dreamshaper-8")
    assert job_queue(run) == "gpu"  # no worker holds it: any worker takes it and loads it

    liveness.record_worker_beat(beats, "gpu-a@host", queues=["gpu.model.tiny"])
    assert job_queue(run) == "gpu"  # a worker holds another model only
    liveness.record_worker_beat(beats, "gpu-b@host", queues=["gpu.model.Lykon%2Fdreamshaper-8"])
    assert job_queue(run) == "gpu.model.Lykon%2Fdreamshaper-8"
    assert job_queue(RunFactory(model="tiny")) == "gpu.model.tiny"
    assert job_queue(Refinement(model="tiny")) == "gpu.model.tiny"  # every kind of job alike

    # Its worker unloads the model: its next beat withdraws the queue.
    liveness.record_worker_beat(beats, "gpu-b@host", withdrawn=["gpu.model.Lykon%2Fdreamshaper-8"])
    assert job_queue(run) == "gpu"


@pytest.mark.django_db
def test_a_worker_that_stopped_beating_gets_no_job(beats, settings):
    stale = time.time() - settings.IMAGEGEN_HEARTBEAT_TIMEOUT - 1
    liveness.record_worker_beat(beats, "gone@host", queues=["gpu.model.sd15"], now=stale)
    assert job_queue(RunFactory(model="sd15")) == "gpu"
    liveness.record_worker_beat(beats, "alive@host", queues=["gpu.model.sd15"])
    assert job_queue(RunFactory(model="sd15")) == "gpu.model.sd15"


@pytest.mark.django_db
def test_a_job_with_no_model_or_one_no_longer_offered_goes_to_any_worker(beats):
    liveness.record_worker_beat(beats, "gpu-a@host", queues=["gpu.model.tiny", "gpu.model.gone"])
    assert job_queue(RunFactory(model="")) == "gpu"  # some imports name none: no preference
    assert job_queue(RunFactory(model="gone")) == "gpu"
    # A run stored before IMAGEGEN_MODELS names its model by source: it goes by the model's id.
    liveness.record_worker_beat(beats, "gpu-b@host", queues=["gpu.model.sd15"])
    assert job_queue(RunFactory(model="/models/sd15")) == "gpu.model.sd15"


@pytest.mark.django_db
def test_without_redis_every_job_goes_to_any_worker(beats, settings):
    liveness.record_worker_beat(beats, "gpu-a@host", queues=["gpu.model.tiny"])
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    assert job_queue(RunFactory(model="tiny")) == "gpu"


def test_a_worker_shutting_down_withdraws_every_model_queue_at_once(beats):
    liveness.record_worker_beat(beats, "leaving@host", queues=["gpu.model.sd15", "gpu.model.Lykon%2Fdreamshaper-8"])
    liveness.record_worker_beat(beats, "staying@host", queues=["gpu.model.sd15"])
    try:
        services.worker_beat_withdraw("leaving@host")
    finally:
        workers._shutting_down.clear()  # this process's beat (it has none) may advertise again
    assert holders(beats, "gpu.model.sd15") == {"staying@host"}
    assert holders(beats, "gpu.model.Lykon%2Fdreamshaper-8") == set()


def holders(beats: Redis, queue: str) -> set[str]:
    return {name.decode() for name in beats.zrange(liveness.QUEUE_CONSUMERS_KEY.format(queue=queue), 0, -1)}


@pytest.mark.integration
def test_jobs_run_on_the_worker_holding_their_model_and_a_stranded_one_is_resent(
    redis_server, transactional_db, tmp_path, settings
):
    copy = tmp_path / "models" / "tiny-copy"
    shutil.copytree(ensure_tiny_model(settings.IMAGEGEN_MODEL_CACHE), copy)
    offered = f"tiny=Test model; {copy}=A copy of it"
    url = redis_server.url(4)  # not the live stack's: its worker holds one model only
    use_redis(url)
    # Room for one model only: a worker holds the one it used last, having unloaded the other.
    stack = start_stack(
        tmp_path, url, IMAGEGEN_MODELS=offered, IMAGEGEN_MODEL_MEMORY_GB="0.000001", **NO_FAIR_USE_LIMITS
    )
    try:
        stack.start_worker("worker2")
        settings.MEDIA_ROOT, settings.IMAGEGEN_MODELS = stack.media_root, offered
        settings.IMAGEGEN_HEARTBEAT_TIMEOUT = float(stack.env["IMAGEGEN_HEARTBEAT_TIMEOUT"])
        beats = Redis.from_url(url)
        token = services.api_token_create(username="two-models-two-workers")

        def submit(model: str) -> str:
            body = {"prompt": f"a {model} lighthouse", "num_inference_steps": 3, "width": 64, "height": 64}
            return json.loads(api(stack, "POST", "/api/generate", token, body | {"model": model})[1])["run_id"]

        def finished(run_ids: list[str]) -> list[Run]:
            wait_until(
                lambda: (
                    not Run.objects.filter(pk__in=run_ids, status__in=(JobStatus.QUEUED, JobStatus.RUNNING)).exists()
                ),
                timeout=120,
                what="the jobs to finish",
            )
            runs = list(Run.objects.filter(pk__in=run_ids))
            assert {run.status for run in runs} == {JobStatus.SUCCEEDED}, [run.error for run in runs]
            return runs

        def holding(model: str) -> set[str]:
            """The workers whose beat says they consume the model's queue, by name."""
            live = beats.zrangebyscore(
                liveness.QUEUE_CONSUMERS_KEY.format(queue=model_queue("gpu", model)), time.time() - 3, "+inf"
            )
            return {name.decode().split("@")[0] for name in live}

        # Both workers load the default model as they start, and say so.
        wait_until(lambda: holding("tiny") == {"worker1", "worker2"}, timeout=30, what="both workers to hold tiny")
        # No worker holds the copy: its first job goes to any, which loads it in place of tiny.
        (first,) = finished([submit("tiny-copy")])
        copy_worker = first.worker.split("@")[0]
        (tiny_worker,) = {"worker1", "worker2"} - {copy_worker}
        wait_until(
            lambda: holding("tiny-copy") == {copy_worker} and holding("tiny") == {tiny_worker},
            timeout=30,
            what="the workers to advertise the models they hold",
        )

        # From now on each model's jobs go to the worker that holds it, submitted all at once.
        with ThreadPoolExecutor(max_workers=8) as pool:
            run_ids = list(pool.map(submit, ["tiny", "tiny-copy"] * 4))
        runs = finished(run_ids)
        assert {(run.model, run.worker.split("@")[0]) for run in runs} == {
            ("tiny", tiny_worker),
            ("tiny-copy", copy_worker),
        }
        # Each worker loaded its model once: none was loaded again, unloading the other.
        assert stack.worker_log_text().count("Loading model tiny-copy") == 1
        assert stack.worker_log_text().count("Loading model tiny ") == 2  # each worker's warm-up

        # The copy's worker dies; until its beat is stale the copy's jobs are still sent to it.
        stack.kill_worker(copy_worker)
        stranded = submit("tiny-copy")
        assert beats.llen(model_queue("gpu", "tiny-copy")) == 1
        # Housekeeping takes it out of the queue no one reads and sends it again: the other worker runs it.
        (run,) = finished([stranded])
        assert run.worker.split("@")[0] == tiny_worker and run.attempts == 1
        assert not beats.exists(model_queue("gpu", "tiny-copy"))
        assert "resent 1" in (stack.folder / "housekeeping.log").read_text()

        # A worker that shuts down withdraws its queues at once, rather than when its beat goes stale.
        wait_until(lambda: holding("tiny-copy") == {tiny_worker}, timeout=30, what="the other worker to hold the copy")
        stack.stop_worker(tiny_worker)
        advertised = {
            key.decode()
            for key in beats.scan_iter(match=liveness.QUEUE_CONSUMERS_KEY.format(queue="*"))
            for name in beats.zrange(key, 0, -1)
            if name.decode().startswith(f"{tiny_worker}@")
        }
        assert advertised == set()
    finally:
        stack.stop()
        use_redis(redis_server.url(1))
