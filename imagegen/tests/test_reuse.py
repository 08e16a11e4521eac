"""Reusing settings: "Use these settings" on a run fills the generate form; a PNG's settings (this
studio's, A1's, Fooocus', InvokeAI's) read through POST /api/v1/parameters; the gallery's search
and filters."""

import io
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image as PILImage

from imagegen.engine import SAMPLER_LABELS, encode_png
from imagegen.models import Image, Run

from .factories import ImageFactory, RunFactory, UserFactory
from .test_metadata import A1_PARAMETERS, FOOOCUS_METADATA, INVOKEAI_METADATA

pytestmark = pytest.mark.django_db


def field_value(page: str, name: str) -> str | None:
    """What the page's form shows in a field: an input's value, a textarea's text, the selected option."""
    if match := re.search(rf'<textarea name="{name}"[^>]*>\n?(.*?)</textarea>', page, re.S):
        return match.group(1)
    if match := re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', page, re.S):
        selected = re.search(r'<option value="([^"]*)" selected>', match.group(1))
        return selected.group(1) if selected else None
    if match := re.search(rf'<input type="(?!radio)[^"]+" name="{name}"([^>]*)>', page):
        value = re.search(r'value="([^"]*)"', match.group(1))
        return value.group(1) if value else None
    return None


def checked_mode(page: str) -> str:
    return re.search(r'<input type="radio" name="mode" value="(\w+)"[^>]*checked', page).group(1)


# "Use these settings"


def test_use_these_settings_fills_the_form_with_the_runs_settings(user_client):
    run = RunFactory(
        owner=user_client.user,
        prompt="a lighthouse at dawn",
        negative_prompt="fog",
        steps=33,
        guidance_scale=6.5,
        width=640,
        height=384,
        seed=987654,
        scheduler="ddim",
    )
    run_page = user_client.get(f"/runs/{run.pk}/").content.decode()
    assert f'href="/?from={run.pk}"' in run_page and "Use these settings" in run_page
    page = user_client.get(f"/?from={run.pk}").content.decode()
    assert checked_mode(page) == "text_to_image"
    shown = {name: field_value(page, name) for name in ("prompt", "negative_prompt", "steps", "guidance_scale")}
    assert shown == {"prompt": "a lighthouse at dawn", "negative_prompt": "fog", "steps": "33", "guidance_scale": "6.5"}
    assert [field_value(page, name) for name in ("width", "height", "seed", "scheduler")] == [
        "640",
        "384",
        "987654",
        "ddim",
    ]
    assert "Filled from" in page and f"/runs/{run.pk}/" in page


def test_use_these_settings_of_an_image_to_image_run_keeps_its_init_image(user_client):
    upload = ImageFactory(owner=user_client.user, kind=Image.Kind.UPLOAD)
    run = RunFactory(
        owner=user_client.user, generation_type="image_to_image", init_image=upload, strength="0.35", steps=20
    )
    page = user_client.get(f"/?from={run.pk}").content.decode()
    assert checked_mode(page) == "image_to_image"
    assert field_value(page, "strength") == "0.35"
    assert field_value(page, "init_image_id") == str(upload.pk)
    assert f'src="/images/{upload.pk}"' in page  # the init image is shown where a chosen one would be
    # Submitted as it is (no file chosen): a new image-to-image run from the same init image.
    form = {"mode": "image_to_image", "prompt": "again", "steps": 20, "guidance_scale": 7.5, "strength": 0.35}
    response = user_client.post("/", {**form, "init_image_id": str(upload.pk)})
    new = Run.objects.exclude(pk=run.pk).get()
    assert response["Location"] == f"/runs/{new.pk}/"
    assert (new.generation_type, new.init_image_id, float(new.strength)) == ("image_to_image", upload.pk, 0.35)
    assert (new.width, new.height) == (upload.width, upload.height)


def test_another_users_run_or_init_image_is_not_reused(user_client):
    stranger = UserFactory()
    their_upload = ImageFactory(owner=stranger, kind=Image.Kind.UPLOAD)
    their_run = RunFactory(owner=stranger, prompt="their secret prompt", init_image=their_upload)
    response = user_client.get(f"/?from={their_run.pk}")
    assert response.status_code == 404 and "their secret prompt" not in response.content.decode()
    assert user_client.get("/?from=not-a-run-id").status_code == 404
    form = {"mode": "image_to_image", "prompt": "mine", "steps": 20, "guidance_scale": 7.5, "strength": 0.5}
    page = user_client.post("/", {**form, "init_image_id": str(their_upload.pk)}).content.decode()
    assert "That init image is gone: choose one again." in page
    assert not Run.objects.filter(owner=user_client.user).exists()


def test_an_imported_image_has_no_settings_to_use(user_client):
    run = RunFactory(owner=user_client.user, generation_type="imported", prompt="")
    assert "Use these settings" not in user_client.get(f"/runs/{run.pk}/").content.decode()
    page = user_client.get(f"/?from={run.pk}").content.decode()
    assert "An imported image carries no generation settings" in page and checked_mode(page) == "text_to_image"


# POST /api/v1/parameters


def png_upload(name="made-elsewhere.png", **chunks: str) -> SimpleUploadedFile:
    parameters = chunks.pop("parameters", "")
    data = encode_png(PILImage.new("RGB", (64, 64)), parameters, chunks=chunks)
    return SimpleUploadedFile(name, data, content_type="image/png")


def test_an_a1111_png_gives_the_forms_fields(user_client):
    response = user_client.post("/api/v1/parameters", {"image": png_upload(parameters=A1_PARAMETERS)})
    assert response.status_code == 200
    body = response.json()
    assert (body["source"], body["source_label"], body["model"]) == ("a1111", "AUTOMATIC1111", "v1-5-pruned-emaonly")
    fields = body["fields"]
    assert fields["prompt"].startswith("masterpiece, a lighthouse at dawn\n")
    assert (fields["steps"], fields["guidance_scale"], fields["seed"], fields["strength"]) == (
        28,
        6.5,
        3456789012,
        0.55,
    )
    assert (fields["width"], fields["height"]) == (640, 448)
    assert SAMPLER_LABELS[fields["scheduler"]].startswith("DPM++ 2M")
    assert Image.objects.count() == 0  # nothing stored


def test_fooocus_and_invokeai_pngs_through_the_endpoint(user_client):
    fooocus = png_upload(parameters=json.dumps(FOOOCUS_METADATA), fooocus_scheme="fooocus")
    body = user_client.post("/api/v1/parameters", {"image": fooocus}).json()
    assert body["source"] == "fooocus" and body["fields"]["prompt"] == "a cat in a hat"
    # 1152×896, an SDXL size, is one of this studio's too.
    assert (body["fields"]["width"], body["fields"]["height"]) == (1152, 896)
    assert not any(note.startswith(("Width", "Height")) for note in body["notes"])
    # 2048 px is beyond this studio's sides: left out, and said so.
    wide = png_upload(parameters=json.dumps(FOOOCUS_METADATA | {"resolution": "(2048, 896)"}), fooocus_scheme="fooocus")
    body = user_client.post("/api/v1/parameters", {"image": wide}).json()
    assert "width" not in body["fields"] and body["fields"]["height"] == 896
    assert any(note.startswith("Width 2048:") for note in body["notes"])
    invoke = png_upload(invokeai_metadata=json.dumps(INVOKEAI_METADATA))
    body = user_client.post("/api/v1/parameters", {"image": invoke}).json()
    assert body["source_label"] == "InvokeAI" and body["fields"]["scheduler"] == "euler_a"
    assert body["fields"]["strength"] == 0.7 and body["model"] == "amixx_3Prunedfp16"


def test_an_image_without_settings_says_so(user_client):
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 64)).save(buffer, format="JPEG")
    for upload in (png_upload(), SimpleUploadedFile("photo.jpg", buffer.getvalue(), content_type="image/jpeg")):
        body = user_client.post("/api/v1/parameters", {"image": upload}).json()
        assert body["source"] is None and body["fields"] == {} and "no generation settings" in body["notes"][0]


def test_a_file_that_is_no_image_is_a_400_naming_the_field(user_client):
    note = SimpleUploadedFile("settings.png", b"Steps: 20, Sampler: Euler a", content_type="image/png")
    response = user_client.post("/api/v1/parameters", {"image": note})
    assert response.status_code == 400 and response.json()["field"] == "image"
    assert "Not a PNG, JPEG or WebP image" in response.json()["error"]
    missing = user_client.post("/api/v1/parameters", {})
    assert missing.status_code == 400 and missing.json()["field"] == "image"
    broken = SimpleUploadedFile("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, content_type="image/png")
    response = user_client.post("/api/v1/parameters", {"image": broken})
    assert response.status_code == 400 and response.json()["field"] == "image"
    assert Client().post("/api/v1/parameters", {"image": png_upload()}).status_code == 401


# The gallery's search and filters


def card_prompts(page: str) -> list[str]:
    return re.findall(r'<a class="prompt" href="/runs/[^"]+/">([^<]*)</a>', page)


def test_the_gallery_searches_prompts_in_any_case_and_filters_by_model_and_type(user_client):
    owner = user_client.user
    RunFactory(owner=owner, prompt="A Red Fox in snow", model="tiny")
    RunFactory(owner=owner, prompt="a red fox at dusk", model="sd15")
    RunFactory(owner=owner, prompt="a blue whale", model="sd15")
    upload = ImageFactory(owner=owner, kind=Image.Kind.UPLOAD)
    RunFactory(owner=owner, prompt="a red fox, watercolour", generation_type="image_to_image", init_image=upload)
    RunFactory(owner=UserFactory(), prompt="someone else's red fox", model="sd15")

    def shown(query: str) -> list[str]:
        return sorted(card_prompts(user_client.get(f"/gallery/{query}").content.decode()))

    assert shown("?q=RED+fox") == ["A Red Fox in snow", "a red fox at dusk", "a red fox, watercolour"]
    assert shown("?q=red+fox&model=sd15") == ["a red fox at dusk"]
    assert shown("?model=sd15") == ["a blue whale", "a red fox at dusk"]
    assert shown("?q=fox&type=image_to_image") == ["a red fox, watercolour"]
    assert shown("?q=nothing+like+this") == []
    assert "No runs match." in user_client.get("/gallery/?q=nothing").content.decode()
    assert len(shown("?type=bogus&model=")) == 4  # what is not a valid filter is no filter
    page = user_client.get("/gallery/?q=fox&model=sd15").content.decode()
    # The filters offer the user's own models, and every type link keeps the search and the model.
    assert '<option value="sd15" selected>sd15</option>' in page and '<option value="tiny">' in page
    assert 'href="/gallery/?q=fox&amp;model=sd15&amp;type=image_to_image"' in page
    assert 'value="fox"' in page


def test_the_gallery_filters_refined_runs(user_client):
    from refinement.tests.factories import succeeded_refinement

    refined = RunFactory(owner=user_client.user, prompt="refined one", status="succeeded")
    ImageFactory(owner=user_client.user, run=refined)
    succeeded_refinement(refined)
    RunFactory(owner=user_client.user, prompt="plain one")
    assert card_prompts(user_client.get("/gallery/?type=refined").content.decode()) == ["refined one"]
    assert card_prompts(user_client.get("/gallery/?type=refined&q=plain").content.decode()) == []


def test_a_search_keeps_its_filters_through_the_pages(user_client):
    for number in range(30):
        RunFactory(owner=user_client.user, prompt=f"fox number {number:02d}", model="sd15")
        RunFactory(owner=user_client.user, prompt=f"whale number {number:02d}", model="sd15")
    first = user_client.get("/gallery/?q=fox&model=sd15").content.decode()
    assert "Page 1 of 2" in first and "whale" not in first
    older = re.search(r'<a href="([^"]+)">Older →</a>', first).group(1).replace("&amp;", "&")
    assert older == "/gallery/?q=fox&model=sd15&page=2"
    second = user_client.get(older).content.decode()
    assert card_prompts(second) == [f"fox number {number:02d}" for number in range(5, -1, -1)]
    assert "Page 2 of 2" in second and "← Newer" in second


def test_the_cached_grid_never_answers_another_search(user_client):
    """The grid is cached per process by the rows' state: each search and filter is a key of its own,
    and a change to the rows is seen by every one of them."""
    owner = user_client.user
    RunFactory(owner=owner, prompt="a red fox", model="tiny")
    RunFactory(owner=owner, prompt="a blue whale", model="sd15")
    searches = {"?q=fox": ["a red fox"], "?q=whale": ["a blue whale"], "?model=tiny": ["a red fox"], "": None}
    for _ in range(2):  # the second time from the cache
        for query, expected in searches.items():
            prompts = sorted(card_prompts(user_client.get(f"/gallery/{query}").content.decode()))
            assert prompts == (expected or ["a blue whale", "a red fox"]), query
    # A search the same but for case, and one the same but for a filter, are other keys too.
    assert card_prompts(user_client.get("/gallery/?q=FOX&model=sd15").content.decode()) == []
    RunFactory(owner=owner, prompt="another fox", model="sd15")  # a new run: a new state for every search
    assert sorted(card_prompts(user_client.get("/gallery/?q=fox").content.decode())) == ["a red fox", "another fox"]
    assert card_prompts(user_client.get("/gallery/?q=FOX&model=sd15").content.decode()) == ["another fox"]
    assert '<option value="sd15" selected>' in user_client.get("/gallery/?model=sd15").content.decode()


def test_a_filtered_gallery_page_costs_four_queries_and_a_search_five(user_client, django_assert_num_queries):
    for number in range(3):
        RunFactory(owner=user_client.user, prompt=f"fox {number}", model="sd15")
    for query, queries in (("?model=sd15&type=text_to_image", 4), ("?q=fox", 5)):
        user_client.get(f"/gallery/{query}")
        with django_assert_num_queries(queries):
            user_client.get(f"/gallery/{query}")


def test_the_apis_run_list_takes_the_galleries_search_and_filters(user_client):
    owner = user_client.user
    RunFactory(owner=owner, prompt="A Red Fox in snow", model="tiny")
    RunFactory(owner=owner, prompt="a red fox at dusk", model="sd15")
    RunFactory(owner=owner, prompt="a blue whale", model="sd15")
    RunFactory(owner=UserFactory(), prompt="someone else's red fox", model="sd15")

    def listed(query: str) -> list[str]:
        body = user_client.get(f"/api/v1/runs{query}").json()
        return sorted(run["prompt"] for run in body["runs"])

    assert listed("") == ["A Red Fox in snow", "a blue whale", "a red fox at dusk"]
    assert listed("?q=red+FOX") == ["A Red Fox in snow", "a red fox at dusk"]
    assert listed("?q=fox&model=sd15&type=text_to_image") == ["a red fox at dusk"]
    assert listed("?type=imported") == []
    body = user_client.get("/api/v1/runs?model=sd15&page=2").json()
    assert (body["count"], body["page"], body["pages"], body["runs"]) == (2, 2, 1, [])
    for query, field in (("?type=bogus", "type"), ("?page=0", "page"), ("?q=" + "x" * 1001, "q")):
        response = user_client.get(f"/api/v1/runs{query}")
        assert response.status_code == 400 and response.json()["field"] == field, query
