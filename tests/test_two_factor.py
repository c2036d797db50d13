"""Two-factor sign-in with an authenticator app (TOTP) and recovery codes, over HTTP.

Codes are computed with pyotp from the secret the set-up shows in #totp-secret. The
app's TOTP clock is pinned (`Clock`) to a moment taken from time.time(), so no test
depends on where in a 30-second step the wall clock happens to be.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import httpx
import pyotp
import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.helpers import (
    PASSWORD,
    at_once,
    csrf_token,
    csrf_token_in,
    login,
    make_settings,
    new_client,
    rows,
    signed_in,
)
from webapp.app import create_app
from webapp.domain import passwords
from webapp.domain.outbox import link_token
from webapp.models import utcnow

HTMX = {"HX-Request": "true"}
SECRET_IN_PAGE = re.compile(r'<code id="totp-secret">([A-Z2-7]+)</code>')
CHALLENGE_IN_FORM = re.compile(r'name="challenge" value="([^"]+)"')
RECOVERY_CODE = re.compile(r"<li><code>([A-Z2-7]{5}-[A-Z2-7]{5})</code></li>")
NEW_PASSWORD = "a fresh and long passphrase 42"


class Clock:
    """The app's TOTP clock, pinned to the middle of the current 30-second step."""

    def __init__(self) -> None:
        self.now = float(int(time.time()) // 30 * 30 + 15)

    def __call__(self) -> float:
        return self.now

    def advance(self, steps: int = 1) -> None:
        self.now += steps * 30

    def code(self, secret: str, steps: int = 0) -> str:
        """The code of the step `steps` away from now."""
        return pyotp.TOTP(secret).at(self.now + steps * 30)

    def wrong_code(self, secret: str) -> str:
        """A code that no step in the drift window has."""
        good = {self.code(secret, steps) for steps in (-1, 0, 1)}
        return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in good)


@pytest.fixture
def clock(app: Starlette) -> Clock:
    pinned = Clock()
    app.state.services.twofactor.clock = pinned
    return pinned


def _user_id(app: Starlette, username: str = "alice") -> int:
    return int(rows(app, "SELECT id FROM users WHERE username = :u", u=username)[0][0])


def _events(app: Starlette, kind: str) -> int:
    return len(rows(app, "SELECT id FROM security_events WHERE kind = :k", k=kind))


def _notices(app: Starlette, kind: str) -> int:
    return len(rows(app, "SELECT id FROM outbox WHERE kind = :k", k=kind))


def _execute(app: Starlette, sql: str, **params: object) -> None:
    with app.state.services.db.engine.begin() as connection:
        connection.execute(text(sql), params)


def begin_setup(client: TestClient, token: str) -> str:
    response = client.post("/security/totp", headers={**HTMX, "X-CSRF-Token": token})
    assert response.status_code == 200, response.text
    match = SECRET_IN_PAGE.search(response.text)
    assert match, response.text
    return match.group(1)


def confirm(client: TestClient, token: str, code: str):
    return client.post(
        "/security/totp/confirm", data={"code": code}, headers={**HTMX, "X-CSRF-Token": token}
    )


def enable(client: TestClient, token: str, clock: Clock) -> tuple[str, list[str]]:
    """Set up and confirm; the secret and the recovery codes shown."""
    secret = begin_setup(client, token)
    response = confirm(client, token, clock.code(secret))
    assert response.status_code == 200, response.text
    codes = RECOVERY_CODE.findall(response.text)
    assert len(codes) == 10
    return secret, codes


def sign_out(client: TestClient) -> None:
    assert client.post("/logout", data={"csrf_token": csrf_token(client)}).status_code == 303


def first_step(client: TestClient, **fields: str) -> str:
    """POST /login with the right password: the challenge of the code form."""
    response = login(client, "alice", PASSWORD, **fields)
    assert response.status_code == 200, response.text
    match = CHALLENGE_IN_FORM.search(response.text)
    assert match, response.text
    return match.group(1)


def second_step(client: TestClient, challenge: str, code: str, **headers: str):
    token = csrf_token_in(client.get("/login").text)
    return client.post(
        "/login/two-factor",
        data={"challenge": challenge, "code": code, "csrf_token": token, "next": "/"},
        headers=headers,
    )


@pytest.fixture
def alice(client: TestClient, clock: Clock) -> tuple[str, list[str]]:
    """alice with two-factor sign-in on, signed out; her secret and recovery codes."""
    token = signed_in(client)
    secret, codes = enable(client, token, clock)
    sign_out(client)
    # The confirming code's step is spent: sign-ins use later ones.
    clock.advance(2)
    return secret, codes


# -- setting up -------------------------------------------------------------------------


def test_setting_up_needs_recent_authentication(client, app, clock):
    token = signed_in(client)
    _execute(
        app,
        "UPDATE user_sessions SET authenticated_at = :t",
        t=utcnow() - timedelta(minutes=11),
    )
    response = client.post("/security/totp", headers={**HTMX, "X-CSRF-Token": token})
    assert response.status_code == 403
    assert response.headers["HX-Redirect"].startswith("/reauth?next=")
    response = client.post("/security/totp", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["location"].startswith("/reauth?next=")
    assert rows(app, "SELECT id FROM two_factor") == []
    # Without a session at all: 401.
    assert new_client(app).post("/security/totp").status_code in (401, 403)


def test_setup_shows_a_qr_code_and_the_secret_and_turns_nothing_on(client, app, clock):
    token = signed_in(client)
    response = client.post("/security/totp", headers={**HTMX, "X-CSRF-Token": token})
    assert response.status_code == 200
    for marker in ('id="totp-setup"', 'id="totp-secret"', 'id="totp-confirm-form"', 'name="code"'):
        assert marker in response.text
    assert 'src="/security/totp/qr.svg"' in response.text
    secret = SECRET_IN_PAGE.search(response.text).group(1)  # type: ignore[union-attr]
    assert len(secret) == 32
    qr = client.get("/security/totp/qr.svg")
    assert qr.status_code == 200
    assert qr.headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in qr.text
    assert qr.headers["cache-control"] == "no-store"
    # Kept server-side, encrypted: never the secret itself.
    [(pending, enabled)] = rows(app, "SELECT pending_secret, secret FROM two_factor")
    assert pending.startswith("v1:")
    assert secret not in pending
    assert enabled is None
    page = client.get("/security")
    assert page.status_code == 200
    assert 'id="security"' in page.text
    assert 'data-totp="off"' in page.text
    # Still off: the password alone signs in.
    sign_out(client)
    assert login(client).status_code == 303


def test_a_wrong_code_does_not_turn_it_on_and_a_right_one_does(client, app, clock):
    token = signed_in(client)
    secret = begin_setup(client, token)
    wrong = confirm(client, token, clock.wrong_code(secret))
    assert wrong.status_code == 422
    assert 'id="totp-setup"' in wrong.text
    assert 'aria-invalid="true"' in wrong.text
    assert rows(app, "SELECT secret FROM two_factor") == [(None,)]
    right = confirm(client, token, clock.code(secret))
    assert right.status_code == 200
    assert 'id="recovery-codes"' in right.text
    codes = RECOVERY_CODE.findall(right.text)
    assert len(set(codes)) == 10
    [(stored, pending)] = rows(app, "SELECT secret, pending_secret FROM two_factor")
    assert stored.startswith("v1:")
    assert secret not in stored
    assert pending is None
    # Only hashes are kept, and the codes are never shown again.
    hashes = [row[0] for row in rows(app, "SELECT code_hash FROM recovery_codes")]
    assert len(hashes) == 10
    assert not set(hashes) & set(codes)
    page = client.get("/security")
    assert 'data-totp="on"' in page.text
    assert '<strong id="recovery-codes-left">10</strong>' in page.text
    assert not RECOVERY_CODE.search(page.text)
    assert _events(app, "totp_enabled") == 1
    assert _notices(app, "totp_enabled") == 1


# -- signing in ---------------------------------------------------------------------------


def test_sign_in_asks_for_a_code_and_sets_no_cookie(client, app, alice, clock):
    response = login(client)
    assert response.status_code == 200
    assert 'id="two-factor-form"' in response.text
    assert 'name="code"' in response.text
    assert "access_token" not in response.headers.get("set-cookie", "")
    assert "access_token" not in client.cookies
    # Not signed in: the page still offers to sign in.
    assert 'href="/login"' in client.get("/").text
    # For htmx, the code form alone replaces the sign-in form.
    token = csrf_token(client, "/login")
    fragment = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
        headers=HTMX,
    )
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<form id="two-factor-form"')


def test_a_good_code_signs_in_and_remember_carries_over(client, app, alice, clock):
    secret, _codes = alice
    challenge = first_step(client, remember="on")
    response = second_step(client, challenge, clock.code(secret))
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert "access_token" in client.cookies
    assert "remember_token" in client.cookies
    assert 'id="profile"' in client.get("/").text
    assert _events(app, "signin") == 2  # the set-up's sign-in and this one
    # The challenge is spent.
    assert rows(app, "SELECT id FROM signin_challenges") == []


def test_a_code_is_accepted_once(client, app, alice, clock):
    secret, _codes = alice
    code = clock.code(secret)
    assert second_step(client, first_step(client), code).status_code == 303
    sign_out(client)
    again = second_step(client, first_step(client), code)
    assert again.status_code == 401
    assert 'id="two-factor-form"' in again.text
    assert "access_token" not in client.cookies
    # The next step's code is new, so it works.
    clock.advance()
    assert second_step(client, first_step(client), clock.code(secret)).status_code == 303


def test_one_step_of_drift_is_accepted_and_two_are_not(client, app, alice, clock):
    secret, _codes = alice
    challenge = first_step(client)
    assert second_step(client, challenge, clock.code(secret, -2)).status_code == 401
    assert second_step(client, challenge, clock.code(secret, 2)).status_code == 401
    assert second_step(client, challenge, clock.code(secret, -1)).status_code == 303
    sign_out(client)
    clock.advance(2)
    assert second_step(client, first_step(client), clock.code(secret, 1)).status_code == 303


def test_five_wrong_codes_end_the_second_step(client, app, alice, clock):
    secret, _codes = alice
    challenge = first_step(client)
    wrong = clock.wrong_code(secret)
    statuses = [second_step(client, challenge, wrong).status_code for _ in range(5)]
    assert statuses == [401] * 5
    last = second_step(client, challenge, clock.code(secret))
    assert last.status_code == 401
    assert 'id="login-form"' in last.text
    assert "access_token" not in client.cookies
    assert _events(app, "signin_failed") == 5


def test_an_expired_second_step_starts_again(client, app, alice, clock):
    secret, _codes = alice
    challenge = first_step(client)
    _execute(app, "UPDATE signin_challenges SET expires_at = :t", t=utcnow() - timedelta(seconds=1))
    response = second_step(client, challenge, clock.code(secret))
    assert response.status_code == 401
    assert 'id="login-form"' in response.text


def test_the_second_step_belongs_to_its_browser(client, app, alice, clock):
    secret, _codes = alice
    challenge = first_step(client)
    other = new_client(app)
    response = second_step(other, challenge, clock.code(secret))
    assert response.status_code == 401
    assert "access_token" not in other.cookies
    # It still works where it started.
    assert second_step(client, challenge, clock.code(secret)).status_code == 303


def test_turned_on_while_a_password_is_checked_it_still_asks_for_a_code(
    client, app, clock, monkeypatch
):
    """The sign-in looks at two-factor again in the transaction that opens the session."""
    token = signed_in(client)
    secret = begin_setup(client, token)
    checked, turned_on = threading.Event(), threading.Event()
    real = passwords.verify_password_sync

    def slow(password: str, *, password_hash: str) -> bool:
        result = real(password, password_hash=password_hash)
        if not checked.is_set():
            checked.set()
            assert turned_on.wait(10)
        return result

    other = new_client(app)
    other_token = csrf_token(other, "/login")
    outcome: dict[str, object] = {}

    def sign_in() -> None:
        outcome["response"] = other.post(
            "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": other_token}
        )

    monkeypatch.setattr(passwords, "verify_password_sync", slow)
    thread = threading.Thread(target=sign_in)
    thread.start()
    assert checked.wait(10)
    assert confirm(client, token, clock.code(secret)).status_code == 200
    turned_on.set()
    thread.join(10)
    response = outcome["response"]
    assert isinstance(response, httpx.Response)
    assert response.status_code == 200
    assert 'id="two-factor-form"' in response.text
    assert "access_token" not in other.cookies
    # The right password's attempt was released, as when two-factor was on from the start.
    user_key = f"user:{_user_id(app)}"
    assert rows(app, "SELECT id FROM signin_failures WHERE key = :k", k=user_key) == []
    assert len(rows(app, "SELECT id FROM user_sessions")) == 1


def test_parallel_wrong_codes_evaluate_at_most_ten(app, alice, clock):
    secret, _codes = alice
    # Six browsers past the password, five wrong codes each, all thirty at once.
    browsers = [new_client(app) for _ in range(6)]
    challenges = [first_step(browser) for browser in browsers]
    tokens = [csrf_token_in(browser.get("/login").text) for browser in browsers]
    wrong = clock.wrong_code(secret)

    def attempt(index: int) -> int:
        browser = browsers[index // 5]
        response = browser.post(
            "/login/two-factor",
            data={
                "challenge": challenges[index // 5],
                "code": wrong,
                "csrf_token": tokens[index // 5],
            },
        )
        return int(response.status_code)

    statuses = at_once(30, attempt)
    assert set(statuses) <= {401, 429}
    assert statuses.count(401) == 10
    assert statuses.count(429) == 20
    user_key = f"user:{_user_id(app)}"
    assert len(rows(app, "SELECT id FROM signin_failures WHERE key = :k", k=user_key)) == 10
    # The allowance is used up: the password is throttled too, and so is a good code.
    assert login(new_client(app)).status_code == 429
    throttled = second_step(browsers[5], challenges[5], clock.code(secret))
    assert throttled.status_code in (401, 429)
    assert "access_token" not in browsers[5].cookies


# -- recovery codes -------------------------------------------------------------------------


def test_a_recovery_code_works_once(client, app, alice, clock):
    _secret, codes = alice
    # Typed in lower case, without the dash: still the code.
    typed = codes[0].lower().replace("-", " ")
    assert second_step(client, first_step(client), typed).status_code == 303
    assert _events(app, "recovery_code_used") == 1
    assert _notices(app, "recovery_code_used") == 1
    assert '<strong id="recovery-codes-left">9</strong>' in client.get("/security").text
    sign_out(client)
    challenge = first_step(client)
    assert second_step(client, challenge, codes[0]).status_code == 401
    # The same second step goes on: another unused code still works.
    assert second_step(client, challenge, codes[1]).status_code == 303


def test_new_recovery_codes_replace_the_old_ones(client, app, alice, clock):
    _secret, old = alice
    second_step(client, first_step(client), old[0])
    token = csrf_token(client, "/security")
    response = client.post("/security/recovery-codes", headers={**HTMX, "X-CSRF-Token": token})
    assert response.status_code == 200
    new = RECOVERY_CODE.findall(response.text)
    assert len(new) == 10
    assert not set(new) & set(old)
    assert _events(app, "recovery_codes_renewed") == 1
    assert _notices(app, "recovery_codes_renewed") == 1
    sign_out(client)
    assert second_step(client, first_step(client), old[1]).status_code == 401
    assert second_step(client, first_step(client), new[0]).status_code == 303


# -- turning off, and what does not turn it off ---------------------------------------------------


def test_turning_it_off_removes_the_codes(client, app, alice, clock):
    secret, _codes = alice
    second_step(client, first_step(client), clock.code(secret))
    token = csrf_token(client, "/security")
    response = client.delete("/security/totp", headers={**HTMX, "X-CSRF-Token": token})
    assert response.status_code == 200
    assert 'data-totp="off"' in response.text
    assert rows(app, "SELECT id FROM two_factor") == []
    assert rows(app, "SELECT id FROM recovery_codes") == []
    assert _events(app, "totp_disabled") == 1
    assert _notices(app, "totp_disabled") == 1
    sign_out(client)
    assert login(client).status_code == 303


def test_turning_it_off_needs_recent_authentication(client, app, alice, clock):
    secret, _codes = alice
    second_step(client, first_step(client), clock.code(secret))
    _execute(
        app, "UPDATE user_sessions SET authenticated_at = :t", t=utcnow() - timedelta(minutes=11)
    )
    token = csrf_token(client, "/security")
    response = client.delete("/security/totp", headers={**HTMX, "X-CSRF-Token": token})
    assert response.status_code == 403
    assert len(rows(app, "SELECT id FROM two_factor WHERE secret IS NOT NULL")) == 1


def test_a_password_reset_leaves_two_factor_on(client, app, alice, clock):
    token = csrf_token(client, "/password-reset")
    response = client.post(
        "/password-reset", data={"email": "alice@example.com", "csrf_token": token}
    )
    assert response.status_code == 200
    [(nonce,)] = rows(app, "SELECT token_nonce FROM outbox WHERE kind = 'reset_password'")
    link = link_token(app.state.services.mailer.token_key, nonce)
    page = client.get(f"/password-reset/{link}")
    assert page.status_code == 200
    reset = client.post(
        f"/password-reset/{link}",
        data={
            "password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
            "csrf_token": csrf_token_in(page.text),
        },
    )
    assert reset.status_code == 303
    response = login(client, "alice", NEW_PASSWORD)
    assert response.status_code == 200
    assert 'id="two-factor-form"' in response.text
    assert "access_token" not in client.cookies


def test_the_security_page_needs_a_session(client, app):
    response = client.get("/security")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/security"
    assert client.get("/security/totp/qr.svg").status_code == 303


def test_an_empty_code_is_422_and_not_counted(client, app, alice, clock):
    challenge = first_step(client)
    response = second_step(client, challenge, "  ")
    assert response.status_code == 422
    assert 'id="two-factor-form"' in response.text
    assert rows(app, "SELECT id FROM signin_failures WHERE key LIKE 'user:%'") == []


def test_events_name_no_code(client, app, alice, clock):
    secret, codes = alice
    challenge = first_step(client)
    wrong = clock.wrong_code(secret)
    second_step(client, challenge, wrong)
    second_step(client, challenge, codes[0])
    details = " ".join(row[0] for row in rows(app, "SELECT detail FROM security_events"))
    assert wrong not in details
    assert codes[0] not in details
    assert secret not in details
    kinds = {row[0] for row in rows(app, "SELECT kind FROM security_events")}
    assert {"totp_enabled", "signin_failed", "recovery_code_used", "signin"} <= kinds


def test_a_new_secret_key_leaves_recovery_codes_working(client, app, alice, clock, database_url):
    secret, codes = alice
    other = create_app(make_settings(database_url, secret_key="another-" + "k" * 40))
    other.state.services.twofactor.clock = clock
    try:
        browser = new_client(other)
        challenge = first_step(browser)
        # The authenticator's secret no longer decrypts: its codes are wrong, not a 500.
        assert second_step(browser, challenge, clock.code(secret)).status_code == 401
        assert second_step(browser, challenge, codes[0]).status_code == 303
    finally:
        other.state.services.db.dispose()


@pytest.mark.parametrize("kind", ["totp", "recovery"])
def test_one_code_sent_at_once_from_many_browsers_signs_in_once(app, alice, clock, kind):
    secret, codes = alice
    code = clock.code(secret) if kind == "totp" else codes[0]
    browsers = [new_client(app) for _ in range(5)]
    challenges = [first_step(browser) for browser in browsers]
    tokens = [csrf_token_in(browser.get("/login").text) for browser in browsers]

    def attempt(index: int) -> int:
        response = browsers[index].post(
            "/login/two-factor",
            data={"challenge": challenges[index], "code": code, "csrf_token": tokens[index]},
        )
        return int(response.status_code)

    statuses = at_once(5, attempt)
    assert sorted(statuses) == [303, 401, 401, 401, 401]


def test_an_operator_can_turn_it_off_for_a_locked_out_user(
    app, alice, settings, monkeypatch, capsys
):
    from webapp.__main__ import main

    environment = {
        "APP_ENV": "test",
        "SECRET_KEY": settings.secret_key,
        "DATABASE_URL": settings.database_url,
        "AUTO_MIGRATE": "false",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(["disable-two-factor", "alice"]) == 2  # not without --yes
    assert rows(app, "SELECT count(*) FROM two_factor WHERE secret IS NOT NULL") == [(1,)]
    assert main(["disable-two-factor", "nobody", "--yes"]) == 1
    assert main(["disable-two-factor", "ALICE", "--yes"]) == 0
    assert "turned two-factor sign-in off for alice" in capsys.readouterr().out
    assert rows(app, "SELECT count(*) FROM two_factor") == [(0,)]
    assert rows(app, "SELECT count(*) FROM recovery_codes") == [(0,)]
    assert _events(app, "totp_disabled") == 1
    assert _notices(app, "totp_disabled") == 1
    [(address,)] = rows(app, "SELECT client_addr FROM security_events WHERE kind = 'totp_disabled'")
    assert address == "operator"
    # The password alone signs in again.
    assert login(new_client(app)).status_code == 303
