"""Pages, headers, error pages, the health check and static assets."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from tests.conftest import ROOT, csrf_token, register, signed_in


def test_guest_home_links_to_register_and_login(client):
    response = client.get("/")
    assert response.status_code == 200
    assert 'href="/register"' in response.text
    assert 'href="/login"' in response.text
    assert 'id="flash"' in response.text
    assert 'id="profile"' not in response.text


def test_signed_in_home_welcomes_by_name(client):
    signed_in(client)
    response = client.get("/")
    assert "Welcome, alice" in response.text
    assert 'id="profile"' in response.text
    assert "alice@example.com" in response.text


def _assert_security_headers(response, *, https: bool = False) -> None:
    csp = response.headers["content-security-policy"]
    script_src = re.search(r"script-src ([^;]*)", csp)
    assert script_src is not None
    assert "'unsafe-inline'" not in script_src.group(1)
    assert "'unsafe-eval'" not in script_src.group(1)
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"]
    assert ("strict-transport-security" in response.headers) is https


@pytest.mark.parametrize("path", ["/", "/login", "/register", "/nowhere"])
def test_every_html_response_has_security_headers(client, path):
    _assert_security_headers(client.get(path))


def test_hsts_only_over_https(https_client):
    _assert_security_headers(https_client.get("/"), https=True)


def test_signed_in_pages_and_fragments_are_no_store(client):
    token = signed_in(client)
    assert client.get("/").headers["cache-control"] == "no-store"
    fragment = client.patch(
        "/partial/alice", data={}, headers={"X-CSRF-Token": token, "HX-Request": "true"}
    )
    assert fragment.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/login", "/register"])
def test_pages_that_answer_fragments_vary_on_hx_request(client, path):
    page = client.get(path)
    fragment = client.get(path, headers={"HX-Request": "true"})
    assert page.headers["vary"] == fragment.headers["vary"] == "HX-Request"
    assert "<html" in page.text
    assert "<html" not in fragment.text


def test_no_inline_script_style_or_handlers(client):
    pages = [client.get("/").text, client.get("/login").text, client.get("/register").text]
    signed_in(client)
    pages.append(client.get("/").text)
    for html in pages:
        assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None
        assert re.search(r"\sstyle=", html) is None
        assert re.search(r"\son[a-z]+=", html) is None
        assert "hx-on" not in html
        assert "<style" not in html


def test_no_asset_from_another_origin(client):
    html = client.get("/").text
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith(("/", "#")), url


def test_not_found_is_our_own_page(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "Page not found" in response.text
    assert 'id="flash"' in response.text
    assert "Traceback" not in response.text


def test_method_not_allowed_is_our_own_page(client):
    response = client.delete("/")
    assert response.status_code == 405
    assert "Method not allowed" in response.text


def test_healthz_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_503_when_the_database_does_not_answer(client, app, monkeypatch):
    def broken() -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(app.state.services.db, "ping", broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}


def test_pages_answer_503_in_the_layout_when_the_database_is_gone(client, app, monkeypatch):
    signed_in(client)

    async def broken(**_kwargs: object) -> None:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(app.state.services.accounts, "load_session", broken)
    response = client.get("/")
    assert response.status_code == 503
    assert "Service unavailable" in response.text
    assert "connection refused" not in response.text
    assert response.headers["content-security-policy"]


def test_an_unexpected_error_is_a_plain_500_page(app, monkeypatch):
    browser = TestClient(app, raise_server_exceptions=False, follow_redirects=False)

    async def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(app.state.services.accounts, "register", explode)
    response = browser.post(
        "/register",
        data={
            "username": "alice",
            "email": "a@example.com",
            "password": "long enough password",
            "confirm_password": "long enough password",
            "csrf_token": csrf_token(browser, "/register"),
        },
    )
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    assert response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_user_text_is_escaped(client, app):
    response = register(client, "<script>", "<b>@example.com")
    assert response.status_code == 422
    assert "<script>" not in response.text.replace('<script src="', "")
    assert "&lt;script&gt;" in response.text


def test_static_assets_are_versioned_compressed_and_cached(client):
    html = client.get("/").text
    [css_url] = re.findall(r'href="(/static/css/app\.css\?v=[0-9a-f]+)"', html)
    response = client.get(css_url, headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert "immutable" in response.headers["cache-control"]
    assert response.content == (ROOT / "static/css/app.css").read_bytes()
    raw = client.get(css_url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    unversioned = client.get("/static/css/app.css")
    assert "immutable" not in unversioned.headers["cache-control"]


def test_static_not_found_and_wrong_method(client):
    assert client.get("/static/nope.js").status_code == 404
    assert client.post("/static/css/app.css").status_code == 405


def test_htmx_requests_for_errors_do_not_swap_the_page(client):
    response = client.get("/nowhere", headers={"HX-Request": "true"})
    assert response.status_code == 404
    assert response.headers["hx-reswap"] == "none"
    assert 'hx-swap-oob="innerHTML"' in response.text


def test_htmx_401_next_is_the_page_the_request_came_from(client):
    response = client.patch(
        "/partial/alice",
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/some/page?x=1"},
    )
    assert response.status_code == 401
    assert response.headers["hx-redirect"] == "/login?next=/some/page"


def test_htmx_401_next_is_only_ever_a_local_path(client):
    for current_url in ("https://evil.example//evil.example", "https://evil.example/%2F%2Fx"):
        response = client.patch(
            "/partial/alice", headers={"HX-Request": "true", "HX-Current-URL": current_url}
        )
        assert response.headers["hx-redirect"] == "/login?next=/"


def test_home_varies_on_hx_request_for_guests_and_members(client):
    guest_page = client.get("/")
    guest_fragment = client.get("/", headers={"HX-Request": "true"})
    assert guest_page.headers["vary"] == guest_fragment.headers["vary"] == "HX-Request"
    assert guest_fragment.text.lstrip().startswith('<div id="guest"')
    signed_in(client)
    member_fragment = client.get("/", headers={"HX-Request": "true"})
    assert member_fragment.headers["vary"] == "HX-Request"
    assert member_fragment.text.lstrip().startswith('<div id="account"')
    assert member_fragment.headers["cache-control"] == "no-store"


def test_static_assets_are_served_brotli_when_accepted(client):
    html = client.get("/").text
    [js_url] = re.findall(r'src="(/static/vendor/htmx/htmx\.min\.js\?v=[0-9a-f]+)"', html)
    response = client.get(js_url, headers={"Accept-Encoding": "gzip, br"})
    assert response.headers["content-encoding"] == "br"
    assert response.content == (ROOT / "static/vendor/htmx/htmx.min.js").read_bytes()


@pytest.mark.parametrize("current_url", ["http://[", "https://[bad]/x", "not a url at all"])
def test_a_malformed_current_url_still_gets_401_and_a_safe_redirect(client, current_url):
    response = client.patch(
        "/partial/alice", headers={"HX-Request": "true", "HX-Current-URL": current_url}
    )
    assert response.status_code == 401
    assert response.headers["hx-redirect"] == "/login?next=/"


def test_next_is_the_path_of_the_current_url_whatever_its_host(client):
    response = client.patch(
        "/partial/alice",
        headers={"HX-Request": "true", "HX-Current-URL": "http://localhost:8765/acct"},
    )
    assert response.headers["hx-redirect"] == "/login?next=/acct"


def test_the_out_of_band_flash_keeps_its_role(client):
    token = signed_in(client)
    response = client.patch(
        "/partial/alice", data={"username": "alicia"}, headers={"X-CSRF-Token": token}
    )
    assert '<div id="flash" role="status"' in response.text
