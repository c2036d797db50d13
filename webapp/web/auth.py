"""Who is signed in: the JWT cookie AuthenticationBackend, the route guard, and the one
place that gives a browser its session cookies and takes them away.

The JWT lives one hour and is re-issued while the user is active: a response to a
request whose token is over ten minutes old carries a fresh one (no database
write, except the session's last-seen time, at most once per renewal). A token's
`exp` never passes its session's absolute end. With "remember me", a browser whose
JWT has lapsed is signed in again by its remember_token, which is then rotated.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode, urlsplit

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webapp.db import UNAVAILABLE_ERRORS
from webapp.domain.sessions import LiveSession, NewSession, Sessions
from webapp.models import Account
from webapp.web.browser import browser_state
from webapp.web.cookies import (
    REMEMBER_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    cookie_name,
    remember_token,
    session_token,
    set_cookie,
)
from webapp.web.htmx import htmx_details
from webapp.web.navigation import safe_next
from webapp.web.tokens import TOKEN_LIFETIME, InvalidToken, TokenClaims, TokenIssuer

# Seconds: a token older than this is replaced by the next response.
RENEW_AFTER = 10 * 60
REAUTH_NEEDED = "Enter your password again to make this change."
# Where the remember token is never spent: assets load in parallel and need no session.
NO_RESUME_PREFIX = "/static/"


class SignedInUser(BaseUser):
    def __init__(self, account: Account, claims: TokenClaims, live: LiveSession) -> None:
        self.account = account
        self.claims = claims
        # The session's absolute end.
        self.expires_at = live.expires_at
        # What CSRF tokens are bound to: the session, across a change of sid.
        self.session_handle = live.handle

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.account.username

    @property
    def identity(self) -> str:
        return str(self.account.id)

    @property
    def session_id(self) -> str:
        return self.claims.session_id


class DatabaseUnavailable(AuthenticationError):
    """The session could not be checked because the database did not answer."""


class NotSignedIn(Exception):
    """The route needs a live session and the request has none."""


@dataclass(frozen=True, slots=True)
class _PendingCookies:
    """Cookies the backend decided on, written by SessionCookieMiddleware."""

    token: str | None = None
    token_max_age: int = 0
    remember: str | None = None
    remember_max_age: int = 0
    clear_remember: bool = False


def _seconds_left(expires_at: datetime, now: float) -> int:
    return int(expires_at.timestamp() - now)


def issue_token(
    tokens: TokenIssuer, *, account: Account, session_id: str, expires_at: datetime, now: float
) -> tuple[str, int]:
    """A token for the session and its lifetime: an hour, or less near the absolute end."""
    lifetime = max(1, min(TOKEN_LIFETIME, _seconds_left(expires_at, now)))
    token = tokens.issue(user_id=account.id, session_id=session_id, now=int(now), lifetime=lifetime)
    return token, lifetime


class JWTCookieBackend(AuthenticationBackend):
    """A request is signed in when its cookie holds a valid JWT whose session row is live,
    or, failing that, a remember_token of a live session."""

    def __init__(self, sessions: Sessions, tokens: TokenIssuer) -> None:
        self.sessions = sessions
        self.tokens = tokens

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        try:
            user = await self._from_token(conn) or await self._from_remember_token(conn)
        except UNAVAILABLE_ERRORS as exc:
            raise DatabaseUnavailable("database unavailable") from exc
        if user is None:
            return None
        return AuthCredentials(["authenticated"]), user

    async def _from_token(self, conn: HTTPConnection) -> SignedInUser | None:
        token = session_token(conn)
        if token is None:
            return None
        now = time.time()
        try:
            claims = self.tokens.read(token, now=now)
        except InvalidToken:
            return None
        # The revocation check is a database read, done in a worker thread.
        live = await self.sessions.load(session_id=claims.session_id, user_id=claims.user_id)
        if live is None:
            return None
        if now - claims.issued_at >= RENEW_AFTER:
            claims = await self._renew(conn, live, now)
        return SignedInUser(live.account, claims, live)

    async def _renew(self, conn: HTTPConnection, live: LiveSession, now: float) -> TokenClaims:
        token, lifetime = issue_token(
            self.tokens,
            account=live.account,
            session_id=live.session_id,
            expires_at=live.expires_at,
            now=now,
        )
        conn.scope["webapp.cookies"] = _PendingCookies(token=token, token_max_age=lifetime)
        await self.sessions.touch(live.session_id)
        return self.tokens.read(token, now=now)

    async def _from_remember_token(self, conn: HTTPConnection) -> SignedInUser | None:
        presented = remember_token(conn)
        if presented is None or conn.scope["path"].startswith(NO_RESUME_PREFIX):
            return None
        resumed = await self.sessions.resume(presented)
        if resumed is None:
            conn.scope["webapp.cookies"] = _PendingCookies(clear_remember=True)
            return None
        now = time.time()
        token, lifetime = issue_token(
            self.tokens,
            account=resumed.account,
            session_id=resumed.session_id,
            expires_at=resumed.expires_at,
            now=now,
        )
        conn.scope["webapp.cookies"] = _PendingCookies(
            token=token,
            token_max_age=lifetime,
            remember=resumed.remember_token,
            remember_max_age=_seconds_left(resumed.expires_at, now),
        )
        return SignedInUser(resumed.account, self.tokens.read(token, now=now), resumed)


class SessionCookieMiddleware:
    """Writes the cookies JWTCookieBackend decided on (a renewed token, a rotated remember
    token), unless the response sets that cookie itself (sign-in, sign-out)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_cookies(message: Message) -> None:
            pending: _PendingCookies | None = scope.get("webapp.cookies")
            if message["type"] == "http.response.start" and pending is not None:
                conn = HTTPConnection(scope)
                headers = MutableHeaders(scope=message)
                already = {value.split("=", 1)[0] for value in headers.getlist("set-cookie")}
                response = Response()
                if pending.token and cookie_name(SESSION_COOKIE, conn) not in already:
                    set_cookie(
                        response, conn, SESSION_COOKIE, pending.token, max_age=pending.token_max_age
                    )
                if cookie_name(REMEMBER_COOKIE, conn) not in already:
                    if pending.remember:
                        set_cookie(
                            response,
                            conn,
                            REMEMBER_COOKIE,
                            pending.remember,
                            max_age=pending.remember_max_age,
                        )
                    elif pending.clear_remember:
                        clear_cookie(response, conn, REMEMBER_COOKIE)
                for value in response.headers.getlist("set-cookie"):
                    headers.append("set-cookie", value)
            await send(message)

        await self.app(scope, receive, send_with_cookies)


def signed_in_user(conn: HTTPConnection) -> SignedInUser | None:
    user = conn.scope.get("user")
    return user if isinstance(user, SignedInUser) else None


def require_user(conn: HTTPConnection) -> SignedInUser:
    """The signed-in user, or NotSignedIn (answered 401, or 303 to sign in for a page)."""
    user = signed_in_user(conn)
    if user is None:
        raise NotSignedIn
    return user


Endpoint = Callable[[Request], Awaitable[Response]]


def requires_user(endpoint: Endpoint) -> Endpoint:
    """Guard an endpoint: without a live session it never runs (401, or 303 for a page).

    The mark is also read by CSRFMiddleware, so a signed-out request is told to sign
    in whatever CSRF token it carries.
    """

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        require_user(request)
        return await endpoint(request)

    guarded.requires_user = True  # type: ignore[attr-defined]
    return guarded


# Seconds: sensitive pages need the password entered in this session this recently.
RECENT_AUTHENTICATION = 10 * 60


def reauth_url(next_path: str | None) -> str:
    return f"/reauth?{urlencode({'next': safe_next(next_path)}, safe='/')}"


def requires_recent_authentication(endpoint: Endpoint) -> Endpoint:
    """Guard a sensitive endpoint: signed in, and the password entered in this session in
    the last ten minutes. Otherwise a page gets 303 to /reauth?next=<path>, and an htmx
    request 403 with HX-Redirect to it (the page it came from is where it returns)."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        user = require_user(request)
        sessions: Sessions = request.app.state.services.sessions
        if await sessions.recently_authenticated(user.session_id, within=RECENT_AUTHENTICATION):
            return await endpoint(request)
        details = htmx_details(request)
        if details.is_htmx:
            response = Response(status_code=403)
            response.headers["HX-Redirect"] = reauth_url(details.current_path())
            return response
        if request.headers.get("content-type", "").startswith("application/json"):
            # A script's fetch() (passkeys.js): it goes where "redirect" says.
            came_from = urlsplit(request.headers.get("referer", "")).path or None
            return JSONResponse(
                {"error": REAUTH_NEEDED, "redirect": reauth_url(came_from)}, status_code=403
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(reauth_url(target), status_code=303)

    guarded.requires_user = True  # type: ignore[attr-defined]
    return guarded


def start_session(
    response: Response,
    conn: HTTPConnection,
    tokens: TokenIssuer,
    *,
    account: Account,
    session_id: str,
    expires_at: datetime,
    now: datetime,
    remember: str | None = None,
) -> None:
    """Give the browser a token for the session (at sign-in, after a rename or a new
    password) and, when "remember me" was chosen, its remember_token."""
    moment = now.timestamp()
    token, lifetime = issue_token(
        tokens, account=account, session_id=session_id, expires_at=expires_at, now=moment
    )
    set_cookie(response, conn, SESSION_COOKIE, token, max_age=lifetime)
    if remember is not None:
        left = _seconds_left(expires_at, moment)
        set_cookie(response, conn, REMEMBER_COOKIE, remember, max_age=left)


def start_new_session(
    response: Response, conn: HTTPConnection, tokens: TokenIssuer, new: NewSession
) -> None:
    start_session(
        response,
        conn,
        tokens,
        account=new.account,
        session_id=new.session_id,
        expires_at=new.expires_at,
        now=new.started_at,
        remember=new.remember_token,
    )


def complete_sign_in(
    response: Response, conn: HTTPConnection, tokens: TokenIssuer, new: NewSession, *, how: str = ""
) -> None:
    """Every way of signing in ends here: the session's cookies, a new CSRF identity (no
    token from before the sign-in is accepted after it) and the flash that says who."""
    start_new_session(response, conn, tokens, new)
    state = browser_state(conn)
    state.renew_id()
    state.add_flash("success", f"Signed in as {new.account.username}{how}.")


def end_session(response: Response, conn: HTTPConnection) -> None:
    """Clear the browser's session cookies (the server-side row is revoked by the domain)."""
    clear_cookie(response, conn, SESSION_COOKIE)
    clear_cookie(response, conn, REMEMBER_COOKIE)
