"""Where to send the browser next: safe `next` targets and redirects that work for htmx too."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlencode, urlsplit

from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse, Response

from webapp.web.htmx import client_redirect, htmx_details

MAX_NEXT_LENGTH = 2048


def _is_local_path(candidate: str) -> bool:
    if not candidate.startswith("/") or candidate.startswith("//"):
        return False
    if "\\" in candidate or any(ord(char) < 0x20 or ord(char) == 0x7F for char in candidate):
        return False
    parts = urlsplit(candidate)
    return not parts.scheme and not parts.netloc


# What stays as it is when a `next` is made ASCII: URL syntax and existing escapes.
_URL_SAFE = "/?#[]@!$&'()*+,;=%:-._~"


def safe_next(value: str | None) -> str:
    """`value` when it is a path on this site at every level of percent-decoding, else "/".

    Any character outside ASCII is percent-encoded, so the answer fits every header
    (Location, HX-Redirect) and means the same path.
    """
    if not value or len(value) > MAX_NEXT_LENGTH:
        return "/"
    value = quote(value, safe=_URL_SAFE)
    candidate = value
    # "/%2F%2Fevil.example" only turns into "//evil.example" once decoded: check each layer.
    for _ in range(4):
        if not _is_local_path(candidate):
            return "/"
        decoded = unquote(candidate)
        if decoded == candidate:
            return value
        candidate = decoded
    return "/"


def login_url(next_path: str | None) -> str:
    """The sign-in page, told where to go back to ("/" when that is not a local path)."""
    return f"/login?{urlencode({'next': safe_next(next_path)}, safe='/')}"


def see_other(conn: HTTPConnection, url: str) -> Response:
    """After a successful POST: 303 for a browser, HX-Redirect for htmx (fetch follows a 303)."""
    if htmx_details(conn).is_htmx:
        return client_redirect(url)
    return RedirectResponse(url, status_code=303)
