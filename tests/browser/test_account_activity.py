"""Your security history and leaving, in a real browser: older events loaded in place by
htmx, deleting the account through its page, and axe on both pages, phone and laptop."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import ViewportSize, expect

from tests.browser.conftest import LiveServer, Tab, create_account

pytestmark = pytest.mark.browser

VIEWPORTS: dict[str, ViewportSize] = {
    "360x740": {"width": 360, "height": 740},
    "1280x800": {"width": 1280, "height": 800},
}
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"


def add_events(server: LiveServer, user_id: int, count: int) -> None:
    """`count` sign-outs from Firefox, a minute apart, all a day ago."""
    start = datetime.now(UTC) - timedelta(days=1)
    for number in range(count):
        server.execute(
            "INSERT INTO security_events (user_id, kind, created_at, client_addr, user_agent, "
            "detail) VALUES (:user_id, 'signout', :at, '192.0.2.7', :ua, '')",
            user_id=user_id,
            at=start + timedelta(minutes=number),
            ua=FIREFOX,
        )


def no_horizontal_scroll(tab: Tab) -> None:
    overflow = tab.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0, f"{tab.path} scrolls sideways by {overflow}px"


@pytest.mark.parametrize("size", VIEWPORTS)
def test_activity_and_delete_pages_are_axe_clean(open_tab: Callable[..., Tab], size: str) -> None:
    tab = open_tab(viewport=VIEWPORTS[size])
    page = tab.page
    account = create_account(tab.server, "alice")
    add_events(tab.server, account.id, 3)
    tab.sign_in("alice")
    tab.goto("/activity")
    expect(page.locator("#activity .event")).to_have_count(4)
    expect(page.locator("#activity .event").first).to_have_attribute("data-event", "signin")
    expect(page.locator(".account-nav a[aria-current=page]")).to_have_text("Activity")
    no_horizontal_scroll(tab)
    tab.check_axe(f"activity {size}")

    tab.goto("/account/delete")
    expect(page.locator("#delete-account-form")).to_be_visible()
    no_horizontal_scroll(tab)
    tab.check_axe(f"delete account {size}")

    # A wrong password: the page again, the field marked, nothing deleted.
    tab.expect_statuses(422)
    page.fill("#delete-current_password", "not my password")
    with page.expect_navigation(url=tab.url("/account/delete")) as navigation:
        page.locator("#delete-account-form button[type=submit]").click()
    response = navigation.value
    assert response is not None
    assert response.status == 422
    expect(page.locator("#delete-current_password")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#delete-current_password")).to_be_focused()
    expect(page.locator("#current_password-error")).to_be_visible()
    tab.check_axe(f"delete account, wrong password {size}")
    assert tab.server.rows("SELECT COUNT(*) FROM users") == [(1,)]
    tab.assert_clean()


def test_older_events_load_in_place(tab: Tab) -> None:
    page = tab.page
    account = create_account(tab.server, "alice")
    add_events(tab.server, account.id, 60)
    tab.sign_in("alice")
    tab.goto("/activity")
    events = page.locator("#activity .event")
    expect(events).to_have_count(50)
    tab.mark_document()
    before = page.evaluate("window.__htmxDone")
    older = page.get_by_role("button", name="Older events")
    with page.expect_response(lambda r: "/activity?before=" in r.url) as info:
        older.click()
    page.wait_for_function("(before) => window.__htmxDone > before", arg=before)
    assert info.value.status == 200
    tab.assert_same_document()
    expect(events).to_have_count(61)
    expect(page.get_by_role("button", name="Older events")).to_have_count(0)
    # The focus moves to the first event that came in, where the button was.
    expect(events.nth(50)).to_be_focused()
    tab.check_axe("activity after older events")
    tab.assert_clean()


def test_deleting_the_account_through_its_page(tab: Tab) -> None:
    page = tab.page
    create_account(tab.server, "alice")
    tab.sign_in("alice")
    tab.goto("/activity")
    with page.expect_navigation(url=tab.url("/account/delete")):
        page.get_by_role("link", name="Delete your account").click()
    expect(page.locator("#delete-account-form")).to_contain_text("cannot be undone")
    page.fill("#delete-current_password", "correct horse battery")
    with page.expect_navigation(url=tab.url("/")):
        page.locator("#delete-account-form button[type=submit]").click()
    expect(page.locator("#flash")).to_contain_text(
        "Your account and everything we held about it are deleted."
    )
    # Signed out: the guest home, no account navigation.
    expect(page.locator("#profile")).to_have_count(0)
    expect(page.locator(".account-nav")).to_have_count(0)
    assert tab.server.rows("SELECT COUNT(*) FROM users") == [(0,)]
    assert tab.server.rows("SELECT COUNT(*) FROM user_sessions") == [(0,)]
    assert tab.server.rows("SELECT kind, user_id FROM outbox") == [("goodbye", None)]
    tab.check_axe("home after deleting the account")
    # The old session is gone: the account pages ask to sign in.
    tab.goto("/activity")
    assert tab.path.startswith("/login?next=/activity")
    tab.assert_clean()
