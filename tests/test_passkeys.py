"""Passkeys (WebAuthn) over HTTP, with a software authenticator (tests/webauthn_soft.py):
adding, naming and removing one on the security page, and signing in with it; refused
for a wrong origin, RP ID or challenge, a replayed assertion, a sign count that goes
backwards, and another account's credential. The app's WebAuthn clock is pinned
(`Clock`), so no test depends on the wall clock."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import cbor2
import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.helpers import (
    PASSWORD,
    ROOT,
    at_once,
    csrf_token,
    login,
    make_settings,
    new_client,
    register,
    rows,
    signed_in,
)
from tests.test_reauth import age_authentication, authenticated_at
from tests.test_two_factor import Clock as TotpClock
from tests.test_two_factor import enable, sign_out
from tests.webauthn_soft import SoftAuthenticator, b64url, cose_ec2, cose_key_of
from webapp.app import create_app
from webapp.domain.passkeys import CHALLENGE_LIFETIME, MAX_PASSKEYS, RelyingParty

ORIGIN = "http://localhost:8000"  # make_settings' PUBLIC_URL (the Settings default)
HTMX = {"HX-Request": "true"}


class Clock:
    """The WebAuthn challenges' clock, pinned; `advance` moves it on."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(app: Starlette) -> Clock:
    pinned = Clock()
    app.state.services.passkeys.clock = pinned
    return pinned


@pytest.fixture
def device() -> SoftAuthenticator:
    return SoftAuthenticator(origin=ORIGIN)


def _json_headers(token: str, **extra: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-CSRF-Token": token, **extra}


def post_json(
    client: TestClient, path: str, body: Any, token: str, **headers: str
) -> httpx.Response:
    response: httpx.Response = client.post(
        path, content=json.dumps(body), headers=_json_headers(token, **headers)
    )
    return response


def creation_options(client: TestClient, token: str) -> dict[str, Any]:
    response = post_json(client, "/security/passkeys/options", {}, token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    options: dict[str, Any] = response.json()
    return options


def add_passkey(
    client: TestClient, token: str, device: SoftAuthenticator, name: str = "My phone", **wrong: Any
):
    credential = device.create(creation_options(client, token), **wrong)
    return post_json(client, "/security/passkeys", {"name": name, "credential": credential}, token)


def request_options(client: TestClient) -> tuple[dict[str, Any], str]:
    token = csrf_token(client, "/login")
    response = post_json(client, "/login/passkey/options", {}, token)
    assert response.status_code == 200, response.text
    return response.json(), token


def passkey_signin(client: TestClient, device: SoftAuthenticator, **wrong: Any):
    options, token = request_options(client)
    assertion = device.get(options, **wrong)
    return post_json(client, "/login/passkey", assertion, token), assertion, token


def _execute(app: Starlette, sql: str) -> None:
    with app.state.services.db.engine.begin() as connection:
        connection.exec_driver_sql(sql)


def _count(app: Starlette, sql: str, **params: object) -> int:
    return len(rows(app, sql, **params))


def _events(app: Starlette, kind: str, detail: str | None = None) -> int:
    if detail is None:
        return _count(app, "SELECT id FROM security_events WHERE kind = :k", k=kind)
    return _count(
        app, "SELECT id FROM security_events WHERE kind = :k AND detail = :d", k=kind, d=detail
    )


def _signed_in_as(client: TestClient) -> str | None:
    match = re.search(r'<strong id="nav-username">([^<]+)</strong>', client.get("/").text)
    return match.group(1) if match else None


@pytest.fixture
def alice(client: TestClient, device: SoftAuthenticator, clock: Clock) -> TestClient:
    """alice with one passkey (on `device`), signed out."""
    token = signed_in(client)
    assert add_passkey(client, token, device).status_code == 200
    sign_out(client)
    return client


# -- the relying party ------------------------------------------------------------------------


def test_the_relying_party_is_public_urls_host_and_origin():
    rp = RelyingParty.from_public_url("https://Accounts.Example.com/app")
    assert (rp.id, rp.origin, rp.host_is_ip) == (
        "accounts.example.com",
        "https://accounts.example.com",
        False,
    )
    assert RelyingParty.from_public_url("http://localhost:8000").origin == ORIGIN
    assert RelyingParty.from_public_url("http://127.0.0.1:8000").host_is_ip
    assert RelyingParty.from_public_url("http://[::1]:8000").host_is_ip


def test_the_security_page_says_passkeys_need_a_name_when_public_url_is_an_ip(settings, app):
    # `app` is asked for so that its clean-up empties the shared database afterwards.
    on_ip = create_app(make_settings(settings.database_url, public_url="http://127.0.0.1:8000"))
    with TestClient(on_ip, follow_redirects=False) as client:
        signed_in(client)
        page = client.get("/security").text
    assert 'id="passkeys-need-a-name"' in page
    assert "passkey-add-form" not in page


def test_the_security_page_offers_a_passkey_on_localhost(client):
    signed_in(client)
    page = client.get("/security").text
    assert 'id="passkeys"' in page
    assert 'id="passkey-add-form"' in page
    assert "passkeys-need-a-name" not in page
    assert "/static/js/passkeys" in page


def test_the_login_page_offers_a_passkey_sign_in_that_the_script_reveals(client):
    page = client.get("/login?next=/sessions").text
    assert re.search(r'id="passkey-signin"[^>]*data-next="/sessions"[^>]*hidden', page)
    assert "/static/js/passkeys" in page
    # Not on pages that do not need it.
    assert "/static/js/passkeys" not in client.get("/register").text


# -- adding one -----------------------------------------------------------------------------


def test_creation_options_ask_for_a_discoverable_verified_passkey(client, clock):
    token = signed_in(client)
    response = post_json(client, "/security/passkeys/options", {}, token)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    options = response.json()
    assert options["rp"] == {"id": "localhost", "name": "Accounts"}
    assert options["user"]["name"] == "alice"
    # The account handle is random: not the row id, not the name.
    assert len(options["user"]["id"]) >= 40
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["attestation"] == "none"
    assert options["excludeCredentials"] == []
    assert {"type": "public-key", "alg": -7} in options["pubKeyCredParams"]
    assert options["timeout"] == CHALLENGE_LIFETIME * 1000
    # Asking for options writes nothing.
    assert _count(client.app, "SELECT id FROM passkey_challenges") == 0


def test_adding_a_passkey_lists_it_records_it_and_sends_a_notice(client, device, clock):
    token = signed_in(client)
    response = add_passkey(client, token, device, name="  Work   laptop ")
    assert response.status_code == 200, response.text
    assert 'id="passkeys"' in response.text
    assert 'value="Work laptop"' in response.text
    assert "Passkey “Work laptop” added" in response.text
    [(name, transports, sign_count, handle)] = rows(
        client.app, "SELECT name, transports, sign_count, user_handle FROM passkeys"
    )
    assert (name, transports, sign_count) == ("Work laptop", "internal,hybrid", 0)
    assert handle == b64url(next(iter(device.credentials.values())).user_handle)
    assert _events(client.app, "passkey_added", "Work laptop") == 1
    assert _count(client.app, "SELECT id FROM outbox WHERE kind = 'passkey_added'") == 1
    # The next options exclude it, and keep the same account handle.
    options = creation_options(client, token)
    [excluded] = options["excludeCredentials"]
    assert excluded["id"] == b64url(next(iter(device.credentials)))
    assert options["user"]["id"] == handle


def test_a_passkey_without_a_name_gets_one(client, device, clock):
    token = signed_in(client)
    assert add_passkey(client, token, device, name="").status_code == 200
    assert rows(client.app, "SELECT name FROM passkeys") == [("Passkey 1",)]


def test_a_name_too_long_is_refused_and_nothing_is_stored(client, device, clock):
    token = signed_in(client)
    response = add_passkey(client, token, device, name="x" * 65)
    assert response.status_code == 422
    assert 'aria-invalid="true"' in response.text
    assert _count(client.app, "SELECT id FROM passkeys") == 0


@pytest.mark.parametrize(
    "wrong",
    [
        {"origin": "https://evil.example"},
        {"rp_id": "evil.example"},
        {"challenge": b64url(b"a challenge this site never gave")},
        {"verified": False},
    ],
    ids=["origin", "rp_id", "challenge", "no user verification"],
)
def test_a_credential_made_for_something_else_is_not_added(client, device, clock, wrong):
    token = signed_in(client)
    response = add_passkey(client, token, device, **wrong)
    assert response.status_code == 422
    assert "could not be added" in response.text
    assert _count(client.app, "SELECT id FROM passkeys") == 0
    assert _events(client.app, "passkey_added") == 0


def test_a_creation_challenge_is_spent_once_and_ends_after_five_minutes(client, device, clock):
    token = signed_in(client)
    options = creation_options(client, token)
    credential = device.create(options)
    body = {"name": "one", "credential": credential}
    assert post_json(client, "/security/passkeys", body, token).status_code == 200
    # The same answer again, and another credential answering the same challenge.
    assert post_json(client, "/security/passkeys", body, token).status_code == 422
    again = {"name": "two", "credential": SoftAuthenticator().create(options)}
    assert post_json(client, "/security/passkeys", again, token).status_code == 422
    late = device.create(creation_options(client, token))
    clock.advance(CHALLENGE_LIFETIME + 1)
    assert post_json(client, "/security/passkeys", {"credential": late}, token).status_code == 422
    assert _count(client.app, "SELECT id FROM passkeys") == 1


def test_a_creation_challenge_belongs_to_its_account_and_browser(app, client, device, clock):
    token = signed_in(client)
    options = creation_options(client, token)
    bob = new_client(app)
    bob_token = signed_in(bob, "bob")
    stolen = {"credential": device.create(options)}
    assert post_json(bob, "/security/passkeys", stolen, bob_token).status_code == 422
    assert _count(app, "SELECT id FROM passkeys") == 0


def test_the_same_passkey_cannot_be_added_to_a_second_account(app, client, device, clock):
    token = signed_in(client)
    assert add_passkey(client, token, device).status_code == 200
    [taken] = device.credentials
    bob = new_client(app)
    bob_token = signed_in(bob, "bob")
    # An authenticator answering bob's challenge with alice's credential id.
    response = add_passkey(bob, bob_token, device, credential_id=taken)
    assert response.status_code == 422
    assert "already added to an account" in response.text
    assert rows(app, "SELECT COUNT(*) FROM passkeys") == [(1,)]


@pytest.mark.parametrize(
    "cose_key",
    [
        cose_ec2(bytes(31) + b"\x01", bytes(31) + b"\x02"),  # not a point on the curve
        cose_ec2(b"\xff" * 32, b"\xff" * 32),  # coordinates past the field
        cose_ec2(bytes(3000), bytes(32)),  # far too long
        bytes([0x04]),  # the integer 4, not a key
        cbor2.dumps({1: 3, 3: -257, -1: (2**64 - 59).to_bytes(8, "big"), -2: b"\x01\x00\x01"}),
        cbor2.dumps({1: 3, 3: -257, -1: b"\xff" * 256, -2: b"\x00"}),
        cbor2.dumps({1: 1, 3: -8, -1: 6, -2: b"\x01"}),  # Ed25519 of 1 byte
    ],
    ids=["off-curve", "out-of-range", "oversized", "integer", "rsa-64", "rsa-e0", "ed25519"],
)
def test_a_public_key_that_cannot_check_signatures_is_not_added(client, device, clock, cose_key):
    token = signed_in(client)
    response = add_passkey(client, token, device, cose_key=cose_key)
    assert response.status_code == 422
    assert _count(client.app, "SELECT id FROM passkeys") == 0


def test_an_ec_key_labelled_with_an_rsa_algorithm_is_not_added(client, device, clock):
    token = signed_in(client)
    real = cose_key_of(SoftAuthenticator().create(creation_options(client, token)))
    mislabelled = cose_ec2(real[-2], real[-3], alg=-257)
    assert add_passkey(client, token, device, cose_key=mislabelled).status_code == 422
    # The same point, labelled right, is added.
    assert (
        add_passkey(client, token, device, cose_key=cose_ec2(real[-2], real[-3])).status_code == 200
    )


def test_an_overlong_credential_id_is_refused_and_transports_are_kept_once(client, device, clock):
    token = signed_in(client)
    assert add_passkey(client, token, device, credential_id=bytes(1100)).status_code == 422
    response = add_passkey(client, token, device, transports=["internal"] * 60 + ["usb", 7])
    assert response.status_code == 200
    assert rows(client.app, "SELECT transports FROM passkeys") == [("internal,usb",)]


def test_thirty_passkeys_added_at_once_stop_at_the_limit(client, clock):
    token = signed_in(client)
    bodies = [
        {
            "name": f"key {n}",
            "credential": SoftAuthenticator().create(creation_options(client, token)),
        }
        for n in range(30)
    ]
    statuses = at_once(
        30, lambda n: post_json(client, "/security/passkeys", bodies[n], token).status_code
    )
    assert sorted(statuses) == [200] * MAX_PASSKEYS + [422] * (30 - MAX_PASSKEYS)
    assert _count(client.app, "SELECT id FROM passkeys") == MAX_PASSKEYS


def test_thirty_answers_to_one_creation_challenge_add_one_passkey(client, device, clock):
    token = signed_in(client)
    body = {"name": "raced", "credential": device.create(creation_options(client, token))}
    statuses = at_once(
        30, lambda _: post_json(client, "/security/passkeys", body, token).status_code
    )
    assert sorted(statuses) == [200] + [422] * 29
    assert _count(client.app, "SELECT id FROM passkeys") == 1
    assert _events(client.app, "passkey_added") == 1


def test_adding_a_passkey_needs_recent_authentication(app, client, device, clock):
    token = signed_in(client)
    age_authentication(app, client)
    response = client.post(
        "/security/passkeys/options",
        content="{}",
        headers=_json_headers(token, Referer="http://testserver/security"),
    )
    assert response.status_code == 403
    assert response.json()["redirect"] == "/reauth?next=/security"
    assert post_json(client, "/security/passkeys", {"credential": {}}, token).status_code == 403
    # Renaming and removing ask for the password again too (htmx: 403 + HX-Redirect).
    headers = {**HTMX, "X-CSRF-Token": token, "HX-Current-URL": "http://testserver/security"}
    for answer in (
        client.patch("/security/passkeys/1", data={"name": "x"}, headers=headers),
        client.delete("/security/passkeys/1", headers=headers),
    ):
        assert answer.status_code == 403
        assert answer.headers["hx-redirect"] == "/reauth?next=/security"


def test_the_json_endpoints_take_json_with_the_csrf_header(client, clock):
    token = signed_in(client)
    path = "/security/passkeys/options"
    assert (
        client.post(path, content="{}", headers={"Content-Type": "application/json"}).status_code
        == 403
    )
    assert client.post(path, data={"csrf_token": token}).status_code == 415
    assert post_json(client, path, [1, 2], token).status_code == 400
    bad = client.post(path, content="{nope", headers=_json_headers(token))
    assert bad.status_code == 400
    huge = client.post(path, content=b"{" + b" " * (64 * 1024) + b"}", headers=_json_headers(token))
    assert huge.status_code == 413
    signed_out = new_client(client.app)
    guest_token = csrf_token(signed_out, "/login")
    assert post_json(signed_out, path, {}, guest_token).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"credential": "not an object"},
        {"credential": {"id": "x", "rawId": "x", "type": "public-key", "response": {}}},
        {"credential": {"response": {"clientDataJSON": "!!!", "attestationObject": "$$"}}},
        {"credential": {"response": {"clientDataJSON": b64url(b"[1]")}}},
        {"name": ["a list"], "credential": None},
        {"credential": {"response": {"clientDataJSON": b64url(b"[" * 5000 + b"]" * 5000)}}},
    ],
)
def test_hostile_credentials_are_a_clear_4xx(client, clock, body):
    token = signed_in(client)
    creation_options(client, token)
    response = post_json(client, "/security/passkeys", body, token)
    assert response.status_code == 422
    assert _count(client.app, "SELECT id FROM passkeys") == 0


# -- naming and removing ---------------------------------------------------------------------


def _passkey_id(app: Starlette) -> int:
    [(found,)] = rows(app, "SELECT id FROM passkeys")
    return int(found)


def test_a_passkey_can_be_renamed(client, device, clock):
    token = signed_in(client)
    add_passkey(client, token, device)
    key = _passkey_id(client.app)
    response = client.patch(
        f"/security/passkeys/{key}",
        data={"name": "Old phone"},
        headers={**HTMX, "X-CSRF-Token": token},
    )
    assert response.status_code == 200
    assert 'value="Old phone"' in response.text
    empty = client.patch(
        f"/security/passkeys/{key}", data={"name": " "}, headers={**HTMX, "X-CSRF-Token": token}
    )
    assert empty.status_code == 422
    assert rows(client.app, "SELECT name FROM passkeys") == [("Old phone",)]


def test_removing_a_passkey_stops_it_signing_in(app, client, device, clock):
    token = signed_in(client)
    add_passkey(client, token, device)
    key = _passkey_id(app)
    response = client.delete(f"/security/passkeys/{key}", headers={**HTMX, "X-CSRF-Token": token})
    assert response.status_code == 200
    assert "You have no passkeys yet." in response.text
    assert _events(app, "passkey_removed", "My phone") == 1
    assert _count(app, "SELECT id FROM outbox WHERE kind = 'passkey_removed'") == 1
    sign_out(client)
    answer, _, _ = passkey_signin(client, device)
    assert answer.status_code == 401
    assert _signed_in_as(client) is None


def test_nobody_renames_or_removes_another_accounts_passkey(app, client, device, clock):
    token = signed_in(client)
    add_passkey(client, token, device)
    key = _passkey_id(app)
    bob = new_client(app)
    bob_token = signed_in(bob, "bob")
    headers = {**HTMX, "X-CSRF-Token": bob_token}
    assert bob.delete(f"/security/passkeys/{key}", headers=headers).status_code == 404
    assert (
        bob.patch(f"/security/passkeys/{key}", data={"name": "mine"}, headers=headers).status_code
        == 404
    )
    assert bob.delete("/security/passkeys/99999999999999999999", headers=headers).status_code == 404
    assert rows(app, "SELECT name FROM passkeys") == [("My phone",)]


# -- signing in -----------------------------------------------------------------------------


def test_request_options_let_the_browser_choose_and_write_nothing(client, clock):
    options, _ = request_options(client)
    assert options["rpId"] == "localhost"
    assert options["userVerification"] == "required"
    assert "allowCredentials" not in options
    assert len(options["challenge"]) >= 40
    assert _count(client.app, "SELECT id FROM passkey_challenges") == 0


def test_a_passkey_signs_in_with_no_password(alice, device):
    response, _, _ = passkey_signin(alice, device)
    assert response.status_code == 200, response.text
    assert response.json() == {"redirect": "/"}
    assert response.headers["cache-control"] == "no-store"
    assert "access_token" in response.cookies
    assert _signed_in_as(alice) == "alice"
    assert _events(alice.app, "signin", "with a passkey") == 1
    [(count, last_used)] = rows(alice.app, "SELECT sign_count, last_used_at FROM passkeys")
    assert count == 1
    assert last_used is not None


def test_a_passkey_sign_in_returns_to_a_safe_next_only(alice, device):
    options, token = request_options(alice)
    body = {"credential": device.get(options), "next": "/sessions"}
    assert post_json(alice, "/login/passkey", body, token).json() == {"redirect": "/sessions"}
    sign_out(alice)
    options, token = request_options(alice)
    body = {"credential": device.get(options), "next": "https://evil.example/"}
    assert post_json(alice, "/login/passkey", body, token).json() == {"redirect": "/"}


def test_a_passkey_counts_as_both_factors(app, client, device, clock):
    totp_clock = TotpClock()
    app.state.services.twofactor.clock = totp_clock
    token = signed_in(client)
    enable(client, token, totp_clock)
    add_passkey(client, csrf_token(client, "/security"), device)
    sign_out(client)
    # The password alone asks for a code ...
    assert 'id="two-factor-form"' in login(client).text
    # ... a passkey does not.
    response, _, _ = passkey_signin(client, device)
    assert response.status_code == 200
    assert _signed_in_as(client) == "alice"


def test_a_replayed_assertion_is_refused(alice, device):
    response, assertion, token = passkey_signin(alice, device)
    assert response.status_code == 200
    sign_out(alice)
    token = csrf_token(alice, "/login")
    replayed = post_json(alice, "/login/passkey", assertion, token)
    assert replayed.status_code == 401
    assert replayed.json()["error"]
    assert _signed_in_as(alice) is None


def test_a_synced_passkey_without_a_count_signs_in_again_but_not_by_replay(client, clock):
    device = SoftAuthenticator(origin=ORIGIN, counts=False)
    token = signed_in(client)
    add_passkey(client, token, device)
    sign_out(client)
    for _ in range(2):
        response, assertion, token = passkey_signin(client, device)
        assert response.status_code == 200
        sign_out(client)
    token = csrf_token(client, "/login")
    assert post_json(client, "/login/passkey", assertion, token).status_code == 401


@pytest.mark.parametrize(
    "wrong",
    [
        {"origin": "https://evil.example"},
        {"rp_id": "evil.example"},
        {"challenge": b64url(b"\x01\x02" + bytes(40))},
        {"verified": False},
    ],
    ids=["origin", "rp_id", "challenge", "no user verification"],
)
def test_a_wrong_assertion_is_refused(alice, device, wrong):
    response, _, _ = passkey_signin(alice, device, **wrong)
    assert response.status_code == 401
    assert _signed_in_as(alice) is None
    assert _events(alice.app, "signin", "with a passkey") == 0
    # The owner's history shows a real passkey refused; a challenge this site never gave
    # is turned away before any passkey is looked at.
    recorded = 0 if "challenge" in wrong else 1
    assert _events(alice.app, "signin_failed", "passkey not accepted") == recorded


def test_a_creation_challenge_does_not_sign_in(app, client, device, clock):
    token = signed_in(client)
    add_passkey(client, token, device)
    options = creation_options(client, token)
    sign_out(client)
    login_options, login_token = request_options(client)
    assertion = device.get(login_options, challenge=options["challenge"])
    assert post_json(client, "/login/passkey", assertion, login_token).status_code == 401


def test_a_sign_in_challenge_is_bound_to_its_browser_and_ends(alice, device, clock):
    options, _ = request_options(alice)
    other = new_client(alice.app)
    other_token = csrf_token(other, "/login")
    stolen = device.get(options)
    assert post_json(other, "/login/passkey", stolen, other_token).status_code == 401
    options, token = request_options(alice)
    clock.advance(CHALLENGE_LIFETIME + 1)
    late = post_json(alice, "/login/passkey", device.get(options), token)
    assert late.status_code == 401


def test_a_sign_count_going_backwards_is_refused_as_a_possible_clone(alice, device):
    assert passkey_signin(alice, device)[0].status_code == 200
    sign_out(alice)
    # A copy of the key that has not seen the last use: its count repeats.
    credential = next(iter(device.credentials.values()))
    credential.sign_count -= 1
    response, _, _ = passkey_signin(alice, device)
    assert response.status_code == 401
    assert _signed_in_as(alice) is None
    detail = "passkey sign count went backwards: it may have been copied"
    assert _events(alice.app, "signin_failed", detail) == 1
    # The owner sees it in the activity history, for what it is.
    login(alice)
    history = alice.get("/activity").text
    assert "Sign-in refused" in history
    assert detail in history


def test_another_accounts_credential_is_refused(app, alice, device, clock):
    bob = new_client(app)
    bob_token = signed_in(bob, "bob")
    bob_device = SoftAuthenticator(origin=ORIGIN)
    add_passkey(bob, bob_token, bob_device)
    [bob_handle] = [c.user_handle for c in bob_device.credentials.values()]
    # alice's credential, claiming to be bob's account.
    response, _, _ = passkey_signin(alice, device, user_handle=bob_handle)
    assert response.status_code == 401
    assert _signed_in_as(alice) is None
    # A credential this site never registered.
    stranger = SoftAuthenticator(origin=ORIGIN)
    options, token = request_options(alice)
    stranger.create(
        {"rp": {"id": "localhost"}, "user": {"id": b64url(bob_handle)}, "challenge": "x"}
    )
    assert post_json(alice, "/login/passkey", stranger.get(options), token).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"credential": []},
        {"id": "", "rawId": "", "response": {}},
        {"rawId": "%%%", "response": {"clientDataJSON": "%%%"}},
        {"rawId": "AAAA", "response": {"clientDataJSON": b64url(b'{"challenge": 7}')}},
        {"rawId": "AAAA", "response": {"clientDataJSON": b64url(b"[" * 5000 + b"]" * 5000)}},
        {"rawId": b64url(bytes(2000)), "response": {"clientDataJSON": b64url(b"{}")}},
    ],
)
def test_hostile_assertions_are_401_never_500(client, clock, body):
    _, token = request_options(client)
    response = post_json(client, "/login/passkey", body, token)
    assert response.status_code == 401
    assert response.json()["error"]


def test_thirty_replays_of_one_assertion_open_one_session(alice, device):
    options, token = request_options(alice)
    assertion = device.get(options)
    statuses = at_once(
        30, lambda _: post_json(alice, "/login/passkey", assertion, token).status_code
    )
    assert sorted(statuses) == [200] + [401] * 29
    assert _events(alice.app, "signin", "with a passkey") == 1
    assert _count(alice.app, "SELECT id FROM user_sessions WHERE revoked_at IS NULL") == 1


def test_failed_passkey_sign_ins_count_against_the_client_limit(settings, app, device):
    app = create_app(make_settings(settings.database_url, throttle_client_limit=5))
    app.state.services.passkeys.clock = Clock()
    with TestClient(app, follow_redirects=False) as client:
        token = signed_in(client)
        add_passkey(client, token, device)
        sign_out(client)
        options, token = request_options(client)
        forged = device.get(options, origin="https://evil.example")

        def attempt(_: int) -> int:
            return post_json(client, "/login/passkey", forged, token).status_code

        statuses = at_once(30, attempt)
        # Some were refused before they were looked at; the rest are 401 and recorded.
        assert statuses.count(429) >= 25
        assert _events(app, "signin_failed") + statuses.count(401) <= 5 + 5
        assert statuses.count(401) <= 5
        throttled = post_json(
            client, "/login/passkey", device.get(request_options(client)[0]), token
        )
        assert throttled.status_code == 429
        assert "retry-after" in throttled.headers
    app.state.services.db.engine.dispose()


# -- your data ------------------------------------------------------------------------------


def test_the_export_lists_passkeys_without_their_keys(alice, device):
    login(alice)
    token = csrf_token(alice, "/account")
    response = alice.get("/account/export")
    assert response.status_code == 200, response.text
    [passkey] = response.json()["two_factor"]["passkeys"]
    assert passkey["name"] == "My phone"
    assert passkey["synced"] is False
    assert set(passkey) == {"id", "name", "created_at", "last_used_at", "transports", "synced"}
    assert token


def test_deleting_the_account_deletes_its_passkeys(alice, device):
    login(alice)
    token = csrf_token(alice, "/account")
    response = alice.post(
        "/account/delete", data={"current_password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code in (200, 303), response.text
    assert _count(alice.app, "SELECT id FROM passkeys") == 0
    assert passkey_signin(alice, device)[0].status_code == 401


def test_the_operators_disable_two_factor_removes_passkeys_too(
    app, alice, device, settings, monkeypatch, capsys
):
    """Someone who lost the phone (which may hold a passkey) and the recovery codes."""
    from webapp.__main__ import main

    for name, value in {
        "APP_ENV": "test",
        "SECRET_KEY": settings.secret_key,
        "DATABASE_URL": settings.database_url,
        "AUTO_MIGRATE": "false",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["disable-two-factor", "alice", "--yes"]) == 0
    assert "removed 1 passkey for alice" in capsys.readouterr().out
    assert _count(app, "SELECT id FROM passkeys") == 0
    assert _events(app, "passkey_removed", "My phone") == 1
    [(address,)] = rows(
        app, "SELECT client_addr FROM security_events WHERE kind = 'passkey_removed'"
    )
    assert address == "operator"
    assert _count(app, "SELECT id FROM outbox WHERE kind = 'passkey_removed'") == 1
    assert passkey_signin(alice, device)[0].status_code == 401
    # Nothing left to turn off.
    assert main(["disable-two-factor", "alice", "--yes"]) == 0
    assert "no two-factor sign-in and no passkey" in capsys.readouterr().out


def test_with_required_confirmation_a_passkey_does_not_sign_in_an_unconfirmed_address(
    settings, app, device
):
    """EMAIL_VERIFICATION=required: as with the password, an unconfirmed address (here,
    alice's after a change) gets a new link instead of a session."""
    strict = create_app(make_settings(settings.database_url, email_verification="required"))
    strict.state.services.passkeys.clock = Clock()
    with TestClient(strict, follow_redirects=False) as client:
        register(client)
        _execute(strict, "UPDATE users SET email_verified_at = CURRENT_TIMESTAMP")
        assert login(client).status_code == 303
        token = csrf_token(client)
        assert add_passkey(client, token, device).status_code == 200
        sign_out(client)
        _execute(strict, "UPDATE users SET email_verified_at = NULL")
        links_before = _count(strict, "SELECT id FROM outbox WHERE kind = 'confirm_email'")
        response, _, _ = passkey_signin(client, device)
        assert response.status_code == 403
        assert "Confirm your e-mail address first" in response.json()["error"]
        assert _signed_in_as(client) is None
        after = _count(strict, "SELECT id FROM outbox WHERE kind = 'confirm_email'")
        assert after == links_before + 1
    strict.state.services.db.engine.dispose()


# -- confirming who you are (/reauth) ----------------------------------------------------------


def reauth_with_passkey(client: TestClient, device: SoftAuthenticator, **wrong: Any):
    options, _ = request_options(client)
    token = csrf_token(client, "/reauth?next=/security")
    body = {"credential": device.get(options, **wrong), "next": "/security"}
    return post_json(client, "/reauth/passkey", body, token)


def test_a_passkey_confirms_who_you_are_on_reauth(app, client, device, clock):
    token = signed_in(client)
    add_passkey(client, token, device)
    before = age_authentication(app, client)
    page = client.get("/reauth?next=/security").text
    assert 'id="passkey-reauth"' in page
    assert 'data-action="/reauth/passkey"' in page
    assert post_json(client, "/security/passkeys/options", {}, token).status_code == 403
    response = reauth_with_passkey(client, device)
    assert response.status_code == 200, response.text
    assert response.json() == {"redirect": "/security"}
    # The same session, confirmed now: the sensitive endpoint answers again.
    assert authenticated_at(app, client) > before
    assert client.cookies.get("access_token")
    assert creation_options(client, csrf_token(client, "/security"))["rp"]["id"] == "localhost"


def test_reauth_offers_no_passkey_to_an_account_without_one(client):
    signed_in(client)
    assert "passkey-reauth" not in client.get("/reauth?next=/security").text


def test_another_accounts_passkey_does_not_confirm_this_session(app, client, clock):
    bob = new_client(app)
    bob_device = SoftAuthenticator(origin=ORIGIN)
    add_passkey(bob, signed_in(bob, "bob"), bob_device)
    token = signed_in(client)
    add_passkey(client, token, SoftAuthenticator(origin=ORIGIN))
    age_authentication(app, client)
    response = reauth_with_passkey(client, bob_device)
    assert response.status_code == 401
    assert post_json(client, "/security/passkeys/options", {}, token).status_code == 403
    # A wrong origin is refused the same way, and a signed-out browser is told to sign in.
    assert reauth_with_passkey(client, bob_device, origin="https://evil.example").status_code == 401
    guest = new_client(app)
    guest_token = csrf_token(guest, "/login")
    assert post_json(guest, "/reauth/passkey", {}, guest_token).status_code == 401


def test_py_webauthn_is_loaded_at_first_use_not_at_start(tmp_path):
    """5.6 MB (with pyOpenSSL and pyasn1) that a worker never seeing a passkey need not
    carry: the app imports and builds without it."""
    import subprocess
    import sys

    probe = (
        "import sys; from tests.helpers import make_settings; from webapp.app import create_app; "
        f"create_app(make_settings('sqlite:///{tmp_path / 'probe.db'}')); "
        "print(sorted({'webauthn', 'OpenSSL', 'pyasn1'} & set(sys.modules)))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert found.stdout.strip() == "[]"
