"""Keys and JWTs: pure functions with keyword-only arguments, and the issuer built from settings."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache

import jwt

REQUIRED_CLAIMS = ("sub", "sid", "jti", "iat", "exp", "iss", "aud")
# One hour, in seconds: the lifetime of a token (cookie Max-Age and JWT exp - iat).
TOKEN_LIFETIME = 3600


def derive_key(*, secret: str, purpose: str) -> bytes:
    """A 64-byte key for one purpose, so no two uses share key material."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha512).digest()


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    session_id: str
    token_id: str
    issued_at: int
    expires_at: int


class InvalidToken(Exception):
    """The token is not one we issued, or no longer valid."""


def encode_token(
    *,
    user_id: int,
    session_id: str,
    key: bytes,
    algorithm: str,
    issuer: str,
    audience: str,
    now: int,
    lifetime: int,
) -> str:
    claims = {
        "sub": str(user_id),
        "sid": session_id,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + lifetime,
        "iss": issuer,
        "aud": audience,
    }
    return jwt.encode(claims, key, algorithm=algorithm)


def decode_token(
    token: str, *, key: bytes, algorithm: str, issuer: str, audience: str, lifetime: int
) -> TokenClaims:
    """Verify signature, algorithm, every required claim and the times; raise InvalidToken."""
    try:
        # The key is passed in, never looked up, so jku/x5u/jwk/kid in the header choose nothing.
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=issuer,
            audience=audience,
            options={"require": list(REQUIRED_CLAIMS), "verify_iat": True},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(type(exc).__name__) from None
    subject, session_id, token_id = claims["sub"], claims["sid"], claims["jti"]
    if not (isinstance(subject, str) and subject.isascii() and subject.isdigit()):
        raise InvalidToken("sub")
    if not (isinstance(session_id, str) and isinstance(token_id, str)):
        raise InvalidToken("sid/jti")
    issued_at, expires_at = int(claims["iat"]), int(claims["exp"])
    if expires_at - issued_at > lifetime:
        raise InvalidToken("lifetime")
    return TokenClaims(int(subject), session_id, token_id, issued_at, expires_at)


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

    def issue(
        self, *, user_id: int, session_id: str, now: int, lifetime: int = TOKEN_LIFETIME
    ) -> str:
        return encode_token(
            user_id=user_id,
            session_id=session_id,
            key=self.key,
            algorithm=self.algorithm,
            issuer=self.issuer,
            audience=self.audience,
            now=now,
            lifetime=lifetime,
        )

    def read(self, token: str, *, now: float | None = None) -> TokenClaims:
        claims = self._verified(token)
        if claims.expires_at <= (time.time() if now is None else now):
            raise InvalidToken("expired")
        return claims

    def _decode(self, token: str) -> TokenClaims:
        return decode_token(
            token,
            key=self.key,
            algorithm=self.algorithm,
            issuer=self.issuer,
            audience=self.audience,
            lifetime=TOKEN_LIFETIME,
        )
