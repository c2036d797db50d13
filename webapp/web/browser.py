"""A signed cookie that remembers this browser: its CSRF binding and pending flash messages.

Like Starlette's SessionMiddleware (itsdangerous-signed, HttpOnly, SameSite=Lax),
but Secure with a `__Host-` name over HTTPS, which SessionMiddleware cannot decide
per request.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, TypedDict

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webapp.web.cookies import cookie_header, cookie_name

COOKIE = "browser"
# 30 days, in seconds: a browser that stays away longer starts afresh.
MAX_AGE = 30 * 24 * 3600
FlashLevel = Literal["success", "info", "error"]
MAX_FLASHES = 3


class Flash(TypedDict):
    level: FlashLevel
    text: str


@dataclass
class BrowserState:
    browser_id: str | None = None
    flashes: list[Flash] = field(default_factory=list)
    modified: bool = False
    # Unlike browser_id (renewed at every sign-in and sign-out), this one stays: it is how
    # an account recognises a browser it has seen before.
    device_id: str | None = None

    def ensure_device(self) -> str:
        if self.device_id is None:
            self.device_id = secrets.token_urlsafe(24)
            self.modified = True
        return self.device_id

    def ensure_id(self) -> str:
        if self.browser_id is None:
            self.renew_id()
        assert self.browser_id is not None
        return self.browser_id

    def renew_id(self) -> None:
        """A new identity: every CSRF token issued before is refused from now on."""
        self.browser_id = secrets.token_urlsafe(24)
        self.modified = True

    def add_flash(self, level: FlashLevel, text: str) -> None:
        # A client that never loads a page (curl in a loop) must not grow the cookie
        # past what browsers keep (4 KiB): only the newest few wait.
        self.flashes = [*self.flashes[-(MAX_FLASHES - 1) :], Flash(level=level, text=text)]
        self.modified = True

    def pop_flashes(self) -> list[Flash]:
        flashes, self.flashes = self.flashes, []
        if flashes:
            self.modified = True
        return flashes


def browser_state(conn: HTTPConnection) -> BrowserState:
    state: BrowserState = conn.scope["browser"]
    return state


class BrowserCookieMiddleware:
    def __init__(self, app: ASGIApp, *, signing_key: bytes) -> None:
        self.app = app
        self.serializer = URLSafeTimedSerializer(signing_key, salt="browser")
        # A browser sends the same cookie with every request until it changes: check
        # its signature once. Only values that verified are kept (errors are not).
        self._verified = lru_cache(maxsize=4096)(self._verify)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        name = cookie_name(COOKIE, conn)
        state = self._load(conn.cookies.get(name))
        scope["browser"] = state

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and state.modified:
                payload = {"id": state.browser_id, "flash": state.flashes}
                if state.device_id is not None:
                    payload["device"] = state.device_id
                value = self.serializer.dumps(payload)
                headers = MutableHeaders(scope=message)
                headers.append("set-cookie", cookie_header(name, value, conn, max_age=MAX_AGE))
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _load(self, raw: str | None) -> BrowserState:
        if not raw:
            return BrowserState()
        try:
            browser_id, flashes, device_id, signed_at = self._verified(raw)
        except BadSignature:
            return BrowserState()
        if time.time() - signed_at > MAX_AGE:
            return BrowserState()
        return BrowserState(browser_id=browser_id, flashes=list(flashes), device_id=device_id)

    def _verify(self, raw: str) -> tuple[str | None, tuple[Flash, ...], str | None, float]:
        """What a cookie value holds, if we signed it; raises BadSignature."""
        payload, signed_at = self.serializer.loads(raw, max_age=MAX_AGE, return_timestamp=True)
        if not isinstance(payload, dict):
            raise BadSignature("not a browser cookie")
        browser_id = payload.get("id")
        flashes = payload.get("flash")
        device_id = payload.get("device")
        return (
            browser_id if isinstance(browser_id, str) else None,
            tuple(flashes) if isinstance(flashes, list) else (),
            device_id if isinstance(device_id, str) else None,
            signed_at.timestamp(),
        )
