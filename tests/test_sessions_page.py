"""Your sessions: GET /sessions lists the live ones; DELETE /sessions/{id} ends one (this
browser's own: a sign-out); POST /sessions/revoke-others ends the rest; and the operator's
`python -m webapp sessions list | revoke-all`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import jwt
import pytest
from sqlmodel import Session, col, update

from tests.helpers import (
    PASSWORD,
    at_once,
    csrf_token,
    login,
    new_client,
    patch_profile,
    register,
    rows,
    signed_in,
)
from webapp.__main__ import main
from webapp.models import UserSession

FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"
CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)


# -- reading the page -------------------------------------------------------------------


@dataclass
class Listed:
    """One `.session` element of the page, as a test reads it."""

    handle: str
    current: bool
    texts: dict[str, str] = field(default_factory=dict)
    times: dict[str, str] = field(default_factory=dict)
    delete_url: str | None = None


class _SessionsParser(HTMLParser):
    FIELDS = (
        "session-browser",
        "session-system",
        "session-address",
        "session-signed-in",
        "session-last-active",
    )

    def __init__(self) -> None:
        super().__init__()
        self.found: list[Listed] = []
        self.section_ids: list[str] = []
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if attributes.get("id") == "sessions":
            self.section_ids.append(tag)
        if tag == "li" and "session" in classes:
            handle = attributes["data-session"] or ""
            self.found.append(Listed(handle, "data-current" in attributes))
            return
        if not self.found:
            return
        current = self.found[-1]
        for name in self.FIELDS:
            if name in classes:
                self._field = name
                current.texts[name] = ""
        if tag == "time" and self._field:
            current.times[self._field] = attributes["datetime"] or ""
        if tag == "button" and attributes.get("hx-delete"):
            current.delete_url = attributes["hx-delete"]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("span", "dd"):
            self._field = None

    def handle_data(self, data: str) -> None:
        if self._field and self.found:
            self.found[-1].texts[self._field] += data


def listed(html: str) -> list[Listed]:
    parser = _SessionsParser()
    parser.feed(html)
    assert parser.section_ids == ["section"], "exactly one #sessions"
    return parser.found


# -- the browsers and their sessions ------------------------------------------------------


def browser(app, user_agent: str):
    """Another browser, with its own cookies and User-Agent."""
    other = new_client(app)
    other.headers["user-agent"] = user_agent
    return other


def sid_of(client) -> str:
    claims = jwt.decode(client.cookies["access_token"], options={"verify_signature": False})
    return str(claims["sid"])


def handle_of(app, client) -> str:
    [(handle,)] = rows(
        app, "SELECT public_id FROM user_sessions WHERE id = :sid", sid=sid_of(client)
    )
    return str(handle)


def set_session(app, sid: str, **values: object) -> None:
    with Session(app.state.services.db.engine) as session, session.begin():
        session.exec(update(UserSession).where(col(UserSession.id) == sid).values(**values))


def signed_in_as(client) -> str | None:
    """The name on the home page, or None when the browser is signed out."""
    text: str = client.get("/").text
    marker = "Welcome, "
    if marker not in text:
        return None
    return text.split(marker, 1)[1].split("<", 1)[0]


def htmx(token: str, **extra: str) -> dict[str, str]:
    return {"HX-Request": "true", "X-CSRF-Token": token, **extra}


def events(app, kind: str | None = None) -> list[tuple[str, str]]:
    found = rows(app, "SELECT kind, detail FROM security_events ORDER BY id")
    return [(k, d) for k, d in found if kind is None or k == kind]


def live_handles(app) -> set[str]:
    found = rows(app, "SELECT public_id FROM user_sessions WHERE revoked_at IS NULL")
    return {handle for (handle,) in found}


@pytest.fixture
def alice(client):
    """alice, signed in with Firefox on Windows; the client's CSRF token."""
    client.headers["user-agent"] = FIREFOX_WINDOWS
    return signed_in(client)


# -- GET /sessions ------------------------------------------------------------------------


def test_the_page_lists_exactly_the_live_sessions_newest_first(client, alice, app):
    laptop = browser(app, CHROME_MAC)
    phone = browser(app, SAFARI_IPHONE)
    assert login(laptop).status_code == 303
    assert login(phone).status_code == 303
    # Sessions that are not live: signed out, past their end, opened under an old password.
    gone = [browser(app, CHROME_MAC) for _ in range(3)]
    for other in gone:
        assert login(other).status_code == 303
    gone_sids = [sid_of(other) for other in gone]
    gone[0].post("/logout", data={"csrf_token": csrf_token(gone[0])})
    set_session(app, sid_of(gone[1]), expires_at=datetime.now(UTC) - timedelta(seconds=1))
    set_session(app, sid_of(gone[2]), credential_version=0)
    # Someone else's session.
    bob = new_client(app)
    signed_in(bob, "bob")
    # Known moments: the sign-in times decide the order, not the order of the rows.
    base = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    moments = {
        sid_of(client): (base + timedelta(hours=2), base + timedelta(hours=3)),
        sid_of(laptop): (base + timedelta(hours=1), base + timedelta(hours=4, minutes=5)),
        sid_of(phone): (base + timedelta(hours=5), base + timedelta(hours=5, minutes=30)),
    }
    for sid, (signed, seen) in moments.items():
        set_session(app, sid, created_at=signed, last_seen_at=seen, client_addr="203.0.113.9")

    response = client.get("/sessions")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "HX-Request" in response.headers["vary"]
    found = listed(response.text)
    assert [entry.handle for entry in found] == [
        handle_of(app, phone),
        handle_of(app, client),
        handle_of(app, laptop),
    ]
    phone_entry, own, laptop_entry = found
    assert [entry.current for entry in found] == [False, True, False]
    assert own.texts["session-browser"] == "Firefox 121"
    assert own.texts["session-system"] == "Windows"
    assert laptop_entry.texts["session-browser"] == "Chrome 120"
    assert laptop_entry.texts["session-system"] == "Mac OS X"
    assert phone_entry.texts["session-browser"] == "Mobile Safari 17"
    assert phone_entry.texts["session-system"] == "iOS"
    assert {entry.texts["session-address"] for entry in found} == {"203.0.113.9"}
    for entry, sid in zip(found, [sid_of(phone), sid_of(client), sid_of(laptop)], strict=True):
        signed, seen = moments[sid]
        assert datetime.fromisoformat(entry.times["session-signed-in"]) == signed
        assert datetime.fromisoformat(entry.times["session-last-active"]) == seen
    # Each other session has a button that ends it by its public handle; this one has none.
    assert own.delete_url is None
    assert phone_entry.delete_url == f"/sessions/{phone_entry.handle}"
    assert laptop_entry.delete_url == f"/sessions/{laptop_entry.handle}"
    assert 'action="/sessions/revoke-others"' in response.text
    assert 'hx-post="/sessions/revoke-others"' in response.text
    # The sid (what the JWT names) never appears in a page.
    for sid in [*moments, *gone_sids, sid_of(bob)]:
        assert sid not in response.text
    assert handle_of(app, bob) not in response.text


def test_the_page_does_not_write_the_last_active_time(client, alice, app):
    set_session(app, sid_of(client), last_seen_at=datetime(2026, 11, 30, 8, 0, tzinfo=UTC))
    for _ in range(3):
        assert client.get("/sessions").status_code == 200
    [own] = listed(client.get("/sessions").text)
    assert own.times["session-last-active"] == "2026-11-30T08:00:00+00:00"


def test_last_active_moves_when_the_token_is_renewed(client, alice, app):
    old = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    set_session(app, sid_of(client), last_seen_at=old)
    claims = jwt.decode(client.cookies["access_token"], options={"verify_signature": False})
    aged = app.state.services.tokens.issue(
        user_id=int(claims["sub"]), session_id=claims["sid"], now=int(time.time()) - 11 * 60
    )
    client.cookies.set("access_token", aged)
    [own] = listed(client.get("/sessions").text)
    assert datetime.fromisoformat(own.times["session-last-active"]) > old


def test_htmx_gets_the_list_alone(client, alice):
    response = client.get("/sessions", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="sessions"')
    assert "<html" not in response.text
    assert "HX-Request" in response.headers["vary"]
    assert len(listed(response.text)) == 1


def test_signed_out_the_page_redirects_to_sign_in_and_htmx_gets_401(client):
    page = client.get("/sessions")
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/sessions"
    response = client.get(
        "/sessions", headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/"}
    )
    assert response.status_code == 401
    assert response.headers["hx-redirect"] == "/login?next=/"


def test_signed_out_the_actions_are_401_whatever_the_token(client, app):
    token = csrf_token(client)
    assert client.delete("/sessions/abc", headers=htmx(token)).status_code == 401
    assert client.post("/sessions/revoke-others", headers=htmx(token)).status_code == 401


# -- DELETE /sessions/{id} ----------------------------------------------------------------


def test_ending_another_session_refuses_its_token_from_then_on(client, alice, app):
    laptop = browser(app, CHROME_MAC)
    assert login(laptop, remember="on").status_code == 303
    laptop_handle = handle_of(app, laptop)
    stolen = laptop.cookies["access_token"]
    remember = laptop.cookies["remember_token"]
    laptop_token = csrf_token(laptop)

    response = client.delete(f"/sessions/{laptop_handle}", headers=htmx(alice))
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="sessions"')
    assert [entry.handle for entry in listed(response.text)] == [handle_of(app, client)]
    assert 'hx-swap-oob="innerHTML"' in response.text
    assert "Signed out the session on Chrome 120 on Mac OS X." in response.text
    assert "HX-Request" in response.headers["vary"]
    assert response.headers["cache-control"] == "no-store"

    # The laptop is signed out: its token and its remember token are refused.
    assert signed_in_as(laptop) is None
    assert laptop.get("/sessions").status_code == 303
    replay = new_client(app)
    replay.cookies.set("access_token", stolen)
    assert patch_profile(
        replay, "alice", csrf_token(replay), email="x@example.com"
    ).status_code == (401)
    resumed = new_client(app)
    resumed.cookies.set("remember_token", remember)
    assert signed_in_as(resumed) is None
    assert patch_profile(laptop, "alice", laptop_token, email="x@example.com").status_code == 401
    # This browser goes on; the event names the ended session, written with it.
    assert signed_in_as(client) == "alice"
    assert events(app, "session_revoked") == [
        ("session_revoked", "Chrome 120 on Mac OS X, testclient")
    ]
    assert rows(app, "SELECT email FROM users WHERE username = 'alice'") == [("alice@example.com",)]


def test_ending_another_session_without_htmx_answers_the_fragment_too(client, alice, app):
    laptop = browser(app, CHROME_MAC)
    assert login(laptop).status_code == 303
    response = client.delete(f"/sessions/{handle_of(app, laptop)}", headers={"X-CSRF-Token": alice})
    assert response.status_code == 200
    assert len(listed(response.text)) == 1
    assert signed_in_as(laptop) is None


@pytest.mark.parametrize("htmx_request", [True, False])
def test_an_id_that_is_not_one_of_your_live_sessions_is_404_and_changes_nothing(
    client, alice, app, htmx_request
):
    laptop = browser(app, CHROME_MAC)
    assert login(laptop).status_code == 303
    bob = new_client(app)
    signed_in(bob, "bob")
    ended = browser(app, CHROME_MAC)
    assert login(ended).status_code == 303
    ended_handle = handle_of(app, ended)
    ended.post("/logout", data={"csrf_token": csrf_token(ended)})
    before = live_handles(app)
    events_before = events(app)
    headers = htmx(alice) if htmx_request else {"X-CSRF-Token": alice}
    for wrong in [
        handle_of(app, bob),  # another user's session
        "AAAAAAAAAAAAAAAA",  # nobody's
        ended_handle,  # signed out already
        sid_of(laptop),  # a sid is never an id
        "revoke-others",
        "x" * 33,
        "%00",
        "%2e%2e",
        "a%20b",
    ]:
        response = client.delete(f"/sessions/{wrong}", headers=headers)
        assert response.status_code == 404, wrong
        if htmx_request:
            # The list as it is now, with the message in #flash.
            assert len(listed(response.text)) == 2
            assert "That session has already ended, or it is not one of yours." in response.text
        else:
            assert "<html" in response.text
    assert live_handles(app) == before
    assert events(app) == events_before
    assert signed_in_as(bob) == "bob"
    assert signed_in_as(laptop) == "alice"


def test_ending_your_own_session_is_signing_out(client, app):
    client.headers["user-agent"] = FIREFOX_WINDOWS
    register(client)
    assert login(client, remember="on").status_code == 303
    token = csrf_token(client)
    laptop = browser(app, CHROME_MAC)
    assert login(laptop).status_code == 303
    own = handle_of(app, client)
    stolen = client.cookies["access_token"]

    response = client.delete(f"/sessions/{own}", headers=htmx(token))
    assert response.status_code == 200
    assert response.headers["hx-redirect"] == "/"
    cleared = [value for name, value in response.headers.multi_items() if name == "set-cookie"]
    for name in ("access_token", "remember_token"):
        [cookie] = [value for value in cleared if value.startswith(f"{name}=")]
        assert "Max-Age=0" in cookie
        assert "Path=/" in cookie
    assert signed_in_as(client) is None
    replay = new_client(app)
    replay.cookies.set("access_token", stolen)
    assert signed_in_as(replay) is None
    assert own not in live_handles(app)
    # Like logout: recorded as a sign-out, and only this session ended.
    assert [kind for kind, _ in events(app) if kind != "signin"] == ["signout"]
    assert signed_in_as(laptop) == "alice"


def test_ending_your_own_session_without_htmx_is_303_home(client, alice, app):
    response = client.delete(f"/sessions/{handle_of(app, client)}", headers={"X-CSRF-Token": alice})
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    home = client.get("/")
    assert "You are signed out." in home.text
    assert "Welcome, alice" not in home.text


def test_ending_a_session_needs_the_csrf_token(client, alice, app):
    laptop = browser(app, CHROME_MAC)
    assert login(laptop).status_code == 303
    handle = handle_of(app, laptop)
    assert client.delete(f"/sessions/{handle}", headers={"HX-Request": "true"}).status_code == 403
    # A token of another browser (the laptop's own) is refused too.
    stranger = client.delete(f"/sessions/{handle}", headers=htmx(csrf_token(laptop)))
    assert stranger.status_code == 403
    assert signed_in_as(laptop) == "alice"
    assert events(app, "session_revoked") == []


def test_thirty_deletes_of_one_session_at_once_end_it_once(client, alice, app):
    laptop = browser(app, CHROME_MAC)
    assert login(laptop).status_code == 303
    handle = handle_of(app, laptop)
    statuses = at_once(
        30, lambda _: client.delete(f"/sessions/{handle}", headers=htmx(alice)).status_code
    )
    assert statuses.count(200) == 1
    assert statuses.count(404) == 29
    assert len(events(app, "session_revoked")) == 1
    assert rows(
        app,
        "SELECT count(*) FROM user_sessions WHERE public_id = :h AND revoked_at IS NOT NULL",
        h=handle,
    ) == [(1,)]


def test_after_a_new_password_this_session_is_still_listed_once_as_current(client, alice, app):
    laptop = browser(app, CHROME_MAC)
    assert login(laptop).status_code == 303
    handle = handle_of(app, client)
    response = patch_profile(
        client,
        "alice",
        alice,
        password="a brand new password",
        confirm_password="a brand new password",
        current_password=PASSWORD,
    )
    assert response.status_code == 200
    # A new sid, the same public handle; the laptop's session ended with the old password.
    [own] = listed(client.get("/sessions").text)
    assert own.handle == handle
    assert own.current
    response = client.delete(f"/sessions/{handle_of(app, laptop)}", headers=htmx(alice))
    assert response.status_code == 404


# -- POST /sessions/revoke-others ---------------------------------------------------------


def test_sign_out_everywhere_else_leaves_only_this_session(client, alice, app):
    others = [browser(app, agent) for agent in (CHROME_MAC, SAFARI_IPHONE, CHROME_MAC)]
    for other in others:
        assert login(other).status_code == 303
    login(others[2], remember="on")  # the third signs in again, remembered (the first ends)
    bob = new_client(app)
    signed_in(bob, "bob")
    remember = others[2].cookies["remember_token"]

    response = client.post("/sessions/revoke-others", headers=htmx(alice))
    assert response.status_code == 200
    found = listed(response.text)
    assert [(entry.handle, entry.current) for entry in found] == [(handle_of(app, client), True)]
    assert "Signed out 3 other sessions." in response.text
    assert "HX-Request" in response.headers["vary"]
    for other in others:
        assert signed_in_as(other) is None
    resumed = new_client(app)
    resumed.cookies.set("remember_token", remember)
    assert signed_in_as(resumed) is None
    assert signed_in_as(client) == "alice"
    assert signed_in_as(bob) == "bob"
    assert events(app, "session_revoked") == [("session_revoked", "3 other sessions")]


def test_sign_out_everywhere_else_without_htmx_is_303_to_the_page(client, alice, app):
    laptop = browser(app, CHROME_MAC)
    assert login(laptop).status_code == 303
    response = client.post("/sessions/revoke-others", data={"csrf_token": alice})
    assert response.status_code == 303
    assert response.headers["location"] == "/sessions"
    page = client.get("/sessions")
    assert "Signed out 1 other session." in page.text
    assert len(listed(page.text)) == 1
    assert signed_in_as(laptop) is None
    assert events(app, "session_revoked") == [("session_revoked", "1 other session")]


def test_sign_out_everywhere_else_with_no_others_writes_nothing(client, alice, app):
    response = client.post("/sessions/revoke-others", headers=htmx(alice))
    assert response.status_code == 200
    assert "There were no other sessions to sign out." in response.text
    assert events(app, "session_revoked") == []
    assert signed_in_as(client) == "alice"


def test_thirty_sign_outs_everywhere_else_at_once_write_one_event(client, alice, app):
    for _ in range(3):
        assert login(browser(app, CHROME_MAC)).status_code == 303
    statuses = at_once(
        30, lambda _: client.post("/sessions/revoke-others", headers=htmx(alice)).status_code
    )
    assert set(statuses) == {200}
    assert events(app, "session_revoked") == [("session_revoked", "3 other sessions")]
    assert live_handles(app) == {handle_of(app, client)}


def test_sign_out_everywhere_else_needs_the_csrf_token(client, alice, app):
    laptop = browser(app, CHROME_MAC)
    assert login(laptop).status_code == 303
    assert client.post("/sessions/revoke-others", headers={"HX-Request": "true"}).status_code == 403
    assert signed_in_as(laptop) == "alice"


def test_other_methods_are_405(client, alice, app):
    assert client.post("/sessions", headers=htmx(alice)).status_code == 405
    assert client.get("/sessions/revoke-others").status_code == 405
    handle = handle_of(app, client)
    assert client.post(f"/sessions/{handle}", headers=htmx(alice)).status_code == 405
    assert signed_in_as(client) == "alice"


# -- the operator: python -m webapp sessions ----------------------------------------------


@pytest.fixture
def operator(settings, monkeypatch):
    """Runs `python -m webapp …` in this process, against the test database."""
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BCRYPT_ROUNDS", "4")
    monkeypatch.setenv("MAIL_URL", "console:")
    return main


def test_the_operator_lists_a_users_live_sessions(client, alice, app, operator, capsys):
    laptop = browser(app, CHROME_MAC)
    assert login(laptop).status_code == 303
    ended = browser(app, CHROME_MAC)
    assert login(ended).status_code == 303
    ended_handle = handle_of(app, ended)
    ended.post("/logout", data={"csrf_token": csrf_token(ended)})
    set_session(
        app,
        sid_of(client),
        created_at=datetime(2026, 11, 30, 8, 0, 1, tzinfo=UTC),
        last_seen_at=datetime(2026, 11, 30, 9, 15, 2, tzinfo=UTC),
    )

    assert operator(["sessions", "list", "ALICE"]) == 0
    out = capsys.readouterr().out
    header, *lines = out.splitlines()
    for column in ("PUBLIC ID", "BROWSER", "ADDRESS", "SIGNED IN (UTC)", "LAST ACTIVE (UTC)"):
        assert column in header
    assert len(lines) == 2
    [own] = [line for line in lines if line.startswith(handle_of(app, client))]
    assert "Firefox 121 on Windows" in own
    assert "testclient" in own
    assert "2026-11-30 08:00:01" in own
    assert "2026-11-30 09:15:02" in own
    assert any(line.startswith(handle_of(app, laptop)) for line in lines)
    assert ended_handle not in out
    assert sid_of(client) not in out


def test_the_operator_ends_every_session_of_a_user(client, alice, app, operator, capsys):
    laptop = browser(app, CHROME_MAC)
    assert login(laptop).status_code == 303
    bob = new_client(app)
    signed_in(bob, "bob")
    assert operator(["sessions", "revoke-all", "alice"]) == 0
    assert capsys.readouterr().out.strip() == "ended 2 sessions of alice"
    assert signed_in_as(client) is None
    assert signed_in_as(laptop) is None
    assert signed_in_as(bob) == "bob"
    assert events(app, "session_revoked") == [("session_revoked", "by an operator")]
    assert operator(["sessions", "list", "alice"]) == 0
    assert capsys.readouterr().out.strip() == "alice has no live sessions"


@pytest.mark.parametrize("command", ["list", "revoke-all"])
def test_the_operator_is_told_of_an_unknown_user(client, alice, app, operator, capsys, command):
    assert operator(["sessions", command, "nobody"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == "webapp: there is no user named 'nobody'"
    assert captured.out == ""
    assert signed_in_as(client) == "alice"
