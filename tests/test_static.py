"""Static assets: versioned URLs, compression, caching, 404 and 405."""

from __future__ import annotations

import re

from tests.helpers import ROOT


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


def test_static_assets_are_served_brotli_when_accepted(client):
    html = client.get("/").text
    [js_url] = re.findall(r'src="(/static/vendor/htmx/htmx\.min\.js\?v=[0-9a-f]+)"', html)
    response = client.get(js_url, headers={"Accept-Encoding": "gzip, br"})
    assert response.headers["content-encoding"] == "br"
    assert response.content == (ROOT / "static/vendor/htmx/htmx.min.js").read_bytes()
