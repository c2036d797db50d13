"""GET /account/export: everything held about the account as one JSON document, behind
recent authentication, and never a hash, token, secret or nonce. Which column is exported
and which withheld is written down for every column of every table, and checked here."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, text
from sqlmodel import SQLModel
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.helpers import (
    csrf_token,
    login,
    new_client,
    patch_profile,
    register,
    rows,
    signed_in,
)
from webapp.domain.activity import (
    DERIVED,
    EXPORTED,
    NOT_ABOUT_AN_ACCOUNT,
    SECTIONS,
    WITHHELD,
)
from webapp.models import utcnow

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"
DISPOSITION = re.compile(r'^attachment; filename="account-Alice-\d{4}-\d\d-\d\d\.json"$')


def uncovered(metadata: MetaData) -> list[str]:
    """Every column no policy speaks of, and every contradiction, as readable lines."""
    problems = []
    for name, table in metadata.tables.items():
        if name in NOT_ABOUT_AN_ACCOUNT:
            if name in EXPORTED or name in WITHHELD:
                problems.append(f"{name}: both outside the export and in it")
            continue
        exported, withheld = set(EXPORTED.get(name, {})), set(WITHHELD.get(name, {}))
        columns = {column.name for column in table.columns}
        for column in sorted(columns - exported - withheld):
            problems.append(f"{name}.{column}: neither exported nor withheld")
        for column in sorted(exported & withheld):
            problems.append(f"{name}.{column}: both exported and withheld")
        for column in sorted((exported | withheld) - columns):
            problems.append(f"{name}.{column}: named, but no such column")
        if name not in SECTIONS:
            problems.append(f"{name}: no section of the export holds it")
    return problems


def export(client: TestClient):
    return client.get("/account/export")


def set_authenticated_back(app: Starlette, minutes: int) -> None:
    with app.state.services.db.engine.begin() as connection:
        connection.execute(
            text("UPDATE user_sessions SET authenticated_at = :when"),
            {"when": utcnow() - timedelta(minutes=minutes)},
        )


@pytest.fixture
def alice(client: TestClient) -> TestClient:
    client.headers["user-agent"] = FIREFOX
    signed_in(client)
    return client


# -- the policy -----------------------------------------------------------------------


def test_every_column_of_every_table_is_exported_or_withheld_on_purpose():
    assert uncovered(SQLModel.metadata) == []
    # Every withheld column says why.
    assert all(reason.strip() for table in WITHHELD.values() for reason in table.values())
    assert all(reason.strip() for reason in NOT_ABOUT_AN_ACCOUNT.values())


def test_the_check_notices_a_new_column_and_a_new_table():
    metadata = MetaData()
    for table in SQLModel.metadata.tables.values():
        table.to_metadata(metadata)
    Table("gadgets", metadata, Column("id", Integer, primary_key=True))
    users = metadata.tables["users"]
    users.append_column(Column("shoe_size", Integer))
    assert uncovered(metadata) == [
        "users.shoe_size: neither exported nor withheld",
        "gadgets.id: neither exported nor withheld",
        "gadgets: no section of the export holds it",
    ]


def test_no_secret_column_is_exported():
    secretive = re.compile(r"hash|nonce|token|secret|password")
    for table, columns in EXPORTED.items():
        for column in columns:
            assert not secretive.search(column), f"{table}.{column}"
    # The session's own id is the JWT's sid: withheld.
    assert "id" in WITHHELD["user_sessions"]


# -- the route ------------------------------------------------------------------------


def test_a_guest_is_sent_to_sign_in(client):
    response = export(client)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/account/export"


def test_it_needs_the_password_in_the_last_ten_minutes(alice, app):
    set_authenticated_back(app, 9)
    assert export(alice).status_code == 200
    set_authenticated_back(app, 11)
    response = export(alice)
    assert response.status_code == 303
    assert response.headers["location"] == "/reauth?next=/account/export"
    htmx = alice.get(
        "/account/export",
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/activity"},
    )
    assert htmx.status_code == 403
    assert htmx.headers["hx-redirect"] == "/reauth?next=/activity"


def test_it_is_a_versioned_json_download_of_the_account(alice, app):
    token = csrf_token(alice)
    assert patch_profile(alice, "alice", token, username="Alice").status_code == 200
    response = export(alice)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert DISPOSITION.match(response.headers["content-disposition"])
    assert response.headers["cache-control"] == "no-store"
    document = response.json()
    assert list(document) == [
        "format",
        "exported_at",
        "user",
        "sessions",
        "events",
        "email_tokens",
        "outbox",
        "two_factor",
    ]
    assert document["format"] == 1
    assert document["exported_at"].endswith("+00:00")
    user = document["user"]
    assert (user["username"], user["email"]) == ("Alice", "alice@example.com")
    assert user["email_verified_at"] is None
    [(alice_id,)] = rows(app, "SELECT id FROM users")
    assert user["id"] == alice_id
    [session] = document["sessions"]
    [(public_id,)] = rows(app, "SELECT public_id FROM user_sessions")
    assert session["id"] == public_id
    assert (session["browser"], session["system"]) == ("Firefox 121", "Windows")
    assert session["client_addr"] == "testclient"
    assert session["revoked_at"] is None
    assert [event["kind"] for event in document["events"]] == ["signin", "username_changed"]
    assert document["events"][1]["detail"] == "from alice to Alice"
    assert [token["purpose"] for token in document["email_tokens"]] == ["verify"]
    assert set(document["email_tokens"][0]) == {"purpose", "created_at", "expires_at", "used_at"}
    assert document["outbox"][0]["kind"] == "confirm_email"
    assert document["outbox"][0]["to"] == "alice@example.com"
    assert document["two_factor"] == {
        "enabled": False,
        "authenticator": None,
        "recovery_codes": [],
        "pending_sign_ins": [],
        "passkeys": [],
    }


def add_two_factor(app: Starlette, owner: int) -> None:
    """Two-factor sign-in on, with two recovery codes, a sign-in waiting for its code and a
    passkey, written directly: every value that must never be exported is recognisable."""
    now = utcnow()
    with app.state.services.db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO two_factor (user_id, secret, enabled_at, last_step, pending_secret, "
                "pending_at) VALUES (:owner, 'SECRET-TOTP-KEY', :now, 58000000, "
                "'SECRET-PENDING-KEY', :now)"
            ),
            {"owner": owner, "now": now},
        )
        for number in range(2):
            connection.execute(
                text(
                    "INSERT INTO recovery_codes (user_id, code_hash, created_at) "
                    "VALUES (:owner, :hash, :now)"
                ),
                {"owner": owner, "hash": f"SECRET-CODE-HASH-{number}", "now": now},
            )
        connection.execute(
            text(
                "INSERT INTO signin_challenges (token_hash, user_id, browser_hash, remember, "
                "credential_version, created_at, expires_at, failures) VALUES "
                "('SECRET-CHALLENGE-HASH', :owner, 'SECRET-BROWSER-HASH', :no, 1, :now, "
                ":later, 2)"
            ),
            {"owner": owner, "no": False, "now": now, "later": now + timedelta(minutes=5)},
        )
        connection.execute(
            text(
                "INSERT INTO passkeys (user_id, credential_id, public_key, sign_count, "
                "transports, user_handle, name, backed_up, created_at) VALUES (:owner, "
                "'SECRET-CREDENTIAL-ID', 'SECRET-PUBLIC-KEY', 7, 'internal', "
                "'SECRET-USER-HANDLE', 'Work laptop', :yes, :now)"
            ),
            {"owner": owner, "yes": True, "now": now},
        )


def _at(document: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


def test_each_section_has_exactly_the_keys_the_policy_names(alice, app):
    [(owner,)] = rows(app, "SELECT id FROM users")
    add_two_factor(app, owner)
    document = export(alice).json()
    assert document["two_factor"]["enabled"] is True
    for table, path in SECTIONS.items():
        found = _at(document, path)
        entries = [found] if isinstance(found, dict) else found
        assert entries, f"nothing in {path} to check"
        expected = set(EXPORTED[table].values()) | set(DERIVED.get(table, ()))
        for entry in entries:
            assert set(entry) == expected, path
    assert document["two_factor"]["pending_sign_ins"][0]["failures"] == 2
    assert [code["used_at"] for code in document["two_factor"]["recovery_codes"]] == [None, None]
    [passkey] = document["two_factor"]["passkeys"]
    assert (passkey["name"], passkey["synced"], passkey["transports"]) == (
        "Work laptop",
        True,
        "internal",
    )


def _secrets(app: Starlette) -> list[str]:
    found: list[Any] = []
    for sql in (
        "SELECT password_hash FROM users",
        "SELECT id FROM user_sessions",
        "SELECT remember_hash FROM user_sessions",
        "SELECT remember_prev_hash FROM user_sessions",
        "SELECT device_hash FROM user_sessions",
        "SELECT token_hash FROM email_tokens",
        "SELECT token_nonce FROM outbox",
        "SELECT body_text FROM outbox",
        "SELECT body_html FROM outbox",
        "SELECT secret FROM two_factor",
        "SELECT pending_secret FROM two_factor",
        "SELECT code_hash FROM recovery_codes",
        "SELECT token_hash FROM signin_challenges",
        "SELECT browser_hash FROM signin_challenges",
        "SELECT credential_id FROM passkeys",
        "SELECT public_key FROM passkeys",
        "SELECT user_handle FROM passkeys",
    ):
        found += [value for (value,) in rows(app, sql) if value]
    return [str(value) for value in found]


def test_it_holds_no_hash_token_secret_or_nonce(app):
    browser = new_client(app)
    browser.headers["user-agent"] = FIREFOX
    assert register(browser).status_code == 303
    # Remember me: a remember hash; another browser: a second session; a renewed remember
    # token keeps the hash of the one it replaced.
    assert login(browser, remember="on").status_code == 303
    other = new_client(app)
    assert login(other, remember="on").status_code == 303
    del other.cookies["access_token"]
    assert other.get("/").status_code == 200
    [(owner,)] = rows(app, "SELECT id FROM users")
    add_two_factor(app, owner)
    hidden = _secrets(app)
    assert len(hidden) >= 15
    assert sum("SECRET-" in value for value in hidden) == 9
    assert any(value.startswith("$2b$") for value in hidden)
    body = export(browser).text
    for value in hidden:
        assert value not in body
    # Nor the names of such columns.
    assert "SECRET" not in body
    for field in ("hash", "nonce", "secret", "last_step", "public_key", "credential_id"):
        assert field not in body
    # The JWTs and the remember tokens the browsers hold are not in it either.
    for jar in (browser.cookies, other.cookies):
        for value in jar.values():
            assert value not in body


def test_it_holds_nothing_of_another_account(alice, app):
    bob = new_client(app)
    bob.headers["user-agent"] = "curl/8.5.0"
    signed_in(bob, "bob")
    body = export(alice).text
    assert "bob" not in body
    assert "curl" not in body
    document = json.loads(body)
    assert len(document["sessions"]) == 1
    assert {message["to"] for message in document["outbox"]} == {"alice@example.com"}
