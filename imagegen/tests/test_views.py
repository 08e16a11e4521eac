"""The pages: login, the generate form's errors, and that users see only their own runs."""

import re

import pytest

from imagegen.models import Run

from .factories import ImageFactory, RunFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_pages_need_a_login(client):
    for url in ("/", "/gallery/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")


def test_the_top_bar_names_the_user_and_links_the_admin_for_staff_only(client):
    # The links are rendered once per process (base.html): a staff member's must not reach others.
    for user in [UserFactory(username="alice"), UserFactory(username="root", is_staff=True), UserFactory()]:
        client.force_login(user)
        page = client.get("/gallery/").content.decode()
        assert f"Log out {user.username}" in page and 'href="/gallery/"' in page
        assert ('href="/admin/"' in page) == user.is_staff, user.username
        assert page.count('name="csrfmiddlewaretoken"') == 1  # the log-out form's, never a cached one


def test_generate_page_says_the_tiny_model_is_random(user_client):
    page = user_client.get("/").content.decode()
    assert "its weights are random" in page
    assert "IMAGEGEN_MODEL" in page
    assert 'name="prompt"' in page


def test_bad_input_shows_a_form_error_and_stores_nothing(user_client):
    response = user_client.post("/", {"prompt": "", "steps": 500, "guidance_scale": 7.5, "width": 512, "height": 500})
    page = response.content.decode()
    assert response.status_code == 200
    assert "This field is required." in page
    assert "less than or equal to 150" in page
    assert "multiple of 8" in page
    assert not Run.objects.exists()


def test_the_form_offers_the_samplers_and_clip_skip_and_stores_them(user_client):
    page = user_client.get("/").content.decode()
    assert '<option value="dpmpp_sde_karras">DPM++ SDE Karras</option>' in page
    assert 'name="clip_skip" value="1"' in page
    fields = {"prompt": "a (red:1.2) fox", "steps": 8, "guidance_scale": 7.5, "width": 128, "height": 128}
    refused = user_client.post("/", {**fields, "scheduler": "unipc", "clip_skip": 13}).content.decode()
    assert "less than or equal to 12" in refused and not Run.objects.exists()
    user_client.post("/", {**fields, "scheduler": "unipc", "clip_skip": 2})
    assert Run.objects.values_list("scheduler", "clip_skip").get() == ("unipc", 2)


def test_htmx_bad_input_comes_back_as_the_form(user_client):
    response = user_client.post(
        "/",
        {"prompt": "fox", "steps": 0, "guidance_scale": 7.5, "width": 512, "height": 512},
        headers={"HX-Request": "true"},
    )
    assert response["HX-Retarget"] == "#generate-form"
    assert "greater than or equal to 1" in response.content.decode()
    assert not Run.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_htmx_generate_returns_a_live_card(user_client):
    response = user_client.post(
        "/",
        {"prompt": "a red fox", "steps": 8, "guidance_scale": 7.5, "width": 128, "height": 128},
        headers={"HX-Request": "true"},
    )
    run = Run.objects.get()
    card = response.content.decode()
    assert f'id="run-{run.pk}"' in card
    assert f'ws-connect="/ws/jobs/{run.pk}/"' in card
    assert "Waiting for a worker" in card
    assert f'hx-get="/runs/{run.pk}/live/"' in card


def test_plain_post_redirects_to_the_run_page(user_client):
    response = user_client.post(
        "/", {"prompt": "a red fox", "steps": 8, "guidance_scale": 7.5, "width": 128, "height": 128}
    )
    run = Run.objects.get()
    assert response["Location"] == f"/runs/{run.pk}/"
    page = user_client.get(response["Location"]).content.decode()
    assert "a red fox" in page
    assert str(run.seed) in page


def test_page_reloaded_mid_job_shows_its_progress(user_client):
    run = RunFactory(owner=user_client.user, status="running", step=3, total_steps=8)
    page = user_client.get(f"/runs/{run.pk}/").content.decode()
    assert 'value="3"' in page and 'max="8"' in page
    assert "Step 3/8" in page


def test_polling_returns_the_finished_card(user_client):
    run = RunFactory(owner=user_client.user, status="succeeded", step=4)
    image = ImageFactory(owner=run.owner, run=run)
    fragment = user_client.get(f"/runs/{run.pk}/live/").content.decode()
    assert f"/images/{image.pk}" in fragment
    assert 'hx-swap-oob="true"' in fragment
    assert "hx-trigger" not in fragment  # finished: polling stops


def test_failed_run_shows_its_error(user_client):
    run = RunFactory(owner=user_client.user, status="failed", error="Out of memory: try a smaller size.")
    assert "Out of memory: try a smaller size." in user_client.get(f"/runs/{run.pk}/").content.decode()


def test_other_users_runs_and_images_are_404(user_client):
    run = RunFactory()
    image = ImageFactory(owner=run.owner, run=run)
    assert user_client.get(f"/runs/{run.pk}/").status_code == 404
    assert user_client.get(f"/runs/{run.pk}/live/").status_code == 404
    assert user_client.get(f"/images/{image.pk}").status_code == 404
    assert "a lighthouse" not in user_client.get("/gallery/").content.decode()


def test_own_image_is_served_with_safe_headers(user_client):
    image = ImageFactory(owner=user_client.user)
    response = user_client.get(f"/images/{image.pk}")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    download = user_client.get(f"/images/{image.pk}?download")
    assert download["Content-Disposition"].startswith("attachment;")


def test_gallery_lists_own_runs_and_filters_by_type(user_client):
    RunFactory(owner=user_client.user, prompt="a blue whale")
    page = user_client.get("/gallery/").content.decode()
    assert "a blue whale" in page
    assert "a blue whale" not in user_client.get("/gallery/?type=image_to_image").content.decode()


def png_file(name="photo.png", size=(128, 96)):
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", size, (10, 200, 90)).save(buffer, format="PNG")
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/png")


IMAGE_MODE = {"mode": "image_to_image", "prompt": "a watercolour", "steps": 20, "guidance_scale": 7.5, "strength": 0.6}


def test_image_mode_creates_an_image_to_image_run_at_the_upload_size(user_client):
    response = user_client.post("/", {**IMAGE_MODE, "init_image": png_file(), "width": 9999})
    run = Run.objects.get()
    assert response["Location"] == f"/runs/{run.pk}/"
    assert (run.generation_type, run.width, run.height, float(run.strength)) == ("image_to_image", 128, 96, 0.6)
    assert run.total_steps == 12
    page = user_client.get(f"/runs/{run.pk}/").content.decode()
    assert f"/images/{run.init_image.pk}" in page and "Original" in page
    assert "Generate Variation" in page and f"/runs/{run.pk}/download/" in page


def test_text_mode_ignores_image_fields(user_client):
    user_client.post(
        "/",
        {
            "mode": "text_to_image",
            "prompt": "fox",
            "steps": 20,
            "guidance_scale": 7.5,
            "width": 256,
            "height": 256,
            "strength": 7,
            "init_image": png_file(),
        },
    )
    run = Run.objects.get()
    assert (run.generation_type, run.init_image, run.strength, run.width) == ("text_to_image", None, None, 256)


def test_image_mode_without_a_file_or_with_a_bad_one_is_a_form_error(user_client):
    page = user_client.post("/", IMAGE_MODE).content.decode()
    assert "This field is required." in page
    from django.core.files.uploadedfile import SimpleUploadedFile

    bad = SimpleUploadedFile("photo.jpg", b"%PDF-1.4 not an image", content_type="image/jpeg")
    page = user_client.post("/", {**IMAGE_MODE, "init_image": bad}).content.decode()
    assert "Not a PNG, JPEG or WebP image" in page
    assert not Run.objects.exists()


def test_over_quota_is_a_clear_message_on_the_page(user_client, settings):
    settings.IMAGEGEN_DAILY_QUOTA = 0
    page = user_client.post("/", {**IMAGE_MODE, "mode": "text_to_image", "width": 64, "height": 64}).content.decode()
    assert "used all 0 generations of your daily quota" in page
    assert not Run.objects.exists()


def test_a_run_of_three_shows_three_tiles_each_with_its_own_actions(user_client):
    run = RunFactory(owner=user_client.user, batch_size=3, seed=40, status="succeeded")
    images = [ImageFactory(owner=run.owner, run=run, index=index) for index in (0, 1, 2)]
    for url in (f"/runs/{run.pk}/", "/", "/gallery/"):
        page = user_client.get(url).content.decode()
        tiles = re.findall(r'<figure class="output-tile" data-image-id="([^"]+)">(.*?)</figure>', page, re.S)
        assert [image_id for image_id, _ in tiles] == [str(image.pk) for image in images], url
        for (_, tile), image, seed in zip(tiles, images, (40, 41, 42), strict=True):
            assert f"Seed {seed}<" in tile
            assert f'href="/images/{image.pk}?download"' in tile
            assert f'hx-get="/runs/{run.pk}/refine/?image={image.pk}"' in tile
            assert f'hx-post="/runs/{run.pk}/variation/"' in tile and f'"image": "{image.pk}"' in tile
    assert "seeds 40–42" in page
    run_page = user_client.get(f"/runs/{run.pk}/").content.decode()
    assert "<dt>Seeds</dt><dd>40, 41, 42</dd>" in run_page
    # An imported image has no settings to vary: its tile offers no Variation.
    imported = RunFactory(owner=user_client.user, generation_type="imported", status="succeeded")
    ImageFactory(owner=imported.owner, run=imported, kind="upload")
    page = user_client.get(f"/runs/{imported.pk}/").content.decode()
    assert 'class="output-tile"' in page and "variation-button" not in page


def test_variation_of_one_image_from_its_tile(user_client):
    run = RunFactory(owner=user_client.user, batch_size=2, status="succeeded")
    images = [ImageFactory(owner=run.owner, run=run, index=index) for index in (0, 1)]
    response = user_client.post(
        f"/runs/{run.pk}/variation/", {"image": str(images[1].pk)}, headers={"HX-Request": "true"}
    )
    variation = Run.objects.exclude(pk=run.pk).get()
    assert response["HX-Redirect"] == f"/runs/{variation.pk}/"
    assert (variation.generation_type, variation.batch_size) == ("image_to_image", 1)
    # Not an image of this run (another run's, or no id at all): 404, nothing made.
    others = RunFactory(owner=user_client.user, status="succeeded")
    foreign = ImageFactory(owner=run.owner, run=others)
    for image_id in (str(foreign.pk), "not-an-id", str(variation.init_image_id)):
        assert user_client.post(f"/runs/{run.pk}/variation/", {"image": image_id}).status_code == 404
    assert Run.objects.count() == 3


def test_variation_makes_a_new_run_with_another_seed(user_client):
    user_client.post("/", {**IMAGE_MODE, "init_image": png_file(), "seed": 5})
    run = Run.objects.get()
    response = user_client.post(f"/runs/{run.pk}/variation/")
    variation = Run.objects.exclude(pk=run.pk).get()
    assert response["Location"] == f"/runs/{variation.pk}/"
    assert variation.seed != 5 and variation.init_image_id == run.init_image_id


def test_download_zip_holds_original_generated_and_parameters(user_client):
    import io
    import zipfile

    user_client.post("/", {**IMAGE_MODE, "init_image": png_file(), "seed": 5})
    run = Run.objects.get()
    ImageFactory(owner=run.owner, run=run)
    response = user_client.get(f"/runs/{run.pk}/download/")
    assert response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(archive.namelist()) == [
        "generated-1.png",
        "history.json",
        "original.png",
        "parameters.json",
        "parameters.txt",
    ]
    assert "Seed: 5" in archive.read("parameters.txt").decode()
    assert "Denoising strength: 0.6" in archive.read("parameters.txt").decode()


def test_gallery_shows_before_after_strength_and_age(user_client):
    user_client.post("/", {**IMAGE_MODE, "init_image": png_file()})
    run = Run.objects.get()
    page = user_client.get("/gallery/?type=image_to_image").content.decode()
    assert "Image to image" in page and "strength 0.60" in page
    assert f"/images/{run.init_image.pk}" in page
    assert "now" in page or "ago" in page


def test_gallery_pages_through_older_runs(user_client):
    for number in range(30):
        RunFactory(owner=user_client.user, prompt=f"run number {number:02d}")
    first = user_client.get("/gallery/").content.decode()
    assert "run number 29" in first and "run number 05" not in first and "Older →" in first
    second = user_client.get("/gallery/?page=2").content.decode()
    assert "run number 05" in second and "run number 29" not in second and "← Newer" in second


def parameters_table(page: str) -> dict[str, str]:
    """The run page's parameters as a reader sees them: label → value."""
    table = re.search(r'<dl class="parameters">(.*?)</dl>', page, re.S).group(1)
    return {label: value.strip() for label, value in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", table, re.S)}


def test_the_run_page_shows_its_parameters_in_words(user_client):
    upload = ImageFactory(owner=user_client.user, kind="upload")
    run = RunFactory(
        owner=user_client.user,
        generation_type="image_to_image",
        init_image=upload,
        prompt="a watercolour",
        steps=30,
        guidance_scale=6.5,
        strength="0.6",
        width=512,
        height=384,
        seed=42,
        scheduler="euler_a",
    )
    assert parameters_table(user_client.get(f"/runs/{run.pk}/").content.decode()) == {
        "Type": "Image to image",
        "Prompt": "a watercolour",
        "Negative prompt": "—",
        "Steps": "30",
        "Sampler": "Euler a",
        "CFG scale": "6.5",
        "Seed": "42",
        "Size": "512×384",
        "Model": "tiny",
        "Strength": "0.60",
        "Batch size": "1",
        "Status": "Queued",
    }
    skipping = RunFactory(owner=user_client.user, scheduler="dpmpp_2m_karras", clip_skip=2)
    table = parameters_table(user_client.get(f"/runs/{skipping.pk}/").content.decode())
    assert (table["Sampler"], table["Clip skip"]) == ("DPM++ 2M Karras", "2")
    imported = RunFactory(owner=user_client.user, generation_type="imported", prompt="", status="succeeded")
    table = parameters_table(user_client.get(f"/runs/{imported.pk}/").content.decode())
    assert table == {"Type": "Imported", "Size": "64×64", "Status": "Succeeded"}
