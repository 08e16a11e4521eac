"""In headless Chromium against the live server and a real worker: what a person sees."""

import json
import re

import pytest
from PIL import Image as PILImage
from playwright.sync_api import expect

from conftest import ARTIFACTS
from imagegen.engine import THUMBNAIL_SIDE
from imagegen.models import Run

from .factories import PASSWORD, ImageFactory, RunFactory, UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def log_in(page, stack, username):
    page.goto(f"{stack.base_url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#generate-form")).to_be_visible()


def generate(page, prompt: str, steps: int, size: int = 512) -> Run:
    page.fill("textarea[name=prompt]", prompt)
    page.click("summary")
    page.fill("input[name=steps]", str(steps))
    page.fill("input[name=width]", str(size))
    page.fill("input[name=height]", str(size))
    page.click("button[type=submit]")
    card = page.locator(".run-card").first
    expect(card).to_contain_text(prompt)
    return Run.objects.get(prompt=prompt)


def test_generate_watch_progress_and_see_the_image_without_reload(stack, page):
    user = UserFactory()
    log_in(page, stack, user.username)
    page.evaluate("window.notReloaded = true")
    run = generate(page, "a lighthouse at dawn", steps=40)

    # Read in one step in the page: the bar may be swapped for the image at any moment, and a
    # locator would then wait its full timeout for a bar that is gone.
    read_bar = f"() => document.querySelector('#run-{run.pk}-progress progress')?.getAttribute('value') ?? null"
    seen = set()
    image = page.locator(f"#run-{run.pk}-result img.output")
    while not image.count():
        value = page.evaluate(read_bar)
        if value is not None:
            if int(value) > 0 and not seen - {0}:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "generate-progress.png"))
            seen.add(int(value))
        page.wait_for_timeout(30)
    expect(image).to_be_visible()
    # The bar moved through several steps before the image replaced it.
    assert len(seen - {0}) >= 3, seen
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator(f"#run-{run.pk}-status")).to_have_text("Succeeded")
    # The card shows the small WebP thumbnail; the 512 px PNG is its download.
    result = f"#run-{run.pk}-result"
    # (made on its first request, so wait until it has loaded)
    page.wait_for_function(f"document.querySelector('{result} img.output').naturalWidth > 0", timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "generate.png"), full_page=True)
    assert page.evaluate(f"document.querySelector('{result} img.output').naturalWidth") == THUMBNAIL_SIDE
    full = page.request.get(stack.base_url + page.locator(f"{result} a.download").get_attribute("href"))
    assert full.headers["content-type"] == "image/png" and full.body()[:8] == b"\x89PNG\r\n\x1a\n"


def test_page_without_websockets_completes_by_polling(stack, page):
    page.add_init_script("delete window.WebSocket")
    user = UserFactory()
    log_in(page, stack, user.username)
    run = generate(page, "a quiet harbour", steps=8, size=128)
    expect(page.locator(f"#run-{run.pk}-result img.output")).to_be_visible(timeout=20_000)
    expect(page.locator(f"#run-{run.pk}-status")).to_have_text(re.compile("Succeeded"))


def test_image_to_image_page_flow_and_variation(stack, page, tmp_path):
    init = tmp_path / "photo.png"
    PILImage.new("RGB", (192, 128), (240, 180, 20)).save(init)
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    too_big = tmp_path / "huge.png"
    too_big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(11 * 1024 * 1024))
    user = UserFactory()
    log_in(page, stack, user.username)

    section = page.locator("#image-section")
    expect(section).to_be_hidden()
    page.check("input[name=mode][value=image_to_image]")
    expect(section).to_be_visible()
    page.check("input[name=mode][value=text_to_image]")
    expect(section).to_be_hidden()
    page.check("input[name=mode][value=image_to_image]")

    page.set_input_files("input[name=init_image]", str(not_an_image))
    expect(page.locator("#upload-error")).to_contain_text("notes.txt is not a PNG, JPEG or WebP image")
    page.set_input_files("input[name=init_image]", str(too_big))
    expect(page.locator("#upload-error")).to_contain_text("huge.png is 11.0 MB; the limit is 10 MB")
    expect(page.locator("#init-preview")).to_be_hidden()
    page.set_input_files("input[name=init_image]", str(init))
    expect(page.locator("#upload-error")).to_be_hidden()
    expect(page.locator("#init-preview")).to_be_visible()
    page.click("#remove-image")
    expect(page.locator("#init-preview")).to_be_hidden()
    assert page.eval_on_selector("input[name=init_image]", "input => input.files.length") == 0
    page.set_input_files("input[name=init_image]", str(init))

    expect(page.locator("#strength-value")).to_have_text("0.75")
    page.fill("input[name=strength]", "0.4")
    expect(page.locator("#strength-value")).to_have_text("0.40")

    page.fill("textarea[name=prompt]", "a watercolour of the photo")
    page.click("summary")
    page.fill("input[name=steps]", "10")
    page.click("button[type=submit]")
    run = None
    for _ in range(100):
        run = Run.objects.filter(prompt="a watercolour of the photo").first()
        if run:
            break
        page.wait_for_timeout(50)
    assert run is not None and run.generation_type == "image_to_image" and float(run.strength) == 0.4
    card = page.locator(f"#run-{run.pk}")
    expect(card.locator(".before img")).to_be_visible()
    expect(card.locator(".result img.output")).to_be_visible(timeout=20_000)
    before, after = card.locator(".before img").bounding_box(), card.locator(".result img.output").bounding_box()
    # Side by side: the generated image to the right of the original, on the same row.
    assert after["x"] > before["x"] + before["width"]
    assert before["y"] < after["y"] + after["height"] / 2 < before["y"] + before["height"]
    page.screenshot(path=str(ARTIFACTS / "image-to-image.png"), full_page=True)

    page.goto(f"{stack.base_url}/runs/{run.pk}/")
    page.click("#generate-variation")
    page.wait_for_url(re.compile(rf"/runs/(?!{run.pk})"))
    variation = Run.objects.exclude(pk=run.pk).get(owner=user)
    assert variation.seed != run.seed and variation.init_image_id == run.init_image_id
    expect(page.locator(f"#run-{variation.pk} .result img.output")).to_be_visible(timeout=20_000)


def test_a_run_of_three_images_shows_three_tiles_each_with_its_own_actions(stack, page):
    user = UserFactory()
    log_in(page, stack, user.username)
    page.fill("textarea[name=prompt]", "three lighthouses")
    page.click("summary")
    for name, value in (("steps", "4"), ("width", "64"), ("height", "64"), ("seed", "70"), ("batch_size", "3")):
        page.fill(f"input[name={name}]", value)
    page.click("button[type=submit]")
    expect(page.locator(".run-card").first).to_contain_text("three lighthouses")
    run = Run.objects.get(prompt="three lighthouses")
    tiles = page.locator(f"#run-{run.pk}-result figure.output-tile")
    expect(tiles).to_have_count(3, timeout=30_000)
    outputs = list(run.outputs.order_by("index"))
    for place, (tile, image) in enumerate(zip(tiles.all(), outputs, strict=True)):
        expect(tile.locator("img.output")).to_be_visible()
        expect(tile).to_contain_text(f"Seed {70 + place}")
        download = page.request.get(stack.base_url + tile.locator("a.download").get_attribute("href"))
        assert download.body() == (stack.media_root / image.file.name).read_bytes()
        expect(tile.locator(".refine-button")).to_be_visible()
        expect(tile.locator(".variation-button")).to_be_visible()
    # Two a row: the second tile beside the first, the third below them.
    first, second, third = (tile.bounding_box() for tile in tiles.all())
    assert second["x"] > first["x"] + first["width"] / 2 and abs(second["y"] - first["y"]) < 2
    assert third["y"] >= first["y"] + first["height"]

    # Refine opens the drawer on that image; Variation makes a run from that image.
    tiles.nth(2).locator(".refine-button").click()
    drawer_image = page.locator(".drawer-parent img")
    expect(drawer_image).to_have_attribute("src", re.compile(str(outputs[2].pk)))
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    tiles.nth(1).locator(".variation-button").click()
    page.wait_for_url(re.compile(rf"/runs/(?!{run.pk})"))
    variation = Run.objects.exclude(pk=run.pk).get(owner=user)
    assert (variation.generation_type, variation.prompt, variation.batch_size) == ("image_to_image", run.prompt, 1)
    with variation.init_image.file.open("rb") as copy, outputs[1].file.open("rb") as original:
        assert PILImage.open(copy).convert("RGB").tobytes() == PILImage.open(original).convert("RGB").tobytes()
    expect(page.locator(f"#run-{variation.pk} .result img.output")).to_be_visible(timeout=30_000)


def test_a_user_deletes_a_run_from_the_gallery_after_confirming(stack, page):
    user = UserFactory()
    kept = RunFactory(owner=user, prompt="a run to keep", status="succeeded")
    doomed = RunFactory(owner=user, prompt="a run to delete", status="succeeded")
    output = ImageFactory(owner=user, run=doomed)
    file = stack.media_root / output.file.name
    assert file.exists()
    log_in(page, stack, user.username)
    page.goto(f"{stack.base_url}/gallery/")
    card = page.locator(f"#run-{doomed.pk}")
    page.once("dialog", lambda dialog: dialog.dismiss())  # "Cancel" in the confirmation: nothing happens
    card.get_by_role("button", name="Delete").click()
    expect(card).to_be_visible()
    assert Run.objects.filter(pk=doomed.pk).exists()
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Delete").click()
    expect(card).to_have_count(0)  # swapped out without a reload
    expect(page.locator(f"#run-{kept.pk}")).to_be_visible()
    assert not Run.objects.filter(pk=doomed.pk).exists() and not file.exists()


def test_a_pngs_settings_fill_the_form_once_confirmed(stack, page, tmp_path):
    """Chosen with "Settings from an image…" or dropped on the form: the page says what the PNG
    carries and fills the form only when asked."""
    from PIL import Image as PILImage

    from imagegen.engine import encode_png

    from .test_metadata import A1_PARAMETERS, INVOKEAI_METADATA

    user = UserFactory()
    log_in(page, stack, user.username)
    made_in_a1 = tmp_path / "a1.png"
    made_in_a1.write_bytes(encode_png(PILImage.new("RGB", (64, 64)), A1_PARAMETERS))
    page.set_input_files("#settings-file", str(made_in_a1))
    offer = page.locator("#settings-offer")
    expect(offer).to_contain_text("a1.png carries AUTOMATIC1111 settings")
    expect(offer).to_contain_text("Steps 28")
    expect(offer).to_contain_text("Size 640×448")
    expect(page.locator("textarea[name=prompt]")).to_have_value("")  # nothing filled yet
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "settings-offer.png"))
    page.click("#settings-fill")
    expect(offer).to_be_hidden()
    expect(page.locator("textarea[name=prompt]")).to_have_value(re.compile(r"^masterpiece, a lighthouse at dawn\n"))
    expect(page.locator("textarea[name=negative_prompt]")).to_have_value("blurry, lowres")
    for name, value in (("steps", "28"), ("guidance_scale", "6.5"), ("seed", "3456789012"), ("width", "640")):
        expect(page.locator(f"input[name={name}]")).to_have_value(value)

    # Dropped on the form (not on the init image's drop zone): InvokeAI's settings, then "Not now".
    invoke = encode_png(PILImage.new("RGB", (64, 64)), "", chunks={"invokeai_metadata": json.dumps(INVOKEAI_METADATA)})
    page.evaluate(
        """([bytes, name]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, { type: "image/png" }));
            const target = document.querySelector("textarea[name=prompt]");
            for (const type of ["dragenter", "dragover", "drop"]) {
              target.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
            }
        }""",
        [list(invoke), "invoke.png"],
    )
    expect(offer).to_contain_text("invoke.png carries InvokeAI settings")
    page.click("#settings-dismiss")
    expect(offer).to_be_hidden()
    expect(page.locator("input[name=steps]")).to_have_value("28")  # unchanged

    # A file that is no image: the server's reason, on the page.
    note = tmp_path / "note.png"
    note.write_text("Steps: 20, Sampler: Euler a")
    page.set_input_files("#settings-file", str(note))
    expect(page.locator("#settings-error")).to_contain_text("image: Not a PNG, JPEG or WebP image")
