"""The validation table: each field's rule, its message and the hint a form shows.

Forms hand in raw strings; these functions return typed values or raise
`InvalidInput` naming every bad field (one bad field never hides another).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from webapp.domain.errors import InvalidInput
from webapp.domain.passwords import weakness

USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 50
USERNAME_PATTERN = re.compile(
    rf"[A-Za-z][A-Za-z0-9]{{{USERNAME_MIN_LENGTH - 1},{USERNAME_MAX_LENGTH - 1}}}"
)
MAX_EMAIL_LENGTH = 254
MAX_PASSWORD_LENGTH = 1024
# Sign-in takes a username or an e-mail, so the longer of the two.
MAX_IDENTIFIER_LENGTH = MAX_EMAIL_LENGTH

USERNAME_RULE = (
    f"Use {USERNAME_MIN_LENGTH} to {USERNAME_MAX_LENGTH} letters and digits (A-Z, 0-9), "
    "starting with a letter."
)
USERNAME_HINT = (
    f"{USERNAME_MIN_LENGTH} to {USERNAME_MAX_LENGTH} letters and digits, starting with a letter."
)
CURRENT_PASSWORD_WRONG = "Your current password is not correct."
CURRENT_PASSWORD_NEEDED = "Enter your current password to change your e-mail or password."


def password_hint(min_length: int) -> str:
    return (
        f"At least {min_length} characters. Any characters, any length up to {MAX_PASSWORD_LENGTH}."
    )


Fields = Mapping[str, str]


# -- single fields ------------------------------------------------------------


def clean_username(raw: str) -> str:
    """The username as typed, without surrounding white space; raises ValueError."""
    username = raw.strip()
    if not username:
        raise ValueError("Enter a username.")
    if not USERNAME_PATTERN.fullmatch(username):
        raise ValueError(USERNAME_RULE)
    return username


def username_key(username: str) -> str:
    """What makes two usernames the same account (usernames are ASCII: exact everywhere)."""
    return username.lower()


def clean_email(raw: str) -> str:
    """A syntactically valid address with its domain lower-cased; raises ValueError."""
    text = raw.strip()
    if not text:
        raise ValueError("Enter an e-mail address.")
    if len(text) > MAX_EMAIL_LENGTH:
        raise ValueError(f"Use at most {MAX_EMAIL_LENGTH} characters.")
    try:
        # Syntax only, no DNS. test_environment admits the reserved .test domain, whose
        # addresses are as well-formed as any (other special-use names stay refused).
        email = validate_email(text, check_deliverability=False, test_environment=True).normalized
    except EmailNotValidError:
        raise ValueError("Enter a valid e-mail address, like name@example.com.") from None
    if len(email) > MAX_EMAIL_LENGTH:
        raise ValueError(f"Use at most {MAX_EMAIL_LENGTH} characters.")
    return email


def email_key(email: str) -> str:
    """What makes two addresses the same account: case does not count."""
    return email.lower()


def check_new_password(password: str, confirm: str, *, min_length: int) -> dict[str, str]:
    """Errors for a new password and its confirmation (never trimmed).

    Length counts characters as they will be hashed, after NFC normalisation, so
    "é" typed as e + combining accent is one character, not two.
    """
    errors = {}
    length = len(unicodedata.normalize("NFC", password))
    if length < min_length:
        errors["password"] = f"Use at least {min_length} characters."
    elif length > MAX_PASSWORD_LENGTH:
        errors["password"] = f"Use at most {MAX_PASSWORD_LENGTH} characters."
    if "password" not in errors and confirm != password:
        errors["confirm_password"] = "The two passwords do not match."
    return errors


# -- whole forms ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registration:
    username: str
    email: str
    password: str


@dataclass(frozen=True, slots=True)
class Signin:
    identifier: str
    password: str


@dataclass(frozen=True, slots=True)
class ProfileChanges:
    """What a profile form asks for; None means keep."""

    username: str | None
    email: str | None
    password: str | None
    current_password: str | None


def parse_registration(fields: Fields, *, min_password_length: int) -> Registration:
    errors: dict[str, str] = {}
    username = _clean(errors, "username", clean_username, fields.get("username", ""))
    email = _clean(errors, "email", clean_email, fields.get("email", ""))
    password = fields.get("password", "")
    errors |= check_new_password(
        password, fields.get("confirm_password", ""), min_length=min_password_length
    )
    if (
        "password" not in errors
        and username is not None
        and email is not None
        and (problem := weakness(password, username=username, email=email))
    ):
        errors["password"] = problem
    if errors:
        raise InvalidInput(errors)
    assert username is not None
    assert email is not None
    return Registration(username, email, password)


def parse_signin(fields: Fields) -> Signin:
    errors = {}
    identifier = fields.get("username", "").strip()
    password = fields.get("password", "")
    if not identifier:
        errors["username"] = "Enter your username or e-mail address."
    elif len(identifier) > MAX_IDENTIFIER_LENGTH:
        errors["username"] = f"Use at most {MAX_IDENTIFIER_LENGTH} characters."
    if not password:
        errors["password"] = "Enter your password."
    elif len(password) > MAX_PASSWORD_LENGTH:
        errors["password"] = f"Use at most {MAX_PASSWORD_LENGTH} characters."
    if errors:
        raise InvalidInput(errors)
    return Signin(identifier, password)


def parse_profile_changes(
    fields: Fields, *, every_field_required: bool, min_password_length: int
) -> ProfileChanges:
    """The partial form (blank means keep) or, with every_field_required, the full one."""
    errors: dict[str, str] = {}
    username = email = password = current = None
    raw_username = fields.get("username", "")
    if raw_username.strip() or every_field_required:
        username = _clean(errors, "username", clean_username, raw_username)
    raw_email = fields.get("email", "")
    if raw_email.strip() or every_field_required:
        email = _clean(errors, "email", clean_email, raw_email)
    raw_password, confirm = fields.get("password", ""), fields.get("confirm_password", "")
    if raw_password or confirm or every_field_required:
        if not raw_password:
            errors["password"] = "Enter a new password."
        else:
            errors |= check_new_password(raw_password, confirm, min_length=min_password_length)
            password = raw_password
    raw_current = fields.get("current_password", "")
    if len(raw_current) > MAX_PASSWORD_LENGTH:
        errors["current_password"] = CURRENT_PASSWORD_WRONG
    elif raw_current:
        current = raw_current
    elif every_field_required:
        errors["current_password"] = "Enter your current password."
    if errors:
        raise InvalidInput(errors)
    return ProfileChanges(username, email, password, current)


def _clean(errors: dict[str, str], field: str, clean: Callable[[str], str], raw: str) -> str | None:
    """Run one field's check, noting its error, so one bad field does not hide another."""
    try:
        return clean(raw)
    except ValueError as exc:
        errors[field] = str(exc)
        return None
