"""Every page in headless Chromium, in the light and the dark theme: legible (text contrast), the
theme switch, the gallery's equal cards, a waiting job's place in line; and the README's
screenshots (`make screenshots` copies them into static/screenshots/)."""

import re

import pytest
from playwright.sync_api import expect

from conftest import ARTIFACTS, wait_until
from imagegen import services
from imagegen.models import JobStatus, Run
from refinement import services as refinement_services

from .factories import ImageFactory, RunFactory, UserFactory
from .test_browser import log_in

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# WCAG's AA contrast for text: 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold).
# The script finds every visible piece of text (and every form control's value) and compares its
# colour with the background it is drawn on: the first opaque background of it or an ancestor,
# with the translucent ones on the way blended in.
LOW_CONTRAST_TEXT = """(scope) => {
  const rgba = (colour) => {
    const parts = colour.match(/[\\d.]+/g).map(Number);
    return {r: parts[0], g: parts[1], b: parts[2], a: parts.length > 3 ? parts[3] : 1};
  };
  const over = (top, below) => ({
    r: top.r * top.a + below.r * (1 - top.a), g: top.g * top.a + below.g * (1 - top.a),
    b: top.b * top.a + below.b * (1 - top.a), a: 1,
  });
  const luminance = ({r, g, b}) => {
    const linear = (value) => (value /= 255) <= 0.03928 ? value / 12.92 : ((value + 0.055) / 1.055) ** 2.4;
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  };
  const background = (element) => {
    const layers = [];
    for (let node = element; node; node = node.parentElement) {
      const layer = rgba(getComputedStyle(node).backgroundColor);
      if (layer.a > 0) layers.push(layer);
      if (layer.a >= 1) break;
    }
    let colour = {r: 255, g: 255, b: 255, a: 1};
    if (!layers.length || layers[layers.length - 1].a < 1) {
      colour = matchMedia("(prefers-color-scheme: dark)").matches ? {r: 18, g: 18, b: 18, a: 1} : colour;
    }
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };
  const shown = (element) => element.getClientRects().length && !element.closest("[hidden], option, script, style")
    && getComputedStyle(element).visibility === "visible" && !element.matches(":disabled");
  const failures = [];
  for (const element of document.querySelector(scope).querySelectorAll("*")) {
    const control = element.matches("input:not([type=hidden], [type=range], [type=radio], [type=checkbox], "
      + "[type=file]), textarea, select");
    const ownText = [...element.childNodes].filter((node) => node.nodeType === 3).map((node) => node.textContent);
    const text = control ? element.value : ownText.join("").trim();
    if (!text || !shown(element)) continue;
    const style = getComputedStyle(element);
    const ink = over(rgba(style.color), background(element));
    const [light, dark] = [luminance(ink), luminance(background(element))].sort((a, b) => b - a);
    const ratio = (light + 0.05) / (dark + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const what = `${element.tagName.toLowerCase()}.${element.className}`;
    if (ratio < needed) failures.push(`${ratio.toFixed(2)} "${text.slice(0, 40)}" (${what})`);
  }
  return failures;
}"""


def new_page(browser, color_scheme: str = "light"):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=color_scheme)
    return context.new_page()


def body_is_dark(page) -> bool:
    """Whether the page is drawn light on dark: its background darker than its text."""
    return page.evaluate(
        """() => {
          const style = getComputedStyle(document.body);
          const sum = (colour) => colour.match(/[\\d.]+/g).slice(0, 3).map(Number).reduce((a, b) => a + b);
          return sum(style.backgroundColor) < sum(style.color);
        }"""
    )


def check_and_shoot(page, name: str, theme: str, scope: str = "body", full_page: bool = False) -> None:
    """The page's text is legible; its screenshot goes to test-artifacts/page-<name>-<theme>.png."""
    page.wait_for_load_state("networkidle")
    assert page.evaluate(LOW_CONTRAST_TEXT, scope) == [], f"{name} ({theme})"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"page-{name}-{theme}.png"), full_page=full_page)


def finished_runs(stack, owner, sizes) -> list[Run]:
    """Runs made by the stack's worker (the tiny model: coloured noise), one per size, all finished."""
    runs = [
        services.run_create(owner=owner, prompt=prompt, steps=4, guidance_scale=7.5, width=width, height=height)
        for prompt, (width, height) in sizes
    ]
    wait_until(
        lambda: not Run.objects.filter(pk__in=[run.pk for run in runs]).exclude(status=JobStatus.SUCCEEDED).exists(),
        timeout=60,
        what="the runs",
    )
    return runs


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_page_is_legible_in_both_themes(stack, browser, theme):
    user = UserFactory(is_staff=True, is_superuser=True)
    runs = finished_runs(
        stack,
        user,
        [
            ("a lighthouse on a cliff at dawn, oil painting", (192, 128)),
            ("a fox in the snow", (128, 192)),
            ("a bowl of lemons on a blue table, soft light", (128, 128)),
            ("a city street in the rain at night, neon signs reflected in the puddles", (160, 128)),
        ],
    )
    refinement = refinement_services.refinement_create(
        owner=user, run=runs[0], type="general", payload={"prompt": "the same lighthouse at dusk"}
    )
    refined = type(refinement).objects.filter(pk=refinement.pk, status=JobStatus.SUCCEEDED)
    wait_until(refined.exists, timeout=60, what="v2")
    page = new_page(browser, theme)

    page.goto(f"{stack.base_url}/login/")
    expect(page.locator("html")).to_have_attribute("data-theme", "auto")
    assert body_is_dark(page) is (theme == "dark")
    check_and_shoot(page, "login", theme)
    log_in(page, stack, user.username)
    check_and_shoot(page, "generate", theme)
    page.goto(f"{stack.base_url}/gallery/")
    check_and_shoot(page, "gallery", theme)
    page.goto(f"{stack.base_url}/runs/{runs[0].pk}/")
    check_and_shoot(page, "run", theme, full_page=True)
    page.locator(f"#run-{runs[0].pk}-result .refine-button").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    check_and_shoot(page, "refine-drawer", theme)
    page.goto(f"{stack.base_url}/runs/not-a-run/")
    check_and_shoot(page, "not-found", theme)
    # The operations page is the admin's, in the admin's own theme (which follows the same switch).
    page.goto(f"{stack.base_url}/admin/operations/")
    expect(page.locator("#workers")).to_be_visible()
    check_and_shoot(page, "operations", theme, scope="#content-main")
    page.context.close()


def test_the_theme_switch_is_remembered_and_applied_before_the_first_paint(stack, browser):
    user = UserFactory(is_staff=True, is_superuser=True)
    page = new_page(browser, "dark")
    # What the theme is when the page's body starts: set by then, it is set before any paint.
    page.add_init_script(
        """new MutationObserver((_, observer) => {
             if (!document.body) return;
             window.themeAtBody = document.documentElement.dataset.theme;
             observer.disconnect();
           }).observe(document, {childList: true, subtree: true});"""
    )
    log_in(page, stack, user.username)
    switch = page.get_by_label("Theme")
    expect(switch).to_have_value("auto")
    assert body_is_dark(page)  # the system prefers dark

    switch.select_option(label="Light")
    assert not body_is_dark(page)  # at once, without a reload
    page.goto(f"{stack.base_url}/gallery/")
    assert page.evaluate("window.themeAtBody") == "light" and not body_is_dark(page)
    expect(page.get_by_label("Theme")).to_have_value("light")

    # The admin's toggle reads the same choice.
    page.get_by_label("Theme").select_option(label="Dark")
    page.goto(f"{stack.base_url}/admin/operations/")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    page.context.close()

    page = new_page(browser, "light")
    log_in(page, stack, user.username)
    assert not body_is_dark(page)  # a fresh browser follows its light system
    page.get_by_label("Theme").select_option(label="Dark")
    assert body_is_dark(page)
    page.reload()
    assert body_is_dark(page)
    page.context.close()


def test_gallery_cards_are_all_the_same_size_whatever_the_images_shape(stack, page):
    user = UserFactory()
    long_prompt = "a harbour at dusk with fishing boats, gulls over the water, lamps lit along the quay, " * 3
    # Six cards: two rows of a 1280 px window, the prompts of one row short, of the other long.
    for number, (width, height) in enumerate([(512, 128), (128, 512), (256, 256), (384, 256), (200, 96), (96, 200)]):
        prompt = long_prompt if number >= 4 else "a fox"
        run = RunFactory(owner=user, status=JobStatus.SUCCEEDED, width=width, height=height, prompt=prompt)
        ImageFactory(owner=user, run=run, width=width, height=height, file__width=width, file__height=height)
    log_in(page, stack, user.username)
    page.goto(f"{stack.base_url}/gallery/")
    expect(page.locator(".run-card img.output")).to_have_count(6)
    page.wait_for_function("[...document.querySelectorAll('.run-card img.output')].every((img) => img.naturalWidth)")
    cards = [box(card) for card in page.locator(".run-card").all()]
    images = [box(image) for image in page.locator(".run-card img.output").all()]
    assert len(set(cards)) == 1, cards
    assert len(set(images)) == 1 and images[0][0] == images[0][1], images  # all the same square


def box(locator) -> tuple[int, int]:
    bounds = locator.bounding_box()
    return round(bounds["width"]), round(bounds["height"])


def test_a_waiting_job_shows_its_place_in_line_and_moves_up_live(stack, page):
    user = UserFactory()
    # One long run keeps the worker busy; the next two wait.
    busy = services.run_create(owner=user, prompt="a long one", steps=150, guidance_scale=7.5, width=512, height=512)
    second = services.run_create(owner=user, prompt="second", steps=4, guidance_scale=7.5, width=128, height=128)
    third = services.run_create(owner=user, prompt="third", steps=4, guidance_scale=7.5, width=128, height=128)
    wait_until(lambda: Run.objects.get(pk=busy.pk).status == JobStatus.RUNNING, timeout=30, what="the long run")
    log_in(page, stack, user.username)
    page.goto(f"{stack.base_url}/gallery/")
    expect(page.locator(f"#run-{second.pk}-progress")).to_contain_text("1st in line")
    expect(page.locator(f"#run-{third.pk}-progress")).to_contain_text("2nd in line")
    expect(page.locator(f"#run-{busy.pk}-progress")).to_contain_text(re.compile(r"Step [1-9]"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-queue-light.png"))
    page.evaluate("window.notReloaded = true")
    page.locator(f"#run-{second.pk}-progress .cancel").click()
    expect(page.locator(f"#run-{third.pk}-progress")).to_contain_text("1st in line")  # over its WebSocket
    assert page.evaluate("window.notReloaded") is True
    for run in (busy, third):
        services.job_cancel(job=run)
