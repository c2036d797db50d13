"""Keep link tokens out of the access log.

E-mail links carry their token in the path (/password-reset/<token>, …), and uvicorn's
access log writes every path. A live reset token in a log file is a password reset for
whoever reads it, so the token is replaced before the line is written.
"""

from __future__ import annotations

import logging
import re

# The routes whose last path segment is a secret.
_TOKEN_PATH = re.compile(r"^(/(?:verify-email|password-reset|email-revert)/)[^/?#\s]+")
REDACTED = "[token]"


def redact_path(path: str) -> str:
    return _TOKEN_PATH.sub(lambda match: match.group(1) + REDACTED, path)


class RedactTokens(logging.Filter):
    """For uvicorn's access logger, whose record.args are (client, method, path, version,
    status): rewrite the path."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_path(args[2]), *args[3:])
        return True


def install() -> None:
    """Add the filter to uvicorn's access logger once (idempotent)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactTokens) for existing in access.filters):
        access.addFilter(RedactTokens())
