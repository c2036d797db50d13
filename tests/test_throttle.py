"""Throttling under attack: parallel guesses, every spelling of an identifier, IPv6 /64s,
registration and rename limits. Each limit is checked with requests fired at once."""

from __future__ import annotations

import pytest

from tests.helpers import (
    PASSWORD,
    at_once,
    csrf_token,
    login,
    make_settings,
    new_client,
    patch_profile,
    register,
    rows,
    signed_in,
)
from webapp.app import create_app
from webapp.domain import passwords


@pytest.fixture
def alice(client):
    assert register(client).status_code == 303
    return client


def _browsers(app, count: int, path: str = "/login"):
    browsers = [new_client(app) for _ in range(count)]
    tokens = [csrf_token(browser, path) for browser in browsers]
    return browsers, tokens


def _post_login(browser, token: str, username: str, password: str, **headers: str):
    return browser.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token},
        headers=headers,
    )


@pytest.mark.parametrize("count", [30, 50])
def test_parallel_wrong_passwords_evaluate_at_most_ten(alice, app, count):
    browsers, tokens = _browsers(app, count)
    statuses = at_once(
        count,
        lambda i: _post_login(browsers[i], tokens[i], "alice", "wrong password").status_code,
    )
    assert set(statuses) <= {401, 429}
    assert statuses.count(401) <= 10
    assert statuses.count(429) >= count - 10
    # Then the right password is throttled too: the guesses used the whole allowance.
    assert login(new_client(app), "alice", PASSWORD).status_code == 429


def test_parallel_wrong_current_passwords_evaluate_at_most_ten(client, app):
    token = signed_in(client)
    statuses = at_once(
        30,
        lambda i: (
            patch_profile(
                client, "alice", token, email=f"new{i}@example.com", current_password="wrong guess"
            ).status_code
        ),
    )
    assert set(statuses) <= {422, 429}
    assert statuses.count(422) <= 10
    assert rows(app, "SELECT email FROM users") == [("alice@example.com",)]


def test_parallel_sprays_from_one_client_stop_at_the_client_cap(app, settings):
    capped = create_app(make_settings(settings.database_url, throttle_client_limit=12))
    browsers, tokens = _browsers(capped, 30)
    statuses = at_once(
        30, lambda i: _post_login(browsers[i], tokens[i], f"user{i}", "x").status_code
    )
    assert statuses.count(401) <= 12
    assert statuses.count(429) >= 18


def test_an_unknown_name_costs_one_hash_check_like_a_known_one(alice, app, monkeypatch):
    checked: list[str] = []
    real = passwords.verify_password_sync

    def counting(password: str, *, password_hash: str) -> bool:
        checked.append(password_hash)
        return real(password, password_hash=password_hash)

    monkeypatch.setattr(passwords, "verify_password_sync", counting)
    other = new_client(app)
    assert login(other, "nobody", "wrong password").status_code == 401
    assert login(other, "nobody@example.com", "wrong password").status_code == 401
    assert login(other, "alice", "wrong password").status_code == 401
    assert len(checked) == 3
    # The unknown names were checked against a real bcrypt hash of the same cost.
    assert all(found.startswith("$2b$04$") for found in checked)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            "victim@example.com",
            "victim@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.\uff43\uff4f\uff4d",
        ),
        ("victim@example.com", "VICTIM@EXAMPLE.COM"),
        ("victim", "\uff36\uff29\uff23\uff34\uff29\uff2d"),  # fullwidth VICTIM
    ],
)
def test_a_429_does_not_tell_whether_an_identifier_exists(app, first, second):
    """The same spellings, for an address that is registered and for one that is not."""
    answers = {}
    for registered in (True, False):
        if registered:
            register(new_client(app), "victim", "victim@example.com")
        attacker = new_client(app)
        for _ in range(10):
            assert login(attacker, first, "wrong password").status_code == 401
        answers[registered] = login(attacker, second, "wrong password").status_code
        with app.state.services.db.engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM signin_failures")
            connection.exec_driver_sql("DELETE FROM user_sessions")
            connection.exec_driver_sql("DELETE FROM users")
    assert answers == {True: 429, False: 429}


def test_an_ipv6_client_is_counted_by_its_64(app, settings):
    capped = create_app(
        make_settings(settings.database_url, throttle_client_limit=5, forwarded_allow_ips=("*",))
    )
    attacker = new_client(capped)
    for index in range(5):
        address = {"X-Forwarded-For": f"2001:db8:1:2::{index + 1:x}"}
        token = csrf_token(attacker, "/login")
        assert _post_login(attacker, token, f"user{index}", "x", **address).status_code == 401
    same_64 = {"X-Forwarded-For": "2001:db8:1:2:ffff::9"}
    assert (
        _post_login(attacker, csrf_token(attacker, "/login"), "x9", "x", **same_64).status_code
        == 429
    )
    other_64 = {"X-Forwarded-For": "2001:db8:1:3::1"}
    assert (
        _post_login(attacker, csrf_token(attacker, "/login"), "x9", "x", **other_64).status_code
        == 401
    )


def _registration(index: int, token: str) -> dict[str, str]:
    return {
        "username": f"user{index}",
        "email": f"user{index}@example.com",
        "password": PASSWORD,
        "confirm_password": PASSWORD,
        "csrf_token": token,
    }


def test_registration_is_limited_per_client(app):
    browser = new_client(app)
    for index in range(10):
        token = csrf_token(browser, "/register")
        assert browser.post("/register", data=_registration(index, token)).status_code == 303
    token = csrf_token(browser, "/register")
    response = browser.post("/register", data=_registration(99, token))
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 3600
    assert rows(app, "SELECT count(*) FROM users") == [(10,)]


def test_parallel_registrations_stop_at_the_limit(app):
    browsers, tokens = _browsers(app, 30, "/register")
    statuses = at_once(
        30, lambda i: browsers[i].post("/register", data=_registration(i, tokens[i])).status_code
    )
    assert statuses.count(303) == 10
    assert statuses.count(429) == 20
    assert rows(app, "SELECT count(*) FROM users") == [(10,)]


def test_renames_are_limited_per_account(client, app):
    token = signed_in(client)
    name = "alice"
    for index in range(10):
        new_name = f"alice{index}"
        assert patch_profile(client, name, token, username=new_name).status_code == 200
        name = new_name
    response = patch_profile(client, name, token, username="another")
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 3600
    assert rows(app, "SELECT username FROM users") == [(name,)]


def test_parallel_rename_probes_stop_at_the_limit(client, app):
    token = signed_in(client)
    register(new_client(app), "taken", "taken@example.com")
    statuses = at_once(
        30, lambda i: patch_profile(client, "alice", token, username="taken").status_code
    )
    assert statuses.count(409) == 10
    assert statuses.count(429) == 20


@pytest.mark.parametrize(
    "identifier",
    ["ali\x00ce", "\x00", "İ" * 200, "a\u0130" * 120 + "@example.com", "x" * 254, "bad\r\nname"],
)
def test_identifiers_no_account_could_have_are_a_plain_failure(alice, app, identifier):
    response = login(new_client(app), identifier, "wrong password")
    assert response.status_code in (401, 422)
    # Still counted, and nothing half-written: no session.
    assert rows(app, "SELECT count(*) FROM user_sessions") == [(0,)]


def test_a_next_with_any_character_signs_in_without_an_error(alice, app):
    browser = new_client(app)
    token = csrf_token(browser, "/login?next=%2F%E4%B8%AD")
    for headers in ({}, {"HX-Request": "true"}):
        response = browser.post(
            "/login",
            data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": "/中"},
            headers=headers,
        )
        assert response.status_code in (200, 303)
        target = response.headers.get("hx-redirect") or response.headers["location"]
        assert target == "/%E4%B8%AD"
        token = csrf_token(browser, "/login")
