"""Slow and oversized clients against a real uvicorn worker with the Procfile's flags:
headers over 16 KiB get 431, headers or bodies that never finish get 408, an idle
connection is closed, and an over-long body's 413 reaches the client. Meanwhile a
normal client is served."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import LiveServer, base_env


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    env = base_env(f"sqlite:///{tmp_path / 'serving.db'}", AUTO_MIGRATE="true")
    # The Procfile's flags, then the tests' protocol with deadlines of a second or so.
    live = LiveServer(
        "serving",
        env,
        tmp_path,
        extra_flags=["--http", "tests.serving_protocol:QuickGuardedProtocol"],
    )
    try:
        live.wait_until_ready()
        yield live
    finally:
        live.stop()


def _connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _answer(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes (or 10 s pass)."""
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def _healthy(server: LiveServer) -> None:
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_headers_over_16_kib_get_431(server):
    with _connect(server) as connection:
        connection.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
        )
        assert _answer(connection).startswith(b"HTTP/1.1 431")
    _healthy(server)


def test_headers_that_never_finish_get_408(server):
    with _connect(server) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        _healthy(server)  # a normal client is answered meanwhile
        assert _answer(connection).startswith(b"HTTP/1.1 408")


def test_a_body_that_never_finishes_gets_408(server):
    with _connect(server) as connection:
        connection.sendall(
            b"POST /login HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nab"
        )
        _healthy(server)
        assert _answer(connection).startswith(b"HTTP/1.1 408")


def test_an_idle_connection_is_closed(server):
    with _connect(server) as connection:
        started = time.monotonic()
        assert _answer(connection) == b""
        # Closed by the server at --timeout-keep-alive, not by our 10 s socket timeout.
        assert time.monotonic() - started < 9


def test_an_over_long_body_gets_its_413_not_a_reset(server):
    body = b"a=" + b"x" * 200_000
    with _connect(server) as connection:
        connection.sendall(
            b"POST /login HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        connection.sendall(body)
        answer = _answer(connection)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in answer.lower()


def test_link_tokens_never_reach_the_access_log(server):
    token = "Zq" * 21 + "x"
    for prefix in ("/password-reset/", "/verify-email/", "/email-revert/"):
        assert httpx.get(f"{server.url}{prefix}{token}", timeout=5).status_code == 400
    time.sleep(0.2)  # let the worker's log line reach the file
    log = server.log()
    assert "/password-reset/[token]" in log
    assert token not in log
