"""In headless Chromium against the live server and a real worker: what a person sees."""

import re

import pytest
from playwright.sync_api import expect

from conftest import ARTIFACTS
from imagegen.models import Run

from .factories import PASSWORD, UserFactory

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

    bar = page.locator(f"#run-{run.pk}-progress progress")
    seen = set()
    image = page.locator(f"#run-{run.pk}-result img.output")
    while not image.count():
        if bar.count():
            value = bar.get_attribute("value")
            if value is not None:
                if int(value) > 0 and not seen - {0}:
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.screenshot(path=str(ARTIFACTS / "generate-progress.png"))
                seen.add(int(value))
        page.wait_for_timeout(30)
    expect(image).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "generate.png"), full_page=True)
    # The bar moved through several steps before the image replaced it.
    assert len(seen - {0}) >= 3, seen
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator(f"#run-{run.pk}-status")).to_have_text("Succeeded")
    assert page.evaluate(f"document.querySelector('#run-{run.pk}-result img.output').naturalWidth") == 512


def test_page_without_websockets_completes_by_polling(stack, page):
    page.add_init_script("delete window.WebSocket")
    user = UserFactory()
    log_in(page, stack, user.username)
    run = generate(page, "a quiet harbour", steps=8, size=128)
    expect(page.locator(f"#run-{run.pk}-result img.output")).to_be_visible(timeout=20_000)
    expect(page.locator(f"#run-{run.pk}-status")).to_have_text(re.compile("Succeeded"))
