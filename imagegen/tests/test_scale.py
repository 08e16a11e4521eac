"""Several workers on one queue, and the operations page that shows them."""

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import wait_until
from imagegen import services
from imagegen.models import JobStatus, Run

from .factories import UserFactory

pytestmark = pytest.mark.integration

JOBS = 20


def submit(stack, token: str, number: int) -> str:
    request = urllib.request.Request(
        f"{stack.base_url}/api/generate",
        method="POST",
        data=json.dumps({"prompt": f"job {number}", "num_inference_steps": 3, "width": 64, "height": 64}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 202
        return json.loads(response.read())["run_id"]


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
