"""CSRF: tokens bound to the browser and session, Origin and Fetch-Metadata checks."""

from __future__ import annotations

import pytest

from tests.helpers import (
    PASSWORD,
    csrf_token,
    csrf_token_in,
    login,
    new_client,
    patch_profile,
    register,
    rows,
    signed_in,
)


def _email(app) -> str:
    [(email,)] = rows(app, "SELECT email FROM users WHERE username_key = 'alice'")
    return str(email)


def _change_email(client, token: str | None, **headers: str):
    if token is not None:
        headers["X-CSRF-Token"] = token
    return client.patch(
        "/partial/alice",
        data={"email": "evil@example.com", "current_password": PASSWORD},
        headers=headers,
    )


def test_every_page_and_form_carries_the_token(client):
    for path in ("/", "/login", "/register"):
        html = client.get(path).text
        token = csrf_token_in(html)
        assert f'name="csrf_token" value="{token}"' in html or path == "/"
        assert f'"X-CSRF-Token": "{token}"' in html


def test_missing_token_is_403_and_changes_nothing(client, app):
    signed_in(client)
    response = _change_email(client, None)
    assert response.status_code == 403
    assert _email(app) == "alice@example.com"


def test_wrong_token_is_403(client, app):
    signed_in(client)
    assert _change_email(client, "not-the-token").status_code == 403
    assert _email(app) == "alice@example.com"


def test_the_form_field_works_like_the_header(client, app):
    token = signed_in(client)
    response = client.patch(
        "/partial/alice",
        data={"email": "new@example.com", "current_password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 200
    assert _email(app) == "new@example.com"


def test_a_token_only_in_the_query_string_is_refused(client, app):
    token = signed_in(client)
    response = client.patch(
        f"/partial/alice?csrf_token={token}",
        data={"email": "evil@example.com", "current_password": PASSWORD},
    )
    assert response.status_code == 403
    assert _email(app) == "alice@example.com"


def test_a_token_from_another_browser_is_refused(client, app):
    signed_in(client)
    other = new_client(app)
    foreign_token = csrf_token(other)
    assert _change_email(client, foreign_token).status_code == 403
    assert _email(app) == "alice@example.com"


def test_a_token_of_another_session_is_refused(client, app):
    signed_in(client)
    mallory = new_client(app)
    register(mallory, "mallory", "mallory@example.com")
    login(mallory, "mallory")
    assert _change_email(client, csrf_token(mallory)).status_code == 403
    assert _email(app) == "alice@example.com"


def test_the_token_changes_at_sign_in_and_the_old_one_is_refused(client, app):
    register(client)
    before = csrf_token(client, "/login")
    assert login(client).status_code == 303
    after = csrf_token(client)
    assert before != after
    assert _change_email(client, before).status_code == 403
    assert _change_email(client, after).status_code == 200


def test_the_token_changes_at_sign_out_and_the_session_token_is_refused(client, app):
    token = signed_in(client)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    fresh = csrf_token(client)
    assert fresh != token
    assert login(client).status_code == 303
    again = csrf_token(client)
    assert again not in (token, fresh)
    assert _change_email(client, token).status_code == 403


def test_sign_in_needs_a_token(client):
    register(client)
    client.get("/login")
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert "access_token" not in response.headers.get("set-cookie", "")


def test_a_token_without_the_browser_cookie_is_refused(client, app):
    register(client)
    token = csrf_token(client, "/login")
    stranger = new_client(app)
    response = stranger.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver.evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_cross_site_requests_are_refused_even_with_the_token(client, app, headers):
    token = signed_in(client)
    assert _change_email(client, token, **headers).status_code == 403
    assert _email(app) == "alice@example.com"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Origin": "http://testserver"}, {"Sec-Fetch-Site": "same-origin"}],
)
def test_same_site_requests_with_the_token_pass(client, app, headers):
    token = signed_in(client)
    assert _change_email(client, token, **headers).status_code == 200


def test_cross_site_logout_is_refused(client):
    token = signed_in(client)
    response = client.post(
        "/logout", data={"csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert "Welcome, alice" in client.get("/").text


def test_a_request_without_a_session_is_401_whatever_token_it_carries(client, app):
    register(client)
    token = csrf_token(client)
    assert patch_profile(client, "alice", token, email="x@example.com").status_code == 401
    assert patch_profile(client, "alice", "junk", email="x@example.com").status_code == 401


def test_a_new_unsafe_route_without_any_csrf_code_is_refused(settings):
    """CSRF is enforced by construction: a route that never mentions it is still guarded."""
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from webapp.app import create_app

    ran: list[str] = []

    async def careless(request):
        ran.append(request.method)
        return PlainTextResponse("done")

    app = create_app(settings)
    app.router.routes.insert(0, Route("/careless", careless, methods=["POST", "DELETE"]))
    with new_client(app) as browser:
        token = csrf_token(browser, "/")
        assert browser.post("/careless").status_code == 403
        assert browser.post("/careless", data={"csrf_token": "junk"}).status_code == 403
        assert browser.delete("/careless").status_code == 403
        assert ran == []
        # The control: with this browser's token the same route runs.
        assert browser.post("/careless", data={"csrf_token": token}).status_code == 200
        assert browser.delete("/careless", headers={"X-CSRF-Token": token}).status_code == 200
        assert ran == ["POST", "DELETE"]
