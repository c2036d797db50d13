"""Who is signed in: the JWT cookie AuthenticationBackend, the route guard, and the one
place that starts a browser session (JWT + cookie) and ends it."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import datetime

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from webapp.db import UNAVAILABLE_ERRORS
from webapp.domain.sessions import Sessions
from webapp.models import Account
from webapp.web.cookies import clear_session_cookie, session_token, set_session_cookie
from webapp.web.tokens import TOKEN_LIFETIME, InvalidToken, TokenClaims, TokenIssuer


class SignedInUser(BaseUser):
    def __init__(self, account: Account, claims: TokenClaims) -> None:
        self.account = account
        self.claims = claims

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


class JWTCookieBackend(AuthenticationBackend):
    """A request is signed in when its cookie holds a valid JWT whose session row is live."""

    def __init__(self, sessions: Sessions, tokens: TokenIssuer) -> None:
        self.sessions = sessions
        self.tokens = tokens

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = session_token(conn)
        if token is None:
            return None
        try:
            claims = self.tokens.read(token)
        except InvalidToken:
            return None
        try:
            # The revocation check is a database read, done in a worker thread.
            account = await self.sessions.load(session_id=claims.session_id, user_id=claims.user_id)
        except UNAVAILABLE_ERRORS as exc:
            raise DatabaseUnavailable("database unavailable") from exc
        if account is None:
            return None
        return AuthCredentials(["authenticated"]), SignedInUser(account, claims)


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


def start_session(
    response: Response,
    conn: HTTPConnection,
    tokens: TokenIssuer,
    *,
    account: Account,
    session_id: str,
    now: datetime,
) -> None:
    """Give the browser a token for the session (a new cookie at every sign-in or renewal)."""
    token = tokens.issue(
        user_id=account.id, session_id=session_id, now=int(now.timestamp()), lifetime=TOKEN_LIFETIME
    )
    set_session_cookie(response, conn, token, max_age=TOKEN_LIFETIME)


def end_session(response: Response, conn: HTTPConnection) -> None:
    """Clear the browser's session cookie (the server-side row is revoked by the domain)."""
    clear_session_cookie(response, conn)
