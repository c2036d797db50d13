"""The home page (guest and signed in), escaping, and the health check."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from tests.helpers import register, signed_in


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


def test_user_text_is_escaped(client, app):
    response = register(client, "<script>", "<b>@example.com")
    assert response.status_code == 422
    assert "<script>" not in response.text.replace('<script src="', "")
    assert "&lt;script&gt;" in response.text


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


def test_a_cached_render_equals_a_fresh_one_and_takes_any_context(app):
    from webapp.web.rendering import render_cached

    templates = app.state.services.templates
    context = {"status_code": 404, "title": "T", "message": "m", "user": None}
    context |= {"csrf_token": "t", "flashes": ()}
    fresh = templates.get_template("error.html").render(context)
    assert render_cached(templates, "error.html", context) == fresh
    assert render_cached(templates, "error.html", context) == fresh
    # An unhashable value (a list) is rendered afresh rather than raising TypeError.
    unhashable = context | {"flashes": [{"level": "info", "text": "hello"}]}
    assert "hello" in render_cached(templates, "error.html", unhashable)
