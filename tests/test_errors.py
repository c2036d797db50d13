"""Error answers: our own pages for 404/405/500/503, htmx errors, the 401 redirect."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from tests.helpers import csrf_token, signed_in


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


def test_pages_answer_503_in_the_layout_when_the_database_is_gone(client, app, monkeypatch):
    signed_in(client)

    async def broken(**_kwargs: object) -> None:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(app.state.services.sessions, "load", broken)
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
