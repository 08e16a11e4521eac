"""The Refine Image drawer in headless Chromium against the live server and a real worker."""

import pytest
from playwright.sync_api import expect

from conftest import ARTIFACTS
from imagegen.models import Run
from imagegen.tests.factories import UserFactory
from imagegen.tests.test_browser import generate, log_in
from refinement.models import Refinement

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def finished_run_page(page, stack, prompt: str) -> Run:
    user = UserFactory()
    log_in(page, stack, user.username)
    run = generate(page, prompt, steps=4, size=128)
    expect(page.locator(f"#run-{run.pk}-result img.output")).to_be_visible(timeout=20_000)
    page.goto(f"{stack.base_url}/runs/{run.pk}/")
    return run


def test_refine_v1_into_v2_and_v2_into_v3_without_a_reload(stack, page):
    run = finished_run_page(page, stack, "a lighthouse for refining")
    page.evaluate("window.notReloaded = true")
    page.locator(f"#run-{run.pk}-result .refine-button").click()
    drawer = page.get_by_role("dialog")
    expect(drawer).to_contain_text("Refine v1")
    expect(page.get_by_role("tab", name="General")).to_have_attribute("aria-selected", "true")
    page.get_by_role("tab", name="Text repair").click()
    expect(page.locator("#panel-general")).to_be_hidden()
    expect(page.locator("#panel-text [data-rect-editor]")).to_be_visible()  # its own editor, OCR's boxes on it
    page.get_by_role("tab", name="General").click()
    page.fill("textarea[name=general-prompt]", "the same lighthouse at dusk")
    page.locator("#panel-general label.choice", has_text="Strong").click()
    page.screenshot(path=str(ARTIFACTS / "refine-drawer.png"))
    page.locator("#panel-general button[type=submit]").click()

    v2 = None
    for _ in range(100):
        v2 = Refinement.objects.filter(run=run).first()
        if v2:
            break
        page.wait_for_timeout(50)
    assert v2 is not None and (v2.version, v2.creativity) == (2, 3)
    log = page.locator(".live-log")
    expect(log).to_contain_text("v2 from v1")
    expect(log.locator(f"#refinement-{v2.pk}-progress")).to_be_attached()
    expect(log.locator(f"#refinement-{v2.pk}-result img.output")).to_be_visible(timeout=30_000)
    # The new version's card has joined the run page, finished, under the originals.
    card = page.locator(f"#versions-list #refinement-{v2.pk}")
    expect(card.locator(".result img.output")).to_be_visible(timeout=10_000)
    expect(card).to_contain_text("v2")
    expect(card).to_contain_text("from v1")
    page.screenshot(path=str(ARTIFACTS / "refine-v2.png"))

    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    card.locator(".refine-button").click()
    expect(page.get_by_role("dialog")).to_contain_text("Refine v2")
    page.fill("textarea[name=general-prompt]", "and a starry sky")
    page.locator("#panel-general button[type=submit]").click()
    v3_card = page.locator("#versions-list .version-card").nth(1)
    expect(v3_card).to_contain_text("from v2", timeout=10_000)
    expect(v3_card.locator(".result img.output")).to_be_visible(timeout=30_000)
    v2.refresh_from_db()
    v3 = Refinement.objects.get(run=run, version=3)
    assert (v3.parent_version, v3.parent_image_id) == (2, v2.result_id)
    page.keyboard.press("Escape")
    page.screenshot(path=str(ARTIFACTS / "refine-chain.png"), full_page=True)
    assert page.evaluate("window.notReloaded") is True

    page.goto(f"{stack.base_url}/gallery/")
    expect(page.locator(f"#run-{run.pk}")).to_contain_text("latest of 3 versions")


def test_the_drawer_works_from_the_keyboard_alone(stack, page):
    run = finished_run_page(page, stack, "a keyboard-only refinement")
    opener = page.locator(f"#run-{run.pk}-result .refine-button")
    opener.focus()
    page.keyboard.press("Enter")
    general = page.get_by_role("tab", name="General")
    expect(general).to_be_focused()  # focus moved into the drawer, on the selected tab
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_role("tab", name="Regional")).to_be_focused()
    expect(page.locator("#panel-region")).to_be_visible()
    expect(page.locator("#panel-general")).to_be_hidden()
    page.keyboard.press("Home")
    expect(page.get_by_role("tab", name="Subject repair")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("ArrowLeft")  # wraps around
    expect(general).to_be_focused()
    expect(page.locator("#panel-general")).to_be_visible()

    # Tab stays inside the drawer: forwards from the last control and backwards from the first.
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.querySelector('#drawer').contains(document.activeElement)")
    for _ in range(25):
        page.keyboard.press("Tab")
        assert page.evaluate("document.querySelector('#drawer').contains(document.activeElement)")

    # Into the prompt, type, choose creativity with the arrow keys, and submit with Enter.
    general.focus()
    page.keyboard.press("Tab")
    expect(page.locator("textarea[name=general-prompt]")).to_be_focused()
    page.keyboard.type("the same, in winter")
    page.keyboard.press("Tab")  # negative prompt
    page.keyboard.press("Tab")  # creativity radios: the checked one, 2
    expect(page.locator("#panel-general input[name=creativity][value='2']")).to_be_focused()
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#panel-general input[name=creativity][value='1']")).to_be_checked()
    page.keyboard.press("Tab")  # seed
    page.keyboard.press("Tab")  # Refine
    expect(page.locator("#panel-general button[type=submit]")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator(".live-log .log-title")).to_be_focused()
    expect(page.locator(".live-log")).to_contain_text("creativity 1")
    refinement = Refinement.objects.get(run=run)
    assert (refinement.payload, refinement.creativity) == ({"prompt": "the same, in winter"}, 1)

    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(opener).to_be_focused()  # back where the user started
    # The refinement goes on without the drawer: its card, waiting on the page, fills in.
    expect(page.locator(f"#refinement-{refinement.pk} .result img.output")).to_be_visible(timeout=30_000)
