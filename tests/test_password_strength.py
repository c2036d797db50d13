"""Easy-to-guess passwords are refused wherever a password is set, with a reason."""

from __future__ import annotations

import pytest

from tests.helpers import (
    PASSWORD,
    csrf_token,
    patch_profile,
    put_profile,
    register,
    rows,
    signed_in,
)
from webapp.domain.passwords import _load_common, is_common, weakness


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("12345678", "common"),
        ("password", "common"),
        ("PassWord", "common"),
        ("iloveyou", "common"),
        ("aaaaaaaa", "repeated"),
        ("ZZZZZZZZZZZZ", "repeated"),
        ("xx-alice-xx", "username"),
        ("my ALICE pass", "username"),
        ("i am jsmith!!", "e-mail"),
    ],
)
def test_weak_passwords_are_named_for_why(password, reason):
    message = weakness(password, username="alice", email="jsmith@example.com")
    assert message is not None
    assert reason in message.lower()


@pytest.mark.parametrize("password", [PASSWORD, "Tr0ub4dor&3 zebra", "é" * 3 + "xyzzy!!"])
def test_ordinary_passwords_pass(password):
    assert weakness(password, username="alice", email="alice@example.com") is None


def test_the_list_holds_ten_thousand_common_passwords():
    common = _load_common()
    assert len(common) == len(set(common)) == 10_000
    assert all(is_common(password) for password in common)
    assert all(is_common(password.upper()) for password in ("123456", "password", "qwerty"))
    # Whole entries only: neither a piece of one nor two of them joined by a newline.
    assert not is_common("23456")
    assert not is_common("ssw")
    assert not is_common(f"{common[0]}\n{common[1]}")


def test_registration_refuses_a_common_password(client, app):
    response = register(client, password="password1")
    assert response.status_code == 422
    assert 'id="password-error"' in response.text
    assert "common" in response.text
    assert rows(app, "SELECT count(*) FROM users") == [(0,)]


def test_registration_refuses_the_username_inside_the_password(client, app):
    response = register(client, "robert", "bob@example.com", password="robert-2026!")
    assert response.status_code == 422
    assert "username" in response.text


@pytest.mark.parametrize("method", ["patch", "put"])
def test_profile_updates_refuse_weak_passwords(client, app, method):
    token = signed_in(client)
    send = patch_profile if method == "patch" else put_profile
    fields: dict[str, str] = {
        "password": "qwertyuiop",
        "confirm_password": "qwertyuiop",
        "current_password": PASSWORD,
    }
    if method == "put":
        fields |= {"username": "alice", "email": "alice@example.com"}
    response = send(client, "alice", token, True, **fields)
    assert response.status_code == 422
    assert 'id="password-error"' in response.text
    # The old password still works: nothing was changed.
    assert csrf_token(client)
    [(password_hash,)] = rows(app, "SELECT password_hash FROM users")
    from webapp.domain.passwords import verify_password_sync

    assert verify_password_sync(PASSWORD, password_hash=password_hash)


def test_a_patch_checks_the_new_password_against_the_current_name(client, app):
    token = signed_in(client)
    response = patch_profile(
        client,
        "alice",
        token,
        password="alice and friends",
        confirm_password="alice and friends",
        current_password=PASSWORD,
    )
    assert response.status_code == 422
    assert "username" in response.text


def _zxcvbn_head() -> list[str]:
    """The 10,000 most common passwords of zxcvbn's list, lower-cased, first spelling kept."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS  # type: ignore[import-untyped]

    found: dict[str, None] = {}
    for password in FREQUENCY_LISTS["passwords"]:
        found.setdefault(password.lower())
        if len(found) == 10_000:
            break
    return list(found)


def test_the_shipped_list_is_the_head_of_zxcvbns():
    assert list(_load_common()) == _zxcvbn_head()


if __name__ == "__main__":
    # python -m tests.test_password_strength: write the list anew from zxcvbn.
    from webapp.domain import passwords

    header = [line for line in passwords._COMMON_FILE.read_text().splitlines() if line[:1] == "#"]
    passwords._COMMON_FILE.write_text("\n".join([*header, *_zxcvbn_head()]) + "\n")
