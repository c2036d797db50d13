"""Who is signed in: the JWT cookie AuthenticationBackend, token issuing, the route guard."""

from __future__ import annotations

import time
from functools import lru_cache

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.requests import HTTPConnection

from webapp.accounts import Account, Accounts
from webapp.cookies import session_token
from webapp.db import UNAVAILABLE_ERRORS
from webapp.security import InvalidToken, TokenClaims, decode_token, encode_token
from webapp.settings import SESSION_LIFETIME


class TokenIssuer:
    """Issues and reads our JWTs, with the key and claims from settings."""

    def __init__(self, *, key: bytes, algorithm: str, issuer: str, audience: str) -> None:
        self.key = key
        self.algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        # A browser sends the same token with every request for an hour: verify its
        # signature and claims once. Only tokens that verified are kept (exceptions are
        # not cached), so forged tokens cannot fill it; expiry is re-checked on each use.
        self._verified = lru_cache(maxsize=4096)(self._decode)

    def issue(self, *, user_id: int, session_id: str, now: int) -> str:
        return encode_token(
            user_id=user_id,
            session_id=session_id,
            key=self.key,
            algorithm=self.algorithm,
            issuer=self.issuer,
            audience=self.audience,
            now=now,
            lifetime=SESSION_LIFETIME,
        )

    def read(self, token: str) -> TokenClaims:
        claims = self._verified(token)
        if claims.expires_at <= time.time():
            raise InvalidToken("expired")
        return claims

    def _decode(self, token: str) -> TokenClaims:
        return decode_token(
            token,
            key=self.key,
            algorithm=self.algorithm,
            issuer=self.issuer,
            audience=self.audience,
            lifetime=SESSION_LIFETIME,
        )


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

    def __init__(self, accounts: Accounts, tokens: TokenIssuer) -> None:
        self.accounts = accounts
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
            account = await self.accounts.load_session(
                session_id=claims.session_id, user_id=claims.user_id
            )
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
