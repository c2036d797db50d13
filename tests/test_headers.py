"""Headers every answer carries: CSP, nosniff, HSTS, no-store, Vary; and no inline code."""

from __future__ import annotations

import re

import pytest

from tests.helpers import patch_profile, signed_in


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


def test_the_out_of_band_flash_keeps_its_role(client):
    token = signed_in(client)
    response = client.patch(
        "/partial/alice", data={"username": "alicia"}, headers={"X-CSRF-Token": token}
    )
    assert '<div id="flash" role="status"' in response.text


def test_opener_policy_is_sent_with_documents_not_with_htmx_fragments(client):
    token = signed_in(client)
    page = client.get("/")
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    fragment = patch_profile(client, "alice", token, username="alicia")
    assert fragment.status_code == 200
    # A fragment is fetched into a page, never opened as a document: COOP means nothing there.
    assert "cross-origin-opener-policy" not in fragment.headers
    _assert_security_headers(fragment)
