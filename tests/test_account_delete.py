"""Deleting an account: the page, the password check (a failed sign-in when wrong), one
transaction that removes every row of the user, the goodbye e-mail that outlives it, and
the same under concurrency. Also the operator's `events` and `delete-user` commands."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import SQLModel
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.helpers import (
    PASSWORD,
    ROOT,
    TABLES,
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
from tests.live import base_env
from tests.smtp import Inbox, smtp_server, text_of
from tests.test_account_export import add_two_factor
from webapp.app import create_app

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"


def delete(
    client: TestClient, password: str, token: str | None = None, **headers: str
) -> httpx.Response:
    token = token or csrf_token(client, "/account/delete")
    response: httpx.Response = client.post(
        "/account/delete",
        data={"current_password": password, "csrf_token": token},
        headers=headers,
    )
    return response


def user_id(app: Starlette, username: str = "alice") -> int:
    [(found,)] = rows(app, "SELECT id FROM users WHERE username_key = :k", k=username.lower())
    return int(found)


def rows_of(app: Starlette, owner: int) -> dict[str, int]:
    """How many rows of every table still belong to the user `owner`: the users row, every
    table with a user_id column (whatever tables come later), and its throttling counters."""
    where = {
        table.name: "user_id = :owner"
        for table in SQLModel.metadata.sorted_tables
        if "user_id" in table.c
    }
    where |= {"users": "id = :owner", "signin_failures": "key = :key OR key LIKE :like"}
    counts = {}
    for table, condition in where.items():
        [(count,)] = rows(
            app,
            f"SELECT COUNT(*) FROM {table} WHERE {condition}",
            owner=owner,
            key=f"user:{owner}",
            like=f"%:user:{owner}",
        )
        counts[table] = int(count)
    return counts


@dataclass
class Mail:
    app: Starlette
    inbox: Inbox
    client: TestClient


@pytest.fixture
def mail(database_url: str) -> Iterator[Mail]:
    """The app sending through a real SMTP server in this process."""
    with smtp_server() as (controller, inbox):
        settings = make_settings(database_url, mail_url=f"smtp://127.0.0.1:{controller.port}")
        app = create_app(settings)
        with TestClient(app, follow_redirects=False) as client:
            client.headers["user-agent"] = FIREFOX
            yield Mail(app, inbox, client)
        engine = app.state.services.db.engine
        with engine.begin() as connection:
            for table in TABLES:
                connection.execute(text(f"DELETE FROM {table}"))
        engine.dispose()


# -- the page -------------------------------------------------------------------------


def test_the_page_needs_a_session(client):
    response = client.get("/account/delete")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/account/delete"
    # A POST without a session is told to sign in, whatever its CSRF token.
    response = client.post("/account/delete", data={"current_password": PASSWORD})
    assert response.status_code == 401


def test_the_page_says_what_will_be_deleted(client):
    signed_in(client)
    page = client.get("/account/delete")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    form = re.search(r'<form id="delete-account-form"[^>]*>', page.text)
    assert form is not None
    assert 'method="post"' in form.group(0)
    assert 'action="/account/delete"' in form.group(0)
    assert 'name="current_password"' in page.text
    assert 'type="password"' in page.text
    for words in ("cannot be undone", "every session", "security history", "alice@example.com"):
        assert words in page.text


# -- the password -----------------------------------------------------------------------


def test_a_wrong_password_is_422_deletes_nothing_and_counts_as_a_failed_sign_in(client, app):
    signed_in(client)
    owner = user_id(app)
    before = rows_of(app, owner)
    response = delete(client, "not my password")
    assert response.status_code == 422
    assert 'aria-invalid="true"' in response.text
    assert 'id="current_password-error"' in response.text
    assert "Your current password is not correct." in response.text
    assert 'role="alert"' in response.text
    after = rows_of(app, owner)
    assert after["users"] == 1
    assert after["user_sessions"] == before["user_sessions"] == 1
    assert after["signin_failures"] == before["signin_failures"] + 1
    assert rows(app, "SELECT kind FROM security_events ORDER BY id") == [
        ("signin",),
        ("signin_failed",),
    ]
    # Still signed in.
    assert client.get("/account/delete").status_code == 200


def test_no_password_is_422_and_not_counted(client, app):
    signed_in(client)
    response = delete(client, "")
    assert response.status_code == 422
    assert "Enter your password to delete your account." in response.text
    assert rows_of(app, user_id(app))["signin_failures"] == 0


def test_wrong_passwords_are_throttled_like_sign_ins(client, app):
    signed_in(client)
    token = csrf_token(client, "/account/delete")
    for _ in range(10):
        assert delete(client, "not my password", token).status_code == 422
    response = delete(client, PASSWORD, token)
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 900
    assert rows(app, "SELECT COUNT(*) FROM users") == [(1,)]
    # The same counter as signing in.
    assert login(new_client(app)).status_code == 429
    assert rows(app, "SELECT COUNT(*) FROM security_events WHERE kind = 'throttled'") == [(1,)]


# -- deleting -----------------------------------------------------------------------------


def test_deleting_removes_every_row_and_sends_a_goodbye(mail):
    app, client = mail.app, mail.client
    assert register(client).status_code == 303
    assert login(client, remember="on").status_code == 303
    other = new_client(app)
    assert login(other).status_code == 303
    token = csrf_token(client)
    assert patch_profile(client, "alice", token, username="Alicia").status_code == 200
    owner = user_id(app, "alicia")
    add_two_factor(app, owner)
    # The confirmation link and a new-browser notice for each browser, all delivered.
    mail.inbox.wait_for(3)
    before = rows_of(app, owner)
    assert {"two_factor", "recovery_codes", "signin_challenges"} <= set(before)
    assert all(count >= 1 for table, count in before.items() if table != "signin_failures")
    old_cookies = dict(client.cookies)

    response = delete(client, PASSWORD)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cleared = response.headers.get_list("set-cookie")
    for name in ("access_token", "remember_token"):
        [cookie] = [value for value in cleared if value.startswith(f"{name}=")]
        assert "Max-Age=0" in cookie or 'expires="Thu, 01 Jan 1970' in cookie
    assert rows_of(app, owner) == dict.fromkeys(before, 0)
    assert rows(app, "SELECT COUNT(*) FROM users") == [(0,)]
    assert rows(app, "SELECT COUNT(*) FROM user_sessions") == [(0,)]

    home = client.get("/")
    assert "Your account and everything we held about it are deleted." in home.text
    assert 'id="profile"' not in home.text

    # The goodbye notice was queued with no user, so it survived the delete, and arrives.
    [(kind, user)] = rows(app, "SELECT kind, user_id FROM outbox")
    assert (kind, user) == ("goodbye", None)
    *_earlier, goodbye = mail.inbox.wait_for(4)
    assert str(goodbye["To"]) == "alice@example.com"
    assert "deleted" in str(goodbye["Subject"])
    body = text_of(goodbye)
    assert "Alicia" in body
    assert "Firefox 121 on Windows" in body

    # Both browsers' old tokens are refused (the other one's too).
    replay = new_client(app)
    for name, value in old_cookies.items():
        replay.cookies.set(name, value)
    assert replay.get("/activity").status_code == 303
    assert other.get("/activity").status_code == 303
    assert 'id="profile"' not in other.get("/").text


def test_the_name_and_address_are_free_again(client, app):
    signed_in(client)
    assert delete(client, PASSWORD).status_code == 303
    again = new_client(app)
    assert register(again, "ALICE", "Alice@Example.com").status_code == 303
    assert login(again, "alice").status_code == 303
    # A new account, with nothing of the old one.
    assert rows(app, "SELECT kind FROM security_events") == [("signin",)]


def test_thirty_deletes_at_once_delete_once(client, app):
    signed_in(client)
    token = csrf_token(client, "/account/delete")
    statuses = at_once(30, lambda _i: delete(client, PASSWORD, token).status_code)
    assert statuses.count(303) == 1
    assert set(statuses) <= {303, 401, 429}, statuses
    assert rows(app, "SELECT COUNT(*) FROM users") == [(0,)]
    for table in ("user_sessions", "security_events", "email_tokens"):
        assert rows(app, f"SELECT COUNT(*) FROM {table}") == [(0,)], table
    # Every attempt's count was handed back (the winner's, and those that found no
    # account left); only the registration's count remains.
    assert rows(app, "SELECT key FROM signin_failures") == [("register:client:testclient",)]
    assert rows(app, "SELECT kind FROM outbox") == [("goodbye",)]


def test_a_delete_and_sign_ins_at_once_leave_no_session_of_the_deleted_user(client, app):
    signed_in(client)
    token = csrf_token(client, "/account/delete")
    browsers = [new_client(app) for _ in range(8)]
    tokens = [csrf_token(browser, "/login") for browser in browsers]

    def attempt(index: int) -> int:
        if index == 0:
            return delete(client, PASSWORD, token).status_code
        browser = browsers[index - 1]
        data = {"username": "alice", "password": PASSWORD, "csrf_token": tokens[index - 1]}
        response: httpx.Response = browser.post("/login", data=data)
        return response.status_code

    statuses = at_once(len(browsers) + 1, attempt)
    assert statuses[0] == 303
    assert set(statuses[1:]) <= {303, 401}, statuses
    assert rows(app, "SELECT COUNT(*) FROM users") == [(0,)]
    assert rows(app, "SELECT COUNT(*) FROM user_sessions") == [(0,)]
    for browser in browsers:
        assert browser.get("/activity").status_code == 303


# -- the operator's commands ----------------------------------------------------------------


def webapp(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webapp", *args],
        cwd=ROOT,
        env=base_env(database_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_events_command_lists_the_newest(client, app, settings):
    client.headers["user-agent"] = FIREFOX
    signed_in(client)
    assert login(new_client(app), "alice", "wrong password here").status_code == 401
    result = webapp(settings.database_url, "events", "ALICE", "--limit", "1")
    assert result.returncode == 0, result.stderr
    [header, line] = result.stdout.splitlines()
    assert header.split()[:4] == ["WHEN", "(UTC)", "EVENT", "BROWSER"]
    assert "signin_failed" in line
    assert "testclient" in line
    everything = webapp(settings.database_url, "events", "alice")
    assert len(everything.stdout.splitlines()) == 3
    assert "Firefox 121 on Windows" in everything.stdout
    unknown = webapp(settings.database_url, "events", "nobody")
    assert unknown.returncode == 1
    assert "no user named 'nobody'" in unknown.stderr


def test_the_delete_user_command_needs_yes_and_deletes_every_row(client, app, settings):
    signed_in(client)
    owner = user_id(app)
    refused = webapp(settings.database_url, "delete-user", "alice")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert rows_of(app, owner)["users"] == 1

    result = webapp(settings.database_url, "delete-user", "Alice", "--yes")
    assert result.returncode == 0, result.stderr
    assert f"deleted user alice (id {owner})" in result.stdout
    assert "user_sessions: 1" in result.stdout
    assert "security_events: 1" in result.stdout
    assert "goodbye notice to alice@example.com" in result.stdout
    assert set(rows_of(app, owner).values()) == {0}
    [(kind, user, body)] = rows(app, "SELECT kind, user_id, body_text FROM outbox")
    assert (kind, user) == ("goodbye", None)
    assert "by an administrator" in body
    # The browser's session is gone with it.
    assert client.get("/activity").status_code == 303

    again = webapp(settings.database_url, "delete-user", "alice", "--yes")
    assert again.returncode == 1
    assert "no user named 'alice'" in again.stderr
