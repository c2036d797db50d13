"""bcrypt and database work never run on the event loop thread."""

from __future__ import annotations

import asyncio
import os
import threading

from tests.helpers import csrf_token, login, patch_profile, register
from webapp import db as db_module
from webapp.domain import passwords


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_hashing_and_queries_run_in_worker_threads(client, app, monkeypatch):
    calls: list[tuple[str, bool]] = []

    def spy(name, real):
        def wrapper(*args, **kwargs):
            calls.append((name, _on_loop()))
            return real(*args, **kwargs)

        return wrapper

    # bcrypt is patched where the hashing threads look it up, at call time.
    monkeypatch.setattr(passwords, "hash_password_sync", spy("hash", passwords.hash_password_sync))
    monkeypatch.setattr(
        passwords, "verify_password_sync", spy("verify", passwords.verify_password_sync)
    )
    monkeypatch.setattr(db_module.Database, "reading", spy("read", db_module.Database.reading))
    monkeypatch.setattr(db_module.Database, "writing", spy("write", db_module.Database.writing))

    register(client)
    login(client)
    token = csrf_token(client)
    patch_profile(
        client,
        "alice",
        token,
        password="another password",
        confirm_password="another password",
        current_password="correct horse battery",
    )
    client.get("/")
    client.get("/healthz")

    names = {name for name, _ in calls}
    assert {"hash", "verify", "read", "write"} <= names
    on_loop = [name for name, loop in calls if loop]
    assert on_loop == [], f"ran on the event loop: {on_loop}"


def test_bcrypt_runs_on_low_priority_threads():
    seen: list[tuple[str, int]] = []

    def probe() -> None:
        seen.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, 0)))

    passwords._pool.submit(probe).result()
    hashed = asyncio.run(passwords.hash_password("pw", rounds=4))
    assert asyncio.run(passwords.verify_password("pw", password_hash=hashed))
    [(name, niceness)] = seen
    assert name.startswith("bcrypt")
    assert niceness == passwords.LOW_PRIORITY
    assert os.getpriority(os.PRIO_PROCESS, 0) < passwords.LOW_PRIORITY
