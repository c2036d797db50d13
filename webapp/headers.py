"""Security headers on every response, and no-store unless a response says otherwise."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
# Two years, in seconds.
HSTS = "max-age=63072000; includeSubDomains"

_ALWAYS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("permissions-policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()"),
)


def add_security_headers(headers: MutableHeaders, scheme: str) -> None:
    for name, value in _ALWAYS:
        headers.setdefault(name, value)
    if scheme == "https":
        headers.setdefault("strict-transport-security", HSTS)
    # Pages carry per-browser CSRF tokens and, signed in, private data: never cache
    # them anywhere. Static assets set their own long-lived Cache-Control.
    headers.setdefault("cache-control", "no-store")


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_security_headers(MutableHeaders(scope=message), scope["scheme"])
            await send(message)

        await self.app(scope, receive, send_with_headers)
