"""Crashes, a broker outage, cancels and duplicate deliveries, through real processes.

Each test reports what it did to test-artifacts/reliability.json, which the README quotes.
"""

import json
import time
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from django.utils import timezone
from websockets.sync.client import connect

from conftest import ARTIFACTS, wait_until
from imagegen import services
from imagegen.models import Job, JobStatus, Run
from imagegen.tasks import run_job

from .factories import RunFactory, UserFactory

pytestmark = pytest.mark.integration

FIGURES = ARTIFACTS / "reliability.json"


def record(**figures: int) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    current = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    for name, value in figures.items():
        current[name] = current.get(name, 0) + value
    FIGURES.write_text(json.dumps(current, indent=2, sort_keys=True))


def submit(stack, token: str, **body) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{stack.base_url}/api/generate",
        method="POST",
        data=json.dumps({"prompt": "a lighthouse", **body}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for_job(model: type[Job], job_id, condition, timeout: float = 60) -> Job:
    def check():
        job = model.objects.get(pk=job_id)
        return job if condition(job) else None

    what = f"{model._meta.verbose_name} {job_id} to reach the expected state"
    return wait_until(check, timeout=timeout, what=what)


def wait_for_run(run_id, condition, timeout: float = 60) -> Run:
    return wait_for_job(Run, run_id, condition, timeout)


def running_at_step(minimum: int):
    return lambda job: job.status == JobStatus.RUNNING and job.step >= minimum


def finished(job: Job) -> bool:
    return job.is_finished


def kill_the_worker_running(stack, job_id, model: type[Job] = Run) -> str:
    name = model.objects.get(pk=job_id).worker.split("@")[0]
    stack.kill_worker(name)
    return name


def output_files(stack, run) -> list:
    folder = stack.media_root / "outputs" / str(run.pk)
    return sorted(folder.iterdir()) if folder.exists() else []


def test_a_worker_killed_mid_job_loses_nothing(stack):
    token = services.api_token_create(username="crash-user")
    status, accepted = submit(stack, token, num_inference_steps=60, width=512, height=512, seed=5)
    assert status == 202
    # The heartbeat is written once a second: wait for one from the running job, then kill.
    wait_for_run(accepted["run_id"], running_at_step(3))
    killed = kill_the_worker_running(stack, accepted["run_id"])
    stack.start_worker(f"{killed}-after-crash")
    run = wait_for_run(accepted["run_id"], finished, timeout=90)
    assert (run.status, run.attempts) == (JobStatus.SUCCEEDED, 2), run.error
    assert run.worker.startswith(f"{killed}-after-crash@")
    assert run.outputs.count() == 1 and len(output_files(stack, run)) == 1
    record(jobs_killed=1, jobs_recovered=1)


def test_a_worker_killed_during_a_batch_loses_none_of_its_jobs(stack):
    for name in stack.alive_workers():
        stack.stop_worker(name)
    user = UserFactory()
    # Long enough for the test to see the batch running on a quiet machine (a few seconds), short
    # enough for a loaded one to finish it twice.
    runs = [RunFactory(owner=user, steps=40, total_steps=40, width=384, height=384, seed=seed) for seed in (31, 32, 33)]
    for run in runs:
        services.job_enqueue(job=run)
    stack.start_worker("worker-batching", IMAGEGEN_MAX_BATCH="3")

    def all_running_together() -> bool:
        rows = Run.objects.filter(pk__in=[run.pk for run in runs])
        return {(row.status, row.worker) for row in rows} == {(JobStatus.RUNNING, rows[0].worker)} and all(
            row.step >= 2 for row in rows
        )

    wait_until(all_running_together, timeout=60, what="the three runs to run in one batch")
    killed = kill_the_worker_running(stack, runs[0].pk)
    stack.start_worker(f"{killed}-after-crash")
    for run in runs:
        run = wait_for_run(run.pk, finished, timeout=240)
        assert (run.status, run.attempts) == (JobStatus.SUCCEEDED, 2), run.error
        assert run.outputs.count() == 1 and len(output_files(stack, run)) == 1
    record(jobs_killed=3, jobs_recovered=3)


def test_a_job_whose_worker_dies_on_its_last_attempt_fails_readably(stack):
    run = RunFactory(owner=UserFactory(), steps=80, total_steps=80, width=512, height=512, attempts=2)
    services.job_enqueue(job=run)
    wait_for_run(run.pk, running_at_step(2))
    killed = kill_the_worker_running(stack, run.pk)
    run = wait_for_run(run.pk, finished, timeout=60)
    assert (run.status, run.attempts) == (JobStatus.FAILED, 3)
    assert "worker stopped while running this job, 3 times" in run.error
    assert "smaller size" in run.error
    assert not run.outputs.exists()
    stack.start_worker(f"{killed}-after-crash")
    record(jobs_killed=1, jobs_failed_after_last_attempt=1)


def test_jobs_submitted_while_redis_is_down_run_when_it_is_back(stack, redis_server, client):
    token = services.api_token_create(username="outage-user")
    user = UserFactory()
    client.force_login(user)
    redis_server.stop()
    try:
        status, body = submit(stack, token, num_inference_steps=4, width=128, height=128)
        assert status == 503
        assert "queue is unavailable" in body["error"] and "will start when it is back" in body["error"]
        page = client.post(
            "/",
            {"prompt": "while the queue is down", "steps": 4, "guidance_scale": 7.5, "width": 128, "height": 128},
            follow=True,
        )
        assert page.status_code == 200
        assert "The queue is unavailable right now" in page.content.decode()
        assert "it will start when it is back" in page.content.decode()
        runs = [Run.objects.get(pk=body["run_id"]), Run.objects.get(prompt="while the queue is down")]
        assert all(run.status == JobStatus.QUEUED and run.sent_at is None for run in runs)
    finally:
        redis_server.start()
    for run in runs:
        assert wait_for_run(run.pk, finished, timeout=90).status == JobStatus.SUCCEEDED
    record(broker_outages=1, jobs_sent_after_outage=len(runs))


def test_cancel_a_running_job_within_a_step_and_a_queued_one_before_it_starts(stack):
    token = services.api_token_create(username="cancel-user")
    headers = {"Authorization": f"Bearer {token}"}
    _, running = submit(stack, token, num_inference_steps=100, width=512, height=512)
    _, queued = submit(stack, token, num_inference_steps=4, width=128, height=128)
    wait_for_run(running["run_id"], running_at_step(2))
    with connect(running["ws_url"], additional_headers=headers, open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["status"] == "running"
        socket.recv(timeout=10)  # a progress event: the job is stepping
        for run_id in (queued["run_id"], running["run_id"]):
            request = urllib.request.Request(
                f"{stack.base_url}/api/v1/runs/{run_id}/cancel", method="POST", headers=headers
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert json.loads(response.read())["status"] == "cancelled"
        after_cancel = [json.loads(message) for message in socket]  # until the server closes
    steps_after = [event["step"] for event in after_cancel if event["type"] == "job.progress"]
    assert len(steps_after) <= 1, steps_after  # the step in flight, at most
    assert after_cancel[-1] == {**after_cancel[-1], "type": "job.status", "status": "cancelled"}
    stopped = Run.objects.get(pk=running["run_id"])
    assert stopped.status == JobStatus.CANCELLED and stopped.step < 100
    assert not stopped.outputs.exists() and not output_files(stack, stopped)
    # The worker is free at once: the queued job was skipped, so the next one starts straight away.
    _, following = submit(stack, token, num_inference_steps=4, width=128, height=128)
    assert wait_for_run(following["run_id"], finished, timeout=20).status == JobStatus.SUCCEEDED
    skipped = Run.objects.get(pk=queued["run_id"])
    assert (skipped.status, skipped.attempts, skipped.outputs.count()) == (JobStatus.CANCELLED, 0, 0)
    request = urllib.request.Request(
        f"{stack.base_url}/api/v1/runs/{queued['run_id']}/cancel", method="POST", headers=headers
    )
    with pytest.raises(urllib.error.HTTPError) as ended:
        urllib.request.urlopen(request, timeout=10)
    assert ended.value.code == 409
    record(jobs_cancelled=2)


def test_the_same_message_delivered_twice_runs_once(stack):
    run = RunFactory(owner=UserFactory(), steps=6, total_steps=6, width=128, height=128)
    run_job.delay(str(run.pk))
    run_job.delay(str(run.pk))
    run = wait_for_run(run.pk, finished)
    time.sleep(1)  # let the second delivery arrive and be turned away
    run.refresh_from_db()
    assert (run.status, run.attempts) == (JobStatus.SUCCEEDED, 1)
    assert run.outputs.count() == 1 and len(output_files(stack, run)) == 1
    assert "is not queued any more; nothing to do" in stack.worker_log_text()
    record(duplicate_deliveries=1)


def test_a_job_that_fails_inside_the_worker_does_not_stop_the_worker(stack):
    broken = RunFactory(owner=UserFactory(), steps=4, total_steps=4, width=128, height=128, scheduler="no-such-sampler")
    services.job_enqueue(job=broken)
    broken = wait_for_run(broken.pk, finished)
    assert broken.status == JobStatus.FAILED
    assert broken.error.startswith("The generation failed unexpectedly (ValueError)")
    following = RunFactory(owner=broken.owner, steps=4, total_steps=4, width=128, height=128)
    services.job_enqueue(job=following)
    assert wait_for_run(following.pk, finished, timeout=20).status == JobStatus.SUCCEEDED
    record(jobs_failed_readably=1)


def test_a_job_requeued_under_a_live_worker_keeps_only_the_new_attempts_result(stack, settings):
    """Housekeeping takes a job from a worker that is alive (its heartbeats looked lost), a new
    attempt claims it, and the old worker finishes afterwards: the new attempt's result stands."""
    settings.IMAGEGEN_HEARTBEAT_INTERVAL = 0.5  # the new attempt, in this process, is alive too
    # Running for a few seconds even on a quiet machine: the requeue has to happen while it runs.
    run = RunFactory(owner=UserFactory(), steps=60, total_steps=60, width=384, height=384, seed=11)
    services.job_enqueue(job=run)
    wait_for_run(run.pk, running_at_step(2))

    def requeued() -> bool:
        Run.objects.filter(pk=run.pk, status=JobStatus.RUNNING).update(heartbeat_at=timezone.now() - timedelta(hours=1))
        return services.jobs_recover()["requeued"] == 1  # unless a heartbeat came in between

    wait_until(requeued, timeout=10, what="housekeeping to requeue the live job")
    new_attempt = services.job_claim(model=Run, job_id=run.pk, worker="second-attempt@tests")
    assert new_attempt.attempts == 2
    with services.Heartbeat(new_attempt):
        wait_until(
            lambda: f"Run {run.pk}: attempt 1 was cancelled or given to another attempt" in stack.worker_log_text(),
            timeout=120,
            what="the old worker to finish its attempt",
        )
    services.job_perform(job=new_attempt, perform=services.run_perform)

    run.refresh_from_db()
    assert (run.status, run.attempts, run.worker) == (JobStatus.SUCCEEDED, 2, "second-attempt@tests"), run.error
    (image,) = run.outputs.all()
    assert image.file.name == f"outputs/{run.pk}/2-0.png"
    assert [path.name for path in output_files(stack, run)] == ["2-0.png"]
    record(jobs_requeued_under_a_live_worker=1, double_results=0)
