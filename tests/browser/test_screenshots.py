"""Screenshots of the main pages on a phone and a laptop, in both colour schemes, for a
person to look at (artifacts/screenshots/, git-ignored); axe checks each layout too."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import ViewportSize, expect

from tests.browser.conftest import SCREENSHOTS, ColorScheme, Tab, create_account

pytestmark = pytest.mark.browser

VIEWPORTS: dict[str, ViewportSize] = {
    "360x740": {"width": 360, "height": 740},
    "1280x800": {"width": 1280, "height": 800},
}


def screenshot(tab: Tab, name: str, *, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Finite animations (the flash fading in) are fast-forwarded to their end. The caret
    # stays: hiding it leaves `style=""` on inputs, which htmx's settle step would copy
    # onto a swapped-in element, a CSP violation of the test's own making.
    tab.page.screenshot(
        path=SCREENSHOTS / f"{name}.png",
        full_page=full_page,
        animations="disabled",
        caret="initial",
    )


def no_horizontal_scroll(tab: Tab) -> None:
    overflow = tab.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0, f"{tab.path} scrolls sideways by {overflow}px"


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", VIEWPORTS)
def test_main_pages(open_tab: Callable[..., Tab], size: str, scheme: ColorScheme) -> None:
    tab = open_tab(viewport=VIEWPORTS[size], color_scheme=scheme)
    page = tab.page
    suffix = f"{size}" if scheme == "light" else f"{size}-dark"
    tab.expect_statuses(422)

    tab.goto("/")
    no_horizontal_scroll(tab)
    tab.check_axe(f"guest home, {suffix}")
    screenshot(tab, f"guest-home-{suffix}")

    tab.goto("/register")
    page.fill("#register-username", "9lives")
    page.fill("#register-email", "not an address")
    page.fill("#register-password", "short")
    response = tab.submit("#register-form", "/register")
    assert response.status == 422
    expect(page.locator("#register-username")).to_be_focused()
    no_horizontal_scroll(tab)
    tab.check_axe(f"register form with errors, {suffix}")
    screenshot(tab, f"register-errors-{suffix}")

    create_account(tab.server, "alice", "alice@example.com")
    tab.sign_in("alice")
    expect(page.locator("#flash")).to_have_text("Signed in as alice.")
    no_horizontal_scroll(tab)
    tab.check_axe(f"signed-in home, {suffix}")
    screenshot(tab, f"signed-in-home-{suffix}")
    if suffix == "360x740":
        # What a phone shows first: the source of static/img/screenshot.png in the README.
        screenshot(tab, "readme-signed-in-home", full_page=False)
    tab.assert_clean()
