"""Real processes for the deployment tests: uvicorn subprocesses on loopback ports,
a throwaway PostgreSQL database, and a TCP proxy that can cut the database off.

Everything here is bounded: every wait has a deadline and every process and
thread is stopped by the context manager that started it.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from tests.conftest import _postgres_database
from tests.helpers import ROOT, SECRET

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
# Seconds a server gets to start (import, migrate, bind) before the test gives up.
START_TIMEOUT = 30.0


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (skips, or fails under REQUIRE_POSTGRES, without one)."""
    yield from _postgres_database(f"{prefix}_{uuid.uuid4().hex[:12]}")


def base_env(database_url: str, **extra: str) -> dict[str, str]:
    """An explicit environment for a child process: nothing leaks in from the test runner."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "APP_ENV": "test",
        "SECRET_KEY": SECRET,
        "DATABASE_URL": database_url,
        "BCRYPT_ROUNDS": "4",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def procfile_flags() -> list[str]:
    """The web line's uvicorn options but the address, so tests serve as production does."""
    line = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    words = shlex.split(line.removeprefix("web:"))[2:]
    flags: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in ("--host", "--port"):
            skip = True
        else:
            flags.append(word)
    return flags


class LiveServer:
    """One `uvicorn webapp.app:app` process, as the Procfile runs it."""

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        log_dir: Path,
        extra_flags: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"uvicorn-{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "webapp.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *procfile_flags(),
                *extra_flags,
            ],
            cwd=ROOT,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


@contextmanager
def live_servers(env: Mapping[str, str], log_dir: Path, *names: str) -> Iterator[list[LiveServer]]:
    """Start every server at once (they race through start-up, migrations included)."""
    servers: list[LiveServer] = []
    try:
        for name in names:
            servers.append(LiveServer(name, env, log_dir))
        for server in servers:
            server.wait_until_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


def csrf_token_in(html: str) -> str:
    match = CSRF_META.search(html)
    assert match, "no csrf-token meta in the page"
    return match.group(1)


def page_token(client: httpx.Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return csrf_token_in(response.text)


# -- a TCP proxy that can cut the database off ----------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `close()` is an outage, `open()` the repair.

    Closing stops listening (new connections are refused) and drops every live
    connection, as a database restart or a lost network path does. `silence()` is
    the nastier outage: connections stay up and new ones are accepted, but nothing
    is forwarded any more, as when a firewall starts dropping packets.
    """

    # Seconds between checks of the stop flag by the blocking socket calls.
    POLL = 0.1

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._silent = threading.Event()

    @property
    def is_open(self) -> bool:
        return self._listener is not None

    def open(self) -> None:
        assert self._listener is None, "already open"
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(self.POLL)
        self._stop = threading.Event()
        self._listener = listener
        self._start(self._accept_loop, listener, self._stop)

    def silence(self) -> None:
        """Keep every connection, answer nothing; `close()` then `open()` to end it."""
        self._silent.set()

    def close(self) -> None:
        self._silent.clear()
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stop.set()
        listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            _drop(connection)
        self._join()

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _join(self) -> None:
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=5)
            assert not thread.is_alive(), "a proxy thread did not stop"

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._silent.is_set():
                # Accepted by the kernel, never answered: held until close().
                with self._lock:
                    self._connections.append(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                _drop(client)
                continue
            for connection in (client, upstream):
                connection.settimeout(self.POLL)
            with self._lock:
                if stop.is_set():
                    _drop(client)
                    _drop(upstream)
                    return
                self._connections += [client, upstream]
            self._start(self._pump, client, upstream, stop, self._silent)
            self._start(self._pump, upstream, client, stop, self._silent)

    @staticmethod
    def _pump(
        source: socket.socket,
        sink: socket.socket,
        stop: threading.Event,
        silent: threading.Event,
    ) -> None:
        while not stop.is_set():
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            if silent.is_set():
                continue  # swallowed: the other side waits for an answer forever
            try:
                sink.sendall(data)
            except OSError:
                break
        _drop(source)
        _drop(sink)


def _drop(connection: socket.socket) -> None:
    with suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()


@contextmanager
def tcp_proxy(target: tuple[str, int]) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target)
    proxy.open()
    try:
        yield proxy
    finally:
        proxy.close()


def require_postgres_url() -> str:
    """TEST_DATABASE_URL, or skip (fail under REQUIRE_POSTGRES) as conftest does."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        message = "TEST_DATABASE_URL is not set, so this PostgreSQL test is skipped"
        if os.environ.get("REQUIRE_POSTGRES", "") not in ("", "0", "false"):
            pytest.fail(message + " (REQUIRE_POSTGRES is set)")
        pytest.skip(message)
    return url
