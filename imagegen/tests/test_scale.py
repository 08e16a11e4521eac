"""Several workers on one queue, several web processes on one port, and the operations page."""

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import NO_FAIR_USE_LIMITS, use_redis, wait_until
from imagegen import services
from imagegen.localstack import start_stack
from imagegen.models import JobStatus, Run

from .factories import UserFactory
from .test_integration import events_until_closed

pytestmark = pytest.mark.integration

JOBS = 20


def submit(stack, token: str, number: int) -> str:
    return json.loads(submit_body(stack, token, number))["run_id"]


def submit_body(stack, token: str, number: int) -> bytes:
    request = urllib.request.Request(
        f"{stack.base_url}/api/generate",
        method="POST",
        data=json.dumps({"prompt": f"job {number}", "num_inference_steps": 3, "width": 64, "height": 64}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 202
        return response.read()


def test_two_workers_share_twenty_concurrent_jobs_each_run_exactly_once(stack, client):
    stack.start_worker("worker-b")
    try:
        token = services.api_token_create(username="busy-team")
        with ThreadPoolExecutor(max_workers=JOBS) as pool:
            run_ids = list(pool.map(lambda number: submit(stack, token, number), range(JOBS)))
        assert len(set(run_ids)) == JOBS

        staff = UserFactory(username="operator", is_staff=True, is_superuser=True)
        client.force_login(staff)
        page = wait_until(
            lambda: (html := client.get("/admin/operations/").content.decode()) and "worker-b@" in html and html,
            timeout=20,
            what="the operations page to list both workers",
        )
        assert "worker" in page and 'id="queues"' in page and "gpu" in page

        def all_finished():
            return not Run.objects.filter(pk__in=run_ids, status__in=(JobStatus.QUEUED, JobStatus.RUNNING)).exists()

        wait_until(all_finished, timeout=180, what="all 20 jobs to finish")
        runs = list(Run.objects.filter(pk__in=run_ids))
        assert {run.status for run in runs} == {JobStatus.SUCCEEDED}
        assert {run.attempts for run in runs} == {1}  # each ran exactly once
        assert all(run.outputs.count() == 1 for run in runs)
        workers = {run.worker.split("@")[0] for run in runs}
        assert "worker-b" in workers and len(workers) == 2, workers
    finally:
        stack.stop_worker("worker-b")


@pytest.mark.django_db
def test_operations_page_is_for_staff_only(client):
    client.force_login(UserFactory())
    response = client.get("/admin/operations/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_two_web_processes_relay_every_job_to_its_websocket(redis_server, transactional_db, tmp_path, settings):
    """`make run` starts one web process per core (at most 4): each job's events reach its WebSocket
    whichever process took the submit and whichever holds the socket."""
    url = redis_server.url(2)  # not the live stack's: its worker must not take these jobs
    use_redis(url)
    stack = start_stack(tmp_path, url, web_processes=2, **NO_FAIR_USE_LIMITS)
    try:
        settings.MEDIA_ROOT = stack.media_root
        supervisor = stack.processes["web"].pid
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        # Beside its web processes, uvicorn's multiprocessing runs a resource tracker.
        web = [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(web) == 2, f"uvicorn should run 2 web processes, runs {web}"
        token = services.api_token_create(username="two-web-processes")

        def job(number: int) -> list[dict]:
            accepted = json.loads(submit_body(stack, token, number))
            return events_until_closed(accepted["ws_url"], token)

        with ThreadPoolExecutor(max_workers=8) as pool:
            every_job_events = list(pool.map(job, range(8)))
        for events in every_job_events:
            steps = [event["step"] for event in events if event["type"] == "job.progress"]
            assert steps and steps == sorted(set(steps)) and steps[-1] == 3, events
            assert events[-1]["type"] == "job.result", events
    finally:
        stack.stop()
        use_redis(redis_server.url(1))
