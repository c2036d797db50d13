"""Behind a trusted proxy: the scheme from X-Forwarded-Proto, and the client address
for throttling from a fixed number of trusted hops, never the forgeable left-most entry.

TestClient's peer address is "testclient"; these apps trust it as their proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.helpers import csrf_token, make_settings, new_client, register, rows
from webapp.app import create_app
from webapp.settings import Settings
from webapp.web.middleware import TrustedProxyMiddleware


@pytest.fixture
def proxied(app: Starlette, settings: Settings) -> Iterator[Starlette]:
    """An app behind one trusted proxy (the `app` fixture cleans the shared database)."""
    behind = create_app(
        make_settings(
            settings.database_url, forwarded_allow_ips=("testclient",), forwarded_trusted_hops=1
        )
    )
    yield behind
    behind.state.services.db.dispose()


def _app_with(settings: Settings, **overrides: object) -> Starlette:
    return create_app(make_settings(settings.database_url, **overrides))


def _failed_login(client: TestClient, name: str, headers: list[tuple[str, str]]) -> int:
    token = csrf_token(client, "/login")
    response = client.post(
        "/login",
        data={"username": name, "password": "wrong password", "csrf_token": token},
        headers=headers,
    )
    status: int = response.status_code
    return status


def _client_keys(app: Starlette) -> list[tuple[str, int]]:
    return [
        (str(key), int(count))
        for key, count in rows(
            app,
            "SELECT key, count(*) FROM signin_failures WHERE key LIKE 'client:%' "
            "GROUP BY key ORDER BY key",
        )
    ]


def test_a_forged_left_most_address_does_not_change_the_throttling_key(proxied):
    client = new_client(proxied)
    for forged in ("6.6.6.6", "10.0.0.1", "not-an-address"):
        # The router appends the address it saw; the client wrote everything to its left.
        headers = [("X-Forwarded-For", f"{forged}, 203.0.113.7")]
        assert _failed_login(client, "nobody", headers) == 401
    assert _client_keys(proxied) == [("client:203.0.113.7", 3)]


def test_forging_the_left_most_address_does_not_escape_the_client_cap(app, settings):
    capped = _app_with(
        settings,
        forwarded_allow_ips=("testclient",),
        forwarded_trusted_hops=1,
        throttle_client_limit=3,
    )
    try:
        client = new_client(capped)
        statuses = [
            _failed_login(client, f"victim{n}", [("X-Forwarded-For", f"198.18.0.{n}, 192.0.2.1")])
            for n in range(5)
        ]
    finally:
        capped.state.services.db.dispose()
    # Five different accounts, five different forged addresses: one client, capped after 3.
    assert statuses == [401, 401, 401, 429, 429]


def test_two_hops_take_the_second_entry_from_the_right(app, settings):
    two_hops = _app_with(settings, forwarded_allow_ips=("testclient",), forwarded_trusted_hops=2)
    try:
        client = new_client(two_hops)
        # forged by the client, then the client as the CDN saw it, then the CDN as the router saw it
        headers = [("X-Forwarded-For", "6.6.6.6, 198.51.100.9, 10.1.2.3")]
        assert _failed_login(client, "nobody", headers) == 401
        assert _client_keys(two_hops) == [("client:198.51.100.9", 1)]
    finally:
        two_hops.state.services.db.dispose()


def test_header_lines_are_read_as_one_list(app, settings):
    # A proxy may add its own header line instead of appending to the one it received.
    two_hops = _app_with(settings, forwarded_allow_ips=("testclient",), forwarded_trusted_hops=2)
    try:
        client = new_client(two_hops)
        headers = [("X-Forwarded-For", "6.6.6.6, 198.51.100.9"), ("X-Forwarded-For", "10.1.2.3")]
        assert _failed_login(client, "nobody", headers) == 401
        assert _client_keys(two_hops) == [("client:198.51.100.9", 1)]
    finally:
        two_hops.state.services.db.dispose()


def test_an_unusable_entry_leaves_the_proxy_as_the_client(proxied):
    client = new_client(proxied)
    assert _failed_login(client, "nobody", [("X-Forwarded-For", "1.2.3.4, garbage")]) == 401
    assert _client_keys(proxied) == [("client:testclient", 1)]


def test_an_untrusted_peer_is_not_believed(app):
    # The default settings trust loopback only; "testclient" is not loopback.
    client = new_client(app)
    headers = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]
    assert _failed_login(client, "nobody", headers) == 401
    assert _client_keys(app) == [("client:testclient", 1)]
    page = new_client(app).get("/login", headers=headers)
    assert page.headers["set-cookie"].startswith("browser=")
    assert "secure" not in page.headers["set-cookie"].lower()
    assert "strict-transport-security" not in page.headers


def test_the_session_records_the_forwarded_client(proxied):
    client = new_client(proxied)
    assert register(client).status_code == 303
    token = csrf_token(client, "/login")
    response = client.post(
        "/login",
        data={"username": "alice", "password": "correct horse battery", "csrf_token": token},
        headers=[("X-Forwarded-For", "6.6.6.6, 203.0.113.7")],
    )
    assert response.status_code == 303
    assert rows(proxied, "SELECT client_addr FROM user_sessions") == [("203.0.113.7",)]


@pytest.mark.parametrize(("proto", "https"), [("https", True), ("HTTPS", True), ("http", False)])
def test_forwarded_proto_decides_cookie_and_hsts(proxied, proto, https):
    client = new_client(proxied)
    page = client.get("/login", headers={"X-Forwarded-Proto": proto})
    cookie = page.headers["set-cookie"]
    attributes = [part.strip().lower() for part in cookie.split(";")]
    if https:
        assert cookie.startswith("__Host-browser=")
        assert "secure" in attributes
        assert page.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
    else:
        assert cookie.startswith("browser=")
        assert "secure" not in attributes
        assert "strict-transport-security" not in page.headers
    assert "path=/" in attributes
    assert not any(part.startswith("domain") for part in attributes)


def test_trusted_proxies_may_be_given_as_networks():
    async def app(scope, receive, send) -> None:
        seen.append((scope["client"], scope["scheme"]))

    seen: list[tuple[tuple[str, int], str]] = []
    middleware = TrustedProxyMiddleware(app, trusted=("10.0.0.0/8", "::1"), hops=1)
    headers = [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-proto", b"https")]
    for peer in ("10.1.2.3", "::1", "192.0.2.1"):
        scope = {"type": "http", "client": (peer, 1), "scheme": "http", "headers": headers}
        asyncio.run(middleware(scope, None, None))  # type: ignore[arg-type]
    assert seen == [
        (("203.0.113.9", 0), "https"),
        (("203.0.113.9", 0), "https"),
        (("192.0.2.1", 1), "http"),
    ]
