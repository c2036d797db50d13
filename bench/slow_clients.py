"""Slow and oversized clients against one uvicorn worker of the app, on loopback.

    python -m bench.slow_clients                 # the recommended flags (RECOMMENDED_FLAGS)
    python -m bench.slow_clients --procfile      # the Procfile's web flags
    python -m bench.slow_clients --flags "--http h11 --timeout-keep-alive 5"

Starts the app on a fresh SQLite database, then at once: idle clients (connect, send
nothing), half-sent heads, heads and bodies trickled one byte per interval, and a 1 MB
and a 64 MB header line; a normal client fetches /healthz every 0.5 s throughout. Prints
how long the server held each hostile client and what it answered, the normal client's
latency, the worker's resident memory and the server's warnings. A measurement tool, not
a test: it exits 0 whatever it measures.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import secrets
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The Procfile's flags.
RECOMMENDED_FLAGS = (
    "--no-proxy-headers --no-server-header --timeout-keep-alive 5 --timeout-graceful-shutdown 20"
    " --http webapp.web.protocol:GuardedHttpToolsProtocol"
)
# Set here, or meaningless for one loopback worker.
_DROPPED_WITH_VALUE = {"--host", "--port", "--workers", "--uds", "--fd", "--env-file"}
_DROPPED = {"--reload", "--factory"}
APP = "webapp.app:app"
HOST = "127.0.0.1"
MB = 1024 * 1024


@dataclass
class Outcome:
    kind: str
    held: float  # seconds from connect until the server closed (or the client gave up)
    answer: str  # status code of the first response, or "-"
    end: str  # closed, reset, open at the end, connect failed
    answered: float | None = None  # seconds from connect to the first response


def procfile_flags() -> str:
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.removeprefix("web:")
    raise SystemExit("no web: line in the Procfile")


def server_flags(text: str) -> list[str]:
    """The uvicorn options of a command line, less the app and what this tool sets."""
    words = shlex.split(text)
    if "uvicorn" in words:
        words = words[words.index("uvicorn") + 1 :]
    flags: list[str] = []
    rest = iter(words)
    for word in rest:
        name = word.split("=", 1)[0]
        if name in _DROPPED_WITH_VALUE:
            if "=" not in word:
                next(rest, None)
        elif name in _DROPPED or word == APP:
            continue
        else:
            flags.append(word)
    return flags


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    with contextlib.suppress(OSError):
        return sum(1 for _fd in Path(f"/proc/{pid}/fd").iterdir())
    return 0


def status_of(data: bytes) -> str:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return match.group(1).decode() if match else "?"


def hostile(
    kind: str, port: int, first: bytes, trickle: bytes, interval: float, hold: float
) -> Outcome:
    """Send `first`, then `trickle` one byte per interval; watch for answers until `hold`."""
    start = time.monotonic()
    try:
        sock = socket.create_connection((HOST, port), timeout=10)
    except OSError as exc:
        return Outcome(kind, time.monotonic() - start, "-", f"connect failed: {exc.strerror}")
    answer, answered, pending = "-", None, iter(trickle)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    deadline, next_byte = start + hold, start + interval
    with sock:
        try:
            sock.sendall(first)
            while (now := time.monotonic()) < deadline:
                if poller.poll(max(0.0, min(deadline, next_byte) - now) * 1000):
                    data = sock.recv(65536)
                    if not data:
                        return Outcome(kind, time.monotonic() - start, answer, "closed", answered)
                    if answer == "-":
                        answer, answered = status_of(data), time.monotonic() - start
                elif time.monotonic() >= next_byte:
                    byte = next(pending, None)
                    if byte is not None:
                        sock.sendall(bytes([byte]))
                    next_byte += interval
        except (ConnectionResetError, BrokenPipeError) as exc:
            end = "reset" if isinstance(exc, ConnectionResetError) else "closed (EPIPE)"
            return Outcome(kind, time.monotonic() - start, answer, end, answered)
    return Outcome(kind, hold, answer, "open at the end", answered)


def oversized(kind: str, port: int, size: int, hold: float) -> Outcome:
    """One header line of `size` bytes, sent as fast as the server reads it."""
    start = time.monotonic()
    head = f"GET /healthz HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-Big: ".encode()
    total, sent, answer, answered = len(head) + size + 4, 0, "-", None
    chunk = b"a" * (256 * 1024)
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.setblocking(False)
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLOUT)
        try:
            while time.monotonic() < start + hold:
                for _fd, event in poller.poll(500):
                    if event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        data = sock.recv(65536)
                        if not data:
                            end = f"closed after {sent / MB:.2f} MB sent"
                            return Outcome(kind, time.monotonic() - start, answer, end, answered)
                        if answer == "-":
                            answer, answered = status_of(data), time.monotonic() - start
                    elif event & select.POLLOUT and sent < total:
                        if sent < len(head):
                            piece = head[sent:]
                        elif sent < total - 4:
                            piece = chunk[: total - 4 - sent]
                        else:
                            piece = b"\r\n\r\n"[sent - total + 4 :]
                        with contextlib.suppress(BlockingIOError):
                            sent += sock.send(piece)
                        if sent == total:
                            poller.modify(sock, select.POLLIN)
        except (ConnectionResetError, BrokenPipeError):
            end = f"reset after {sent / MB:.2f} MB sent"
            return Outcome(kind, time.monotonic() - start, answer, end, answered)
    return Outcome(kind, hold, answer, f"open at the end, {sent / MB:.2f} MB sent", answered)


class NormalClient(threading.Thread):
    """GET /healthz on a new connection every 0.5 s: (when, seconds taken, status or error)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.results: list[tuple[float, float, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        request = f"GET /healthz HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nConnection: close\r\n\r\n"
        while not self.stop.wait(0.5):
            began = time.monotonic()
            try:
                with socket.create_connection((HOST, self.port), timeout=10) as sock:
                    sock.sendall(request.encode())
                    reply = b""
                    while data := sock.recv(65536):
                        reply += data
                result = status_of(reply)
            except OSError as exc:
                result = type(exc).__name__
            self.results.append((began, time.monotonic() - began, result))


class Sampler(threading.Thread):
    """The worker's VmRSS (MB) and open file descriptors, four times a second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss = rss_mb(pid)
        self.peak_fds = open_fds(pid)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.peak_rss = max(self.peak_rss, rss_mb(self.pid))
            self.peak_fds = max(self.peak_fds, open_fds(self.pid))


def start_server(
    flags: list[str], app_dir: Path, workdir: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env |= {
        "APP_ENV": "development",
        "SECRET_KEY": secrets.token_urlsafe(36),  # 48 characters
        "DATABASE_URL": f"sqlite:///{workdir / 'app.db'}",
        "PYTHONPATH": str(REPO),  # for a --http class under bench/
    }
    command = [sys.executable, "-m", "uvicorn", APP, "--host", HOST]
    command += ["--port", str(port), "--workers", "1", *flags]
    with (workdir / "server.log").open("wb") as log:
        process = subprocess.Popen(
            command, cwd=app_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 2) as sock:
            sock.sendall(
                f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
            )
            if status_of(sock.recv(65536)) == "200":
                return process, port
        time.sleep(0.2)
    process.kill()
    tail = (workdir / "server.log").read_text(errors="replace")[-3000:]
    raise SystemExit(f"the server did not start:\n{tail}")


def stop_server(process: subprocess.Popen[bytes]) -> float:
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return time.monotonic() - began


def latency_line(results: list[tuple[float, float, str]]) -> str:
    if not results:
        return "no requests"
    times = sorted(seconds * 1000 for _when, seconds, _result in results)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    failures = collections.Counter(result for _w, _s, result in results if result != "200")
    failed = ", ".join(f"{result} x{count}" for result, count in failures.items()) or "none"
    return (
        f"{len(times)} requests, p50 {statistics.median(times):.1f} ms, p99 {p99:.1f} ms, "
        f"max {times[-1]:.1f} ms, failures: {failed}"
    )


def counted(values: list[str]) -> str:
    return ", ".join(f"{value}: {count}" for value, count in collections.Counter(values).items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flags", default=RECOMMENDED_FLAGS, help="uvicorn options to try")
    parser.add_argument("--procfile", action="store_true", help="use the Procfile's web flags")
    parser.add_argument("--clients", type=int, default=50, help="clients of each slow kind")
    parser.add_argument("--half-sent", type=int, default=150, help="clients that stop mid-head")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between bytes")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds a client holds on")
    parser.add_argument("--app-dir", type=Path, default=REPO, help="where webapp/ is")
    parser.add_argument("--log", type=Path, help="keep the server's log in this file")
    args = parser.parse_args()
    flags = server_flags(procfile_flags() if args.procfile else args.flags)

    host = f"Host: {HOST}\r\n".encode()
    form = b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
    login, nowhere = b"POST /login HTTP/1.1\r\n" + host, b"POST /nowhere HTTP/1.1\r\n" + host

    def slow(first: bytes, trickle: bytes) -> Callable[[str, int], Outcome]:
        return lambda kind, port: hostile(kind, port, first, trickle, args.interval, args.hold)

    def big(size: int) -> Callable[[str, int], Outcome]:
        return lambda kind, port: oversized(kind, port, size, args.hold)

    kinds: list[tuple[str, int, Callable[[str, int], Outcome]]] = [
        ("idle (sends nothing)", args.clients, slow(b"", b"")),
        ("half-sent head, then nothing", args.half_sent, slow(login, b"")),
        ("head, 1 byte per interval", args.clients, slow(b"G", b"ET /healthz HTTP/1.1\r\n" + host)),
        ("body read by app, 1 B/interval", args.clients, slow(login + form + b"a", b"a" * 999)),
        ("body unread (404), 1 B/interval", args.clients, slow(nowhere + form + b"a", b"a" * 999)),
        ("header line of 1 MB", 1, big(MB)),
        ("header line of 64 MB", 1, big(64 * MB)),
    ]

    threading.stack_size(256 * 1024)
    with tempfile.TemporaryDirectory(prefix="slow-clients-") as tmp:
        workdir = Path(tmp)
        process, port = start_server(flags, args.app_dir, workdir)
        try:
            print(f"uvicorn {shlex.join(flags)}  (worker pid {process.pid}, port {port})")
            sampler, normal = Sampler(process.pid), NormalClient(port)
            sampler.start()
            normal.start()
            time.sleep(3)  # the normal client's baseline
            rss_before, attack_began = rss_mb(process.pid), time.monotonic()
            outcomes: list[Outcome] = []
            threads = [
                threading.Thread(target=lambda k=kind, r=run: outcomes.append(r(k, port)))
                for kind, count, run in kinds
                for _ in range(count)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            attack_ended = time.monotonic()
            time.sleep(3)
            normal.stop.set()
            normal.join()
            sampler.stop.set()
            rss_after = rss_mb(process.pid)
        finally:
            shutdown = stop_server(process)
        log = (workdir / "server.log").read_text(errors="replace")
    if args.log:
        args.log.write_text(log)

    columns = f"{'hostile client':32} {'n':>4} {'held s min/med/max':>20} {'answer at':>9}"
    print(f"\n{columns}  answers; ended")
    for kind, _count, _run in kinds:
        mine = [outcome for outcome in outcomes if outcome.kind == kind]
        if not mine:
            continue
        held = sorted(outcome.held for outcome in mine)
        spread = f"{held[0]:.1f} / {statistics.median(held):.1f} / {held[-1]:.1f}"
        times = [o.answered for o in mine if o.answered is not None]
        at = f"{statistics.median(times):.1f} s" if times else "-"
        answers, ends = counted([o.answer for o in mine]), counted([o.end for o in mine])
        print(f"{kind:32} {len(mine):4} {spread:>20} {at:>9}  {answers}; {ends}")
    baseline = [r for r in normal.results if r[0] < attack_began]
    attacked = [r for r in normal.results if attack_began <= r[0] < attack_ended]
    print(f"\nnormal GET /healthz, before: {latency_line(baseline)}")
    print(f"normal GET /healthz, during: {latency_line(attacked)}")
    after = [r for r in normal.results if r[0] >= attack_ended]
    print(f"normal GET /healthz, after:  {latency_line(after)}")
    print(
        f"worker RSS: before {rss_before:.1f} MB, peak {sampler.peak_rss:.1f} MB, "
        f"after {rss_after:.1f} MB; open fds peak {sampler.peak_fds}; "
        f"SIGTERM to exit {shutdown:.1f} s"
    )
    notes = collections.Counter(
        line.split(":", 1)[1].strip()[:70]
        for line in log.splitlines()
        if line.startswith(("WARNING:", "ERROR:"))
    )
    print("server warnings and errors:", "none" if not notes else "")
    for message, count in notes.most_common(8):
        print(f"  {count:5} x {message}")


if __name__ == "__main__":
    main()
