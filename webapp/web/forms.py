"""Request bodies, read strictly: 413, 415 or 400 before anything else looks at them.

`CSRFMiddleware` reads the body of every unsafe request with `read_body` (so a
route never sees a body that failed these checks, nor one without a valid CSRF
token); routes take the parsed fields with `form_fields`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope

MAX_BODY_BYTES = 64 * 1024
MAX_FIELDS = 100
FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
BodyKind = Literal["form", "json"]
TOO_LARGE = "The request body is larger than 64 KiB."


class BodyTooLarge(HTTPException):
    """413; `unread` when the client may still be sending the rest of the body."""

    def __init__(self, *, unread: bool) -> None:
        super().__init__(413, TOO_LARGE)
        self.unread = unread


@dataclass(frozen=True, slots=True)
class Body:
    """A body that passed the checks: url-encoded fields, or JSON bytes where a route takes them."""

    kind: BodyKind
    fields: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""


def _header_values(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope["headers"] if key.lower() == name]


def _media_type(content_type: str) -> tuple[str, str]:
    media_type, *params = content_type.split(";")
    charset = "utf-8"
    for param in params:
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset":
            charset = value.strip().strip('"').lower()
    return media_type.strip().lower(), charset


async def read_body(scope: Scope, receive: Receive, *, accepts: Iterable[BodyKind]) -> Body:
    """The whole body, checked; raises HTTPException 413, 415 or 400."""
    lengths = _header_values(scope, b"content-length")
    if len(lengths) > 1:
        raise HTTPException(400, "The request has more than one Content-Length.")
    if lengths and (not lengths[0].isdigit() or int(lengths[0]) > MAX_BODY_BYTES):
        raise BodyTooLarge(unread=True)
    content_types = _header_values(scope, b"content-type")
    if len(content_types) > 1:
        raise HTTPException(400, "The request has more than one Content-Type.")
    body = bytearray()
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPException(400, "The request body was not sent whole.")
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge(unread=more)
    if not content_types and not body:
        # Nothing was sent (a bare POST with the token in a header): no fields.
        return Body("form")
    media_type, charset = _media_type(content_types[0] if content_types else "")
    accepted = set(accepts)
    if media_type == JSON_TYPE and "json" in accepted:
        return Body("json", raw=bytes(body))
    if media_type != FORM_TYPE or charset not in ("utf-8", "utf8") or "form" not in accepted:
        raise HTTPException(415, "Send the form as application/x-www-form-urlencoded (UTF-8).")
    return Body("form", fields=_parse_form(bytes(body)))


# How much of an over-long body is read and dropped before the 413 goes out: 1 MiB.
DRAIN_LIMIT = 1024 * 1024
# And for at most this many seconds.
DRAIN_SECONDS = 5.0


async def drain(receive: Receive, *, limit: int) -> None:
    """Receive and drop the rest of the body, at most `limit` bytes."""
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _parse_form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS
        )
    except UnicodeDecodeError:
        raise HTTPException(400, "The form is not valid UTF-8.") from None
    except ValueError:
        raise HTTPException(400, "The form has too many fields.") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise HTTPException(400, f"The field {name!r} was sent more than once.")
        fields[name] = value
    return fields


def body_of(conn: HTTPConnection) -> Body:
    """The checked body of this (unsafe) request, as CSRFMiddleware read it."""
    body: Body | None = conn.scope.get("webapp.body")
    if body is None:
        # Only reachable by a route mounted outside the middleware: never trust it.
        raise HTTPException(415, "Send the form as application/x-www-form-urlencoded (UTF-8).")
    return body


def form_fields(conn: HTTPConnection) -> dict[str, str]:
    """The url-encoded fields of this request (empty for a bare POST)."""
    body = body_of(conn)
    if body.kind != "form":
        raise HTTPException(415, "Send the form as application/x-www-form-urlencoded (UTF-8).")
    return body.fields
