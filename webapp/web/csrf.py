"""CSRF, enforced by construction: every unsafe request to a route passes `CSRFMiddleware`.

The token is bound to this browser (and, once signed in, to the session); the
`Origin` and Fetch-Metadata headers are checked for browsers that send them.
The middleware also reads and checks the body (413/415/400 come first), so a
route that writes no CSRF code at all is still protected, and anything a route
reflects into a compressed answer came from a holder of the token (BREACH).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webapp.web.browser import browser_state
from webapp.web.forms import DRAIN_LIMIT, DRAIN_SECONDS, BodyKind, BodyTooLarge, drain, read_body

HEADER = "x-csrf-token"
FIELD = "csrf_token"
REFUSED = "This form has expired or did not come from this site. Reload the page and try again."
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

E = TypeVar("E", bound=Callable[..., Any])


def csrf_token(*, key: bytes, browser_id: str, session_id: str | None) -> str:
    """The CSRF token of one browser (and, once signed in, one session)."""
    message = f"{browser_id}|{session_id or ''}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_token_matches(
    candidate: str, *, key: bytes, browser_id: str, session_id: str | None
) -> bool:
    expected = csrf_token(key=key, browser_id=browser_id, session_id=session_id)
    return hmac.compare_digest(candidate.encode(), expected.encode())


def _session_id(conn: HTTPConnection) -> str | None:
    """The session a token is bound to: its public handle, which a session keeps when it
    goes on under a new sid (a new password), so the open page stays usable."""
    user = conn.scope.get("user")
    return getattr(user, "session_handle", None)


def token_for(conn: HTTPConnection, *, key: bytes) -> str:
    """The token that pages and forms carry; gives the browser an identity if it has none."""
    browser_id = browser_state(conn).ensure_id()
    return csrf_token(key=key, browser_id=browser_id, session_id=_session_id(conn))


def _same_origin(conn: HTTPConnection, origin: str) -> bool:
    return origin == f"{conn.url.scheme}://{conn.headers.get('host', '')}"


def check_csrf(conn: HTTPConnection, fields: Mapping[str, str], *, key: bytes) -> None:
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


def accepts_json(endpoint: E) -> E:
    """Mark an endpoint that takes application/json (with the token in the header)."""
    endpoint.body_kinds = ("json",)  # type: ignore[attr-defined]
    return endpoint


def _endpoint(scope: Scope) -> Any | None:
    """The endpoint of the route this request fully matches, if any (else the router
    answers 404 or 405 and no endpoint runs)."""
    for route in scope["app"].router.routes:
        match, child_scope = route.matches(scope)
        if match == Match.FULL:
            if not isinstance(route, Route):
                return None
            endpoint = child_scope.get("endpoint")
            if isinstance(endpoint, type):
                # An HTTPEndpoint: the method's handler (None: the endpoint answers 405).
                return getattr(endpoint, scope["method"].lower(), None)
            return endpoint
    return None


class CSRFMiddleware:
    """Unsafe requests: read and check the body, then the session guard, then the token."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        key: bytes,
        refuse: Callable[[Request, HTTPException], Any],
        not_signed_in: Callable[[Request], Any],
    ) -> None:
        self.app = app
        self.key = key
        self.refuse = refuse
        self.not_signed_in = not_signed_in

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        endpoint = _endpoint(scope)
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        kinds: tuple[BodyKind, ...] = getattr(endpoint, "body_kinds", ("form",))
        try:
            body = await read_body(scope, receive, accepts=kinds)
            if getattr(endpoint, "requires_user", False) and _session_id(request) is None:
                # "Sign in first" is the answer whatever token a signed-out request carries.
                response = await self.not_signed_in(request)
                await response(scope, receive, send)
                return
            check_csrf(request, body.fields, key=self.key)
        except HTTPException as exc:
            response = await self.refuse(request, exc)
            if isinstance(exc, BodyTooLarge):
                if exc.unread:
                    # Read (and drop) what the client is still sending, up to a bound, so
                    # it is reading our answer when it comes instead of being reset
                    # mid-upload.
                    with anyio.move_on_after(DRAIN_SECONDS):
                        await drain(receive, limit=DRAIN_LIMIT)
                # Whatever is left of the body is never read: the connection ends here.
                response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        scope["webapp.body"] = body
        await self.app(scope, _replay(body.raw, receive), send)


def _replay(raw: bytes, receive: Receive) -> Receive:
    """The body once more, for anything below that reads the stream; then the real channel."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay
