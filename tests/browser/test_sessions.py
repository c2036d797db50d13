"""Registering, signing in and out in a real browser, with the mouse and with the keyboard."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Tab, create_account
from tests.helpers import PASSWORD

pytestmark = pytest.mark.browser


def fill_registration(tab: Tab, username: str, email: str, password: str, confirm: str) -> None:
    page = tab.page
    page.fill("#register-username", username)
    page.fill("#register-email", email)
    page.fill("#register-password", password)
    page.fill("#register-confirm_password", confirm)


def expect_flash(tab: Tab, text: str) -> None:
    expect(tab.page.locator("#flash")).to_have_text(text)


def test_register_then_sign_in_shows_the_profile(tab: Tab) -> None:
    page = tab.page
    tab.goto("/")
    expect(page.locator("h1")).to_have_text("Your account, kept safe")
    expect(page.locator("#profile")).to_have_count(0)
    tab.check_axe("guest home")

    with page.expect_navigation(url=tab.url("/register")):
        page.get_by_role("link", name="Create an account").click()
    expect(page.locator("#register-form")).to_be_visible()
    tab.check_axe("register form")

    fill_registration(tab, "Alice", " alice@Example.COM ", PASSWORD, PASSWORD)
    response = tab.submit_and_load("#register-form", "/register", lands_on="/login")
    assert response.status == 200
    assert response.headers["hx-redirect"] == "/login"
    expect_flash(tab, "New account created. Sign in to continue.")
    expect(page.locator("#login-form")).to_be_visible()
    tab.check_axe("sign-in form with the account-created flash")

    tab.sign_in("alice")  # any case signs in
    expect_flash(tab, "Signed in as Alice.")
    expect(page.locator("h1")).to_have_text("Welcome, Alice")
    expect(page.locator("#nav-username")).to_have_text("Alice")
    expect(page.locator("#profile .profile-username")).to_have_text("Alice")
    expect(page.locator("#profile .profile-email")).to_have_text("alice@example.com")
    expect(page.locator("#partial-form")).to_have_attribute("hx-patch", "/partial/Alice")
    expect(page.locator("#full-form")).to_have_attribute("hx-put", "/update/Alice")
    tab.check_axe("signed-in home")

    # A flash message shows once.
    page.reload()
    expect(page.locator("#profile .profile-username")).to_have_text("Alice")
    expect(page.locator("#flash")).to_have_text("")
    tab.assert_clean()


def test_registration_errors_are_shown_inline_and_typed_values_kept(tab: Tab) -> None:
    page = tab.page
    create_account(tab.server, "taken")
    tab.expect_statuses(409, 422)
    tab.goto("/register")
    tab.mark_document()

    fill_registration(tab, "9lives", "not an address", "short", "short")
    response = tab.submit("#register-form", "/register")
    assert response.status == 422
    tab.assert_same_document()
    for field in ("username", "email", "password"):
        field_input = page.locator(f"#register-{field}")
        expect(field_input).to_have_attribute("aria-invalid", "true")
        expect(field_input).to_have_attribute("aria-describedby", f"{field}-error")
        expect(page.locator(f"#{field}-error")).to_be_visible()
    expect(page.locator("#register-username")).to_be_focused()
    expect(page.locator("#register-username")).to_have_value("9lives")
    expect(page.locator("#register-email")).to_have_value("not an address")
    expect(page.locator("#register-confirm_password")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#register-password")).to_have_value("")
    expect(page.locator("#register-confirm_password")).to_have_value("")
    expect(page.locator("#flash [role=alert]")).to_have_text(
        "The account was not created: see the marked fields."
    )
    tab.check_axe("register form with errors")

    # A name that is taken: 409, the message next to the field, the e-mail kept.
    fill_registration(tab, "TAKEN", "new@example.com", PASSWORD, PASSWORD)
    response = tab.submit(
        "#register-form", "/register", press_enter_in="#register-confirm_password"
    )
    assert response.status == 409
    tab.assert_same_document()
    expect(page.locator("#register-username")).to_be_focused()
    expect(page.locator("#register-username")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#username-error")).to_contain_text("taken")
    expect(page.locator("#register-email")).to_have_value("new@example.com")
    expect(page.locator("#register-email")).not_to_have_attribute("aria-invalid", "true")
    tab.check_axe("register form, name taken")
    assert tab.server.rows("SELECT count(*) FROM users") == [(1,)]
    tab.assert_clean()


def test_sign_up_and_sign_in_with_the_keyboard_alone(tab: Tab) -> None:
    page = tab.page
    keyboard = page.keyboard
    tab.goto("/register")

    # The skip link comes first and takes the focus past the navigation.
    keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()
    for field, typed in (
        ("username", "kim"),
        ("email", "kim@example.com"),
        ("password", PASSWORD),
        ("confirm_password", PASSWORD),
    ):
        keyboard.press("Tab")
        expect(page.locator(f"#register-{field}")).to_be_focused()
        keyboard.type(typed)
    keyboard.press("Tab")
    expect(page.locator("#register-form button[type=submit]")).to_be_focused()
    with page.expect_navigation(url=tab.url("/login")):
        keyboard.press("Enter")
    expect_flash(tab, "New account created. Sign in to continue.")

    keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    keyboard.press("Enter")
    keyboard.press("Tab")
    expect(page.locator("#login-username")).to_be_focused()
    keyboard.type("kim@example.com")
    keyboard.press("Tab")
    expect(page.locator("#login-password")).to_be_focused()
    keyboard.type(PASSWORD)
    with page.expect_navigation(url=tab.url("/")):
        keyboard.press("Enter")
    expect(page.locator("#profile .profile-username")).to_have_text("kim")
    expect_flash(tab, "Signed in as kim.")
    tab.assert_clean()


def test_wrong_password_at_sign_in_is_one_generic_message(tab: Tab) -> None:
    page = tab.page
    create_account(tab.server, "alice")
    tab.expect_statuses(401)
    tab.goto("/login")
    tab.mark_document()
    page.fill("#login-username", "alice")
    page.fill("#login-password", "not the password")
    response = tab.submit("#login-form", "/login")
    assert response.status == 401
    tab.assert_same_document()
    expect(page.locator("#login-form [role=alert]")).to_have_text(
        "Incorrect username, e-mail or password."
    )
    expect(page.locator("#login-username")).to_have_value("")
    # The clicked button went with the old form: focus goes to the first field, not <body>.
    expect(page.locator("#login-username")).to_be_focused()
    tab.check_axe("sign-in form, wrong password")
    tab.assert_clean()


def test_error_pages_are_the_apps_own_and_accessible(tab: Tab) -> None:
    tab.expect_statuses(404)
    tab.goto("/no-such-page", status=404)
    expect(tab.page.locator("h1")).to_have_text("Page not found")
    tab.check_axe("404 page")
    tab.assert_clean()


def test_sign_out_shows_the_guest_home_and_back_shows_nothing_private(tab: Tab) -> None:
    page = tab.page
    create_account(tab.server, "alice", "alice@example.com")
    tab.sign_in("alice")
    expect(page.locator("#profile .profile-email")).to_have_text("alice@example.com")

    with page.expect_navigation(url=tab.url("/")):
        page.get_by_role("button", name="Sign out").click()
    expect_flash(tab, "You are signed out.")
    expect(page.locator("#profile")).to_have_count(0)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Sign in")).to_be_visible()
    expect(nav.get_by_role("button", name="Sign out")).to_have_count(0)
    assert "access_token" not in {cookie["name"] for cookie in page.context.cookies()}
    tab.check_axe("guest home after sign-out")

    # Back to the signed-in page: it is fetched again (no-store), and shows a guest.
    response = page.go_back()
    assert response is not None
    assert response.status == 200
    assert tab.path == "/"
    expect(page.locator("h1")).to_have_text("Your account, kept safe")
    expect(page.locator("#profile")).to_have_count(0)
    body = page.locator("body").inner_text()
    assert "alice@example.com" not in body
    assert "Welcome, alice" not in body
    assert page.locator("#nav-username").count() == 0
    tab.assert_clean()
