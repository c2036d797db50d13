"""POST /logout: redirect, cookie cleared, token dead server-side, idempotent, CSRF."""

from __future__ import annotations

from tests.helpers import csrf_token, login, new_client, patch_profile, rows, signed_in


def _logout(client, token: str):
    return client.post("/logout", data={"csrf_token": token})


def test_logout_redirects_home_and_clears_the_cookie(client):
    token = signed_in(client)
    response = _logout(client, token)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    [cleared] = [
        value
        for name, value in response.headers.multi_items()
        if name == "set-cookie" and value.startswith("access_token=")
    ]
    attributes = [part.strip().lower() for part in cleared.split(";")]
    assert attributes[0] in ("access_token=", 'access_token=""')
    assert "max-age=0" in attributes
    assert {"httponly", "samesite=lax", "path=/"} <= set(attributes)
    home = client.get("/")
    assert "Welcome, alice" not in home.text
    assert "You are signed out." in home.text


def test_the_old_token_is_dead_server_side(client, app):
    token = signed_in(client)
    stolen = client.cookies["access_token"]
    assert _logout(client, token).status_code == 303
    assert rows(app, "SELECT count(*) FROM user_sessions WHERE revoked_at IS NOT NULL") == [(1,)]
    replay = new_client(app)
    replay.cookies.set("access_token", stolen)
    response = patch_profile(replay, "alice", csrf_token(replay), email="x@example.com")
    assert response.status_code == 401
    assert "Welcome, alice" not in replay.get("/").text


def test_logout_without_a_session_is_the_same_303(client):
    token = csrf_token(client)
    first = _logout(client, token)
    assert first.status_code == 303
    assert first.headers["location"] == "/"
    second = _logout(client, csrf_token(client))
    assert second.status_code == 303
    assert second.headers["location"] == "/"


def test_logout_without_a_csrf_token_is_403_and_keeps_the_session(client):
    signed_in(client)
    response = client.post("/logout")
    assert response.status_code == 403
    assert "Welcome, alice" in client.get("/").text


def test_logout_with_the_token_in_a_header_works(client):
    token = signed_in(client)
    response = client.post("/logout", headers={"X-CSRF-Token": token})
    assert response.status_code == 303


def test_get_logout_is_405(client):
    response = client.get("/logout")
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    assert "<html" in response.text


def test_logout_ends_only_the_session_it_came_from(client, app):
    token = signed_in(client)
    laptop = new_client(app)
    assert login(laptop).status_code == 303
    assert _logout(client, token).status_code == 303
    assert "Welcome, alice" in laptop.get("/").text


def test_htmx_logout_answers_with_hx_redirect(client):
    token = signed_in(client)
    response = client.post("/logout", headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert response.status_code == 200
    assert response.headers["hx-redirect"] == "/"
