"""Password hashing: NFC, an HMAC pre-hash so every byte counts, bcrypt off the event loop.

bcrypt reads at most 72 bytes, so passwords are first reduced to a fixed-size
digest (as Django's BCryptSHA256PasswordHasher does). The pre-hash key only
separates this use of SHA-256 from others; it is not a secret, so rotating
SECRET_KEY never locks anyone out.

bcrypt is slow on purpose and releases the GIL while it works. Run in the
request thread pool at normal priority, a handful of concurrent sign-ins would
take every core from the event loop. It runs instead on a few threads that lower
their own scheduling priority (nice 19, per thread on Linux), one per core the
process may use: the loop and ordinary requests get the CPU first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import unicodedata
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import bcrypt

_PREHASH_KEY = b"webapp.password.v1"
_BCRYPT_COST = re.compile(r"^\$2[aby]\$(\d\d)\$")
# The highest nice value: run only when nothing else wants the core.
LOW_PRIORITY = 19


# -- pure functions (slow: never call them on the event loop) -------------------------


def _prehash(password: str) -> bytes:
    normalized = unicodedata.normalize("NFC", password).encode()
    return base64.b64encode(hmac.new(_PREHASH_KEY, normalized, hashlib.sha256).digest())


def hash_password_sync(password: str, *, rounds: int) -> str:
    """A bcrypt hash of the NFC-normalised password."""
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds)).decode()


def verify_password_sync(password: str, *, password_hash: str) -> bool:
    """Whether the password matches; False for a malformed hash rather than an error."""
    try:
        return bcrypt.checkpw(_prehash(password), password_hash.encode())
    except ValueError:
        return False


def needs_rehash(password_hash: str, *, rounds: int) -> bool:
    match = _BCRYPT_COST.match(password_hash)
    return match is None or int(match.group(1)) != rounds


@lru_cache(maxsize=4)
def dummy_hash_sync(rounds: int) -> str:
    """A hash to check unknown users against, so timing does not tell who exists."""
    return hash_password_sync(uuid.uuid4().hex, rounds=rounds)


# -- the same, awaited on low-priority threads ------------------------------------------


def _lower_priority() -> None:
    # Not Linux, or not permitted: still correct, only less polite.
    with contextlib.suppress(AttributeError, OSError):
        # PRIO_PROCESS with "0" renices just the calling thread on Linux.
        os.setpriority(os.PRIO_PROCESS, 0, LOW_PRIORITY)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_pool = ThreadPoolExecutor(
    max_workers=_cores(), thread_name_prefix="bcrypt", initializer=_lower_priority
)


async def hash_password(password: str, *, rounds: int) -> str:
    return await asyncio.wrap_future(_pool.submit(hash_password_sync, password, rounds=rounds))


async def verify_password(password: str, *, password_hash: str) -> bool:
    return await asyncio.wrap_future(
        _pool.submit(verify_password_sync, password, password_hash=password_hash)
    )


async def dummy_hash(rounds: int) -> str:
    """dummy_hash_sync (made once per cost), awaited."""
    return await asyncio.wrap_future(_pool.submit(dummy_hash_sync, rounds))
