"""Passwords: NFC, an HMAC pre-hash so every byte counts, bcrypt off the event loop, and the
rule for passwords that are easy to guess.

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
from pathlib import Path

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


def lower_priority() -> None:
    """Lower the calling thread's scheduling priority to the least (nice 19, Linux)."""
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
    max_workers=_cores(), thread_name_prefix="bcrypt", initializer=lower_priority
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


# -- easy-to-guess passwords -----------------------------------------------------------

_COMMON_FILE = Path(__file__).with_name("common_passwords.txt")


def _load_common() -> tuple[str, ...]:
    lines = _COMMON_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(line for line in lines if line and not line.startswith("#"))


# The zxcvbn package the list comes from would cost a worker 14 MB, so its head is
# shipped as a file (see its header). It is kept as one 80 KB string, searched for
# "\n<password>\n" in microseconds: a set of the same 10,000 strings costs 1 MB.
_COMMON_BLOB = "\n" + "\n".join(_load_common()) + "\n"


def is_common(password: str) -> bool:
    """One of the 10,000 most common passwords, ignoring case."""
    folded = unicodedata.normalize("NFC", password).casefold()
    return "\n" not in folded and f"\n{folded}\n" in _COMMON_BLOB


# Shorter names or local parts ("al", "jo") are inside too many good passwords to refuse.
MIN_CONTAINED_LENGTH = 3

TOO_COMMON = "This password is too common: it is one of the 10,000 most used. Choose another."
REPEATED = "A password of one repeated character is easy to guess. Choose another."
HAS_USERNAME = "The password must not contain your username."
HAS_EMAIL = "The password must not contain the name part of your e-mail address."


def weakness(password: str, *, username: str, email: str) -> str | None:
    """Why the password is easy to guess, or None. Compared ignoring case, after NFC."""
    folded = unicodedata.normalize("NFC", password).casefold()
    if is_common(folded):
        return TOO_COMMON
    if len(set(folded)) == 1:
        return REPEATED
    name = username.casefold()
    if len(name) >= MIN_CONTAINED_LENGTH and name in folded:
        return HAS_USERNAME
    local_part = email.rpartition("@")[0].casefold()
    if len(local_part) >= MIN_CONTAINED_LENGTH and local_part in folded:
        return HAS_EMAIL
    return None
