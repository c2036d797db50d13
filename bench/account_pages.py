"""What the account pages cost: signed-in GET /sessions and GET /activity beside GET /.

    .venv/bin/python -m bench.account_pages             # about a minute
    .venv/bin/python -m bench.account_pages --seconds 2 --rounds 1   # a quick look

Starts the app as `bench/run.py` does (uvicorn with the Procfile's flags, one worker,
SQLite in a temporary directory, production bcrypt cost, pinned to one core with the
load on another when there are two), with one user who has 50 live sessions (49 seeded,
plus the one this tool signs in with) and 1,000 security events (999 seeded, plus that
sign-in). Then, per page and in alternating rounds (the median round counts), wrk:

- 16 connections for `--seconds`: requests/s and the median latency under load;
- 1 connection: the median latency of one request on an otherwise idle server.

A page that does not answer 200 (GET /sessions before it exists) is reported "n/a".
Prints one table. A tool, not a test: nothing fails on a slow figure.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert
from sqlmodel import SQLModel

from bench.run import (
    ACCEPT_ENCODING,
    BCRYPT_ROUNDS,
    PASSWORD,
    Browser,
    choose_cpus,
    ensure_wrk,
    log,
    seed_users,
    start_server,
    stop_servers,
    username,
    uvicorn_flags,
    wait_ready,
    wrk_command,
)
from webapp.domain.passwords import hash_password_sync as hash_password

PAGES = ("/", "/sessions", "/activity")
SEEDED_SESSIONS = 49
SEEDED_EVENTS = 999
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
)
EVENT_KINDS = ("signin", "signout", "signin_failed", "password_changed", "session_revoked")


def seed_history(database_url: str, user_id: int) -> None:
    """49 live sessions and 999 events for the user, from a few browsers and addresses."""
    metadata = SQLModel.metadata.tables
    now = datetime.now(UTC)
    sessions = [
        {
            "id": secrets.token_urlsafe(32),
            "public_id": secrets.token_urlsafe(12),
            "user_id": user_id,
            "created_at": now - timedelta(hours=number % 11),
            "expires_at": now + timedelta(days=29),
            "last_seen_at": now - timedelta(minutes=number),
            "authenticated_at": now - timedelta(hours=number % 11),
            "credential_version": 1,
            "user_agent": USER_AGENTS[number % len(USER_AGENTS)],
            "client_addr": f"198.51.100.{number}",
            "device_hash": "",
        }
        for number in range(SEEDED_SESSIONS)
    ]
    start = now - timedelta(days=60)
    events = [
        {
            "user_id": user_id,
            "kind": EVENT_KINDS[number % len(EVENT_KINDS)],
            # Spread over 60 days, oldest first, all before the sign-in.
            "created_at": start + timedelta(minutes=number * 80),
            "client_addr": f"203.0.113.{number % 250}",
            "user_agent": USER_AGENTS[number % len(USER_AGENTS)],
            "detail": "",
        }
        for number in range(SEEDED_EVENTS)
    ]
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(insert(metadata["user_sessions"]), sessions)
            connection.execute(insert(metadata["security_events"]), events)
    finally:
        engine.dispose()


def wrk(
    tool: str,
    url: str,
    headers: Sequence[tuple[str, str]],
    *,
    connections: int,
    seconds: int,
    load_cpu: int | None,
) -> dict[str, Any]:
    command = wrk_command(
        tool, url, headers, connections=connections, seconds=seconds, load_cpu=load_cpu
    )
    env = {**os.environ, "BENCH_DELAY_MS": "0"}
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=seconds + 30, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            return result
    raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")


def measure(seconds: int, rounds: int) -> dict[str, Any]:
    tool = ensure_wrk()
    server_cpu, load_cpu = choose_cpus()
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})
    flags, flags_from = uvicorn_flags()
    log(f"uvicorn flags ({flags_from}); server cpu {server_cpu}, load {load_cpu}")
    with tempfile.TemporaryDirectory(prefix="webapp-account-bench-") as tmp:
        workdir = Path(tmp)
        database_url = f"sqlite:///{workdir / 'bench.db'}"
        log("seeding one user with 50 live sessions and 1,000 events")
        seed_users(database_url, 1, hash_password(PASSWORD, rounds=BCRYPT_ROUNDS))
        seed_history(database_url, user_id=1)
        env = {
            **os.environ,
            "APP_ENV": "development",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "BCRYPT_ROUNDS": str(BCRYPT_ROUNDS),
            "DATABASE_URL": database_url,
            "AUTO_MIGRATE": "false",
            "PYTHONUNBUFFERED": "1",
        }
        server = start_server(
            "app", "webapp.app:app", env=env, flags=flags, cpu=server_cpu, workdir=workdir
        )
        try:
            wait_ready(server, deadline=time.monotonic() + 90)
            browser = Browser(server.port)
            browser.sign_in(username(1))
            statuses = {}
            for path in PAGES:
                reply, page = browser.get_page(path)
                statuses[path] = reply.status
                if path == "/activity" and reply.status == 200:
                    shown = page.count('class="event"')
                    log(f"GET /activity shows {shown} events")
            browser.close()
            headers = [
                ("Cookie", browser.cookie_header()),
                ("Accept", "text/html"),
                ("Accept-Encoding", ACCEPT_ENCODING),
            ]
            measured = [path for path in PAGES if statuses[path] == 200]
            runs: dict[str, dict[str, list[dict[str, Any]]]] = {
                path: {"load": [], "single": []} for path in measured
            }
            for round_number in range(rounds):
                log(f"round {round_number + 1} of {rounds}: {', '.join(measured)}")
                for path in measured:
                    url = server.url + path
                    for kind, connections in (("load", 16), ("single", 1)):
                        found = wrk(
                            tool,
                            url,
                            headers,
                            connections=connections,
                            seconds=seconds,
                            load_cpu=load_cpu,
                        )
                        runs[path][kind].append(found)
        finally:
            stop_servers([server])
    results: dict[str, Any] = {}
    for path in PAGES:
        if path not in runs:
            results[path] = {"status": statuses[path]}
            continue
        load, single = runs[path]["load"], runs[path]["single"]
        errors = sum(sum(run["errors"].values()) for run in load + single)
        results[path] = {
            "status": statuses[path],
            "rps": statistics.median(run["rps"] for run in load),
            "p50_ms_16": statistics.median(run["latency_us"]["p50"] for run in load) / 1000,
            "p50_ms_1": statistics.median(run["latency_us"]["p50"] for run in single) / 1000,
            "errors": errors,
        }
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        "| signed-in page | requests/s (16 conn.) | median (16 conn.) | median (1 conn.) |",
        "|---|---|---|---|",
    ]
    for path, found in results.items():
        if "rps" not in found:
            lines.append(f"| GET {path} | n/a (answered {found['status']}) | n/a | n/a |")
            continue
        note = f" ({found['errors']} errors)" if found["errors"] else ""
        lines.append(
            f"| GET {path} | {found['rps']:,.0f}{note} | {found['p50_ms_16']:.2f} ms "
            f"| {found['p50_ms_1']:.2f} ms |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = parser.parse_args(argv)
    results = measure(args.seconds, args.rounds)
    print(
        "One user with 50 live sessions and 1,000 events; SQLite, one uvicorn worker, "
        f"wrk, median of {args.rounds} round(s) of {args.seconds} s."
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
