"""Security headers on every response, and no-store unless a response says otherwise."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# default-src covers styles, fonts and fetches; script-src is spelled out so nobody
# has to know the fallback rules to see that scripts are same-origin only.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
# Two years, in seconds.
HSTS = "max-age=63072000; includeSubDomains"

# Every byte here rides on every response, fragments included: frame-ancestors
# replaces X-Frame-Options, and with no third-party content nothing needs a
# Permissions-Policy.
_ALWAYS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
)


_RAW_ALWAYS = [(name.encode(), value.encode()) for name, value in _ALWAYS]
# Pages carry per-browser CSRF tokens and, signed in, private data: never cache
# them anywhere. Static assets set their own long-lived Cache-Control.
_RAW_DEFAULTS = [(b"cache-control", b"no-store")]
_RAW_HSTS = [(b"strict-transport-security", HSTS.encode())]


def add_security_headers(headers: MutableHeaders, scheme: str) -> None:
    """Add what the response does not set itself (raw header list, edited in place)."""
    raw = headers.raw
    present = {name.lower() for name, _value in raw}
    extra = _RAW_ALWAYS + _RAW_DEFAULTS + (_RAW_HSTS if scheme == "https" else [])
    raw.extend(item for item in extra if item[0] not in present)


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
