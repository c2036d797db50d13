"""A soak: one uvicorn worker of the app under mixed signed-in load; does its memory level off?

    python -m bench.soak --minutes 10            # 0.5 for a quick look

Starts the app with the Procfile's flags on a fresh SQLite database (BCRYPT_ROUNDS=4, so
the load is not just bcrypt), registers and signs in one user per client thread through
the real forms, then each thread loops on its own keep-alive connection: the signed-in
home page, an htmx e-mail change, now and then sign-out and sign-in again. Prints the
worker's VmRSS every 30 s, then its start, peak and end, and whether it levelled off
(the last third of the run grew less than 2 %). A measurement tool, not a test.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import http.client
import os
import random
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
APP = "webapp.app:app"
HOST = "127.0.0.1"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
FORM_TYPE = "application/x-www-form-urlencoded"
# The steps of a client's loop and their shares.
STEPS, WEIGHTS = ("home", "update", "re-sign-in"), (0.70, 0.22, 0.08)
REPORT_EVERY = 30.0  # seconds
SAMPLE_EVERY = 2.0  # seconds
LEVEL = 0.02  # the last third may grow by less than this share


class Browser:
    """A cookie jar on one keep-alive connection, sending what a browser's form would."""

    def __init__(self, port: int, number: int, password: str) -> None:
        self.port = port
        # Each browser its own address, through the proxy header the app trusts from
        # loopback: per-client throttles see 20 people, not one.
        self.address = f"10.1.{number // 250}.{number % 250 + 1}"
        username = f"soak{number}x{secrets.token_hex(3)}"
        self.origin = f"http://{HOST}:{port}"
        self.conn = http.client.HTTPConnection(HOST, port, timeout=60)
        self.jar: dict[str, str] = {}
        self.username, self.password = username, password
        self.token = ""

    def send(
        self,
        method: str,
        path: str,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        sent = {"Accept": "text/html", "Accept-Encoding": "gzip", "X-Forwarded-For": self.address}
        sent |= headers or {}
        if self.jar:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.jar.items())
        body = None
        if fields is not None:
            body = urlencode(fields).encode()
            sent |= {"Content-Type": FORM_TYPE, "Origin": self.origin}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=sent)
                reply = self.conn.getresponse()
                raw = reply.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed this keep-alive connection before reading the request.
                self.conn.close()
                if attempt == 2:
                    raise
        for header in reply.headers.get_all("Set-Cookie") or []:
            pair, _, attributes = header.partition(";")
            name, _, value = pair.strip().partition("=")
            if not value or "max-age=0" in attributes.lower().replace(" ", ""):
                self.jar.pop(name, None)
            else:
                self.jar[name] = value
        if reply.getheader("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8", "replace")
        if match := CSRF_META.search(text):
            self.token = match.group(1)
        return reply.status, text

    def expect(self, wanted: int, method: str, path: str, **kwargs: dict[str, str]) -> None:
        status, _text = self.send(method, path, **kwargs)
        if status != wanted:
            raise RuntimeError(f"{method} {path} answered {status}, not {wanted}")

    def register(self) -> None:
        self.expect(200, "GET", "/register")
        fields = {"username": self.username, "email": f"{self.username}@example.com"}
        fields |= {"password": self.password, "confirm_password": self.password}
        self.expect(303, "POST", "/register", fields={**fields, "csrf_token": self.token})

    def sign_in(self) -> None:
        self.expect(200, "GET", "/login")
        fields = {"username": self.username, "password": self.password, "csrf_token": self.token}
        self.expect(303, "POST", "/login", fields=fields)
        self.expect(200, "GET", "/")  # the session-bound CSRF token, and the flash used up

    def sign_out(self) -> None:
        self.expect(303, "POST", "/logout", fields={"csrf_token": self.token})

    def change_email(self) -> None:
        fields = {"csrf_token": self.token, "username": "", "password": "", "confirm_password": ""}
        fields |= {"email": f"{self.username}.{secrets.token_hex(4)}@example.com"}
        fields["current_password"] = self.password
        headers = {"HX-Request": "true", "X-CSRF-Token": self.token}
        headers["Accept-Encoding"] = "br, gzip"  # as a browser; the body is not read
        self.expect(200, "PATCH", f"/partial/{self.username}", fields=fields, headers=headers)


class Load:
    def __init__(self, browsers: list[Browser]) -> None:
        self.browsers = browsers
        self.stop = threading.Event()
        self.done: collections.Counter[str] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def client(self, browser: Browser) -> None:
        while not self.stop.is_set():
            step = random.choices(STEPS, weights=WEIGHTS)[0]
            try:
                if step == "home":
                    browser.expect(200, "GET", "/")
                elif step == "update":
                    browser.change_email()
                else:
                    browser.sign_out()
                    browser.sign_in()
                outcome = ""
            except (RuntimeError, OSError, http.client.HTTPException) as exc:
                outcome = str(exc)[:80]
                browser.conn.close()
                with contextlib.suppress(RuntimeError, OSError, http.client.HTTPException):
                    browser.sign_in()  # start again from a clean state
            with self.lock:
                self.done[step] += 1
                if outcome:
                    self.failures[outcome] += 1


def proc_status(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    with contextlib.suppress(OSError):
        return sum(1 for _fd in Path(f"/proc/{pid}/fd").iterdir())
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def procfile_flags() -> list[str]:
    web = next(
        line for line in (REPO / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    words = shlex.split(web.removeprefix("web:"))
    flags, rest = [], iter(words[words.index("uvicorn") + 1 :])
    for word in rest:
        if word in ("--host", "--port", "--workers"):
            next(rest, None)  # set here
        elif word != APP and not word.startswith(("--host=", "--port=", "--workers=")):
            flags.append(word)
    return flags


def start_server(
    flags: list[str], app_dir: Path, workdir: Path, extra: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env |= {
        "APP_ENV": "development",
        "SECRET_KEY": secrets.token_urlsafe(36),
        "DATABASE_URL": f"sqlite:///{workdir / 'app.db'}",
        "BCRYPT_ROUNDS": "4",
        **extra,
    }
    command = [sys.executable, "-m", "uvicorn", APP, "--host", HOST, "--port", str(port)]
    with (workdir / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [*command, "--workers", "1", *flags],
            cwd=app_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # the access log
            stderr=log,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return process, port
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start:\n" + (workdir / "server.log").read_text()[-3000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load")
    parser.add_argument("--clients", type=int, default=20, help="client threads, one user each")
    parser.add_argument("--flags", help="uvicorn options instead of the Procfile's")
    parser.add_argument("--app-dir", type=Path, default=REPO, help="where webapp/ is")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the app, e.g. DB_POOL_SIZE=4 (repeatable)",
    )
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    flags = shlex.split(args.flags) if args.flags is not None else procfile_flags()

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        process, port = start_server(flags, args.app_dir, Path(tmp), extra)
        pid = process.pid
        settings = " ".join(args.env)
        print(f"uvicorn {shlex.join(flags)} {settings} (worker pid {pid}, {args.clients} clients)")
        fresh = proc_status(pid, "VmRSS") / 1024
        try:
            browsers = [
                Browser(port, index, secrets.token_urlsafe(12)) for index in range(args.clients)
            ]
            for browser in browsers:
                browser.register()
                browser.sign_in()
            load = Load(browsers)
            threads = [
                threading.Thread(target=load.client, args=(b,), daemon=True) for b in browsers
            ]
            began = time.monotonic()
            samples = [(0.0, proc_status(pid, "VmRSS") / 1024)]
            for thread in threads:
                thread.start()
            next_report, last_count = REPORT_EVERY, 0
            while (elapsed := time.monotonic() - began) < args.minutes * 60:
                time.sleep(min(SAMPLE_EVERY, args.minutes * 60 - elapsed))
                elapsed = time.monotonic() - began
                samples.append((elapsed, proc_status(pid, "VmRSS") / 1024))
                if elapsed >= next_report:
                    with load.lock:
                        count, failed = sum(load.done.values()), sum(load.failures.values())
                    rate = (count - last_count) / REPORT_EVERY
                    last_count, next_report = count, next_report + REPORT_EVERY
                    print(
                        f"{elapsed:6.0f} s  RSS {samples[-1][1]:6.1f} MB  "
                        f"threads {proc_status(pid, 'Threads'):3}  fds {open_fds(pid):3}  "
                        f"{rate:6.1f} steps/s  "
                        f"failures {failed}",
                        flush=True,
                    )
            load.stop.set()
            for thread in threads:
                thread.join(timeout=60)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log = (Path(tmp) / "server.log").read_text(errors="replace").splitlines()
        database = sum(path.stat().st_size for path in Path(tmp).glob("app.db*"))

    start, end = samples[0][1], samples[-1][1]
    peak = max(rss for _t, rss in samples)
    total = samples[-1][0]
    third = [rss for t, rss in samples if t >= total * 2 / 3]
    growth = (max(third) - third[0]) / third[0]
    print(f"\nsteps: {dict(load.done)}; failures: {dict(load.failures) or 'none'}")
    print(f"RSS fresh {fresh:.1f} MB; under load start {start:.1f}, peak {peak:.1f}, end {end:.1f}")
    verdict = "levelled off" if growth < LEVEL else "still growing"
    print(
        f"last third grew {growth * 100:.1f} % ({verdict}); database files {database / 1e6:.1f} MB"
    )
    notes = collections.Counter(
        line.split(":", 1)[1].strip()[:70]
        for line in log
        if line.startswith(("WARNING:", "ERROR:"))
    )
    for message, count in notes.most_common(5):
        print(f"  server log: {count} x {message}")


if __name__ == "__main__":
    main()
