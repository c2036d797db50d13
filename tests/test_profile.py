"""PATCH /partial/{username} and PUT /update/{username}."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import text

from tests.helpers import (
    PASSWORD,
    csrf_token,
    login,
    new_client,
    patch_profile,
    put_profile,
    register,
    rows,
    signed_in,
)

NEW_PASSWORD = "a brand new passphrase"


def _new_password(client, token: str, *, current: str):
    return patch_profile(
        client,
        "alice",
        token,
        password=NEW_PASSWORD,
        confirm_password=NEW_PASSWORD,
        current_password=current,
    )


def _user(app):
    [row] = rows(
        app, "SELECT username, email, password_hash FROM users WHERE username_key = 'alice'"
    )
    return row


def test_home_shows_profile_and_both_forms(client):
    signed_in(client)
    html = client.get("/").text
    for marker in ('id="profile"', 'id="partial-form"', 'id="full-form"', 'action="/logout"'):
        assert marker in html
    assert 'hx-patch="/partial/alice"' in html
    assert 'hx-put="/update/alice"' in html
    assert "_method" not in html
    assert "Welcome, alice" in html


def test_patch_changes_only_the_email_with_the_current_password(client, app):
    token = signed_in(client)
    before = _user(app)
    response = patch_profile(
        client, "alice", token, email="New@Example.COM", current_password=PASSWORD
    )
    assert response.status_code == 200
    assert 'id="profile"' in response.text
    assert 'id="partial-form"' in response.text
    assert 'id="full-form"' in response.text
    assert '<div id="flash" role="status" aria-live="polite" hx-swap-oob="innerHTML">' in (
        response.text
    )
    assert "New@example.com" in response.text
    assert "<html" not in response.text
    after = _user(app)
    assert after == ("alice", "New@example.com", before[2])
    assert response.headers["cache-control"] == "no-store"


def test_patch_email_without_current_password_is_422(client, app):
    token = signed_in(client)
    response = patch_profile(client, "alice", token, email="new@example.com")
    assert response.status_code == 422
    assert 'id="current_password-error"' in response.text
    assert 'value="new@example.com"' in response.text
    assert _user(app)[1] == "alice@example.com"


def test_patch_with_a_wrong_current_password_is_422_and_counts_as_a_failure(client, app):
    token = signed_in(client)
    response = patch_profile(
        client, "alice", token, email="new@example.com", current_password="wrong password"
    )
    assert response.status_code == 422
    assert 'id="current_password-error"' in response.text
    assert rows(app, "SELECT count(*) FROM signin_failures WHERE key LIKE 'user:%'") == [(1,)]
    assert _user(app)[1] == "alice@example.com"


def test_wrong_current_passwords_lead_to_429(client, app):
    token = signed_in(client)
    for _ in range(10):
        response = _new_password(client, token, current="wrong password")
        assert response.status_code == 422
    response = _new_password(client, token, current=PASSWORD)
    assert response.status_code == 429
    assert "retry-after" in response.headers


def test_patch_username_needs_no_password_and_keeps_the_session(client, app):
    token = signed_in(client)
    old_cookie = client.cookies["access_token"]
    response = patch_profile(client, "alice", token, username="Alicia")
    assert response.status_code == 200
    assert 'hx-patch="/partial/Alicia"' in response.text
    assert 'hx-put="/update/Alicia"' in response.text
    assert '<strong id="nav-username" hx-swap-oob="true">Alicia</strong>' in response.text
    assert client.cookies["access_token"] != old_cookie
    assert rows(app, "SELECT username, username_key FROM users") == [("Alicia", "alicia")]
    home = client.get("/")
    assert "Welcome, Alicia" in home.text
    follow_up = patch_profile(
        client, "Alicia", token, email="a2@example.com", current_password=PASSWORD
    )
    assert follow_up.status_code == 200


def test_renaming_to_another_case_of_the_same_name_is_not_taken(client, app):
    token = signed_in(client, "abc")
    response = patch_profile(client, "abc", token, username="ABC")
    assert response.status_code == 200
    assert rows(app, "SELECT username FROM users") == [("ABC",)]


def test_patch_password_revokes_other_sessions_only(client, app):
    token = signed_in(client)
    laptop = new_client(app)
    assert login(laptop).status_code == 303
    response = _new_password(client, token, current=PASSWORD)
    assert response.status_code == 200
    assert "Welcome, alice" in client.get("/").text
    assert "Welcome, alice" not in laptop.get("/").text
    assert login(new_client(app), "alice", NEW_PASSWORD).status_code == 303
    assert login(new_client(app), "alice", PASSWORD).status_code == 401


def test_patch_with_nothing_to_change_says_so(client, app):
    token = signed_in(client)
    before = rows(app, "SELECT username, email, password_hash, updated_at FROM users")
    response = patch_profile(client, "alice", token)
    assert response.status_code == 200
    assert "Nothing to change" in response.text
    assert rows(app, "SELECT username, email, password_hash, updated_at FROM users") == before


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"username": "1abc"}, "username"),
        ({"username": "ab"}, "username"),
        ({"username": "a" * 51}, "username"),
        ({"username": "bad name"}, "username"),
        ({"email": "not-an-email", "current_password": PASSWORD}, "email"),
        (
            {"password": "short", "confirm_password": "short", "current_password": PASSWORD},
            "password",
        ),
        (
            {"password": NEW_PASSWORD, "confirm_password": "other", "current_password": PASSWORD},
            "confirm_password",
        ),
        ({"confirm_password": NEW_PASSWORD, "current_password": PASSWORD}, "password"),
    ],
)
def test_patch_invalid_fields_are_422_and_change_nothing(client, app, fields, bad_field):
    token = signed_in(client)
    before = _user(app)
    response = patch_profile(client, "alice", token, **fields)
    assert response.status_code == 422
    assert f'id="{bad_field}-error"' in response.text
    assert 'aria-invalid="true"' in response.text
    assert _user(app) == before
    assert PASSWORD not in response.text


def test_patch_to_a_taken_username_or_email_is_409(client, app):
    register(new_client(app), "bob", "bob@example.com")
    token = signed_in(client)
    response = patch_profile(client, "alice", token, username="BOB")
    assert response.status_code == 409
    assert 'id="username-error"' in response.text
    response = patch_profile(
        client, "alice", token, email="BOB@example.com", current_password=PASSWORD
    )
    assert response.status_code == 409
    assert 'id="email-error"' in response.text
    assert _user(app)[:2] == ("alice", "alice@example.com")


def test_put_replaces_everything(client, app):
    token = signed_in(client)
    response = put_profile(
        client,
        "alice",
        token,
        username="Alice2",
        email="alice2@example.com",
        password=NEW_PASSWORD,
        confirm_password=NEW_PASSWORD,
        current_password=PASSWORD,
    )
    assert response.status_code == 200
    assert "alice2@example.com" in response.text
    assert 'hx-put="/update/Alice2"' in response.text
    assert rows(app, "SELECT username, email FROM users") == [("Alice2", "alice2@example.com")]
    assert login(new_client(app), "alice2", NEW_PASSWORD).status_code == 303


@pytest.mark.parametrize(
    "missing", ["username", "email", "password", "confirm_password", "current_password"]
)
def test_put_requires_every_field(client, app, missing):
    token = signed_in(client)
    fields: dict[str, Any] = {
        "username": "Alice2",
        "email": "alice2@example.com",
        "password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD,
        "current_password": PASSWORD,
    }
    fields.pop(missing)
    before = _user(app)
    response = put_profile(client, "alice", token, **fields)
    assert response.status_code == 422
    assert f'id="{missing}-error"' in response.text
    assert _user(app) == before


def test_put_with_a_wrong_current_password_is_422(client, app):
    token = signed_in(client)
    before = _user(app)
    response = put_profile(
        client,
        "alice",
        token,
        username="alice",
        email="alice@example.com",
        password=NEW_PASSWORD,
        confirm_password=NEW_PASSWORD,
        current_password="nope nope",
    )
    assert response.status_code == 422
    assert 'id="current_password-error"' in response.text
    assert _user(app) == before


def test_put_to_a_taken_email_is_409(client, app):
    register(new_client(app), "bob", "bob@example.com")
    token = signed_in(client)
    response = put_profile(
        client,
        "alice",
        token,
        username="alice",
        email="bob@example.com",
        password=NEW_PASSWORD,
        confirm_password=NEW_PASSWORD,
        current_password=PASSWORD,
    )
    assert response.status_code == 409
    assert _user(app)[1] == "alice@example.com"


@pytest.mark.parametrize("method", ["patch", "put"])
@pytest.mark.parametrize("target", ["bob", "BOB", "nobody", "alice2"])
def test_other_names_are_403_and_change_nothing(client, app, method, target):
    register(new_client(app), "bob", "bob@example.com")
    token = signed_in(client)
    before = rows(app, "SELECT username, email, password_hash FROM users ORDER BY id")
    send = patch_profile if method == "patch" else put_profile
    response = send(
        client,
        target,
        token,
        username="hijack",
        email="hijack@example.com",
        password=NEW_PASSWORD,
        confirm_password=NEW_PASSWORD,
        current_password=PASSWORD,
    )
    assert response.status_code == 403
    assert rows(app, "SELECT username, email, password_hash FROM users ORDER BY id") == before


@pytest.mark.parametrize("method", ["patch", "put"])
def test_without_a_session_updates_are_401(client, app, method):
    register(client)
    token = csrf_token(client)
    send = patch_profile if method == "patch" else put_profile
    plain = send(client, "alice", token, htmx=False, email="x@example.com")
    assert plain.status_code == 401
    assert "hx-redirect" not in plain.headers


def test_htmx_401_carries_hx_redirect_to_login_with_next(client):
    register(client)
    token = csrf_token(client)
    response = client.patch(
        "/partial/alice",
        data={"email": "x@example.com"},
        headers={
            "X-CSRF-Token": token,
            "HX-Request": "true",
            "HX-Current-URL": "http://testserver/?tab=profile",
        },
    )
    assert response.status_code == 401
    assert response.headers["hx-redirect"] == "/login?next=/"


def test_htmx_401_without_current_url_goes_to_plain_login(client):
    response = client.put("/update/alice", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["hx-redirect"] == "/login?next=/"


def test_401_wins_over_a_missing_csrf_token(client):
    response = client.patch("/partial/alice", data={"email": "x@example.com"})
    assert response.status_code == 401


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_other_methods_on_profile_routes_are_405(client, method):
    token = signed_in(client)
    for path in ("/partial/alice", "/update/alice"):
        response = client.request(method, path, headers={"X-CSRF-Token": token})
        assert response.status_code == 405


@pytest.mark.parametrize(
    "override",
    [
        {"data": {"_method": "PATCH", "email": "x@example.com"}},
        {"headers": {"X-HTTP-Method-Override": "PATCH"}, "data": {"email": "x@example.com"}},
    ],
)
def test_method_overrides_are_never_honoured(client, app, override):
    token = signed_in(client)
    headers = {"X-CSRF-Token": token, **override.get("headers", {})}
    response = client.post("/partial/alice", data=override["data"], headers=headers)
    assert response.status_code == 405
    assert _user(app)[1] == "alice@example.com"


@pytest.mark.parametrize(
    ("accept", "coding"),
    [("gzip, deflate, br, zstd", "br"), ("gzip", "gzip"), ("identity", None), ("br;q=0", None)],
)
def test_update_fragments_are_compressed_as_accepted(client, accept, coding):
    token = signed_in(client)
    response = client.patch(
        "/partial/alice",
        data={"email": "new@example.com", "current_password": PASSWORD},
        headers={"X-CSRF-Token": token, "HX-Request": "true", "Accept-Encoding": accept},
    )
    assert response.status_code == 200
    assert response.headers.get("content-encoding") == coding
    assert "new@example.com" in response.text  # decoded by the client


def test_pages_with_reflected_input_are_never_compressed(client):
    # GET /login reflects `next` beside the CSRF token: compressing it would open BREACH.
    response = client.get("/login?next=/abc", headers={"Accept-Encoding": "br, gzip"})
    assert "content-encoding" not in response.headers
    signed_in(client)
    assert "content-encoding" not in client.get("/", headers={"Accept-Encoding": "br"}).headers


def test_the_update_answers_profile_and_both_forms_out_of_band(client):
    token = signed_in(client)
    html = patch_profile(
        client, "alice", token, email="new@example.com", current_password=PASSWORD
    ).text
    assert html.lstrip().startswith('<section id="profile"')
    assert '<form id="partial-form"' in html
    assert '<form id="full-form"' in html
    assert html.count('hx-swap-oob="true"') == 2  # both forms; no rename, so no welcome
    assert 'id="welcome"' not in html


def test_a_rename_reissues_the_cookie_but_never_extends_the_session(client, app):
    token = signed_in(client)
    old_cookie = client.cookies["access_token"]
    soon = (datetime.now(UTC) + timedelta(minutes=5)).replace(microsecond=0)
    with app.state.services.db.engine.begin() as connection:
        connection.execute(
            text("UPDATE user_sessions SET expires_at = :soon"), {"soon": soon.replace(tzinfo=None)}
        )
    assert patch_profile(client, "alice", token, username="Alicia").status_code == 200
    assert client.cookies["access_token"] != old_cookie
    claims = jwt.decode(client.cookies["access_token"], options={"verify_signature": False})
    [(expires_at,)] = rows(app, "SELECT expires_at FROM user_sessions")
    if isinstance(expires_at, str):  # SQLite hands back text
        expires_at = datetime.fromisoformat(expires_at)
    expires_at = expires_at.replace(tzinfo=UTC) if expires_at.tzinfo is None else expires_at
    # The rename gave the session no more time, and the cookie never outlives the row.
    assert expires_at == soon
    assert claims["exp"] <= expires_at.timestamp()
    assert claims["exp"] - claims["iat"] <= 5 * 60
