"""The drawer, the run page's versions and the zip, through Django's test client (no worker here)."""

import io
import json
import zipfile

import pytest

from imagegen.models import JobStatus
from imagegen.tests.factories import UserFactory
from refinement.models import Refinement

from .factories import finished_run, refinement_of, succeeded_refinement

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HX-Request": "true"}


def test_every_output_and_version_has_refine_image(user_client):
    run = finished_run(owner=user_client.user)
    v2 = succeeded_refinement(run)
    v3 = refinement_of(run, version=3, parent=v2.result, parent_version=2)  # a branch would read the same
    page = user_client.get(f"/runs/{run.pk}/").content.decode()
    v1 = run.outputs.get()
    assert f'hx-get="/runs/{run.pk}/refine/?image={v1.pk}"' in page
    assert f'hx-get="/runs/{run.pk}/refine/?image={v2.result.pk}"' in page
    assert 'id="versions"' in page and page.index(f'id="{v2.dom_id}"') < page.index(f'id="{v3.dom_id}"')
    assert ">v2</span>" in page and ">v3</span>" in page and "from v2" in page
    # Each version's parameters, in words.
    card = page[page.index(f'id="{v2.dom_id}"') : page.index(f'id="{v3.dom_id}"')]
    words = {"Creativity": "2", "Strength": "0.50", "Seed": "7", "Size": "64×64", "Model": "tiny"}
    for label, value in words.items():
        assert f"<dt>{label}</dt><dd>{value}</dd>" in card
    assert f'ws-connect="/ws/jobs/{v3.pk}/"' in page  # the queued one is live
    assert user_client.get("/gallery/").status_code == 200


def test_the_drawer_has_four_tabs_and_only_built_modes_can_submit(user_client):
    run = finished_run(owner=user_client.user)
    image = run.outputs.get()
    drawer = user_client.get(f"/runs/{run.pk}/refine/?image={image.pk}", headers=HTMX).content.decode()
    assert 'role="dialog"' in drawer and "Refine v1" in drawer
    for label in ("Subject repair", "Text repair", "Regional", "General"):
        assert f">{label}" in drawer
    assert drawer.count('role="tab"') == 4 and drawer.count('aria-selected="true"') == 1
    assert 'id="tab-general" aria-controls="panel-general" aria-selected="true"' in drawer
    assert "Not available yet." not in drawer and "disabled>Refine</button>" not in drawer
    assert drawer.count('type="submit" class="primary">Refine') == 4
    assert 'name="general-prompt"' in drawer and 'name="creativity"' in drawer
    assert f'name="parent_image_id" value="{image.pk}"' in drawer
    assert "Strength 0.30 · 0.50 · 0.75" in drawer


def test_submitting_switches_the_drawer_to_the_live_log_and_adds_the_card(user_client):
    run = finished_run(owner=user_client.user)
    v2 = succeeded_refinement(run)
    form = {"type": "general", "parent_image_id": v2.result.pk, "general-prompt": "sharper", "creativity": 3}
    response = user_client.post(f"/runs/{run.pk}/refine/", form, headers=HTMX)
    refinement = Refinement.objects.get(version=3)
    assert (refinement.parent_version, refinement.payload, refinement.creativity) == (2, {"prompt": "sharper"}, 3)
    log = response.content.decode()
    assert 'id="drawer-body" class="live-log"' in log and f'ws-connect="/ws/jobs/{refinement.pk}/"' in log
    assert f'id="{refinement.dom_id}-progress"' in log and "Waiting for a worker" in log
    assert f'hx-post="/refinements/{refinement.pk}/cancel/"' in log
    # The run page's list gets the card at once; it waits for the job (polling), without live ids.
    assert 'hx-swap-oob="beforeend:#versions-list"' in log
    assert f'hx-get="/refinements/{refinement.pk}/card/"' in log
    assert log.count(f'id="{refinement.dom_id}-progress"') == 1


def test_a_bad_submission_comes_back_with_its_error_and_stores_nothing(user_client, settings):
    run = finished_run(owner=user_client.user)
    image = run.outputs.get()
    url = f"/runs/{run.pk}/refine/"
    page = user_client.post(url, {"type": "general", "parent_image_id": image.pk, "general-prompt": ""}, headers=HTMX)
    assert "This field is required." in page.content.decode() and 'id="drawer-body"' in page.content.decode()
    page = user_client.post(url, {"type": "text", "parent_image_id": image.pk}, headers=HTMX).content.decode()
    assert 'id="tab-text" aria-controls="panel-text" aria-selected="true"' in page
    assert "Give at least one correction" in page
    settings.IMAGEGEN_DAILY_QUOTA = 1
    form = {"type": "general", "parent_image_id": image.pk, "general-prompt": "x", "creativity": 2}
    assert "daily quota" in user_client.post(url, form, headers=HTMX).content.decode()
    assert not Refinement.objects.exists()


def test_strangers_get_404_for_the_drawer_and_the_submission(user_client):
    stranger_run = finished_run(owner=UserFactory())
    image = stranger_run.outputs.get()
    assert user_client.get(f"/runs/{stranger_run.pk}/refine/?image={image.pk}").status_code == 404
    form = {"type": "general", "parent_image_id": image.pk, "general-prompt": "x", "creativity": 2}
    assert user_client.post(f"/runs/{stranger_run.pk}/refine/", form).status_code == 404
    mine = finished_run(owner=user_client.user)
    assert user_client.get(f"/runs/{mine.pk}/refine/?image={image.pk}").status_code == 404  # not in my chain
    refinement = refinement_of(stranger_run)
    for url in (f"/refinements/{refinement.pk}/live/", f"/refinements/{refinement.pk}/card/"):
        assert user_client.get(url).status_code == 404
    assert user_client.post(f"/refinements/{refinement.pk}/cancel/").status_code == 404
    assert not Refinement.objects.exclude(pk=refinement.pk).exists()


def test_polling_a_finished_refinement_sends_its_result_and_its_finished_card(user_client):
    run = finished_run(owner=user_client.user)
    refinement = succeeded_refinement(run)
    live = user_client.get(f"/refinements/{refinement.pk}/live/").content.decode()
    assert f'id="{refinement.dom_id}-result" class="result" hx-swap-oob="true"' in live
    assert f"/images/{refinement.result.pk}" in live
    assert f'<article class="version-card" id="{refinement.dom_id}" hx-swap-oob="true"' in live
    card = user_client.get(f"/refinements/{refinement.pk}/card/").content.decode()
    assert "hx-trigger" not in card and f"/images/{refinement.result.pk}" in card  # done: polling stops


def test_cancel_from_the_card(user_client):
    run = finished_run(owner=user_client.user)
    refinement = refinement_of(run, status=JobStatus.RUNNING)
    response = user_client.post(f"/refinements/{refinement.pk}/cancel/", headers=HTMX)
    assert f'id="{refinement.dom_id}-status"' in response.content.decode()
    assert Refinement.objects.get(pk=refinement.pk).status == JobStatus.CANCELLED


def test_the_zip_holds_every_version_and_the_history(user_client):
    run = finished_run(owner=user_client.user)
    v2 = succeeded_refinement(run)
    v3 = succeeded_refinement(run, version=3, parent=v2.result, parent_version=2)
    refinement_of(run, version=4, status=JobStatus.FAILED)  # not a version: left out
    archive = zipfile.ZipFile(io.BytesIO(user_client.get(f"/runs/{run.pk}/download/").content))
    assert sorted(archive.namelist()) == [
        "generated-1.png",
        "history.json",
        "parameters.json",
        "parameters.txt",
        "v2.png",
        "v3.png",
    ]
    with v3.result.file.open("rb") as stored:
        assert archive.read("v3.png") == stored.read()
    history = json.loads(archive.read("history.json"))
    assert history["run_id"] == str(run.pk)
    assert [(entry["version"], entry.get("parent_version"), entry["file"]) for entry in history["versions"]] == [
        (1, None, "generated-1.png"),
        (2, 1, "v2.png"),
        (3, 2, "v3.png"),
    ]
    assert history["versions"][2]["parent_sha256"] == v2.result.sha256
    assert history["versions"][2]["payload"] == {"prompt": "edit number 3"}
    assert history["versions"][0]["sha256"] == run.outputs.get().sha256


def test_the_gallery_card_shows_the_latest_version_and_how_many_there_are(user_client):
    run = finished_run(owner=user_client.user)
    v1 = run.outputs.get()
    before = user_client.get("/gallery/").content.decode()
    assert f"/images/{v1.pk}" in before and "versions" not in before
    v2 = succeeded_refinement(run)
    refinement_of(run, version=3, status=JobStatus.FAILED)
    after = user_client.get("/gallery/").content.decode()  # the cached card is not served stale
    assert f"/images/{v2.result.pk}" in after and "latest of 2 versions" in after and ">v2</span>" in after
    assert f'hx-get="/runs/{run.pk}/refine/?image={v2.result.pk}"' in after
    run_page = user_client.get(f"/runs/{run.pk}/").content.decode()
    assert f"/images/{v1.pk}" in run_page and ">v1</span>" in run_page  # the run page starts from v1


def test_a_version_downloads_under_its_run_and_number(user_client):
    run = finished_run(owner=user_client.user)
    v2 = succeeded_refinement(run)
    response = user_client.get(f"/images/{v2.result.pk}?download")
    assert response["Content-Disposition"] == f'attachment; filename="{run.pk}-v2.png"'


def test_text_repairs_checks_show_on_the_card_and_in_the_drawers_log(user_client):
    run = finished_run(owner=user_client.user)
    checks = [
        {
            "bbox": [4, 4, 40, 12],
            "text": "OPENING",
            "read": "OPENING",
            "exact": True,
            "ned": 1.0,
            "verified": True,
            "reason": "",
            "method": "render",
            "font": "DejaVu Sans Bold",
            "size": 14,
            "was": "OPENNING",
        },
        {
            "bbox": [4, 30, 40, 12],
            "text": "Summer",
            "read": "Sumner",
            "exact": False,
            "ned": 0.83,
            "verified": False,
            "reason": "it reads differently",
            "method": "render",
            "font": "DejaVu Serif",
            "size": 12,
            "was": "Sumer",
        },
    ]
    refinement = succeeded_refinement(run, type="text", report={"checks": checks}, payload={"corrections": []})
    page = user_client.get(f"/runs/{run.pk}/").content.decode()
    assert "✓ Verified</strong>: reads “OPENING”" in page
    assert "✗ Not verified</strong>: “Summer” reads “Sumner” (it reads differently)" in page
    live = user_client.get(f"/refinements/{refinement.pk}/live/").content.decode()
    assert f'id="{refinement.dom_id}-log-checks" hx-swap-oob="true"' in live and "✓ Verified" in live
