"""The drawer's Text repair tab in headless Chromium, against the live server and a real worker: the
lines OCR finds shown as boxes with their text, only the corrected ones sent, boxes drawn around
text OCR missed (by mouse or keyboard), and what the form keeps when it comes back with an error."""

import io
import json
import re

import pytest
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from playwright.sync_api import expect

from conftest import ARTIFACTS
from imagegen import limits
from imagegen.models import Run
from imagegen.services import run_import
from imagegen.tests.factories import UserFactory
from imagegen.tests.test_browser import log_in
from img2img.uploads import normalise_upload
from refinement.models import Refinement
from refinement.tests.test_browser_masked import at, drag, middle, submitted_refinement, wait_for_v2

pytestmark = [pytest.mark.integration, pytest.mark.browser]

FONTS = "/usr/share/fonts/truetype/"
WIDTH, HEIGHT = 640, 360
OCR = 30_000  # ms: Tesseract takes about a second alone, longer on a busy machine
TEXT_API = "**/api/v1/images/*/text"


def sign_png() -> bytes:
    """A light sign with two misspelt lines, as a user would import it to correct."""
    image = PILImage.new("RGB", (WIDTH, HEIGHT), (244, 240, 228))
    draw = ImageDraw.Draw(image)
    bold = ImageFont.truetype(FONTS + "dejavu/DejaVuSans-Bold.ttf", 44)
    serif = ImageFont.truetype(FONTS + "liberation/LiberationSerif-Regular.ttf", 36)
    draw.text((40, 70), "GRAND OPENNING", font=bold, fill=(170, 20, 20))
    draw.text((48, 210), "Sumer Sale", font=serif, fill=(20, 20, 60))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def open_drawer_on_a_sign(page, stack) -> Run:
    user = UserFactory()
    run = run_import(owner=user, upload=normalise_upload(sign_png()))
    log_in(page, stack, user.username)
    page.goto(f"{stack.base_url}/runs/{run.pk}/")
    page.locator(f"#run-{run.pk}-result .refine-button").click()
    expect(page.get_by_role("dialog")).to_contain_text("Refine v1")
    return run


def corrections_value(page) -> list:
    value = page.locator("input[name='text-corrections']").input_value()
    return json.loads(value) if value else []


def box_of(panel, number: int) -> list[int]:
    """Box `number`'s [x, y, width, height], as its number fields show them."""
    return [int(panel.get_by_label(f"Box {number} {side}").input_value()) for side in ("x", "y", "width", "height")]


def expect_the_two_lines(panel) -> None:
    expect(panel.locator("[data-text-status]")).to_contain_text("Found 2 lines of text", timeout=OCR)
    expect(panel.locator(".rect-box")).to_have_count(2)
    expect(panel.locator(".rect-box .rect-number")).to_have_text(["1", "2"])
    expect(panel.get_by_label("Text for box 1")).to_have_value("GRAND OPENNING")
    expect(panel.get_by_label("Text for box 2")).to_have_value("Sumer Sale")


def tab_until_focused(page, target, most: int = 30) -> None:
    for _ in range(most):
        if target.evaluate("element => element === document.activeElement"):
            break
        page.keyboard.press("Tab")
    expect(target).to_be_focused()


def test_only_the_corrected_line_is_sent_and_the_new_version_reads_right(stack, page):
    run = open_drawer_on_a_sign(page, stack)
    # While OCR reads, the tab says so (the answer is held back here to see it).
    held = []
    page.route(TEXT_API, lambda route: held.append(route))
    page.get_by_role("tab", name="Text repair").click()
    panel = page.locator("#panel-text")
    expect(panel.locator("[data-text-status]")).to_have_text("Reading the text…")
    expect(page.locator(".drawer-parent")).to_be_hidden()  # the editor shows the parent instead
    for _ in range(200):
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1
    held[0].continue_()
    expect_the_two_lines(panel)
    page.unroute(TEXT_API)

    # The boxes sit on the lines, in the image's own pixels, shown smaller than 1:1.
    surface = panel.locator("[data-rect-surface]").bounding_box()
    scale = surface["width"] / WIDTH
    assert scale < 0.9
    first = box_of(panel, 1)
    assert 30 <= first[0] <= 50 and 65 <= first[1] <= 90 and 380 <= first[2] <= 480 and 25 <= first[3] <= 50, first
    shown = panel.locator(".rect-box").first.bounding_box()
    assert abs(shown["x"] - surface["x"] - first[0] * scale) < 2 and abs(shown["width"] - first[2] * scale) < 2
    # Nothing changed, nothing to send.
    assert corrections_value(page) == []
    expect(panel.locator(".rect-state").first).to_contain_text("unchanged, so left as it is")

    panel.get_by_label("Text for box 1").fill("GRAND OPENING")
    assert corrections_value(page) == [{"bbox": first, "text": "GRAND OPENING"}]
    expect(panel.locator(".rect-state").first).to_have_text("OCR read “GRAND OPENNING”: will be rewritten.")
    sent = re.compile(r"\bsent\b")
    expect(panel.locator(".rect-box").first).to_have_class(sent)
    expect(panel.locator(".rect-box").nth(1)).not_to_have_class(sent)
    panel.get_by_label("Instructions").fill("red painted letters")
    panel.locator("label.choice", has_text="Subtle").click()  # drawn in the matched lettering, no blend
    panel.locator(".text-editor").evaluate("editor => editor.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(ARTIFACTS / "refine-text.png"))
    panel.locator("button[type=submit]").click()

    refinement = wait_for_v2(page, run)
    assert refinement.type == "text" and refinement.creativity == 1
    assert refinement.payload == {
        "corrections": [{"bbox": first, "text": "GRAND OPENING"}],
        "instructions": "red painted letters",
    }
    verified = "✓ Verified: reads “GRAND OPENING”"
    expect(page.locator(f"#{refinement.dom_id}-log-checks")).to_contain_text(verified, timeout=10_000)
    card = page.locator(f"#versions-list #{refinement.dom_id}")
    expect(card.locator(".result img.output")).to_be_visible(timeout=10_000)
    expect(card.locator(".checks")).to_contain_text(verified)
    expect(card.locator(".checks")).to_contain_text("DejaVu Sans Bold")
    (check,) = refinement.report["checks"]
    assert (check["verified"], check["read"], check["was"]) == (True, "GRAND OPENING", "GRAND OPENNING")


def test_a_box_added_and_placed_from_the_keyboard_alone(stack, page):
    run = open_drawer_on_a_sign(page, stack)
    page.get_by_role("tab", name="General").focus()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_role("tab", name="Text repair")).to_be_focused()
    panel = page.locator("#panel-text")
    expect_the_two_lines(panel)
    second = box_of(panel, 2)
    page.keyboard.press("Tab")
    expect(panel.get_by_label("Text for box 1")).to_be_focused()  # the lines come first

    add = panel.get_by_role("button", name="Add box")
    tab_until_focused(page, add)
    page.keyboard.press("Enter")
    expect(panel.locator(".rect-box")).to_have_count(3)
    expect(panel.get_by_label("Text for box 3")).to_be_focused()
    # Added in the middle, line-shaped; without text it is not sent (and the form would not submit).
    assert box_of(panel, 3) == [160, 158, 320, 45]
    assert corrections_value(page) == []
    assert panel.get_by_label("Text for box 3").evaluate("input => input.validity.valid") is False
    page.keyboard.type("Summer Sale")
    around = [second[0] - 6, second[1] - 6, second[2] + 60, second[3] + 12]  # room for the longer word
    for value in around:  # x, y, width, height
        page.keyboard.press("Tab")
        page.keyboard.press("Control+A")
        page.keyboard.type(str(value))
    expect(panel.get_by_label("Box 3 height")).to_be_focused()
    page.keyboard.press("ArrowUp")  # number fields step by one pixel
    around[3] += 1
    assert corrections_value(page) == [{"bbox": around, "text": "Summer Sale"}]
    # The box on the image follows the numbers.
    surface = panel.locator("[data-rect-surface]").bounding_box()
    drawn = panel.locator(".rect-box").nth(2).bounding_box()
    scale = surface["width"] / WIDTH
    assert abs(drawn["x"] - surface["x"] - around[0] * scale) < 2 and abs(drawn["height"] - around[3] * scale) < 2

    submit = panel.locator("button[type=submit]")
    tab_until_focused(page, submit)
    page.keyboard.press("Enter")
    refinement = submitted_refinement(page, run)
    assert refinement.payload == {"corrections": [{"bbox": around, "text": "Summer Sale"}]}
    assert refinement.creativity == 2
    expect(page.locator(".live-log .log-title")).to_be_focused()


def test_drawn_resized_and_deleted_boxes_when_ocr_fails_first_and_after_an_error(stack, page):
    run = open_drawer_on_a_sign(page, stack)
    page.route(TEXT_API, lambda route: route.fulfill(status=503, json={"error": "OCR is busy."}))
    page.get_by_role("tab", name="Text repair").click()
    panel = page.locator("#panel-text")
    status = panel.locator("[data-text-status]")
    expect(status).to_have_text(
        "The text could not be read (OCR is busy). You can still draw a box around text, or press Add box."
    )
    # The user can still draw: a box in the empty lower right, its text typed straight away.
    surface = panel.locator("[data-rect-surface]").bounding_box()
    drag(page, at(surface, 0.55, 0.78), at(surface, 0.92, 0.92))
    text = panel.get_by_label("Text for box 1")
    expect(text).to_be_focused()
    # Without its text it would not be sent: the form does not submit, and says why.
    panel.locator("button[type=submit]").click()
    assert text.evaluate("input => input.validationMessage") == "Type what box 1 should say, or delete it."
    page.wait_for_timeout(300)
    expect(panel.locator(".rect-errors")).to_have_count(0)
    assert not Refinement.objects.filter(run=run).exists()
    text.focus()
    page.keyboard.type("Opens at 9")
    [drawn] = corrections_value(page)
    assert drawn["text"] == "Opens at 9"
    assert abs(drawn["bbox"][0] - 0.55 * WIDTH) <= 1 and abs(drawn["bbox"][3] - 0.14 * HEIGHT) <= 1, drawn

    page.unroute(TEXT_API)
    panel.get_by_role("button", name="Read the text again").click()
    expect(status).to_contain_text("Found 2 lines of text", timeout=OCR)
    expect(panel.get_by_role("button", name="Read the text again")).to_be_hidden()
    expect(panel.get_by_label("Text for box 1")).to_be_focused()  # not lost with the hidden button
    # The lines come first, top to bottom; the drawn box follows them.
    expect(panel.get_by_label("Text for box 3")).to_have_value("Opens at 9")
    assert box_of(panel, 3) == drawn["bbox"]
    expect(panel.get_by_label("Text for box 1")).to_have_value("GRAND OPENNING")

    # OCR's box around the first line is too tight: made looser by its corner. Moved, not retyped,
    # it is still not sent.
    surface = panel.locator("[data-rect-surface]").bounding_box()  # the drawer may have scrolled
    scale = surface["width"] / WIDTH
    tight = box_of(panel, 1)
    corner = middle(panel.locator(".rect-box").first.locator(".rect-handle.se"))
    end = (corner[0] + 10 * scale, corner[1] + 8 * scale)
    drag(page, corner, end)
    loose = box_of(panel, 1)
    # The bottom-right corner is where the pointer let go, in image pixels; the top-left stays.
    right, bottom = (end[0] - surface["x"]) / scale, (end[1] - surface["y"]) / scale
    assert loose[:2] == tight[:2] and loose[2] > tight[2] and loose[3] > tight[3], (tight, loose)
    assert abs(loose[0] + loose[2] - right) <= 1 and abs(loose[1] + loose[3] - bottom) <= 1, (loose, right, bottom)
    assert corrections_value(page) == [drawn]
    panel.get_by_label("Text for box 1").fill("GRAND OPENING")
    # Line 2 is not wanted: deleted, it is not sent.
    panel.get_by_role("button", name="Delete box 2").click()
    expect(panel.locator(".rect-box")).to_have_count(2)
    expect(panel.get_by_label("Text for box 2")).to_have_value("Opens at 9")
    posted = [{"bbox": loose, "text": "GRAND OPENING"}, drawn]
    assert corrections_value(page) == posted

    # A seed the server refuses (past the field's own limit): the form comes back with the error,
    # the posted boxes where they were, and OCR's lines again (the corrected one in its place).
    seed = panel.locator("input[name=seed]")
    seed.evaluate("input => input.removeAttribute('max')")
    seed.fill(str(limits.MAX_SEED + 1))
    panel.locator("button[type=submit]").click()
    panel = page.locator("#panel-text")
    expect(panel.locator(".seed-field .errorlist")).to_contain_text("less than or equal to")
    expect(panel.locator("[data-text-status]")).to_contain_text("Found 2 lines of text", timeout=OCR)
    expect(panel.locator(".rect-box")).to_have_count(3)
    expect(panel.get_by_label("Text for box 1")).to_have_value("GRAND OPENING")
    assert box_of(panel, 1) == loose
    expect(panel.get_by_label("Text for box 2")).to_have_value("Sumer Sale")  # OCR's, unchanged
    expect(panel.get_by_label("Text for box 3")).to_have_value("Opens at 9")
    assert corrections_value(page) == posted
    assert not Refinement.objects.filter(run=run).exists()

    panel.locator("input[name=seed]").fill("7")
    panel.locator("button[type=submit]").click()
    refinement = submitted_refinement(page, run)
    assert (refinement.payload, refinement.seed) == ({"corrections": posted}, 7)
