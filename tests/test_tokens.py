"""Forged, stale and misplaced JWTs are refused: the request is simply not signed in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from sqlalchemy import text

from tests.helpers import SECRET, csrf_token, new_client, rows, signed_in

# The app signs its JWTs with SECRET_KEY itself.
KEY = SECRET.encode()
ATTACKER_KEY = b"an attacker key that is long enough!"


def _claims(client, app) -> dict[str, Any]:
    token = client.cookies["access_token"]
    return jwt.decode(token, options={"verify_signature": False})


def _signed_in_with(app, token: str) -> bool:
    browser = new_client(app)
    browser.cookies.set("access_token", token)
    return "Welcome, alice" in browser.get("/").text


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture
def claims(client, app):
    signed_in(client)
    found = _claims(client, app)
    assert _signed_in_with(app, client.cookies["access_token"])
    return found


def test_the_real_claims_re_signed_with_the_key_are_accepted(app, claims):
    # The control for every refusal below: each changes one thing, nothing else.
    assert _signed_in_with(app, jwt.encode(claims, KEY, algorithm="HS256"))


def test_alg_none_is_refused(app, claims):
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    assert not _signed_in_with(app, token)


def test_another_key_is_refused(app, claims):
    assert not _signed_in_with(app, jwt.encode(claims, "another key" * 4, algorithm="HS256"))


# The real key is shorter than PyJWT recommends for HS512; that is the point here.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_another_algorithm_is_refused(app, claims):
    assert not _signed_in_with(app, jwt.encode(claims, KEY, algorithm="HS512"))


@pytest.mark.parametrize("claim", ["sub", "sid", "jti", "iat", "exp", "iss", "aud"])
def test_a_missing_claim_is_refused(app, claims, claim):
    del claims[claim]
    assert not _signed_in_with(app, jwt.encode(claims, KEY, algorithm="HS256"))


def test_an_expired_token_is_refused(app, claims):
    now = int(time.time())
    claims |= {"iat": now - 7200, "exp": now - 3600}
    assert not _signed_in_with(app, jwt.encode(claims, KEY, algorithm="HS256"))


def test_a_token_issued_in_the_future_is_refused(app, claims):
    now = int(time.time())
    claims |= {"iat": now + 600, "exp": now + 4200}
    assert not _signed_in_with(app, jwt.encode(claims, KEY, algorithm="HS256"))


def test_a_lifetime_over_an_hour_is_refused(app, claims):
    claims["exp"] = claims["iat"] + 7200
    assert not _signed_in_with(app, jwt.encode(claims, KEY, algorithm="HS256"))


@pytest.mark.parametrize(("claim", "value"), [("iss", "someone-else"), ("aud", "another-app")])
def test_a_foreign_issuer_or_audience_is_refused(app, claims, claim, value):
    claims[claim] = value
    assert not _signed_in_with(app, jwt.encode(claims, KEY, algorithm="HS256"))


def test_a_numeric_sub_is_refused(app, claims):
    claims["sub"] = int(claims["sub"])
    token = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}"
    signature = hmac.new(KEY, token.encode(), hashlib.sha256).digest()
    token += "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    assert not _signed_in_with(app, token)


def test_a_session_that_does_not_exist_is_refused(app, claims):
    claims["sid"] = "made-up"
    assert not _signed_in_with(app, jwt.encode(claims, KEY, algorithm="HS256"))


def test_another_users_id_with_this_session_is_refused(app, claims):
    claims["sub"] = str(int(claims["sub"]) + 1)
    assert not _signed_in_with(app, jwt.encode(claims, KEY, algorithm="HS256"))


def test_a_revoked_session_is_refused(client, app, claims):
    with app.state.services.db.engine.begin() as connection:
        connection.execute(text("UPDATE user_sessions SET revoked_at = expires_at"))
    assert not _signed_in_with(app, client.cookies["access_token"])


@pytest.mark.parametrize(
    "header",
    [
        {"kid": "../../dev/null"},
        {"jku": "https://evil.example/jwks.json"},
        {"x5u": "https://evil.example/cert.pem"},
        {"jwk": {"kty": "oct", "k": base64.urlsafe_b64encode(ATTACKER_KEY).decode()}},
    ],
)
def test_header_fields_never_choose_the_key(app, claims, header):
    forged = jwt.encode(claims, ATTACKER_KEY, algorithm="HS256", headers=header)
    assert not _signed_in_with(app, forged)


def test_the_token_is_read_from_the_cookie_only(client, app):
    token = signed_in(client)
    jwt_value = client.cookies["access_token"]
    stranger = new_client(app)
    by_header = stranger.get("/", headers={"Authorization": f"Bearer {jwt_value}"})
    assert "Welcome, alice" not in by_header.text
    by_query = stranger.get(f"/?access_token={jwt_value}")
    assert "Welcome, alice" not in by_query.text
    response = stranger.patch(
        f"/partial/alice?access_token={jwt_value}",
        data={"username": "hijacked"},
        headers={"Authorization": f"Bearer {jwt_value}", "X-CSRF-Token": token},
    )
    assert response.status_code == 401
    assert rows(app, "SELECT username FROM users") == [("alice",)]


def test_an_http_cookie_name_is_not_read_over_https(client, app):
    signed_in(client)
    secure_browser = new_client(app, "https://testserver")
    secure_browser.cookies.set("access_token", client.cookies["access_token"])
    assert "Welcome, alice" not in secure_browser.get("/").text
    assert csrf_token(secure_browser)
