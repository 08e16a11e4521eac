"""The drawer's Regional and Subject repair tabs in headless Chromium, against the live server and a
real worker: rectangles drawn with the mouse or typed from the keyboard, a reference uploaded."""

import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage
from playwright.sync_api import expect

from conftest import ARTIFACTS
from imagegen.models import Image, Run
from imagegen.tests.factories import UserFactory
from imagegen.tests.test_browser import generate, log_in
from refinement.editing import Rect
from refinement.models import Refinement
from refinement.tests.pixels import reach

pytestmark = [pytest.mark.integration, pytest.mark.browser]

SIZE = 256  # room for rectangles; the drawer shows it larger than 1:1


def open_drawer_on_a_finished_run(page, stack, prompt: str) -> tuple:
    user = UserFactory()
    log_in(page, stack, user.username)
    run = generate(page, prompt, steps=4, size=SIZE)
    expect(page.locator(f"#run-{run.pk}-result img.output")).to_be_visible(timeout=60_000)
    page.goto(f"{stack.base_url}/runs/{run.pk}/")
    page.locator(f"#run-{run.pk}-result .refine-button").click()
    expect(page.get_by_role("dialog")).to_contain_text("Refine v1")
    return user, run


def drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    page.mouse.up()


def at(box: dict, fx: float, fy: float) -> tuple[float, float]:
    """A point of the displayed image, as fractions of its width and height."""
    return box["x"] + fx * box["width"], box["y"] + fy * box["height"]


def middle(locator) -> tuple[float, float]:
    return at(locator.bounding_box(), 0.5, 0.5)


def submitted_refinement(page, run: Run) -> Refinement:
    for _ in range(200):
        refinement = Refinement.objects.filter(run=run).first()
        if refinement:
            return refinement
        page.wait_for_timeout(50)
    raise AssertionError("The drawer submitted nothing.")


def wait_for_v2(page, run: Run) -> Refinement:
    refinement = submitted_refinement(page, run)
    log = page.locator(".live-log")
    expect(log).to_contain_text("v2 from v1")
    expect(log.locator(f"#refinement-{refinement.pk}-progress")).to_be_attached()
    try:
        expect(log.locator(f"#refinement-{refinement.pk}-result img.output")).to_be_visible(timeout=90_000)
    except AssertionError:
        refinement.refresh_from_db()
        progress = f"step {refinement.step} of {refinement.total_steps}"
        raise AssertionError(f"v2 did not appear: {refinement.status} at {progress}, {refinement.error!r}") from None
    refinement.refresh_from_db()
    assert refinement.version == 2 and refinement.result_id is not None
    return refinement


def downloaded(page, stack, image_id) -> np.ndarray:
    response = page.request.get(f"{stack.base_url}/images/{image_id}?download")
    assert response.ok, response.status
    return np.asarray(PILImage.open(io.BytesIO(response.body())).convert("RGB"))


def masks_value(page) -> list:
    value = page.locator("input[name='region-masks']").input_value()
    return json.loads(value) if value else []


def test_regional_rectangles_drawn_by_mouse_change_only_their_part(stack, page):
    _, run = open_drawer_on_a_finished_run(page, stack, "a harbour for regional edits")
    page.get_by_role("tab", name="Regional").click()
    panel = page.locator("#panel-region")
    expect(page.locator(".drawer-parent")).to_be_hidden()  # the editor shows the parent instead
    surface = panel.locator("[data-rect-surface]")
    box = surface.bounding_box()
    assert abs(box["width"] - SIZE) > 20  # not 1:1, so the editor must convert

    # 1: across the whole displayed width (edge to edge); 2: the middle half, lower down.
    drag(page, (box["x"] + 0.3, at(box, 0, 0.1)[1]), (box["x"] + box["width"] - 0.3, at(box, 0, 0.35)[1]))
    expect(panel.get_by_label("Prompt for rectangle 1")).to_be_focused()  # ready for typing
    page.keyboard.type("a red lighthouse")
    drag(page, at(box, 0.25, 0.55), at(box, 0.75, 0.9))
    panel.get_by_label("Prompt for rectangle 2").fill("a small boat")
    expect(panel.locator(".rect-box")).to_have_count(2)
    expect(panel.locator(".rect-box .rect-number")).to_have_text(["1", "2"])
    expect(panel.locator(".rect-row .rect-number")).to_have_text(["1", "2"])
    # An accidental click draws nothing.
    page.mouse.click(*at(box, 0.1, 0.45))
    expect(panel.locator(".rect-box")).to_have_count(2)
    assert [mask["prompt"] for mask in masks_value(page)] == ["a red lighthouse", "a small boat"]
    page.screenshot(path=str(ARTIFACTS / "refine-regional.png"))
    panel.locator("button[type=submit]").click()

    refinement = wait_for_v2(page, run)
    assert refinement.type == "region"
    first, second = (mask["bbox"] for mask in refinement.payload["masks"])
    assert [mask["prompt"] for mask in refinement.payload["masks"]] == ["a red lighthouse", "a small boat"]
    # In the image's own pixels: the full displayed width is the image's width.
    assert first[0] <= 1 and abs(first[2] - SIZE) <= 1, first
    assert all(abs(got - want) <= 1 for got, want in zip(first[1:4:2], [0.1 * SIZE, 0.25 * SIZE], strict=True)), first
    expected_second = [0.25 * SIZE, 0.55 * SIZE, 0.5 * SIZE, 0.35 * SIZE]
    assert all(abs(got - want) <= 1 for got, want in zip(second, expected_second, strict=True)), second

    parent = downloaded(page, stack, refinement.parent_image_id)
    result = downloaded(page, stack, refinement.result_id)
    assert parent.shape == result.shape == (SIZE, SIZE, 3)
    near = reach((SIZE, SIZE), [first, second])
    rects = [Rect.from_bbox(first), Rect.from_bbox(second)]
    assert (~near).sum() > 0.2 * SIZE * SIZE  # there is plenty of "far" to check
    assert np.array_equal(result[~near], parent[~near])
    for rect in rects:
        rows, columns = slice(rect.y, rect.bottom), slice(rect.x, rect.right)
        changed = (result[rows, columns] != parent[rows, columns]).any(axis=2)
        assert changed.mean() > 0.5, changed.mean()


def test_regional_from_the_keyboard_alone(stack, page):
    _, run = open_drawer_on_a_finished_run(page, stack, "a harbour for keyboard rectangles")
    page.get_by_role("tab", name="General").focus()
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_role("tab", name="Regional")).to_be_focused()
    page.keyboard.press("Tab")
    panel = page.locator("#panel-region")
    expect(panel.get_by_role("button", name="Add rectangle")).to_be_focused()
    page.keyboard.press("Enter")
    expect(panel.locator(".rect-box")).to_have_count(1)
    expect(panel.get_by_label("Prompt for rectangle 1")).to_be_focused()
    # Added in the middle, a quarter of the image.
    assert masks_value(page) == [{"bbox": [64, 64, 128, 128], "prompt": ""}]
    page.keyboard.type("a green door")
    for value in ("10", "20", "100", "50"):  # x, y, width, height
        page.keyboard.press("Tab")
        page.keyboard.press("Control+A")
        page.keyboard.type(value)
    expect(panel.get_by_label("Rectangle 1 height")).to_be_focused()
    page.keyboard.press("ArrowUp")  # number fields step by one pixel
    assert masks_value(page) == [{"bbox": [10, 20, 100, 51], "prompt": "a green door"}]
    # The box on the image follows the numbers.
    surface, drawn = panel.locator("[data-rect-surface]").bounding_box(), panel.locator(".rect-box").bounding_box()
    scale = surface["width"] / SIZE
    assert abs(drawn["width"] - 100 * scale) < 2 and abs(drawn["x"] - surface["x"] - 10 * scale) < 2

    submit = panel.locator("button[type=submit]")
    for _ in range(12):
        if submit.evaluate("button => button === document.activeElement"):
            break
        page.keyboard.press("Tab")
    expect(submit).to_be_focused()
    page.keyboard.press("Enter")
    refinement = submitted_refinement(page, run)
    assert refinement.payload == {"masks": [{"bbox": [10, 20, 100, 51], "prompt": "a green door"}]}
    assert refinement.creativity == 2
    expect(page.locator(".live-log .log-title")).to_be_focused()


def test_rectangles_edit_limit_and_survive_an_error(stack, page):
    _, run = open_drawer_on_a_finished_run(page, stack, "a harbour for many rectangles")
    page.get_by_role("tab", name="Regional").click()
    panel = page.locator("#panel-region")
    box = panel.locator("[data-rect-surface]").bounding_box()
    scale = box["width"] / SIZE

    # Drawn, then moved by dragging inside it, then resized by its bottom-right corner.
    drag(page, at(box, 0.1, 0.1), at(box, 0.3, 0.3))
    [mask] = masks_value(page)
    x, y, w, h = mask["bbox"]
    drag(page, at(box, 0.2, 0.2), (at(box, 0.2, 0.2)[0] + 32 * scale, at(box, 0.2, 0.2)[1] + 16 * scale))
    [mask] = masks_value(page)
    assert abs(mask["bbox"][0] - (x + 32)) <= 1 and abs(mask["bbox"][1] - (y + 16)) <= 1 and mask["bbox"][2:] == [w, h]
    drag(page, middle(panel.locator(".rect-handle.se")), at(box, 0.9, 0.95))
    [mask] = masks_value(page)
    assert abs(sum(mask["bbox"][0::2]) - 0.9 * SIZE) <= 1 and abs(sum(mask["bbox"][1::2]) - 0.95 * SIZE) <= 1
    # Dragging a corner past the image's edge stops at the edge.
    drag(page, middle(panel.locator(".rect-handle.se")), at(box, 1.2, 1.2))
    [mask] = masks_value(page)
    assert mask["bbox"][0] + mask["bbox"][2] == SIZE and mask["bbox"][1] + mask["bbox"][3] == SIZE

    add = panel.get_by_role("button", name="Add rectangle")
    for _ in range(7):
        add.click()
    expect(panel.locator(".rect-box")).to_have_count(8)
    expect(add).to_be_disabled()
    expect(panel.locator("[data-rect-note]")).to_contain_text("At most 8 rectangles")
    drag(page, at(box, 0.02, 0.02), at(box, 0.08, 0.08))  # drawing stops too
    expect(panel.locator(".rect-box")).to_have_count(8)
    panel.get_by_role("button", name="Delete rectangle 3").click()
    expect(panel.locator(".rect-box")).to_have_count(7)
    expect(panel.locator(".rect-row .rect-number")).to_have_text([str(number) for number in range(1, 8)])
    expect(add).to_be_enabled()
    assert len(masks_value(page)) == 7

    # Only rectangle 1 has a prompt: the server refuses, and the form comes back with all seven.
    panel.get_by_label("Prompt for rectangle 1").fill("a lighthouse")
    posted = masks_value(page)
    panel.locator("button[type=submit]").click()
    panel = page.locator("#panel-region")
    expect(panel.locator(".rect-errors")).to_contain_text("Rectangle 2 needs a prompt: what should it become?")
    expect(panel.locator(".rect-box")).to_have_count(7)
    assert masks_value(page) == posted
    expect(panel.get_by_label("Prompt for rectangle 1")).to_have_value("a lighthouse")
    expect(panel.get_by_label("Prompt for rectangle 2")).to_be_focused()  # the first one missing
    page.screenshot(path=str(ARTIFACTS / "refine-regional-error.png"))
    assert not Refinement.objects.filter(run=run).exists()


def test_subject_repair_with_an_uploaded_reference_and_a_box(stack, page, tmp_path):
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    fake_png = tmp_path / "fake.png"
    fake_png.write_bytes(b"this is not a picture at all")
    reference = tmp_path / "reference.png"
    PILImage.new("RGB", (96, 64), (30, 160, 220)).save(reference)

    user, run = open_drawer_on_a_finished_run(page, stack, "a dog to repair")
    page.get_by_role("tab", name="Subject repair").click()
    panel = page.locator("#panel-subject")
    file_input = panel.locator("input[type=file]")
    error = panel.locator("[data-upload-error]")
    preview = panel.locator(".reference-preview")
    hidden_id = panel.locator("input[name='subject-referenceFileId']")

    file_input.set_input_files(str(not_an_image))  # refused before any upload
    expect(error).to_have_text("notes.txt is not a PNG, JPEG or WebP image.")
    expect(error).to_have_attribute("role", "alert")
    file_input.set_input_files(str(fake_png))  # looks like a PNG: the server refuses it
    expect(error).to_have_text("fake.png: Not a PNG, JPEG or WebP image.")
    expect(preview).to_be_hidden()
    assert hidden_id.input_value() == ""
    assert not Image.objects.filter(owner=user, kind=Image.Kind.REFERENCE).exists()

    file_input.set_input_files(str(reference))
    expect(preview).to_be_visible()
    expect(error).to_be_hidden()
    uploaded = Image.objects.get(owner=user, kind=Image.Kind.REFERENCE)
    assert hidden_id.input_value() == str(uploaded.pk)
    assert str(uploaded.pk) in preview.get_attribute("src")
    assert preview.evaluate("image => image.complete && image.naturalWidth") == 96
    # Side by side: the reference to the right of the original.
    original = panel.locator("[data-rect-surface]").bounding_box()
    shown = panel.locator(".reference-drop").bounding_box()
    assert shown["x"] > original["x"] + original["width"] and abs(shown["y"] - original["y"]) < original["height"] / 2
    panel.get_by_role("button", name="Remove").click()
    expect(preview).to_be_hidden()
    assert hidden_id.input_value() == ""
    file_input.set_input_files(str(reference))
    expect(preview).to_be_visible()
    uploaded = Image.objects.filter(owner=user, kind=Image.Kind.REFERENCE).latest("created_at")
    assert hidden_id.input_value() == str(uploaded.pk)

    # One box, no prompt: drawing again replaces it; Clear box empties it.
    box_input = panel.locator("input[name='subject-bbox']")
    drag(page, at(original, 0.1, 0.1), at(original, 0.4, 0.4))
    drag(page, at(original, 0.2, 0.25), at(original, 0.8, 0.75))
    expect(panel.locator(".rect-box")).to_have_count(1)
    expect(panel.get_by_label("Box width")).to_be_visible()
    expect(panel.locator("[data-rect-layer] .rect-number")).to_have_count(0)
    panel.get_by_role("button", name="Clear box").click()
    expect(panel.locator(".rect-box")).to_have_count(0)
    assert box_input.input_value() == ""
    drag(page, at(original, 0.2, 0.25), at(original, 0.8, 0.75))
    bbox = json.loads(box_input.input_value())
    expected = [0.2 * SIZE, 0.25 * SIZE, 0.6 * SIZE, 0.5 * SIZE]
    assert all(abs(got - want) <= 1 for got, want in zip(bbox, expected, strict=True)), bbox
    # Blank instructions (spaces pass the browser's own check) come back with the server's error,
    # and the form keeps the reference and the box.
    instructions = panel.get_by_label("Instructions")
    instructions.fill("   ")
    panel.locator("button[type=submit]").click()
    expect(panel.locator(".errorlist")).to_contain_text("This field is required.")
    expect(instructions).to_be_focused()
    expect(preview).to_be_visible()
    assert str(uploaded.pk) in preview.get_attribute("src") and hidden_id.input_value() == str(uploaded.pk)
    expect(panel.locator(".rect-box")).to_have_count(1)
    assert json.loads(box_input.input_value()) == bbox
    expect(panel.get_by_label("Box width")).to_have_value(str(bbox[2]))
    instructions.fill("make the dog look like the reference")
    page.screenshot(path=str(ARTIFACTS / "refine-subject.png"))
    panel.locator("button[type=submit]").click()

    refinement = wait_for_v2(page, run)
    assert refinement.type == "subject"
    assert refinement.payload == {
        "referenceFileId": str(uploaded.pk),
        "instructions": "make the dog look like the reference",
        "bbox": bbox,
    }
