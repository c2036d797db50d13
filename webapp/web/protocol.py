"""uvicorn's httptools protocol with the deadlines and the head limit uvicorn lacks.

The Procfile's web line names it: `--http webapp.web.protocol:GuardedHttpToolsProtocol`
(and `python -m webapp serve` passes it too). uvicorn 0.54 gives a connection no
deadline until it has answered a first request, then only an idle timer that any
byte cancels, and its httptools parser buffers a request head of any size. This subclass adds:

- a connection that sends nothing is closed after `--timeout-keep-alive` seconds,
  silently, as uvicorn closes an idle keep-alive connection;
- a request head must be complete `head_timeout` seconds after its first byte,
  else 408 and close;
- a request head over `max_head_bytes` gets 431 and close (h11 answers 400 at 16 KiB);
- a request body must be complete `body_timeout` seconds after its head, whether or
  not the app reads it, else 408 (if no response has started) and close. An app
  awaiting `receive()` then gets `http.disconnect` (Starlette: `ClientDisconnect`).

A timer is armed only for a request still unfinished after the read that began it, so
the usual request, read whole at once, costs no timer. It reads uvicorn internals
(`cycle`, `url`, `headers`, `timeout_keep_alive_task`): keep uvicorn pinned to a minor
version and this class under test.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

HEAD_TIMEOUT = 10.0  # seconds from a request's first byte to the end of its head
BODY_TIMEOUT = 20.0  # seconds from the end of the head to the end of the body (64 KiB max)
MAX_HEAD_BYTES = 16 * 1024  # request line and headers, as h11's and Node's defaults


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    # Class attributes, so a subclass (the tests') can shorten them.
    head_timeout = HEAD_TIMEOUT
    body_timeout = BODY_TIMEOUT
    max_head_bytes = MAX_HEAD_BYTES

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_head = False  # between a request's first byte and the end of its head
        self._in_body = False  # between the end of its head and the end of its body
        self._due = 0.0  # loop time by which the current part must be complete
        self._head_bytes = 0  # in the reads before the current one
        self._read_bytes = 0  # in the current read
        self._deadline: asyncio.TimerHandle | None = None
        self._rejected = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its idle timer only after a response; arm it before the first one too.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._unset_keepalive_if_required()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        self._read_bytes = len(data)
        super().data_received(data)
        if self._rejected or self.transport.is_closing():
            return
        if self._in_head:
            # Every byte of a read after which the head is still unfinished is head; a head
            # that ended within the read is measured exactly in on_headers_complete.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._reject(431, "Request Header Fields Too Large")
                return
        if (self._in_head or self._in_body) and self._deadline is None:
            self._deadline = self.loop.call_at(self._due, self._timed_out)

    def on_message_begin(self) -> None:
        if self._rejected:
            return
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        self._due = self.loop.time() + self.head_timeout

    def on_headers_complete(self) -> None:
        if self._rejected:
            return
        self._in_head = False
        self._disarm()
        if self._head_bytes + self._read_bytes > self.max_head_bytes and (
            len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            > self.max_head_bytes
        ):
            self._reject(431, "Request Header Fields Too Large")
            return
        super().on_headers_complete()
        self._in_body = True
        self._due = self.loop.time() + self.body_timeout

    def on_body(self, body: bytes) -> None:
        if not self._rejected:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._rejected:
            return
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if not (self._in_head or self._in_body):
            return
        cycle = self.cycle
        if self._in_body and cycle is not None and cycle.response_started:
            # The app has answered (or is answering) without waiting for the rest.
            self._rejected = True
            self.transport.close()
            return
        if self._in_body and cycle is not None:
            # Whatever the app sends from now on is dropped; a pending receive() returns
            # http.disconnect.
            cycle.disconnected = True
            cycle.message_event.set()
        self._reject(408, "Request Timeout")

    def _reject(self, status: int, message: str) -> None:
        self._rejected = True
        self._in_head = self._in_body = False
        self._disarm()
        if self.transport.is_closing():
            return
        self.logger.warning("%s: closing the connection.", message)
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        body = message.encode("ascii")
        content.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
