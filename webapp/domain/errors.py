"""Named domain errors. Each carries a machine-readable `code`; none knows its HTTP status
(that mapping is `webapp.web.errors`, one table)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    code: str = "error"


class InvalidInput(DomainError):
    """One or more fields are wrong: `errors` maps each field to its message."""

    code = "invalid"

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__(", ".join(sorted(errors)))
        self.errors = dict(errors)


class Taken(InvalidInput):
    """A username or e-mail already belongs to another account."""

    code = "taken"


class SigninFailed(DomainError):
    """Unknown user or wrong password: deliberately one error for both."""

    code = "signin_failed"


ThrottledAction = Literal["signin", "password", "registration", "rename", "email"]


class Throttled(DomainError):
    """Too many attempts of one kind; `retry_after` is in whole seconds."""

    code = "throttled"

    def __init__(self, retry_after: int, *, action: ThrottledAction = "signin") -> None:
        super().__init__(f"{action}: retry after {retry_after} s")
        self.retry_after = retry_after
        self.action = action


class AccountGone(DomainError):
    """The signed-in user no longer exists."""

    code = "account_gone"


class InvalidLink(DomainError):
    """A link from an e-mail that is unknown, used, expired or no longer applies."""

    code = "invalid_link"

    def __init__(self, purpose: str) -> None:
        super().__init__(purpose)
        self.purpose = purpose


class EmailNotVerified(DomainError):
    """EMAIL_VERIFICATION=required and the address is not confirmed yet."""

    code = "email_not_verified"


class SessionNotFound(DomainError):
    """The id names no live session of this user (another user's id included)."""

    code = "session_not_found"


class PasskeyNotFound(DomainError):
    """The id names no passkey of this account (another account's included)."""

    code = "passkey_not_found"
