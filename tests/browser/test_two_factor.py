"""Two-factor sign-in and passkeys in a real browser, under the strict CSP.

Passkeys use Chromium's virtual authenticator (Chrome DevTools Protocol, through
Playwright's CDP session): CTAP2, resident keys, user verification that always succeeds.
Browsers refuse an IP address as a WebAuthn RP ID, so this module serves the app as
http://localhost:<port> with PUBLIC_URL saying the same. The TOTP flow reads the secret
from the page and computes codes with pyotp on a pinned clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveServer, Tab, create_account, serving
from tests.browser.test_screenshots import screenshot
from tests.helpers import PASSWORD, make_settings
from tests.test_two_factor import Clock
from webapp.app import create_app
from webapp.migrate import upgrade_to_head

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app at http://localhost:<port>, which is also its PUBLIC_URL (the RP ID)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('passkeys-db') / 'browser.db'}"
    upgrade_to_head(url)

    def make_app(served_at: str) -> Any:
        return create_app(make_settings(url, public_url=_on_localhost(served_at)))

    with serving(make_app) as server:
        yield LiveServer(url=_on_localhost(server.url), app=server.app)


def _on_localhost(url: str) -> str:
    return url.replace("http://127.0.0.1:", "http://localhost:")


def add_virtual_authenticator(page: Page) -> Any:
    """A platform authenticator that keeps passkeys and verifies the user, for this tab."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, added["authenticatorId"]


def sign_out(tab: Tab) -> None:
    with tab.page.expect_navigation(url=tab.url("/")):
        tab.page.locator("form[action='/logout'] button").click()


def test_add_a_passkey_sign_out_and_sign_in_with_it(open_tab):
    tab: Tab = open_tab()
    cdp, authenticator = add_virtual_authenticator(tab.page)
    create_account(tab.server, "alice")
    tab.sign_in("alice")

    tab.goto("/security")
    expect(tab.page.locator("#passkey-add-form")).to_be_visible()
    expect(tab.page.locator("[data-passkey-unsupported]")).to_be_hidden()
    tab.check_axe("security page, no passkeys")
    tab.mark_document()
    tab.page.fill("#passkey-name", "Test laptop")
    with tab.page.expect_response(lambda r: r.url == tab.url("/security/passkeys")) as info:
        tab.page.locator("#passkey-add-form button[type=submit]").click()
    assert info.value.status == 200
    expect(tab.page.locator("#passkeys .passkey-name")).to_have_value("Test laptop")
    expect(tab.page.locator("#flash")).to_contain_text("Passkey “Test laptop” added")
    tab.assert_same_document()
    tab.check_axe("security page, one passkey")
    screenshot(tab, "security-passkey")
    [credential] = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})[
        "credentials"
    ]
    assert credential["isResidentCredential"] is True
    assert tab.server.rows("SELECT name FROM passkeys") == [("Test laptop",)]

    sign_out(tab)
    tab.goto("/login")
    expect(tab.page.locator("#passkey-signin-button")).to_be_visible()
    tab.check_axe("sign-in page with a passkey button")
    with tab.page.expect_navigation(url=tab.url("/")):
        tab.page.locator("#passkey-signin-button").click()
    expect(tab.page.locator("#nav-username")).to_have_text("alice")
    expect(tab.page.locator("#flash")).to_contain_text("Signed in as alice with a passkey.")
    events = tab.server.rows("SELECT detail FROM security_events WHERE kind = 'signin'")
    assert ("with a passkey",) in events

    # Ten minutes later the security page asks who this is again; the passkey answers.
    tab.server.execute(
        "UPDATE user_sessions SET authenticated_at = :moment",
        moment=datetime.now(UTC) - timedelta(minutes=11),
    )
    tab.goto("/security")
    tab.expect_statuses(403)
    with tab.page.expect_navigation(url=tab.url("/reauth?next=/security")):
        tab.page.locator("#passkey-add-form button[type=submit]").click()
    expect(tab.page.locator("#passkey-reauth-button")).to_be_visible()
    tab.check_axe("reauth with a passkey offered")
    with tab.page.expect_navigation(url=tab.url("/security")):
        tab.page.locator("#passkey-reauth-button").click()

    # Removed, it no longer signs in: the browser offers it, the site refuses it.
    tab.goto("/security")
    with tab.page.expect_response(lambda r: "/security/passkeys/" in r.url) as removal:
        tab.page.locator(".passkey-remove").click()
    assert removal.value.status == 200
    expect(tab.page.locator("#passkeys-none")).to_be_visible()
    sign_out(tab)
    tab.goto("/login")
    tab.expect_statuses(401)
    with tab.page.expect_response(lambda r: r.url == tab.url("/login/passkey")) as refused:
        tab.page.locator("#passkey-signin-button").click()
    assert refused.value.status == 401
    expect(tab.page.locator("#flash")).to_contain_text("That passkey was not accepted")
    assert tab.path == "/login"


def test_without_webauthn_the_passkey_controls_stay_hidden(open_tab):
    tab: Tab = open_tab()
    tab.page.add_init_script("delete window.PublicKeyCredential;")
    tab.goto("/login")
    expect(tab.page.locator("#passkey-signin")).to_be_hidden()
    create_account(tab.server, "alice")
    tab.sign_in("alice")
    tab.goto("/security")
    expect(tab.page.locator("#passkey-add-form")).to_be_hidden()
    expect(tab.page.locator("[data-passkey-unsupported]")).to_be_visible()


def test_turn_on_the_authenticator_app_and_sign_in_with_a_code(open_tab):
    tab: Tab = open_tab()
    clock = Clock()
    tab.server.app.state.services.twofactor.clock = clock
    create_account(tab.server, "alice")
    tab.sign_in("alice")

    tab.goto("/security")
    tab.mark_document()
    tab.submit("#totp-begin-form", "/security/totp")
    expect(tab.page.locator("#totp-setup img.totp-qr")).to_be_visible()
    # The QR code is an image from this site, and it loaded.
    assert tab.page.evaluate("document.querySelector('#totp-setup img').naturalWidth") > 0
    secret = tab.page.locator("#totp-secret").inner_text()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    tab.check_axe("authenticator set-up")
    tab.page.fill("#totp-code", clock.code(secret))
    tab.submit("#totp-confirm-form", "/security/totp/confirm")
    expect(tab.page.locator("#recovery-codes li")).to_have_count(10)
    screenshot(tab, "security-recovery-codes")
    expect(tab.page.locator(".totp-status")).to_contain_text("On")
    tab.assert_same_document()
    tab.check_axe("recovery codes shown once")

    sign_out(tab)
    tab.goto("/login")
    tab.page.fill("#login-username", "alice")
    tab.page.fill("#login-password", PASSWORD)
    tab.submit("#login-form", "/login")
    expect(tab.page.locator("#two-factor-form")).to_be_visible()
    tab.check_axe("the code step")
    # A wrong code first: 401 and the form again, with the message announced.
    tab.expect_statuses(401)
    tab.page.fill("#two-factor-code", clock.wrong_code(secret))
    tab.submit("#two-factor-form", "/login/two-factor")
    expect(tab.page.locator("#two-factor-form [role=alert]")).to_contain_text("not correct")
    clock.advance()
    tab.page.fill("#two-factor-code", clock.code(secret))
    with tab.page.expect_navigation(url=tab.url("/")):
        tab.page.locator("#two-factor-form button[type=submit]").click()
    expect(tab.page.locator("#nav-username")).to_have_text("alice")
