"""The middleware of our own: trusted X-Forwarded-* handling, and security headers.

A PaaS router appends the address it saw to X-Forwarded-For; anything to the
left of that came from the client and can be forged. So the client address is
the entry `hops` places from the right, never blindly the left-most.
"""

from __future__ import annotations

import ipaddress

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webapp.models import Client
from webapp.web.browser import browser_state

# -- security headers -------------------------------------------------------------------

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


_COOP = b"cross-origin-opener-policy"


def add_security_headers(headers: MutableHeaders, scheme: str, *, fragment: bool = False) -> None:
    """Add what the response does not set itself (raw header list, edited in place).

    A `fragment` (the answer to an htmx request, fetched into a page and never a
    top-level document) leaves out Cross-Origin-Opener-Policy, which only documents use.
    """
    raw = headers.raw
    present = {name.lower() for name, _value in raw}
    extra = _RAW_ALWAYS + _RAW_DEFAULTS + (_RAW_HSTS if scheme == "https" else [])
    raw.extend(
        item for item in extra if item[0] not in present and not (fragment and item[0] == _COOP)
    )


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        fragment = any(
            name == b"hx-request" and value == b"true" for name, value in scope["headers"]
        ) and not any(name == b"hx-boosted" for name, _value in scope["headers"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_security_headers(
                    MutableHeaders(scope=message), scope["scheme"], fragment=fragment
                )
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- trusted proxies --------------------------------------------------------------------


def _valid_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def _joined(scope: Scope, name: bytes) -> str:
    """Every line of a header, in order, as one comma-separated list (RFC 9110, 5.3)."""
    return ",".join(value.decode("latin-1") for key, value in scope["headers"] if key == name)


class TrustedProxyMiddleware:
    def __init__(self, app: ASGIApp, *, trusted: tuple[str, ...], hops: int) -> None:
        self.app = app
        self.trust_all = "*" in trusted
        # Addresses and networks ("10.0.0.0/8"), as uvicorn accepts them; anything
        # else (a socket path, a test client's name) must match exactly.
        self.networks = []
        self.names = set()
        for entry in trusted:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry)
        self.hops = hops

    def _trusts(self, scope: Scope) -> bool:
        if self.trust_all:
            return True
        client = scope.get("client")
        if client is None:
            return False
        if client[0] in self.names:
            return True
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self._trusts(scope):
            # Mutate the scope in place: Starlette's outermost error handler holds the same dict.
            proto = _joined(scope, b"x-forwarded-proto").split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                scope["scheme"] = (
                    proto if scope["type"] == "http" else ("wss" if proto == "https" else "ws")
                )
            forwarded = _joined(scope, b"x-forwarded-for")
            hops = [part.strip() for part in forwarded.split(",") if part.strip()]
            if hops:
                address = _valid_ip(hops[-min(self.hops, len(hops))])
                if address is not None:
                    scope["client"] = (address, 0)
        await self.app(scope, receive, send)


def client_of(conn: HTTPConnection) -> Client:
    """The client as throttling and the session record see it (after trusted-proxy handling)."""
    address = conn.client.host if conn.client else "unknown"
    return Client(
        address=address,
        user_agent=conn.headers.get("user-agent", "")[:512],
        device=browser_state(conn).ensure_device(),
    )
