"""Your sessions and recent authentication in a real browser: ending another browser's
session from the list (swapped in place), signing out everywhere else, the password asked
for again before a sensitive page and the way back to it; axe on both pages, phone and laptop."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import ViewportSize, expect
from sqlmodel import Session, update
from starlette.routing import Route

from tests.browser.conftest import SCREENSHOTS, ColorScheme, LiveServer, Tab, create_account
from tests.helpers import PASSWORD
from webapp.models import UserSession
from webapp.web.auth import requires_recent_authentication
from webapp.web.routes.pages import home

pytestmark = pytest.mark.browser

VIEWPORTS: dict[str, ViewportSize] = {
    "360x740": {"width": 360, "height": 740},
    "1280x800": {"width": 1280, "height": 800},
}
# A page behind recent authentication that is a page (the export is a download).
RECENT_ONLY = "/test/recent-only"


def signed_in_tabs(open_tab: Callable[..., Tab], count: int, **options: object) -> list[Tab]:
    """`count` browsers (own contexts, own cookies), each signed in as alice."""
    tabs = [open_tab(**options) for _ in range(count)]
    create_account(tabs[0].server, "alice")
    for tab in tabs:
        tab.sign_in("alice")
    return tabs


def age_authentication(server: LiveServer, minutes: int = 11) -> None:
    """Every session's password entry, `minutes` in the past."""
    with Session(server.app.state.services.db.engine) as session, session.begin():
        session.exec(
            update(UserSession).values(
                authenticated_at=datetime.now(UTC) - timedelta(minutes=minutes)
            )
        )


def wait_for_htmx(tab: Tab, path: str, act: Callable[[], None]) -> int:
    """Do `act` (which sends an htmx request to `path`); its status, once swapped."""
    before = tab.page.evaluate("window.__htmxDone")
    with tab.page.expect_response(lambda r: r.url == tab.url(path)) as info:
        act()
    tab.page.wait_for_function("(before) => window.__htmxDone > before", arg=before)
    return info.value.status


def no_horizontal_scroll(tab: Tab) -> None:
    overflow = tab.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0, f"{tab.path} scrolls sideways by {overflow}px"


@pytest.fixture
def recent_only(live_server: LiveServer) -> Iterator[str]:
    """The home page behind @requires_recent_authentication, for this test only."""
    route = Route(RECENT_ONLY, requires_recent_authentication(home), methods=["GET"])
    live_server.app.router.routes.append(route)
    yield RECENT_ONLY
    live_server.app.router.routes.remove(route)


# -- your sessions --------------------------------------------------------------------------


def test_ending_another_browsers_session_from_the_list(open_tab: Callable[..., Tab]) -> None:
    first, second = signed_in_tabs(open_tab, 2)
    page = first.page
    with page.expect_navigation(url=first.url("/sessions")):
        page.get_by_role("link", name="Sessions").click()
    sessions = page.locator("#sessions .session")
    expect(sessions).to_have_count(2)
    expect(page.locator("#sessions .session[data-current]")).to_have_count(1)
    expect(page.locator(".account-nav a[aria-current=page]")).to_have_text("Sessions")
    first.check_axe("sessions page, two browsers")
    first.mark_document()

    other = page.locator("#sessions .session:not([data-current])")
    handle = other.get_attribute("data-session")
    status = wait_for_htmx(
        first,
        f"/sessions/{handle}",
        lambda: other.get_by_role("button", name="Sign out").click(),
    )
    assert status == 200
    # Swapped in place: the same document, the list without it, the news in #flash.
    first.assert_same_document()
    expect(sessions).to_have_count(1)
    expect(page.locator("#sessions .session[data-current]")).to_have_count(1)
    expect(page.locator("#sessions-title")).to_have_text("1 active session")
    expect(page.locator("#flash")).to_contain_text("Signed out the session on")
    first.check_axe("sessions page after ending one")
    rows = first.server.rows("SELECT count(*) FROM security_events WHERE kind = 'session_revoked'")
    assert rows == [(1,)]

    # The second browser's next click finds it signed out.
    with second.page.expect_navigation(url=second.url("/login?next=/sessions")):
        second.page.get_by_role("link", name="Sessions").click()
    expect(second.page.locator("#login-form")).to_be_visible()
    first.assert_clean()
    second.assert_clean()


def test_signing_out_everywhere_else(open_tab: Callable[..., Tab]) -> None:
    first, second, third = signed_in_tabs(open_tab, 3)
    first.goto("/sessions")
    expect(first.page.locator("#sessions .session")).to_have_count(3)
    first.mark_document()
    response = first.submit("#revoke-others-form", "/sessions/revoke-others")
    assert response.status == 200
    first.assert_same_document()
    expect(first.page.locator("#sessions .session")).to_have_count(1)
    expect(first.page.locator("#flash")).to_have_text("Signed out 2 other sessions.")
    first.check_axe("sessions page after signing out everywhere else")
    for other in (second, third):
        other.page.reload()
        expect(other.page.locator("#nav-username")).to_have_count(0)
    # This browser is still signed in.
    first.page.reload()
    expect(first.page.locator("#sessions .session[data-current]")).to_have_count(1)


# -- recent authentication --------------------------------------------------------------------


def test_the_password_is_asked_again_and_you_return_where_you_were_going(
    tab: Tab, recent_only: str
) -> None:
    page = tab.page
    create_account(tab.server, "alice")
    tab.sign_in("alice")
    # Just signed in: that counts.
    tab.goto(recent_only)
    expect(page.locator("#profile")).to_be_visible()

    age_authentication(tab.server)
    tab.goto(recent_only)
    assert tab.path == f"/reauth?next={recent_only}"
    expect(page.locator("#reauth-form")).to_be_visible()
    tab.check_axe("re-authentication form")

    tab.expect_statuses(422)
    tab.mark_document()
    page.fill("#reauth-password", "not my password")
    response = tab.submit("#reauth-form", "/reauth", press_enter_in="#reauth-password")
    assert response.status == 422
    tab.assert_same_document()
    expect(page.locator("#reauth-password")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#reauth-password")).to_be_focused()
    expect(page.locator("#password-error")).to_have_text("That password is not correct.")
    expect(page.locator("#flash [role=alert]")).to_have_text("That password is not correct.")
    tab.check_axe("re-authentication form, wrong password")

    page.fill("#reauth-password", PASSWORD)
    response = tab.submit_and_load("#reauth-form", "/reauth", lands_on=recent_only)
    assert response.status == 200
    expect(page.locator("#profile")).to_be_visible()
    tab.assert_clean()


def test_the_export_asks_for_the_password_again_then_downloads(tab: Tab) -> None:
    page = tab.page
    create_account(tab.server, "alice")
    tab.sign_in("alice")
    age_authentication(tab.server)
    response = page.goto(tab.url("/account/export"))
    assert response is not None
    if response.status == 404:
        pytest.skip("GET /account/export is not in the app yet")
    assert tab.path == "/reauth?next=/account/export"
    page.fill("#reauth-password", PASSWORD)
    with page.expect_download() as download_info:
        page.locator("#reauth-form button[type=submit]").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".json")
    path = download.path()
    document = json.loads(path.read_text())
    assert "alice" in json.dumps(document)
    tab.assert_clean()


# -- how the pages look ---------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", VIEWPORTS)
def test_the_sessions_and_reauth_pages_are_accessible(
    open_tab: Callable[..., Tab], size: str, scheme: ColorScheme
) -> None:
    first, _second = signed_in_tabs(open_tab, 2, viewport=VIEWPORTS[size], color_scheme=scheme)
    suffix = size if scheme == "light" else f"{size}-dark"
    page = first.page
    first.goto("/sessions")
    expect(page.locator("#sessions .session")).to_have_count(2)
    no_horizontal_scroll(first)
    first.check_axe(f"sessions page, {suffix}")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(
        path=SCREENSHOTS / f"sessions-{suffix}.png",
        full_page=True,
        animations="disabled",
        caret="initial",
    )

    first.goto("/reauth?next=/sessions")
    no_horizontal_scroll(first)
    first.check_axe(f"re-authentication page, {suffix}")
    first.expect_statuses(422)
    page.fill("#reauth-password", "not my password")
    assert first.submit("#reauth-form", "/reauth").status == 422
    no_horizontal_scroll(first)
    first.check_axe(f"re-authentication page with an error, {suffix}")
    page.screenshot(
        path=SCREENSHOTS / f"reauth-error-{suffix}.png",
        full_page=True,
        animations="disabled",
        caret="initial",
    )
    first.assert_clean()
