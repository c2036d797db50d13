"""Password hashing, JWTs and CSRF tokens: pure functions, no Starlette, no database."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata
import uuid
from dataclasses import dataclass
from functools import lru_cache

import bcrypt
import jwt

# bcrypt reads at most 72 bytes. Passwords are first reduced to a fixed-size
# digest so every byte counts (as Django's BCryptSHA256PasswordHasher does).
# The key only separates this use of SHA-256 from others; it is not a secret,
# so rotating SECRET_KEY never locks anyone out.
_PREHASH_KEY = b"webapp.password.v1"
_BCRYPT_COST = re.compile(r"^\$2[aby]\$(\d\d)\$")
REQUIRED_CLAIMS = ("sub", "sid", "jti", "iat", "exp", "iss", "aud")


def derive_key(*, secret: str, purpose: str) -> bytes:
    """A 64-byte key for one purpose, so no two uses share key material."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha512).digest()


def _prehash(password: str) -> bytes:
    normalized = unicodedata.normalize("NFC", password).encode()
    return base64.b64encode(hmac.new(_PREHASH_KEY, normalized, hashlib.sha256).digest())


def hash_password(password: str, *, rounds: int) -> str:
    """A bcrypt hash of the NFC-normalised password. Slow on purpose: call it off the loop."""
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds)).decode()


def verify_password(password: str, *, password_hash: str) -> bool:
    """Whether the password matches; False for a malformed hash rather than an error."""
    try:
        return bcrypt.checkpw(_prehash(password), password_hash.encode())
    except ValueError:
        return False


def needs_rehash(password_hash: str, *, rounds: int) -> bool:
    match = _BCRYPT_COST.match(password_hash)
    return match is None or int(match.group(1)) != rounds


@lru_cache(maxsize=4)
def dummy_hash(rounds: int) -> str:
    """A hash to check unknown users against, so timing does not tell who exists."""
    return hash_password(uuid.uuid4().hex, rounds=rounds)


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
