"""Where bcrypt runs: a few low-priority threads, so a storm of sign-ins never stalls anyone.

bcrypt is slow on purpose and releases the GIL while it works. Run in Starlette's
thread pool at normal priority, a handful of concurrent sign-ins would take every
core from the event loop and slow every other request. These threads lower their
own scheduling priority (nice 19, Linux applies it per thread), so the kernel
gives the loop and ordinary requests the CPU first and bcrypt everything left.
There is one thread per core the process may use: more would only queue in the
kernel instead of here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

from webapp import security

# The highest nice value: run only when nothing else wants the core.
LOW_PRIORITY = 19


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
    """security.hash_password on a low-priority thread, awaited."""
    return await asyncio.wrap_future(_pool.submit(security.hash_password, password, rounds=rounds))


async def verify_password(password: str, *, password_hash: str) -> bool:
    """security.verify_password on a low-priority thread, awaited."""
    return await asyncio.wrap_future(
        _pool.submit(security.verify_password, password, password_hash=password_hash)
    )


async def dummy_hash(rounds: int) -> str:
    """security.dummy_hash (made once per cost) on a low-priority thread, awaited."""
    return await asyncio.wrap_future(_pool.submit(security.dummy_hash, rounds))
