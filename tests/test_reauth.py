"""Recent authentication: @requires_recent_authentication sends a session whose password is
older than ten minutes to /reauth (303, or 403 + HX-Redirect for htmx); POST /reauth
with the password renews it and returns to a safe `next`; a wrong one is 422 and counts
as a failed sign-in (10 per account, then 429)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlmodel import Session, col, update
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.helpers import PASSWORD, at_once, csrf_token, login, new_client, rows, signed_in
from webapp.models import UserSession
from webapp.web.auth import requires_recent_authentication

SENSITIVE = "/test/sensitive"


@requires_recent_authentication
async def sensitive(request: Request) -> Response:
    return PlainTextResponse("the sensitive page")


@pytest.fixture
def app(app):
    """The app with one route behind recent authentication (the real ones, such as
    GET /account/export, are tested with their features)."""
    app.router.routes.append(Route(SENSITIVE, sensitive, methods=["GET", "POST"]))
    return app


@pytest.fixture
def alice(client):
    """alice, signed in; the client's CSRF token."""
    return signed_in(client)


def sid_of(client) -> str:
    claims = jwt.decode(client.cookies["access_token"], options={"verify_signature": False})
    return str(claims["sid"])


def authenticated_at(app, client) -> datetime:
    [(found,)] = rows(
        app, "SELECT authenticated_at FROM user_sessions WHERE id = :sid", sid=sid_of(client)
    )
    # SQLite hands back ISO text.
    moment = datetime.fromisoformat(found) if isinstance(found, str) else found
    assert isinstance(moment, datetime)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def age_authentication(app, client, minutes: int = 11) -> datetime:
    """Move this session's last password entry `minutes` into the past."""
    moment = datetime.now(UTC) - timedelta(minutes=minutes)
    with Session(app.state.services.db.engine) as session, session.begin():
        session.exec(
            update(UserSession)
            .where(col(UserSession.id) == sid_of(client))
            .values(authenticated_at=moment)
        )
    return authenticated_at(app, client)


def reauth(client, token: str, password: str, next_url: str | None = SENSITIVE, **headers: str):
    data = {"password": password, "csrf_token": token}
    if next_url is not None:
        data["next"] = next_url
    return client.post("/reauth", data=data, headers=headers)


def failures(app, key: str) -> int:
    [(count,)] = rows(app, "SELECT count(*) FROM signin_failures WHERE key = :key", key=key)
    return int(count)


def user_key(app) -> str:
    [(user_id,)] = rows(app, "SELECT id FROM users WHERE username = 'alice'")
    return f"user:{user_id}"


# -- the guard ----------------------------------------------------------------------------


def test_signing_in_counts_as_authenticating(client, alice):
    response = client.get(SENSITIVE)
    assert response.status_code == 200
    assert response.text == "the sensitive page"


def test_nine_minutes_later_it_still_counts(client, alice, app):
    age_authentication(app, client, minutes=9)
    assert client.get(SENSITIVE).status_code == 200


def test_past_ten_minutes_a_page_gets_303_to_reauth_with_where_it_was_going(client, alice, app):
    age_authentication(app, client)
    response = client.get(f"{SENSITIVE}?format=json")
    assert response.status_code == 303
    assert response.headers["location"] == "/reauth?next=/test/sensitive%3Fformat%3Djson"


def test_past_ten_minutes_htmx_gets_403_with_hx_redirect_back_to_its_page(client, alice, app):
    age_authentication(app, client)
    response = client.post(
        SENSITIVE,
        headers={
            "HX-Request": "true",
            "X-CSRF-Token": alice,
            "HX-Current-URL": "http://testserver/sessions",
        },
    )
    assert response.status_code == 403
    assert response.headers["hx-redirect"] == "/reauth?next=/sessions"


def test_signed_out_the_guard_asks_to_sign_in(client):
    response = client.get(SENSITIVE)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next={SENSITIVE}"
    htmx = client.get(
        SENSITIVE, headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/"}
    )
    assert htmx.status_code == 401
    assert htmx.headers["hx-redirect"] == "/login?next=/"


# -- GET /reauth --------------------------------------------------------------------------


def test_the_reauth_page_shows_the_form_and_keeps_next(client, alice):
    response = client.get("/reauth", params={"next": SENSITIVE})
    assert response.status_code == 200
    html = response.text
    assert 'id="reauth-form"' in html
    assert re.search(r'<input id="reauth-password" name="password" type="password"', html)
    assert f'<input type="hidden" name="next" value="{SENSITIVE}">' in html
    assert (
        f'<input type="hidden" name="csrf_token" value="{csrf_token(client, "/reauth")}">' in html
    )
    assert "HX-Request" in response.headers["vary"]
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "unsafe", ["//evil.example/", "https://evil.example/", "/\\evil.example", "/%2F%2Fevil"]
)
def test_an_unsafe_next_on_the_page_becomes_home(client, alice, unsafe):
    html = client.get("/reauth", params={"next": unsafe}).text
    assert '<input type="hidden" name="next" value="/">' in html


def test_signed_out_the_reauth_page_asks_to_sign_in(client):
    response = client.get("/reauth", params={"next": SENSITIVE})
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=/reauth")
    assert reauth(client, csrf_token(client), PASSWORD).status_code == 401


# -- POST /reauth -------------------------------------------------------------------------


def test_the_password_renews_authentication_and_returns_to_next(client, alice, app):
    before = age_authentication(app, client)
    assert client.get(SENSITIVE).status_code == 303
    response = reauth(client, alice, PASSWORD)
    assert response.status_code == 303
    assert response.headers["location"] == SENSITIVE
    assert authenticated_at(app, client) > before + timedelta(minutes=10)
    assert client.get(SENSITIVE).status_code == 200
    # A success forgives nothing and counts nothing.
    assert failures(app, user_key(app)) == 0


def test_over_htmx_the_answer_is_hx_redirect(client, alice, app):
    age_authentication(app, client)
    response = reauth(client, alice, PASSWORD, **{"HX-Request": "true"})
    assert response.status_code == 200
    assert response.headers["hx-redirect"] == SENSITIVE
    assert client.get(SENSITIVE).status_code == 200


@pytest.mark.parametrize(
    ("next_url", "lands_on"),
    [
        (None, "/"),
        ("", "/"),
        ("//evil.example/", "/"),
        ("https://evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("/sessions?tab=1", "/sessions?tab=1"),
    ],
)
def test_only_a_safe_next_is_followed(client, alice, next_url, lands_on):
    response = reauth(client, alice, PASSWORD, next_url=next_url)
    assert response.status_code == 303
    assert response.headers["location"] == lands_on


def test_only_this_session_is_renewed(client, alice, app):
    laptop = new_client(app)
    assert login(laptop).status_code == 303
    age_authentication(app, client)
    age_authentication(app, laptop)
    assert reauth(laptop, csrf_token(laptop), PASSWORD).status_code == 303
    assert laptop.get(SENSITIVE).status_code == 200
    assert client.get(SENSITIVE).status_code == 303


def test_a_wrong_password_is_422_and_counts_as_a_failed_sign_in(client, alice, app):
    before = age_authentication(app, client)
    response = reauth(client, alice, "not my password")
    assert response.status_code == 422
    html = response.text
    assert 'id="reauth-form"' in html
    assert 'aria-invalid="true" aria-describedby="password-error"' in html
    assert 'id="password-error"' in html
    assert "That password is not correct." in html
    assert "not my password" not in html
    assert f'<input type="hidden" name="next" value="{SENSITIVE}">' in html
    assert authenticated_at(app, client) == before
    assert client.get(SENSITIVE).status_code == 303
    assert failures(app, user_key(app)) == 1
    assert failures(app, "client:testclient") == 1
    assert rows(app, "SELECT kind FROM security_events WHERE kind = 'signin_failed'") == [
        ("signin_failed",)
    ]


def test_over_htmx_a_wrong_password_swaps_the_form_with_the_flash(client, alice, app):
    response = reauth(client, alice, "not my password", **{"HX-Request": "true"})
    assert response.status_code == 422
    assert response.text.startswith('<form id="reauth-form"')
    assert 'hx-swap-oob="innerHTML"' in response.text
    assert "<html" not in response.text


def test_an_empty_password_is_422_and_not_counted(client, alice, app):
    response = reauth(client, alice, "")
    assert response.status_code == 422
    assert "Enter your password." in response.text
    assert failures(app, user_key(app)) == 0


def test_ten_wrong_passwords_then_429_even_with_the_right_one(client, alice, app):
    age_authentication(app, client)
    for attempt in range(10):
        assert reauth(client, alice, f"wrong {attempt}").status_code == 422
    response = reauth(client, alice, PASSWORD)
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    assert "Too many wrong passwords." in response.text
    assert client.get(SENSITIVE).status_code == 303
    # The same allowance as signing in: the account's sign-in is throttled too.
    assert login(new_client(app)).status_code == 429


def test_failed_sign_ins_and_wrong_reauth_passwords_share_one_allowance(client, alice, app):
    stranger = new_client(app)
    for _ in range(9):
        assert login(stranger, "alice", "guess").status_code == 401
    assert reauth(client, alice, "wrong").status_code == 422
    assert reauth(client, alice, PASSWORD).status_code == 429


def test_thirty_wrong_passwords_at_once_evaluate_at_most_ten(client, alice, app):
    statuses = at_once(30, lambda i: reauth(client, alice, f"wrong guess {i}").status_code)
    assert set(statuses) <= {422, 429}
    assert statuses.count(422) <= 10
    assert statuses.count(429) >= 20


def test_reauth_needs_the_csrf_token(client, alice, app):
    before = age_authentication(app, client)
    response = client.post("/reauth", data={"password": PASSWORD, "next": SENSITIVE})
    assert response.status_code == 403
    assert authenticated_at(app, client) == before


def test_the_export_asks_for_the_password_again(client, alice, app):
    age_authentication(app, client)
    response = client.get("/account/export")
    if response.status_code == 404:
        pytest.skip("GET /account/export is not in the app yet")
    assert response.status_code == 303
    assert response.headers["location"] == "/reauth?next=/account/export"
    back = reauth(client, alice, PASSWORD, next_url="/account/export")
    assert back.status_code == 303
    assert back.headers["location"] == "/account/export"
    download = client.get("/account/export")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("application/json")
