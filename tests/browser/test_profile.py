"""Editing the profile in place: every update is an htmx swap, never a full page load."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import LiveServer, Tab, create_account
from tests.helpers import PASSWORD
from webapp.models import Account

pytestmark = pytest.mark.browser

NEW_PASSWORD = "a much longer new passphrase"


@pytest.fixture
def alice(live_server: LiveServer) -> Account:
    return create_account(live_server, "alice", "alice@example.com")


@pytest.fixture
def home(tab: Tab, alice: Account) -> Tab:
    """Alice's home page, signed in, remembered as the document every update must keep."""
    tab.sign_in("alice")
    tab.mark_document()
    flash = tab.page.locator("#flash")
    # The live region itself is never replaced, only its content: a replaced region
    # is not announced by screen readers.
    flash.evaluate("(region) => { region.dataset.sameRegion = 'yes'; }")
    return tab


def fill(tab: Tab, form: str, **fields: str) -> None:
    for name, value in fields.items():
        tab.page.fill(f"#{form}-{name}", value)


def expect_announced(tab: Tab, text: str, *, focused: str) -> None:
    """The flash region (aria-live, never replaced) says what happened; focus is on `focused`."""
    page = tab.page
    region = page.locator("#flash")
    expect(region).to_have_text(text)
    expect(region).to_have_attribute("role", "status")
    expect(region).to_have_attribute("aria-live", "polite")
    expect(region).to_have_attribute("data-same-region", "yes")
    expect(page.locator(focused)).to_be_focused()


def expect_profile(tab: Tab, username: str, email: str) -> None:
    page = tab.page
    expect(page.locator("#profile .profile-username")).to_have_text(username)
    expect(page.locator("#profile .profile-email")).to_have_text(email)
    expect(page.locator("h1")).to_have_text(f"Welcome, {username}")
    expect(page.locator("#nav-username")).to_have_text(username)


def stored(tab: Tab, alice: Account) -> tuple[str, str]:
    [(username, email)] = tab.server.rows(
        "SELECT username, email FROM users WHERE id = :id", id=alice.id
    )
    return username, email


def test_partial_update_of_the_email_only(home: Tab, alice: Account) -> None:
    fill(home, "partial", email="alice@new.example", current_password=PASSWORD)
    response = home.submit("#partial-form", "/partial/alice")
    assert response.status == 200
    home.assert_same_document()
    expect_announced(home, "Profile updated: your e-mail changed.", focused="#profile-title")
    expect_profile(home, "alice", "alice@new.example")
    # The form comes back empty: nothing typed lingers, passwords least of all.
    for field in ("username", "email", "password", "confirm_password", "current_password"):
        expect(home.page.locator(f"#partial-{field}")).to_have_value("")
    expect(home.page.locator("#full-email")).to_have_value("alice@new.example")
    assert stored(home, alice) == ("alice", "alice@new.example")
    home.check_axe("home after a partial e-mail update")
    home.assert_clean()


def test_partial_update_of_the_username_keeps_the_session(home: Tab, alice: Account) -> None:
    page = home.page
    fill(home, "partial", username="Alicia")
    response = home.submit("#partial-form", "/partial/alice", press_enter_in="#partial-username")
    assert response.status == 200
    home.assert_same_document()
    expect_announced(home, "Profile updated: your username changed.", focused="#profile-title")
    expect_profile(home, "Alicia", "alice@example.com")
    # The forms that came back follow the new name.
    expect(page.locator("#partial-form")).to_have_attribute("hx-patch", "/partial/Alicia")
    expect(page.locator("#partial-form")).to_have_attribute("action", "/partial/Alicia")
    expect(page.locator("#full-form")).to_have_attribute("hx-put", "/update/Alicia")
    expect(page.locator("#full-form")).to_have_attribute("action", "/update/Alicia")
    home.check_axe("home after a rename")

    # ... and they work: the next update goes to the new name.
    fill(home, "partial", email="alicia@example.com", current_password=PASSWORD)
    response = home.submit("#partial-form", "/partial/Alicia")
    assert response.status == 200
    home.assert_same_document()
    expect_announced(home, "Profile updated: your e-mail changed.", focused="#profile-title")
    assert stored(home, alice) == ("Alicia", "alicia@example.com")
    home.check_axe("home after an update under the new name")

    # Still signed in after a reload, under the new name.
    page.reload()
    expect_profile(home, "Alicia", "alicia@example.com")
    home.check_axe("home reloaded after a rename")
    home.assert_clean()


def test_full_update_replaces_everything(home: Tab, alice: Account) -> None:
    page = home.page
    expect(page.locator("#full-username")).to_have_value("alice")
    expect(page.locator("#full-email")).to_have_value("alice@example.com")
    fill(
        home,
        "full",
        username="Bob",
        email="bob@example.com",
        password=NEW_PASSWORD,
        confirm_password=NEW_PASSWORD,
        current_password=PASSWORD,
    )
    response = home.submit("#full-form", "/update/alice")
    assert response.status == 200
    home.assert_same_document()
    expect_announced(
        home,
        "Profile updated: your username, e-mail and password changed.",
        focused="#profile-title",
    )
    expect_profile(home, "Bob", "bob@example.com")
    expect(page.locator("#full-username")).to_have_value("Bob")
    expect(page.locator("#full-password")).to_have_value("")
    expect(page.locator("#full-current_password")).to_have_value("")
    home.check_axe("home after a full update")

    # The new password is the one that signs in now.
    with page.expect_navigation(url=home.url("/")):
        page.get_by_role("button", name="Sign out").click()
    home.sign_in("bob@example.com", NEW_PASSWORD)
    expect_profile(home, "Bob", "bob@example.com")
    home.assert_clean()


def test_validation_errors_are_shown_inline(home: Tab, alice: Account) -> None:
    page = home.page
    home.expect_statuses(422)
    fill(home, "partial", username="9lives", email="not an address", current_password=PASSWORD)
    response = home.submit("#partial-form", "/partial/alice")
    assert response.status == 422
    home.assert_same_document()
    expect(page.locator("#flash [role=alert]")).to_have_text(
        "Nothing was changed: see the marked fields."
    )
    expect_announced(
        home, "Nothing was changed: see the marked fields.", focused="#partial-username"
    )
    for field in ("username", "email"):
        field_input = page.locator(f"#partial-{field}")
        expect(field_input).to_have_attribute("aria-invalid", "true")
        expect(field_input).to_have_attribute("aria-describedby", f"{field}-error")
        expect(page.locator(f"#{field}-error")).to_be_visible()
    # What was typed is kept, except the password.
    expect(page.locator("#partial-username")).to_have_value("9lives")
    expect(page.locator("#partial-email")).to_have_value("not an address")
    expect(page.locator("#partial-current_password")).to_have_value("")
    expect_profile(home, "alice", "alice@example.com")
    home.check_axe("home with errors in the partial form")

    # The full form: the passwords do not match; focus goes to that field.
    fill(
        home,
        "full",
        email="alice@example.org",
        password=NEW_PASSWORD,
        confirm_password=NEW_PASSWORD + "!",
        current_password=PASSWORD,
    )
    response = home.submit("#full-form", "/update/alice", press_enter_in="#full-email")
    assert response.status == 422
    home.assert_same_document()
    expect_announced(
        home, "Nothing was changed: see the marked fields.", focused="#full-confirm_password"
    )
    expect(page.locator("#full-confirm_password")).to_have_attribute(
        "aria-describedby", "confirm_password-error"
    )
    expect(page.locator("#confirm_password-error")).to_have_text("The two passwords do not match.")
    expect(page.locator("#full-username")).to_have_value("alice")
    expect(page.locator("#full-email")).to_have_value("alice@example.org")
    # The partial form's errors went with the swap.
    expect(page.locator("#partial-username")).not_to_have_attribute("aria-invalid", "true")
    expect_profile(home, "alice", "alice@example.com")
    assert stored(home, alice) == ("alice", "alice@example.com")
    home.check_axe("home with errors in the full form")
    home.assert_clean()


def test_a_wrong_current_password_changes_nothing(home: Tab, alice: Account) -> None:
    page = home.page
    home.expect_statuses(422)
    fill(home, "partial", email="mallory@example.com", current_password="not my password")
    response = home.submit("#partial-form", "/partial/alice")
    assert response.status == 422
    home.assert_same_document()
    expect_announced(
        home, "Nothing was changed: see the marked fields.", focused="#partial-current_password"
    )
    expect(page.locator("#partial-current_password")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#current_password-error")).to_have_text(
        "Your current password is not correct."
    )
    expect(page.locator("#partial-email")).to_have_value("mallory@example.com")
    expect(page.locator("#partial-email")).not_to_have_attribute("aria-invalid", "true")
    expect_profile(home, "alice", "alice@example.com")
    assert stored(home, alice) == ("alice", "alice@example.com")
    home.check_axe("home after a wrong current password")
    home.assert_clean()


def end_session(tab: Tab, alice: Account, how: str) -> None:
    if how == "revoked":
        # Signed out elsewhere, or by a password change in another browser.
        touched = tab.server.execute(
            "UPDATE user_sessions SET revoked_at = :now WHERE user_id = :id",
            now=datetime.now(UTC),
            id=alice.id,
        )
        assert touched == 1
        return
    # The cookie outlives its token: a token whose hour is over.
    [(session_id,)] = tab.server.rows(
        "SELECT id FROM user_sessions WHERE user_id = :id", id=alice.id
    )
    token = tab.server.app.state.services.tokens.issue(
        user_id=alice.id, session_id=session_id, now=int(time.time()) - 3601
    )
    context = tab.page.context
    [cookie] = [c for c in context.cookies() if c["name"] == "access_token"]
    context.add_cookies(
        [
            {
                "name": cookie["name"],
                "value": token,
                "domain": cookie["domain"],
                "path": cookie["path"],
                "httpOnly": cookie["httpOnly"],
                "secure": cookie["secure"],
                "sameSite": cookie["sameSite"],
            }
        ]
    )
    [replaced] = [c for c in context.cookies() if c["name"] == "access_token"]
    assert replaced["value"] == token


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_session_that_ends_mid_page_leads_to_sign_in_and_back(
    home: Tab, alice: Account, how: str
) -> None:
    page = home.page
    home.expect_statuses(401)
    end_session(home, alice, how)
    fill(home, "partial", email="late@example.com", current_password=PASSWORD)
    with (
        page.expect_response(home.url("/partial/alice")) as info,
        page.expect_navigation(url=home.url("/login?next=/")),
    ):
        page.locator("#partial-form button[type=submit]").click()
    assert info.value.status == 401
    assert info.value.headers["hx-redirect"] == "/login?next=/"
    expect(page.locator("#login-form input[name=next]")).to_have_value("/")
    expect(page.locator("#profile")).to_have_count(0)
    home.check_axe("sign-in form after the session ended")

    home.sign_in("alice", lands_on="/")
    expect_profile(home, "alice", "alice@example.com")
    assert stored(home, alice) == ("alice", "alice@example.com")
    home.assert_clean()
