"""CSRF: a token bound to this browser (and, once signed in, to the session),
plus Origin and Fetch-Metadata checks for browsers that send them."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from webapp.browser import browser_state
from webapp.security import csrf_token, csrf_token_matches

HEADER = "x-csrf-token"
FIELD = "csrf_token"
REFUSED = "This form has expired or did not come from this site. Reload the page and try again."


def _session_id(conn: HTTPConnection) -> str | None:
    user = conn.scope.get("user")
    return getattr(user, "session_id", None)


def token_for(conn: HTTPConnection, *, key: bytes) -> str:
    """The token that pages and forms carry; gives the browser an identity if it has none."""
    browser_id = browser_state(conn).ensure_id()
    return csrf_token(key=key, browser_id=browser_id, session_id=_session_id(conn))


def _same_origin(conn: HTTPConnection, origin: str) -> bool:
    return origin == f"{conn.url.scheme}://{conn.headers.get('host', '')}"


def require_csrf(conn: HTTPConnection, fields: Mapping[str, str], *, key: bytes) -> None:
    """Raise 403 unless the request carries this browser's token and comes from this site."""
    headers = conn.headers
    if headers.get("sec-fetch-site") == "cross-site":
        raise HTTPException(403, REFUSED)
    origin = headers.get("origin")
    if origin is not None and not _same_origin(conn, origin):
        raise HTTPException(403, REFUSED)
    # The query string is never looked at: a token there would leak into logs and Referer.
    candidate = headers.get(HEADER) or fields.get(FIELD, "")
    browser_id = browser_state(conn).browser_id
    if (
        not candidate
        or browser_id is None
        or not csrf_token_matches(
            candidate, key=key, browser_id=browser_id, session_id=_session_id(conn)
        )
    ):
        raise HTTPException(403, REFUSED)
