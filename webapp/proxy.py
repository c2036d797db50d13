"""Believe X-Forwarded-For / X-Forwarded-Proto only from proxies we trust.

A PaaS router appends the address it saw to X-Forwarded-For; anything to the
left of that came from the client and can be forged. So the client address is
the entry `hops` places from the right, never blindly the left-most.
"""

from __future__ import annotations

import ipaddress

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from webapp.accounts import Client


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
    return Client(address=address, user_agent=conn.headers.get("user-agent", "")[:512])
