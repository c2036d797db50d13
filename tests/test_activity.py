"""The Activity page (the account's security history, 50 events at a time) and the
retention clean-up that the app runs in the background."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any, get_args

import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.helpers import (
    PASSWORD,
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
from webapp.domain.activity import DESCRIPTIONS, PAGE_SIZE, Activity
from webapp.domain.events import EventKind
from webapp.models import utcnow

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"
EVENT = re.compile(r'<li class="event" data-event="([a-z_]+)"')
OLDER = re.compile(r'hx-get="/activity\?before=(\d+)"')


def execute(app: Starlette, sql: str, **params: Any) -> int:
    with app.state.services.db.engine.begin() as connection:
        return int(connection.execute(text(sql), params).rowcount)


def user_id(app: Starlette, username: str) -> int:
    [(found,)] = rows(app, "SELECT id FROM users WHERE username_key = :k", k=username.lower())
    return int(found)


def kinds(html: str) -> list[str]:
    return EVENT.findall(html)


def add_events(app: Starlette, owner: int, count: int, kind: str = "signout") -> None:
    """`count` events, oldest first, each a second after the one before and all in the past."""
    start = utcnow() - timedelta(days=1)
    with app.state.services.db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO security_events "
                "(user_id, kind, created_at, client_addr, user_agent, detail) "
                "VALUES (:user_id, :kind, :created_at, '192.0.2.7', :ua, :detail)"
            ),
            [
                {
                    "user_id": owner,
                    "kind": kind,
                    "created_at": start + timedelta(seconds=number),
                    "ua": FIREFOX,
                    "detail": f"number {number}",
                }
                for number in range(count)
            ],
        )


@pytest.fixture
def firefox(client: TestClient) -> TestClient:
    client.headers["user-agent"] = FIREFOX
    return client


# -- the page -------------------------------------------------------------------------


def test_the_page_needs_a_session(client):
    response = client.get("/activity")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/activity"
    htmx = client.get("/activity", headers={"HX-Request": "true", "HX-Current-URL": "/activity"})
    assert htmx.status_code == 401
    assert htmx.headers["hx-redirect"] == "/login?next=/activity"


def test_it_lists_what_happened_newest_first_with_browser_and_address(firefox, app):
    assert register(firefox).status_code == 303
    assert login(firefox, "alice", "a wrong password").status_code == 401
    assert login(firefox).status_code == 303
    token = csrf_token(firefox)
    assert patch_profile(firefox, "alice", token, username="alicia").status_code == 200
    page = firefox.get("/activity")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "HX-Request" in page.headers["vary"]
    assert 'id="activity"' in page.text
    assert kinds(page.text) == ["username_changed", "signin", "signin_failed"]
    # Each names the time, the browser and system, the client address and the detail.
    assert page.text.count("Firefox 121 on Windows") == 3
    assert page.text.count("<dd>testclient</dd>") == 3
    assert "from alice to alicia" in page.text
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[\d:.]+\+00:00">', page.text)
    # Fewer than a page: no button for older events.
    assert OLDER.search(page.text) is None


def test_a_wrong_current_password_and_a_sign_out_are_listed(firefox, app):
    token = signed_in(firefox)
    response = patch_profile(
        firefox, "alice", token, email="new@example.com", current_password="not it at all"
    )
    assert response.status_code == 422
    other = new_client(app)
    assert login(other).status_code == 303
    assert other.post("/logout", data={"csrf_token": csrf_token(other)}).status_code == 303
    assert kinds(firefox.get("/activity").text) == [
        "signout",
        "signin",
        "signin_failed",
        "signin",
    ]


def test_no_events_of_other_users_and_none_for_names_nobody_has(firefox, app):
    bob = new_client(app)
    bob.headers["user-agent"] = "curl/8.5.0"
    signed_in(bob, "bob")
    assert login(new_client(app), "bob", "wrong password here").status_code == 401
    signed_in(firefox)
    for name in ("nobody", "nobody@example.com", "NOBODY"):
        assert login(new_client(app), name, "wrong password here").status_code == 401
    page = firefox.get("/activity").text
    assert kinds(page) == ["signin"]
    assert "curl" not in page
    # Every stored event belongs to a real account: bob's two and alice's one.
    counted = rows(
        app,
        "SELECT users.username, COUNT(*) FROM security_events "
        "JOIN users ON users.id = security_events.user_id GROUP BY users.username "
        "ORDER BY users.username",
    )
    assert counted == [("alice", 1), ("bob", 2)]
    assert rows(app, "SELECT COUNT(*) FROM security_events") == [(3,)]


def test_older_events_come_fifty_at_a_time_by_htmx(firefox, app):
    assert register(firefox).status_code == 303
    add_events(app, user_id(app, "alice"), 2 * PAGE_SIZE + 20)
    assert login(firefox).status_code == 303
    first = firefox.get("/activity")
    assert len(kinds(first.text)) == PAGE_SIZE
    # The sign-in is the newest; then the seeded events from the newest down.
    assert kinds(first.text)[0] == "signin"
    assert "number 119<" in first.text
    assert "number 71<" in first.text
    assert "number 70<" not in first.text
    [before] = OLDER.findall(first.text)
    assert f'href="/activity?before={before}"' in first.text  # without JavaScript too

    htmx = {"HX-Request": "true", "HX-Current-URL": "http://testserver/activity"}
    second = firefox.get(f"/activity?before={before}", headers=htmx)
    assert second.status_code == 200
    assert "HX-Request" in second.headers["vary"]
    # The partial alone: a page of its own, which owns its id, and no layout.
    assert "<html" not in second.text
    assert second.text.lstrip().startswith('<div id="events-')
    assert len(kinds(second.text)) == PAGE_SIZE
    assert "number 70<" in second.text
    assert "number 21<" in second.text
    [next_before] = OLDER.findall(second.text)
    assert int(next_before) < int(before)

    third = firefox.get(f"/activity?before={next_before}", headers=htmx)
    assert len(kinds(third.text)) == 21
    assert "number 20<" in third.text
    assert "number 0<" in third.text
    assert OLDER.search(third.text) is None

    # Without htmx the same address is a whole page.
    plain = firefox.get(f"/activity?before={before}")
    assert "<html" in plain.text
    assert len(kinds(plain.text)) == PAGE_SIZE


@pytest.mark.parametrize(
    "query", ["before=abc", "before=0", "before=-3", "before=1&before=2", "before=%EF%BC%91"]
)
def test_a_bad_cursor_is_400(firefox, query):
    signed_in(firefox)
    assert firefox.get(f"/activity?{query}").status_code == 400


def test_every_kind_of_event_has_words_for_people():
    assert set(get_args(EventKind)) == set(DESCRIPTIONS)


# -- retention --------------------------------------------------------------------------


def _age(app: Starlette, table: str, column: str, days: float, where: str) -> None:
    """Set `column` back `days` days in the rows of `table` that match `where`."""
    when = utcnow() - timedelta(days=days)
    execute(app, f"UPDATE {table} SET {column} = :when WHERE {where}", when=when)


def _seed_for_retention(client: TestClient, app: Starlette) -> int:
    """Alice with three events (91, 89 and 0 days old), three links (expired, live, used
    but live) and e-mails of every state and age; returns her id."""
    signed_in(client)
    owner = user_id(app, "alice")
    add_events(app, owner, 2)
    _age(app, "security_events", "created_at", 91, "detail = 'number 0'")
    _age(app, "security_events", "created_at", 89, "detail = 'number 1'")
    execute(app, "DELETE FROM email_tokens")
    execute(app, "DELETE FROM outbox")
    now = utcnow()
    with app.state.services.db.engine.begin() as connection:
        for number, (expires, used) in enumerate([(-1, None), (1, None), (1, 0)]):
            connection.execute(
                text(
                    "INSERT INTO email_tokens (token_hash, user_id, purpose, email, created_at, "
                    "expires_at, used_at) VALUES (:hash, :owner, 'verify', 'alice@example.com', "
                    ":created, :expires, :used)"
                ),
                {
                    "hash": f"{number:064d}",
                    "owner": owner,
                    "created": now - timedelta(days=2),
                    "expires": now + timedelta(hours=expires),
                    "used": None if used is None else now,
                },
            )
        for subject, sent_days, failed_days, created_days in [
            ("sent long ago", 91, None, 92),
            ("sent lately", 89, None, 92),
            ("given up long ago", None, 91, 92),
            ("still trying", None, None, 92),
        ]:
            connection.execute(
                text(
                    "INSERT INTO outbox (user_id, kind, to_address, subject, body_text, "
                    "created_at, next_attempt_at, attempts, sent_at, failed_at) VALUES (:owner, "
                    "'confirm_email', 'alice@example.com', :subject, 'text', :created, :created, "
                    "0, :sent, :failed)"
                ),
                {
                    "owner": owner,
                    "subject": subject,
                    # "Still trying" is due in a day, so the sender leaves it alone.
                    "created": now - timedelta(days=created_days),
                    "sent": None if sent_days is None else now - timedelta(days=sent_days),
                    "failed": None if failed_days is None else now - timedelta(days=failed_days),
                },
            )
        connection.execute(
            text("UPDATE outbox SET next_attempt_at = :later WHERE sent_at IS NULL"),
            {"later": now + timedelta(days=1)},
        )
    return owner


def _kept(app: Starlette) -> dict[str, list[Any]]:
    return {
        "events": sorted(detail for (detail,) in rows(app, "SELECT detail FROM security_events")),
        "tokens": sorted(
            hash_[-1] for (hash_,) in rows(app, "SELECT token_hash FROM email_tokens")
        ),
        "outbox": sorted(subject for (subject,) in rows(app, "SELECT subject FROM outbox")),
    }


def test_the_clean_up_deletes_only_what_is_past_keeping(client, app):
    _seed_for_retention(client, app)
    activity: Activity = app.state.services.activity
    done = asyncio.run(activity.clean_up())
    assert (done.events, done.email_tokens, done.outbox) == (1, 1, 2)
    assert _kept(app) == {
        # The sign-in (today) and the 89-day-old event stay; the 91-day-old one is gone.
        "events": ["", "number 1"],
        # The expired link goes; the live ones, used or not, stay until they expire.
        "tokens": ["1", "2"],
        "outbox": ["sent lately", "still trying"],
    }
    # A second run finds nothing more.
    assert asyncio.run(activity.clean_up()).total == 0


def test_the_retention_is_a_setting(settings, client, app):
    _seed_for_retention(client, app)
    shorter = create_app(make_settings(settings.database_url, activity_retention_days=30))
    try:
        done = asyncio.run(shorter.state.services.activity.clean_up())
    finally:
        shorter.state.services.db.dispose()
    assert done.events == 2
    assert _kept(app)["events"] == [""]
    assert _kept(app)["outbox"] == ["still trying"]


def test_the_clean_up_works_in_batches(client, app, monkeypatch):
    owner = _seed_for_retention(client, app)
    add_events(app, owner, 7, kind="signin")
    _age(app, "security_events", "created_at", 100, "kind = 'signin' AND detail <> ''")
    monkeypatch.setattr("webapp.domain.activity.CLEANUP_BATCH", 3)
    done = asyncio.run(app.state.services.activity.clean_up())
    assert done.events == 8
    assert _kept(app)["events"] == ["", "number 1"]


def test_the_app_cleans_up_at_start_and_stops_the_task_at_shutdown(settings, client, app):
    _seed_for_retention(client, app)
    fresh = create_app(make_settings(settings.database_url))
    housekeeping = fresh.state.housekeeping
    assert not housekeeping.running
    with TestClient(fresh) as started:
        assert housekeeping.running
        # Wait for the pass that runs at start (it runs in the background, not in the way).
        assert started.portal is not None
        started.portal.call(housekeeping.first_pass.wait)
        assert housekeeping.passes == 1
        assert _kept(app)["events"] == ["", "number 1"]
        assert "sent long ago" not in _kept(app)["outbox"]
    assert not housekeeping.running
    assert login(new_client(app), "alice", PASSWORD).status_code == 303
