"""Checks on the body itself (413, 415, 400) come before everything else and write nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import PASSWORD, csrf_token, rows, signed_in

FORM = "application/x-www-form-urlencoded"


def _post_register(client, body: bytes, content_type: str | None = FORM, **headers: str):
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post("/register", content=body, headers=headers)


def _valid_body(token: str) -> bytes:
    return (
        f"username=alice&email=alice%40example.com&password={PASSWORD.replace(' ', '+')}"
        f"&confirm_password={PASSWORD.replace(' ', '+')}&csrf_token={token}"
    ).encode()


def test_the_valid_body_registers(client, app):
    token = csrf_token(client, "/register")
    assert _post_register(client, _valid_body(token)).status_code == 303
    assert rows(app, "SELECT count(*) FROM users") == [(1,)]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "multipart/form-data; boundary=x",
        "text/plain",
        "application/x-www-form-urlencoded; charset=latin-1",
        None,
    ],
)
def test_non_form_bodies_are_415(client, app, content_type):
    token = csrf_token(client, "/register")
    response = _post_register(client, _valid_body(token), content_type)
    assert response.status_code == 415
    assert rows(app, "SELECT count(*) FROM users") == [(0,)]


def test_a_json_body_is_415(client, app):
    response = client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 415


def test_a_body_over_64_kib_is_413_before_anything_else(client, app):
    token = csrf_token(client, "/register")
    body = _valid_body(token) + b"&pad=" + b"x" * (64 * 1024)
    assert _post_register(client, body).status_code == 413
    # Even without a session or CSRF token, size is judged first.
    assert (
        client.patch(
            "/partial/alice", content=b"a=" + b"x" * 70_000, headers={"Content-Type": FORM}
        ).status_code
        == 413
    )
    assert rows(app, "SELECT count(*) FROM users") == [(0,)]


def test_a_streamed_body_over_64_kib_is_413(client):
    def chunks():
        for _ in range(80):
            yield b"x" * 1024

    response = client.post("/login", content=chunks(), headers={"Content-Type": FORM})
    assert response.status_code == 413


def test_invalid_utf8_is_400(client, app):
    token = csrf_token(client, "/register")
    body = _valid_body(token).replace(b"username=alice", b"username=al%FFice")
    assert _post_register(client, body).status_code == 400
    assert rows(app, "SELECT count(*) FROM users") == [(0,)]


def test_raw_invalid_utf8_bytes_are_400(client):
    token = csrf_token(client, "/register")
    body = _valid_body(token).replace(b"username=alice", b"username=al\xfeice")
    assert _post_register(client, body).status_code == 400


def test_a_repeated_field_is_400(client, app):
    token = csrf_token(client, "/register")
    body = _valid_body(token) + b"&username=mallory"
    assert _post_register(client, body).status_code == 400
    assert rows(app, "SELECT count(*) FROM users") == [(0,)]


def test_body_checks_come_before_the_session_check(client):
    response = client.put("/update/alice", json={"username": "x"})
    assert response.status_code == 415


def test_bad_bodies_on_profile_routes(client, app):
    token = signed_in(client)
    headers = {"X-CSRF-Token": token, "Content-Type": FORM}
    assert client.patch("/partial/alice", content=b"email=a%FF", headers=headers).status_code == 400
    assert (
        client.patch("/partial/alice", content=b"email=a&email=b", headers=headers).status_code
        == 400
    )
    assert (
        client.patch(
            "/partial/alice", json={"email": "x@example.com"}, headers={"X-CSRF-Token": token}
        ).status_code
        == 415
    )
    assert rows(app, "SELECT email FROM users") == [("alice@example.com",)]


def test_error_pages_for_bad_bodies_are_ours(client):
    response = client.post("/login", content=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 415
    assert "<html" in response.text
    assert "Traceback" not in response.text


def test_extra_content_type_parameters_are_fine(client, app):
    token = csrf_token(client, "/register")
    response = _post_register(
        client, _valid_body(token), "application/x-www-form-urlencoded; charset=UTF-8; foo=bar"
    )
    assert response.status_code == 303


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Type", FORM), ("Content-Type", "application/json")],
        [("Content-Type", "application/json"), ("Content-Type", FORM)],
        [("Content-Type", FORM), ("Content-Type", FORM)],
    ],
)
def test_a_repeated_content_type_is_400(client, app, headers):
    token = csrf_token(client, "/register")
    response = client.post("/register", content=_valid_body(token), headers=headers)
    assert response.status_code == 400
    assert "Content-Type" in response.text
    assert rows(app, "SELECT count(*) FROM users") == [(0,)]


def test_a_repeated_content_length_is_400(client, app):
    """Sent as raw ASGI, since HTTP clients will not put two lengths on the wire."""
    token = csrf_token(client, "/register")
    body = _valid_body(token)
    length = str(len(body)).encode()
    scope_headers = [
        (b"content-type", FORM.encode()),
        (b"content-length", length),
        (b"content-length", length),
        (b"cookie", "; ".join(f"{k}={v}" for k, v in client.cookies.items()).encode()),
    ]
    sent: list[dict[str, Any]] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    import anyio

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/register",
        "raw_path": b"/register",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *scope_headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 400
    assert rows(app, "SELECT count(*) FROM users") == [(0,)]
