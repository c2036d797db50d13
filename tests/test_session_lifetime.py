"""Session lifetime: the sliding one-hour JWT, the absolute end, "remember me" with a
rotating remember_token, and what ends a session (new sign-in, new password)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from tests.helpers import (
    PASSWORD,
    csrf_token,
    login,
    new_client,
    patch_profile,
    register,
    rows,
)
from webapp.domain import passwords


@pytest.fixture
def alice(client):
    assert register(client).status_code == 303
    return client


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def _set_cookies(response) -> dict[str, str]:
    found = {}
    for key, value in response.headers.multi_items():
        if key == "set-cookie":
            name, _, rest = value.partition("=")
            found[name] = rest
    return found


def _session_row(app, sid: str):
    [row] = rows(app, "SELECT created_at, expires_at FROM user_sessions WHERE id = :sid", sid=sid)
    return row


def _moment(value):
    # SQLite hands timestamps back as ISO text.
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _hours(start, end):
    return (_moment(end) - _moment(start)).total_seconds() / 3600


def _signed_in(browser) -> bool:
    return "Welcome, alice" in browser.get("/").text


def _token_aged(app, client, seconds: int):
    """The browser's session, with a token issued `seconds` ago."""
    claims = _claims(client.cookies["access_token"])
    return app.state.services.tokens.issue(
        user_id=int(claims["sub"]), session_id=claims["sid"], now=int(time.time()) - seconds
    )


def test_a_session_ends_12_hours_after_sign_in(alice, app):
    assert login(alice).status_code == 303
    created, expires = _session_row(app, _claims(alice.cookies["access_token"])["sid"])
    assert _hours(created, expires) == 12
    assert "remember_token" not in alice.cookies


def test_remember_me_lasts_30_days_with_a_remember_cookie(alice, app):
    response = login(alice, remember="on")
    assert response.status_code == 303
    created, expires = _session_row(app, _claims(alice.cookies["access_token"])["sid"])
    assert _hours(created, expires) == 30 * 24
    header = _set_cookies(response)["remember_token"]
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Path=/" in header
    assert f"Max-Age={30 * 24 * 3600}" in header


def test_an_active_user_gets_a_fresh_token_after_ten_minutes(alice, app):
    login(alice)
    alice.cookies.set("access_token", _token_aged(app, alice, 11 * 60))
    response = alice.get("/")
    assert "Welcome, alice" in response.text
    fresh = _set_cookies(response)["access_token"].split(";")[0]
    claims = _claims(fresh)
    assert abs(claims["iat"] - time.time()) < 60
    assert claims["exp"] - claims["iat"] == 3600
    assert "Max-Age=3600" in _set_cookies(response)["access_token"]


def test_a_young_token_is_not_reissued(alice, app):
    login(alice)
    alice.cookies.set("access_token", _token_aged(app, alice, 5 * 60))
    response = alice.get("/")
    assert "Welcome, alice" in response.text
    assert "access_token" not in _set_cookies(response)


def test_a_token_never_outlives_the_absolute_end(alice, app):
    login(alice)
    sid = _claims(alice.cookies["access_token"])["sid"]
    end = datetime.now(UTC) + timedelta(minutes=5)
    with app.state.services.db.engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE user_sessions SET expires_at = ? WHERE id = ?"
            if app.state.services.settings.uses_sqlite
            else "UPDATE user_sessions SET expires_at = %s WHERE id = %s",
            (end.replace(tzinfo=None), sid),
        )
    alice.cookies.set("access_token", _token_aged(app, alice, 11 * 60))
    response = alice.get("/")
    claims = _claims(_set_cookies(response)["access_token"].split(";")[0])
    assert claims["exp"] <= end.timestamp() + 1


def test_past_the_absolute_end_the_session_is_over(alice, app):
    login(alice, remember="on")
    with app.state.services.db.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE user_sessions SET expires_at = created_at")
    assert not _signed_in(alice)
    alice.cookies.delete("access_token")
    assert not _signed_in(alice)


def test_a_rename_does_not_extend_the_session(alice, app):
    login(alice)
    sid = _claims(alice.cookies["access_token"])["sid"]
    before = _session_row(app, sid)
    token = csrf_token(alice)
    assert patch_profile(alice, "alice", token, username="alicia").status_code == 200
    assert _session_row(app, sid) == before


def test_remember_token_signs_in_again_and_rotates(alice, app):
    login(alice, remember="on")
    first_remember = alice.cookies["remember_token"]
    alice.cookies.delete("access_token")
    response = alice.get("/")
    assert "Welcome, alice" in response.text
    cookies = _set_cookies(response)
    assert "access_token" in cookies
    second_remember = alice.cookies["remember_token"]
    assert second_remember != first_remember
    # The new one works once more.
    alice.cookies.delete("access_token")
    assert _signed_in(alice)
    stored = rows(app, "SELECT remember_hash FROM user_sessions")
    assert all(first_remember not in str(row) for row in stored)


def test_a_spent_remember_token_ends_the_session(alice, app):
    login(alice, remember="on")
    stolen = alice.cookies["remember_token"]
    alice.cookies.delete("access_token")
    assert _signed_in(alice)  # the owner's browser rotates it
    owner_token = alice.cookies["access_token"]
    thief = new_client(app)
    thief.cookies.set("remember_token", stolen)
    assert "Welcome, alice" not in thief.get("/").text
    # The reuse ended the session for everyone holding it.
    assert "Welcome, alice" not in alice.get("/").text
    alice.cookies.set("access_token", owner_token)
    assert not _signed_in(alice)


def test_logout_clears_both_cookies(alice):
    login(alice, remember="on")
    token = csrf_token(alice)
    response = alice.post("/logout", data={"csrf_token": token})
    cookies = _set_cookies(response)
    assert cookies["access_token"].startswith(";") or "Max-Age=0" in cookies["access_token"]
    assert "Max-Age=0" in cookies["remember_token"]


def test_signing_in_ends_the_previous_session_of_the_browser(alice, app):
    login(alice)
    alice_token = alice.cookies["access_token"]
    register(new_client(app), "bob", "bob@example.com")
    assert login(alice, "bob").status_code == 303
    other = new_client(app)
    other.cookies.set("access_token", alice_token)
    assert "Welcome, alice" not in other.get("/").text
    assert rows(app, "SELECT count(*) FROM user_sessions WHERE revoked_at IS NULL") == [(1,)]


def test_a_password_change_continues_under_a_new_sid(alice, app):
    login(alice)
    old = alice.cookies["access_token"]
    token = csrf_token(alice)
    response = patch_profile(
        alice,
        "alice",
        token,
        password="a brand new password",
        confirm_password="a brand new password",
        current_password=PASSWORD,
    )
    assert response.status_code == 200
    new = alice.cookies["access_token"]
    assert _claims(new)["sid"] != _claims(old)["sid"]
    assert _signed_in(alice)
    thief = new_client(app)
    thief.cookies.set("access_token", old)
    assert "Welcome, alice" not in thief.get("/").text


def test_a_sign_in_in_flight_does_not_survive_a_password_change(alice, app, monkeypatch):
    """The attacker's password check passes, then the owner changes the password, then
    the attacker's session is opened: it must be dead on arrival."""
    login(alice)
    checked, changed = threading.Event(), threading.Event()
    real = passwords.verify_password_sync

    def slow_for_the_attacker(password: str, *, password_hash: str) -> bool:
        result = real(password, password_hash=password_hash)
        if password == PASSWORD and not checked.is_set():
            checked.set()
            assert changed.wait(10)
        return result

    attacker = new_client(app)
    attacker_token = csrf_token(attacker, "/login")
    outcome: dict[str, object] = {}

    def attack() -> None:
        outcome["response"] = attacker.post(
            "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": attacker_token}
        )

    monkeypatch.setattr(passwords, "verify_password_sync", slow_for_the_attacker)
    thread = threading.Thread(target=attack)
    thread.start()
    assert checked.wait(10)
    token = csrf_token(alice)
    monkeypatch.setattr(passwords, "verify_password_sync", real)
    response = patch_profile(
        alice,
        "alice",
        token,
        password="the owner's new password",
        confirm_password="the owner's new password",
        current_password=PASSWORD,
    )
    assert response.status_code == 200
    changed.set()
    thread.join(10)
    assert "Welcome, alice" not in attacker.get("/").text
    assert _signed_in(alice)
