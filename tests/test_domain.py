"""The domain without HTTP: accounts, sessions and the throttle called directly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.helpers import PASSWORD, TABLES, make_settings
from webapp.app import build_services
from webapp.domain.errors import InvalidInput, SigninFailed, Taken, Throttled
from webapp.domain.throttle import account_key
from webapp.domain.validation import ProfileChanges, Registration, Signin
from webapp.models import Account, Client
from webapp.settings import Settings

CLIENT = Client(address="192.0.2.1", user_agent="pytest")


class Domain:
    def __init__(self, settings: Settings) -> None:
        # The same services the app builds, used without any HTTP.
        services = build_services(settings)
        self.db = services.db
        self.throttle = services.accounts.throttle
        self.accounts = services.accounts
        self.sessions = services.sessions

    def register(self, name: str = "alice") -> Account:
        registration = Registration(name, f"{name}@example.com", PASSWORD)
        return asyncio.run(self.accounts.register(registration))

    def sign_in(self, name: str = "alice", password: str = PASSWORD):
        return asyncio.run(self.sessions.sign_in(Signin(name, password), CLIENT))


@pytest.fixture
def domain(database_url: str) -> Iterator[Domain]:
    found = Domain(make_settings(database_url))
    yield found
    with found.db.engine.begin() as connection:
        for table in TABLES:
            connection.execute(text(f"DELETE FROM {table}"))
    found.db.dispose()


def test_register_then_sign_in_opens_a_live_session(domain):
    account = domain.register()
    opened = domain.sign_in("ALICE")
    assert opened.account == account
    live = asyncio.run(domain.sessions.load(session_id=opened.session_id, user_id=account.id))
    assert live is not None
    assert live.account == account
    assert live.expires_at == opened.expires_at


def test_a_taken_name_is_refused_whatever_its_case(domain):
    domain.register("alice")
    with pytest.raises(Taken) as error:
        domain.register("Alice")
    assert set(error.value.errors) == {"username", "email"}


def test_a_wrong_password_and_an_unknown_name_fail_alike(domain):
    domain.register()
    with pytest.raises(SigninFailed):
        domain.sign_in("alice", "wrong password")
    with pytest.raises(SigninFailed):
        domain.sign_in("nobody", PASSWORD)


def test_the_throttle_refuses_after_ten_failures(domain):
    account = domain.register()
    for _ in range(10):
        with pytest.raises(SigninFailed):
            domain.sign_in("alice", "wrong password")
    with pytest.raises(Throttled) as error:
        domain.sign_in("alice", PASSWORD)
    assert error.value.action == "signin"
    assert 0 < error.value.retry_after <= 15 * 60
    limits = domain.throttle.signin_limits(account_key(account.id, "alice"), CLIENT)
    with pytest.raises(Throttled):
        asyncio.run(domain.throttle.reserve(limits, action="password"))


def test_sign_out_ends_the_session(domain):
    account = domain.register()
    opened = domain.sign_in()
    asyncio.run(domain.sessions.sign_out(opened.session_id))
    assert (
        asyncio.run(domain.sessions.load(session_id=opened.session_id, user_id=account.id)) is None
    )


def test_a_new_password_ends_every_session_and_this_browser_goes_on_in_a_new_one(domain):
    account = domain.register()
    this, other = domain.sign_in(), domain.sign_in()
    changes = ProfileChanges(None, None, "a new long password", PASSWORD)
    update = asyncio.run(
        domain.accounts.update_profile(account, changes, session_id=this.session_id, client=CLIENT)
    )
    assert update.changed == {"password"}
    assert update.session_id not in (None, this.session_id, other.session_id)
    load = domain.sessions.load
    renewed = asyncio.run(load(session_id=update.session_id, user_id=account.id))
    assert renewed is not None
    assert renewed.expires_at == this.expires_at
    assert asyncio.run(load(session_id=this.session_id, user_id=account.id)) is None
    assert asyncio.run(load(session_id=other.session_id, user_id=account.id)) is None
    assert domain.sign_in("alice", "a new long password").account == account


def test_the_current_password_rule(domain):
    account = domain.register()
    opened = domain.sign_in()
    update = domain.accounts.update_profile
    for current, message in [(None, "Enter your current"), ("wrong", "not correct")]:
        changes = ProfileChanges(None, "new@example.com", None, current)
        with pytest.raises(InvalidInput) as error:
            asyncio.run(update(account, changes, session_id=opened.session_id, client=CLIENT))
        assert message in error.value.errors["current_password"]
    # A rename alone needs no password.
    renamed = asyncio.run(
        update(
            account,
            ProfileChanges("Alicia", None, None, None),
            session_id=opened.session_id,
            client=CLIENT,
        )
    )
    assert renamed.account.username == "Alicia"
    assert renamed.reissue_at is not None
    assert renamed.session_id is None
