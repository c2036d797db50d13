"""The validation table, at the level of the form parsers (no HTTP, no database)."""

from __future__ import annotations

import pytest

from webapp.domain.errors import InvalidInput
from webapp.domain.validation import (
    clean_email,
    clean_username,
    parse_profile_changes,
    parse_registration,
    parse_signin,
)
from webapp.web.errors import failure


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("abc", "abc"), ("  John  ", "John"), ("a" + "1" * 49, "a" + "1" * 49), ("Z9z", "Z9z")],
)
def test_valid_usernames(raw, expected):
    assert clean_username(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "ab",
        "a" * 51,
        "1abc",
        "_abc",
        "ab-c",
        "ab c",
        "abç",
        "\uff41bc",
        "abc\x00",
        "abc\n1",
    ],
)
def test_invalid_usernames(raw):
    with pytest.raises(ValueError):  # noqa: PT011 (the message is for people, not tests)
        clean_username(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Alice@Example.COM", "Alice@example.com"),
        ("  bob@example.org ", "bob@example.org"),
        ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
    ],
)
def test_valid_emails_keep_the_local_part_and_lower_the_domain(raw, expected):
    assert clean_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "plain",
        "@example.com",
        "a@",
        "a@@example.com",
        "a b@example.com",
        "a@example",
        "a" * 64 + "@" + "b" * 186 + ".com",
        "x" * 300 + "@example.com",
    ],
)
def test_invalid_emails(raw):
    with pytest.raises(ValueError):  # noqa: PT011
        clean_email(raw)


def _registration(**fields: str) -> dict[str, str]:
    base = {
        "username": "alice",
        "email": "alice@example.com",
        "password": "43@pq7ka",
        "confirm_password": "43@pq7ka",
    }
    return base | fields


def test_password_minimum_length_is_a_setting():
    assert parse_registration(_registration(), min_password_length=8).password == "43@pq7ka"
    with pytest.raises(InvalidInput) as error:
        parse_registration(_registration(), min_password_length=9)
    assert set(error.value.errors) == {"password"}


def test_passwords_are_never_trimmed():
    padded = "  secret pass  "
    result = parse_registration(
        _registration(password=padded, confirm_password=padded), min_password_length=8
    )
    assert result.password == padded


def test_password_length_bounds():
    longest = "pq" * 512
    assert parse_registration(
        _registration(password=longest, confirm_password=longest), min_password_length=8
    )
    with pytest.raises(InvalidInput) as error:
        parse_registration(
            _registration(password=longest + "p", confirm_password=longest + "p"),
            min_password_length=8,
        )
    assert set(error.value.errors) == {"password"}


def test_any_unicode_password():
    password = "пароль🔑密码\u00e9"
    result = parse_registration(
        _registration(password=password, confirm_password=password), min_password_length=8
    )
    assert result.password == password


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(InvalidInput) as error:
        parse_registration(
            {"username": "1", "email": "x", "password": "short", "confirm_password": ""},
            min_password_length=8,
        )
    assert set(error.value.errors) == {"username", "email", "password"}
    assert error.value.code == "invalid"
    assert failure(error.value).status_code == 422


def test_signin_needs_both_fields():
    with pytest.raises(InvalidInput) as error:
        parse_signin({})
    assert set(error.value.errors) == {"username", "password"}


def test_partial_update_blank_means_keep():
    changes = parse_profile_changes(
        {"username": "  ", "email": "", "password": "", "confirm_password": ""},
        every_field_required=False,
        min_password_length=8,
    )
    assert (changes.username, changes.email, changes.password) == (None, None, None)


def test_full_update_requires_everything():
    with pytest.raises(InvalidInput) as error:
        parse_profile_changes({}, every_field_required=True, min_password_length=8)
    assert set(error.value.errors) == {
        "username",
        "email",
        "password",
        "current_password",
    }


def test_password_length_counts_characters_after_nfc():
    decomposed = "e\u0301" * 7  # seven "é" typed as e + combining accent: 14 code points
    with pytest.raises(InvalidInput) as error:
        parse_registration(
            _registration(password=decomposed, confirm_password=decomposed), min_password_length=8
        )
    assert set(error.value.errors) == {"password"}
