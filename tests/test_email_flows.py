"""Every e-mail flow end to end: the app sends through a real SMTP server in this process
(aiosmtpd), and the tests follow the links out of the messages it received."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.helpers import (
    PASSWORD,
    TABLES,
    at_once,
    csrf_token,
    csrf_token_in,
    login,
    make_settings,
    new_client,
    patch_profile,
    register,
    rows,
)
from tests.smtp import Inbox, links_in, smtp_server, text_of
from webapp.app import create_app

PUBLIC_URL = "https://accounts.example.test"
NEW_PASSWORD = "a fresh and long passphrase 42"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"


@dataclass
class Mail:
    app: Starlette
    inbox: Inbox
    client: TestClient

    def browser(self, user_agent: str = FIREFOX) -> TestClient:
        browser = new_client(self.app)
        browser.headers["user-agent"] = user_agent
        return browser

    def link(self, to: str, path_prefix: str, index: int = -1) -> str:
        """The path of the newest link starting with `path_prefix` sent to `to`, waiting
        (boundedly) for the message that carries it when it has not arrived yet."""
        for _ in range(10):
            found = [
                link
                for message in self.inbox.to(to)
                for link in links_in(message)
                if urlsplit(link).path.startswith(path_prefix)
            ]
            if found:
                assert all(link.startswith(PUBLIC_URL + "/") for link in found)
                return urlsplit(found[index]).path
            self.inbox.wait_for(len(self.inbox.messages) + 1)
        subjects = [str(message["Subject"]) for message in self.inbox.messages]
        raise AssertionError(f"no {path_prefix} link to {to}: {subjects}")

    def wait(self, count: int) -> None:
        self.inbox.wait_for(count)


def _mail_app(database_url: str, **overrides: object) -> Iterator[Mail]:
    with smtp_server() as (controller, inbox):
        settings = make_settings(
            database_url,
            mail_url=f"smtp://127.0.0.1:{controller.port}",
            public_url=PUBLIC_URL,
            **overrides,
        )
        app = create_app(settings)
        with TestClient(app, follow_redirects=False) as client:
            yield Mail(app, inbox, client)
        engine = app.state.services.db.engine
        with engine.begin() as connection:
            for table in TABLES:
                connection.execute(text(f"DELETE FROM {table}"))
        engine.dispose()


@pytest.fixture
def mail(database_url: str) -> Iterator[Mail]:
    yield from _mail_app(database_url)


@pytest.fixture
def strict_mail(database_url: str) -> Iterator[Mail]:
    yield from _mail_app(database_url, email_verification="required")


def _post(browser: TestClient, path: str, **fields: str):
    token = csrf_token_in(browser.get(path).text) if "csrf_token" not in fields else None
    data = {**fields, **({"csrf_token": token} if token else {})}
    return browser.post(path, data=data)


def test_registration_sends_a_confirmation_link_that_a_get_does_not_use(mail):
    assert register(mail.client).status_code == 303
    mail.wait(1)
    [message] = mail.inbox.to("alice@example.com")
    assert "Confirm" in str(message["Subject"])
    assert message.get_body(preferencelist=("html",)) is not None
    path = mail.link("alice@example.com", "/verify-email/")
    token = path.rsplit("/", 1)[1]
    assert len(token) >= 22  # at least 128 bits, base64url
    # Only its hash is stored, and nowhere else is the token written.
    for table, column in (("email_tokens", "token_hash"), ("outbox", "body_text")):
        assert all(
            token not in str(value) for (value,) in rows(mail.app, f"SELECT {column} FROM {table}")
        )
    page = mail.client.get(path)
    assert page.status_code == 200
    assert 'id="verify-email-form"' in page.text
    assert rows(mail.app, "SELECT email_verified_at FROM users") == [(None,)]


def test_the_confirmation_link_confirms_once(mail):
    register(mail.client)
    mail.wait(1)
    path = mail.link("alice@example.com", "/verify-email/")
    response = _post(mail.client, path)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    [(confirmed,)] = rows(mail.app, "SELECT email_verified_at FROM users")
    assert confirmed is not None
    assert _post(mail.client, path).status_code == 400
    assert mail.client.get(path).status_code == 400
    login(mail.client)
    assert "Your e-mail address is confirmed" in mail.client.get("/").text


@pytest.mark.parametrize("token", ["unknown", "x" * 43, "a" * 500])
def test_unknown_links_are_400_with_a_way_on(mail, token):
    for prefix in ("/verify-email/", "/password-reset/", "/email-revert/"):
        page = mail.client.get(prefix + token)
        assert page.status_code == 400
        assert "This link does not work" in page.text


def test_an_unconfirmed_user_sees_it_and_can_ask_again_three_times(mail):
    register(mail.client)
    login(mail.client)
    home = mail.client.get("/").text
    assert "not confirmed" in home
    token = csrf_token_in(home)
    headers = {"X-CSRF-Token": token, "HX-Request": "true"}
    for _ in range(3):
        response = mail.client.post("/verify-email", headers=headers)
        assert response.status_code == 200
        assert 'id="profile"' in response.text
        assert "on its way" in response.text
    response = mail.client.post("/verify-email", headers=headers)
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 900
    mail.wait(5)  # the registration's link, three more, and the new-browser notice
    confirmations = [
        m for m in mail.inbox.to("alice@example.com") if "Confirm" in str(m["Subject"])
    ]
    assert len(confirmations) == 4


def test_required_confirmation_refuses_sign_in_and_sends_one_fresh_link(strict_mail):
    mail = strict_mail
    register(mail.client)
    mail.wait(1)
    for _ in range(2):
        response = login(mail.client)
        assert response.status_code == 403
        assert "Confirm your e-mail address first" in response.text
        assert "access_token" not in response.cookies
    mail.wait(2)
    # One new link per 15 minutes, however often the sign-in is tried.
    assert len(mail.inbox.to("alice@example.com")) == 2
    _post(mail.client, mail.link("alice@example.com", "/verify-email/"))
    assert login(mail.client).status_code == 303


def _reset_page(browser: TestClient, email: str):
    return _post(browser, "/password-reset", email=email)


def test_a_reset_request_answers_the_same_for_known_and_unknown_addresses(mail):
    register(mail.client)
    mail.wait(1)
    known = _reset_page(mail.browser(), "alice@example.com")
    unknown = _reset_page(mail.browser(), "nobody@example.com")
    assert known.status_code == unknown.status_code == 200
    strip = lambda page: page.text.replace(csrf_token_in(page.text), "")  # noqa: E731
    assert strip(known) == strip(unknown)
    assert 'id="password-reset-form"' in known.text
    mail.wait(2)
    assert [str(m["To"]) for m in mail.inbox.messages].count("alice@example.com") == 2
    assert mail.inbox.to("nobody@example.com") == []


def test_a_reset_request_needs_an_address_and_is_limited(mail):
    browser = mail.browser()
    assert _reset_page(browser, "not an address").status_code == 422
    for _ in range(5):
        assert _reset_page(mail.browser(), "ghost@example.com").status_code == 200
    # Per address, known or not: a sixth from another client is refused too.
    response = _reset_page(mail.browser(), "GHOST@example.com")
    assert response.status_code == 429
    assert "retry-after" in response.headers


def test_a_reset_sets_the_password_ends_sessions_and_spends_the_link(mail):
    register(mail.client)
    login(mail.client)
    stolen = mail.client.cookies["access_token"]
    attacker = mail.browser()
    for _ in range(10):
        login(attacker, "alice", "wrong password")
    assert login(attacker, "alice", PASSWORD).status_code == 429
    _reset_page(mail.browser(), "alice@example.com")
    mail.wait(2)
    path = mail.link("alice@example.com", "/password-reset/")
    page = mail.browser().get(path)
    assert page.status_code == 200
    assert 'id="password-reset-confirm-form"' in page.text
    browser = mail.browser()
    weak = _post(browser, path, password="password", confirm_password="password")
    assert weak.status_code == 422
    mismatch = _post(browser, path, password=NEW_PASSWORD, confirm_password="other")
    assert mismatch.status_code == 422
    # The link survives a rejected password.
    done = _post(browser, path, password=NEW_PASSWORD, confirm_password=NEW_PASSWORD)
    assert done.status_code == 303
    assert done.headers["location"] == "/login"
    assert (
        _post(browser, path, password=NEW_PASSWORD, confirm_password=NEW_PASSWORD).status_code
        == 400
    )
    # Every session ended; the failures are forgiven; the address is confirmed.
    replay = mail.browser()
    replay.cookies.set("access_token", stolen)
    assert "Welcome, alice" not in replay.get("/").text
    assert login(mail.browser(), "alice", NEW_PASSWORD).status_code == 303
    [(confirmed,)] = rows(mail.app, "SELECT email_verified_at FROM users")
    assert confirmed is not None
    mail.wait(4)
    assert any(
        "password was changed" in str(m["Subject"]) for m in mail.inbox.to("alice@example.com")
    )


def test_an_expired_reset_link_is_400(mail):
    register(mail.client)
    _reset_page(mail.browser(), "alice@example.com")
    mail.wait(2)
    path = mail.link("alice@example.com", "/password-reset/")
    old = (datetime.now(UTC) - timedelta(minutes=1)).replace(tzinfo=None)
    with mail.app.state.services.db.engine.begin() as connection:
        connection.execute(text("UPDATE email_tokens SET expires_at = :old"), {"old": old})
    assert mail.browser().get(path).status_code == 400


def test_a_changed_address_is_confirmed_anew_and_the_old_one_can_undo_it(mail):
    register(mail.client)
    login(mail.client)
    mail.wait(1)
    _post(mail.client, mail.link("alice@example.com", "/verify-email/"))
    token = csrf_token(mail.client)
    response = patch_profile(
        mail.client, "alice", token, email="mallory@example.com", current_password=PASSWORD
    )
    assert response.status_code == 200
    assert "not confirmed" in response.text
    assert mail.link("mallory@example.com", "/verify-email/")
    revert = mail.link("alice@example.com", "/email-revert/")
    [notice] = [m for m in mail.inbox.to("alice@example.com") if "changed" in str(m["Subject"])]
    assert "mallory@example.com" in text_of(notice)
    page = mail.browser().get(revert)
    assert page.status_code == 200
    assert 'id="email-revert-form"' in page.text
    assert rows(mail.app, "SELECT email FROM users") == [("mallory@example.com",)]
    assert _post(mail.browser(), revert).status_code == 303
    [(email, confirmed)] = rows(mail.app, "SELECT email, email_verified_at FROM users")
    assert email == "alice@example.com"
    assert confirmed is not None
    # Every session ended, and a reset link went to the restored address.
    assert "Welcome, alice" not in mail.client.get("/").text
    mail.wait(4)
    assert mail.link("alice@example.com", "/password-reset/")
    # The confirmation link sent to the other address no longer confirms anything.
    assert (
        _post(mail.browser(), mail.link("mallory@example.com", "/verify-email/")).status_code == 400
    )


def test_a_password_change_sends_a_notice(mail):
    register(mail.client)
    login(mail.client)
    token = csrf_token(mail.client)
    response = patch_profile(
        mail.client,
        "alice",
        token,
        password=NEW_PASSWORD,
        confirm_password=NEW_PASSWORD,
        current_password=PASSWORD,
    )
    assert response.status_code == 200
    mail.wait(3)  # confirmation, new browser, password changed
    notices = [
        m for m in mail.inbox.to("alice@example.com") if "password was changed" in str(m["Subject"])
    ]
    assert len(notices) == 1
    assert "reset" in text_of(notices[0]).lower()


def test_a_new_browser_brings_a_notice_and_a_known_one_does_not(mail):
    register(mail.client)
    mail.wait(1)
    browser = mail.browser()
    assert login(browser).status_code == 303
    mail.wait(2)
    [notice] = [m for m in mail.inbox.to("alice@example.com") if "New sign-in" in str(m["Subject"])]
    body = text_of(notice)
    assert "Firefox 121" in body
    assert "Windows" in body
    assert "testclient" in body or "127.0.0.1" in body
    assert "UTC" in body
    # The same browser again: no notice.
    login(browser)
    login(browser)
    mail.inbox.wait_for(2)
    assert len([m for m in mail.inbox.messages if "New sign-in" in str(m["Subject"])]) == 1


def test_thirty_uses_of_one_reset_link_at_once_set_one_password(mail):
    register(mail.client)
    _reset_page(mail.browser(), "alice@example.com")
    mail.wait(2)
    path = mail.link("alice@example.com", "/password-reset/")
    browser = mail.browser()
    token = csrf_token_in(browser.get(path).text)
    passwords = [f"{NEW_PASSWORD} number {n}" for n in range(30)]

    def use(n: int) -> int:
        fields = {"password": passwords[n], "confirm_password": passwords[n], "csrf_token": token}
        return int(browser.post(path, data=fields).status_code)

    statuses = at_once(30, use)
    assert sorted(statuses) == [303] + [400] * 29
    assert rows(mail.app, "SELECT COUNT(*) FROM security_events WHERE kind = 'password_reset'") == [
        (1,)
    ]
    winner = passwords[statuses.index(303)]
    assert login(mail.browser(), "alice", winner).status_code == 303
    loser = passwords[(statuses.index(303) + 1) % 30]
    assert login(mail.browser(), "alice", loser).status_code == 401


def test_thirty_uses_of_one_confirmation_link_at_once_confirm_once(mail):
    register(mail.client)
    mail.wait(1)
    path = mail.link("alice@example.com", "/verify-email/")
    browser = mail.browser()
    token = csrf_token_in(browser.get(path).text)
    statuses = at_once(30, lambda _: browser.post(path, data={"csrf_token": token}).status_code)
    assert sorted(statuses) == [303] + [400] * 29
    assert rows(mail.app, "SELECT COUNT(*) FROM security_events WHERE kind = 'email_verified'") == [
        (1,)
    ]
