"""POST /login and GET /login: cookie, claims, enumeration, throttling, next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import text

from tests.helpers import (
    PASSWORD,
    SECRET,
    csrf_token,
    csrf_token_in,
    login,
    make_settings,
    new_client,
    register,
    rows,
)
from webapp.app import create_app


@pytest.fixture
def alice(client):
    assert register(client).status_code == 303
    return client


def _cookie_header(response):
    [header] = [
        v for k, v in response.headers.multi_items() if k == "set-cookie" and "access_token" in v
    ]
    return header


def test_login_page_has_the_form_and_carries_next(client):
    response = client.get("/login?next=/somewhere")
    assert response.status_code == 200
    assert 'id="login-form"' in response.text
    assert 'name="next" value="/somewhere"' in response.text


def test_login_sets_the_session_cookie_over_http(alice):
    response = login(alice)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    header = _cookie_header(response)
    assert header.startswith("access_token=")
    attributes = [part.strip().lower() for part in header.split(";")]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "path=/" in attributes
    assert "max-age=3600" in attributes
    assert not any(part.startswith("domain") for part in attributes)
    assert "secure" not in attributes


def test_login_over_https_uses_a_host_prefixed_secure_cookie(https_client):
    register(https_client)
    response = login(https_client)
    assert response.status_code == 303
    header = _cookie_header(response)
    assert header.startswith("__Host-access_token=")
    assert "secure" in [part.strip().lower() for part in header.split(";")]
    assert response.headers["strict-transport-security"].startswith("max-age=")
    home = https_client.get("/")
    assert "Welcome, alice" in home.text


def test_a_trusted_proxy_forwarding_https_gets_the_secure_cookie(app, settings):
    register(new_client(app))
    proxied = create_app(make_settings(settings.database_url, forwarded_allow_ips=("testclient",)))
    # The browser speaks HTTPS to the proxy; this test client speaks HTTP to us, so it
    # cannot keep Secure cookies: carry the browser cookie by hand.
    browser = new_client(proxied)
    browser.headers["X-Forwarded-Proto"] = "https"
    page = browser.get("/login")
    browser_cookie = page.headers["set-cookie"]
    assert browser_cookie.startswith("__Host-browser=")
    assert "Secure" in browser_cookie
    response = browser.post(
        "/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "csrf_token": csrf_token_in(page.text),
        },
        headers={"Cookie": browser_cookie.split(";")[0]},
    )
    assert response.status_code == 303
    assert _cookie_header(response).startswith("__Host-access_token=")
    assert "secure" in _cookie_header(response).lower()
    assert "strict-transport-security" in response.headers


def test_an_untrusted_peer_cannot_claim_https(alice):
    alice.headers["X-Forwarded-Proto"] = "https"
    response = login(alice)
    assert _cookie_header(response).startswith("access_token=")
    assert "strict-transport-security" not in response.headers


def test_jwt_has_every_claim_and_sub_is_the_user_id(alice, app, settings):
    response = login(alice)
    token = response.cookies["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    claims = jwt.decode(
        token,
        SECRET.encode(),
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    [(user_id,)] = rows(app, "SELECT id FROM users")
    assert claims["sub"] == str(user_id)
    assert claims["exp"] - claims["iat"] == 3600
    assert set(claims) == {"sub", "sid", "jti", "iat", "exp", "iss", "aud"}
    assert rows(app, "SELECT id FROM user_sessions") == [(claims["sid"],)]


def test_every_sign_in_gets_a_new_cookie_value(alice):
    first = login(alice).cookies["access_token"]
    second = login(alice).cookies["access_token"]
    assert first != second


def test_unknown_user_and_wrong_password_look_the_same(alice, app):
    other = new_client(app)
    unknown = login(other, "nobody", PASSWORD)
    wrong = login(other, "alice", "wrong password")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.text == wrong.text
    assert "Incorrect username, e-mail or password." in wrong.text
    assert "set-cookie" not in wrong.headers or "access_token" not in wrong.headers["set-cookie"]


def test_sign_in_by_email_ignores_case(alice, app):
    assert login(new_client(app), "ALICE@example.COM").status_code == 303
    assert login(new_client(app), "Alice").status_code == 303


@pytest.mark.parametrize(
    "fields",
    [
        {"username": "", "password": PASSWORD},
        {"username": "alice", "password": ""},
        {"username": "a" * 300, "password": PASSWORD},
        {"username": "alice", "password": "p" * 1025},
    ],
)
def test_missing_or_over_long_fields_are_422(alice, fields):
    token = csrf_token(alice, "/login")
    response = alice.post("/login", data={**fields, "csrf_token": token})
    assert response.status_code == 422
    assert 'aria-invalid="true"' in response.text


@pytest.mark.parametrize(
    ("next_value", "location"),
    [
        ("/profile?tab=1", "/profile?tab=1"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/%2F%2Fevil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/%252F%252Fevil.example", "/"),
    ],
)
def test_next_is_honoured_only_for_paths_on_this_site(alice, next_value, location):
    response = login(alice, next=next_value)
    assert response.status_code == 303
    assert response.headers["location"] == location


def test_htmx_login_answers_with_hx_redirect(alice):
    token = csrf_token(alice, "/login")
    response = alice.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": "/x"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert response.headers["hx-redirect"] == "/x"


def _fail(client, name: str, times: int) -> None:
    for _ in range(times):
        assert login(client, name, "wrong password").status_code == 401


def test_ten_failures_throttle_the_account_whatever_the_spelling(alice, app):
    attacker = new_client(app)
    _fail(attacker, "alice", 4)
    _fail(attacker, "ALICE", 3)
    _fail(attacker, "Alice@Example.com", 3)
    response = login(attacker, "alice", PASSWORD)
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 900
    # Another browser, the right password: still throttled, so a 429 proves nothing.
    assert login(new_client(app), "alice@example.com", PASSWORD).status_code == 429


def test_unknown_names_are_throttled_the_same_way(alice, app):
    attacker = new_client(app)
    _fail(attacker, "nobody", 10)
    response = login(attacker, "NOBODY", "whatever")
    assert response.status_code == 429
    assert "retry-after" in response.headers


def test_throttle_frees_the_account_once_the_window_passes(alice, app):
    attacker = new_client(app)
    _fail(attacker, "alice", 10)
    assert login(attacker, "alice", PASSWORD).status_code == 429
    # Age every failure past the 15-minute window.
    with app.state.services.db.engine.begin() as connection:
        connection.execute(
            text("UPDATE signin_failures SET failed_at = :old"),
            {"old": (datetime.now(UTC) - timedelta(minutes=16)).replace(tzinfo=None)},
        )
    assert login(attacker, "alice", PASSWORD).status_code == 303


def test_a_success_does_not_forgive_earlier_failures(alice, app):
    attacker = new_client(app)
    _fail(attacker, "alice", 9)
    assert login(new_client(app), "alice", PASSWORD).status_code == 303
    _fail(attacker, "alice", 1)
    # The tenth failure inside the window: the owner's sign-in reset nothing.
    assert login(attacker, "alice", "wrong password").status_code == 429


def test_one_client_spraying_many_accounts_hits_the_client_cap(app, settings):
    capped = create_app(make_settings(settings.database_url, throttle_client_limit=100))
    attacker = new_client(capped)
    for index in range(100):
        assert login(attacker, f"user{index}", "x").status_code == 401
    assert login(attacker, "someone", "x").status_code == 429


def test_rehash_on_sign_in_when_the_cost_changes(alice, app, settings):
    [(old_hash,)] = rows(app, "SELECT password_hash FROM users")
    stronger = create_app(make_settings(settings.database_url, bcrypt_rounds=5))
    assert login(new_client(stronger)).status_code == 303
    [(new_hash,)] = rows(app, "SELECT password_hash FROM users")
    assert old_hash.startswith("$2b$04$")
    assert new_hash.startswith("$2b$05$")
    assert login(new_client(app)).status_code == 303


@pytest.mark.parametrize("htmx", [False, True])
def test_a_failed_sign_in_says_why_in_the_flash_region(alice, htmx):
    headers = {"HX-Request": "true"} if htmx else {}
    token = csrf_token(alice, "/login")
    response = alice.post(
        "/login",
        data={"username": "alice", "password": "wrong password", "csrf_token": token},
        headers=headers,
    )
    assert response.status_code == 401
    flash_region = response.text[response.text.index('id="flash"') :]
    assert "Incorrect username, e-mail or password." in flash_region
    if htmx:
        assert 'hx-swap-oob="innerHTML"' in flash_region
