"""Does a failed sign-in take the same time whether or not the account exists?

    .venv/bin/python -m bench.signin_timing            # 50 of each, bcrypt cost 10
    .venv/bin/python -m bench.signin_timing -n 20 --rounds 12

Signs in with a wrong password, alternately as a registered user (by name and by
e-mail) and as names and addresses nobody has, through the whole app (in-process,
on a fresh SQLite database, throttling raised out of the way), and prints the
median time of each kind and their ratio. The target is a ratio within 20 % of 1.
A tool, not a test: timing depends on the machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("APP_ENV", "test")

from starlette.testclient import TestClient

from webapp.app import create_app
from webapp.migrate import upgrade_to_head
from webapp.settings import Settings

PASSWORD = "a long and unguessable one 8172"
CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def _token(client: TestClient, path: str) -> str:
    found = CSRF.search(client.get(path).text)
    assert found is not None
    return found.group(1)


def measure(count: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'timing.db'}"
        upgrade_to_head(url)
        settings = Settings(
            app_env="test",
            secret_key="bench-secret-key-long-enough-0123456789-abcdefgh",
            database_url=url,
            bcrypt_rounds=rounds,
            auto_migrate=False,
            throttle_account_limit=100_000,
            throttle_client_limit=100_000,
        )
        with TestClient(create_app(settings), follow_redirects=False) as client:
            fields = {"username": "victim", "email": "victim@example.com"}
            fields |= {"password": PASSWORD, "confirm_password": PASSWORD}
            fields["csrf_token"] = _token(client, "/register")
            assert client.post("/register", data=fields).status_code == 303
            timings: dict[str, list[float]] = {"known": [], "unknown": []}
            token = _token(client, "/login")
            for index in range(count * 2):
                kind = "known" if index % 2 == 0 else "unknown"
                name = (
                    ["victim", "victim@example.com"]
                    if kind == "known"
                    else [
                        f"nobody{index}",
                        f"nobody{index}@example.com",
                    ]
                )
                identifier = name[(index // 2) % 2]
                data = {"username": identifier, "password": "wrong guess", "csrf_token": token}
                start = time.perf_counter()
                status = client.post("/login", data=data).status_code
                timings[kind].append(time.perf_counter() - start)
                assert status == 401, status
    known, unknown = (statistics.median(timings[kind]) for kind in ("known", "unknown"))
    return {"known_ms": known * 1000, "unknown_ms": unknown * 1000, "ratio": unknown / known}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.signin_timing", description=__doc__)
    parser.add_argument("-n", type=int, default=50, help="attempts of each kind")
    parser.add_argument("--rounds", type=int, default=10, help="bcrypt cost")
    args = parser.parse_args(argv)
    result = measure(args.n, args.rounds)
    verdict = "pass" if abs(result["ratio"] - 1) <= 0.2 else "FAIL"
    print(
        f"failed sign-in, median of {args.n} each at bcrypt cost {args.rounds}: "
        f"known identifier {result['known_ms']:.1f} ms, unknown {result['unknown_ms']:.1f} ms, "
        f"ratio {result['ratio']:.2f} (target 0.8-1.2: {verdict})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
