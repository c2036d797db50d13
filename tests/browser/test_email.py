"""The e-mail flows in a real browser: the live server sends through an SMTP server in this
process (aiosmtpd), and the tests open the links in the messages it received."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from starlette.applications import Starlette

from tests.browser.conftest import LiveServer, Tab, create_account, serving
from tests.helpers import PASSWORD, make_settings
from tests.smtp import Inbox, links_in, smtp_server
from webapp.app import create_app
from webapp.migrate import upgrade_to_head

pytestmark = pytest.mark.browser

# Long and uncommon: no password rule refuses it.
NEW_PASSWORD = "violet kettles hum beneath 47 quiet lanterns"
ACCOUNT_CREATED = "New account created. Sign in to continue."
CONFIRMED = "Your e-mail address is confirmed. Thank you."
PASSWORD_SET = "Your new password is set and every session was signed out. Sign in with it."


@pytest.fixture(scope="module")
def mail_server() -> Iterator[tuple[int, Inbox]]:
    """An SMTP server in this process: its port, and the inbox of what it received."""
    with smtp_server() as (controller, inbox):
        yield controller.port, inbox


@pytest.fixture(scope="module")
def inbox(mail_server: tuple[int, Inbox]) -> Inbox:
    return mail_server[1]


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, mail_server: tuple[int, Inbox]
) -> Iterator[LiveServer]:
    """This module's live server (the suite's own does not mail): it sends through
    `mail_server`, and PUBLIC_URL is its own address, so its links open in the browser."""
    port, _inbox = mail_server
    database_url = f"sqlite:///{tmp_path_factory.mktemp('email-db') / 'email.db'}"
    upgrade_to_head(database_url)

    def make_app(url: str) -> Starlette:
        mail_url = f"smtp://127.0.0.1:{port}"
        return create_app(make_settings(database_url, mail_url=mail_url, public_url=url))

    with serving(make_app) as server:
        yield server


def links_to(inbox: Inbox, address: str, path_prefix: str) -> list[str]:
    """Every link whose path starts with `path_prefix` in the messages sent to `address`."""
    return [
        link
        for message in inbox.to(address)
        for link in links_in(message)
        if urlsplit(link).path.startswith(path_prefix)
    ]


def wait_for_links(
    tab: Tab, inbox: Inbox, address: str, path_prefix: str, count: int = 1
) -> list[str]:
    """The paths of the first `count` such links, waiting (boundedly) for their messages;
    every link is absolute, under the live server's own URL (its PUBLIC_URL)."""
    found = links_to(inbox, address, path_prefix)
    for _ in range(10):
        if len(found) >= count:
            break
        inbox.wait_for(len(inbox.messages) + 1)
        found = links_to(inbox, address, path_prefix)
    subjects = [str(message["Subject"]) for message in inbox.to(address)]
    assert len(found) >= count, f"{len(found)} {path_prefix} links to {address}: {subjects}"
    for link in found:
        assert link.startswith(tab.server.url + "/"), link
    return [urlsplit(link).path for link in found[:count]]


def expect_flash(tab: Tab, text: str) -> None:
    expect(tab.page.locator("#flash")).to_have_text(text)


def verified_at(tab: Tab, username: str) -> object:
    [(when,)] = tab.server.rows(
        "SELECT email_verified_at FROM users WHERE username = :name", name=username
    )
    return when


def confirm_through(tab: Tab, path: str, email: str, username: str) -> None:
    """Open a confirmation link: a page with one button, which the GET alone does not press;
    press it and land on the home page with the flash."""
    page = tab.page
    tab.goto(path)
    form = page.locator("#verify-email-form")
    expect(form).to_be_visible()
    expect(form.locator("button")).to_have_count(1)
    expect(form).to_contain_text(email)
    expect(form).to_contain_text(username)
    tab.check_axe("the confirm-your-address page")
    assert verified_at(tab, username) is None, "the GET of the link confirmed the address"

    with (
        page.expect_response(lambda r: r.url == tab.url(path)) as posted,
        page.expect_navigation(url=tab.url("/")),
    ):
        page.get_by_role("button", name="Confirm this address").click()
    assert posted.value.status == 303
    expect_flash(tab, CONFIRMED)
    assert verified_at(tab, username) is not None


def test_register_then_confirm_the_address_from_the_email_then_sign_in(
    tab: Tab, inbox: Inbox
) -> None:
    page = tab.page
    tab.goto("/register")
    tab.check_axe("register form")
    page.fill("#register-username", "Carol")
    page.fill("#register-email", "carol@example.com")
    page.fill("#register-password", PASSWORD)
    page.fill("#register-confirm_password", PASSWORD)
    response = tab.submit_and_load("#register-form", "/register", lands_on="/login")
    assert response.status == 200
    expect_flash(tab, ACCOUNT_CREATED)
    tab.check_axe("sign-in form after registering")

    [path] = wait_for_links(tab, inbox, "carol@example.com", "/verify-email/")
    confirm_through(tab, path, "carol@example.com", "Carol")
    expect(page.locator("h1")).to_have_text("Your account, kept safe")
    tab.check_axe("guest home with the address-confirmed flash")

    tab.sign_in("Carol")
    expect(page.locator("h1")).to_have_text("Welcome, Carol")
    status = page.locator("#profile #email-status")
    expect(status).to_have_text("Your e-mail address is confirmed.")
    expect(page.get_by_role("button", name="Send the link again")).to_have_count(0)
    tab.check_axe("signed-in home, address confirmed")

    # The link is spent: opening it again says so, with a way on.
    tab.expect_statuses(400)
    tab.goto(path, status=400)
    expect(page.locator("main")).to_contain_text("This link does not work")
    tab.check_axe("a spent confirmation link")
    tab.assert_clean()


def test_forgotten_password_reset_from_the_email_then_sign_in_with_the_new_one(
    tab: Tab, inbox: Inbox
) -> None:
    page = tab.page
    create_account(tab.server, "dave", "dave@example.com")
    tab.goto("/login")
    with page.expect_navigation(url=tab.url("/password-reset")):
        page.get_by_role("link", name="Forgotten your password?").click()
    form = page.locator("#password-reset-form")
    expect(form).to_be_visible()
    tab.check_axe("password-reset request form")

    page.fill("#reset-email", "dave@example.com")
    with (
        page.expect_response(lambda r: r.url == tab.url("/password-reset")) as posted,
        page.expect_navigation(url=tab.url("/password-reset")),
    ):
        form.get_by_role("button", name="Send me a link").click()
    assert posted.value.status == 200
    expect(page.locator("main [role=status]")).to_contain_text(
        "If an account uses that address, a link to choose a new password is on its way"
    )
    tab.check_axe("password-reset request sent")

    [path] = wait_for_links(tab, inbox, "dave@example.com", "/password-reset/")
    tab.goto(path)
    form = page.locator("#password-reset-confirm-form")
    expect(form).to_be_visible()
    expect(form).to_contain_text("dave")
    tab.check_axe("choose-a-new-password form")
    page.fill("#reset-password", NEW_PASSWORD)
    page.fill("#reset-confirm_password", NEW_PASSWORD)
    with (
        page.expect_response(lambda r: r.url == tab.url(path)) as posted,
        page.expect_navigation(url=tab.url("/login")),
    ):
        form.get_by_role("button", name="Set the new password").click()
    assert posted.value.status == 303
    expect_flash(tab, PASSWORD_SET)
    expect(page.locator("#login-form")).to_be_visible()
    tab.check_axe("sign-in form after a password reset")

    # The old password is gone ...
    tab.expect_statuses(401)
    page.fill("#login-username", "dave")
    page.fill("#login-password", PASSWORD)
    assert tab.submit("#login-form", "/login").status == 401
    expect(page.locator("#flash")).not_to_be_empty()
    # ... and the new one signs in. A reset proves the address, so it is confirmed too.
    tab.sign_in("dave", NEW_PASSWORD)
    expect(page.locator("h1")).to_have_text("Welcome, dave")
    expect(page.locator("#profile #email-status")).to_have_text("Your e-mail address is confirmed.")
    tab.check_axe("signed-in home after a password reset")
    tab.assert_clean()


def test_send_the_link_again_swaps_the_profile_in_place(tab: Tab, inbox: Inbox) -> None:
    page = tab.page
    create_account(tab.server, "erin", "erin@example.com")
    wait_for_links(tab, inbox, "erin@example.com", "/verify-email/")  # the registration's
    tab.sign_in("erin")
    status = page.locator("#profile #email-status")
    expect(status).to_contain_text("Your address is not confirmed yet.")
    tab.check_axe("signed-in home, address not confirmed")
    tab.mark_document()
    page.locator("#flash").evaluate("(region) => { region.dataset.sameRegion = 'yes'; }")

    # Three more links in 15 minutes: each press swaps #profile and says where it went.
    for sent in (2, 3, 4):
        response = tab.submit("form#email-status", "/verify-email")
        assert response.status == 200
        tab.assert_same_document()
        expect_flash(tab, "A new confirmation link is on its way to erin@example.com.")
        expect(page.locator("#flash")).to_have_attribute("data-same-region", "yes")
        expect(page.locator("#profile-title")).to_be_focused()
        expect(status).to_contain_text("not confirmed yet")
        wait_for_links(tab, inbox, "erin@example.com", "/verify-email/", count=sent)
        if sent == 2:
            tab.check_axe("home after sending the link again")

    # A fourth is refused, in place too, and nothing is sent.
    tab.expect_statuses(429)
    response = tab.submit("form#email-status", "/verify-email")
    assert response.status == 429
    assert 1 <= int(response.headers["retry-after"]) <= 900
    tab.assert_same_document()
    expect(page.locator("#flash")).to_contain_text("Too many e-mails asked for. Try again in")
    expect(page.locator("#flash")).to_have_attribute("data-same-region", "yes")
    expect(page.get_by_role("button", name="Send the link again")).to_be_visible()
    tab.check_axe("home after one link too many")
    assert len(links_to(inbox, "erin@example.com", "/verify-email/")) == 4

    # The newest link confirms the address; the profile then says so.
    newest = urlsplit(links_to(inbox, "erin@example.com", "/verify-email/")[-1]).path
    confirm_through(tab, newest, "erin@example.com", "erin")
    expect(page.locator("#profile #email-status")).to_have_text("Your e-mail address is confirmed.")
    expect(page.get_by_role("button", name="Send the link again")).to_have_count(0)
    tab.check_axe("signed-in home, address confirmed by the newest link")
    tab.assert_clean()
