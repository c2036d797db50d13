"""POST /register and GET /register: the contract rows, each failure, the database state."""

from __future__ import annotations

import threading

from starlette.testclient import TestClient

from tests.helpers import PASSWORD, csrf_token, login, new_client, register, rows, signed_in


def test_register_page_has_the_form(client):
    response = client.get("/register")
    assert response.status_code == 200
    assert 'id="register-form"' in response.text
    assert 'name="csrf_token"' in response.text
    assert response.headers["vary"] == "HX-Request"


def test_register_page_redirects_signed_in_users_home(client):
    signed_in(client)
    response = client.get("/register")
    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_register_creates_the_account_and_flashes_once(client, app):
    response = register(client, "Alice", "Alice@Example.COM")
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert rows(app, "SELECT username, email FROM users") == [("Alice", "Alice@example.com")]
    page = client.get("/login")
    assert "New account created" in page.text
    assert "account created" in page.text
    assert "New account created" not in client.get("/login").text


def test_register_over_htmx_answers_with_hx_redirect(client):
    response = register(client, **{"HX-Request": "true"})
    assert response.status_code == 200
    assert response.headers["hx-redirect"] == "/login"


def test_register_stores_a_bcrypt_hash_never_the_password(client, app):
    register(client)
    [(password_hash,)] = rows(app, "SELECT password_hash FROM users")
    assert password_hash.startswith("$2b$04$")
    assert PASSWORD not in password_hash


def test_invalid_fields_get_422_with_errors_and_typed_values_kept(client, app):
    response = register(client, "1abc", "not-an-email", "short", "other")
    assert response.status_code == 422
    html = response.text
    for field in ("username", "email", "password"):
        assert f'id="{field}-error"' in html
        assert f'aria-describedby="{field}-error"' in html
    assert html.count('aria-invalid="true"') == 3
    assert 'value="1abc"' in html
    assert 'value="not-an-email"' in html
    assert "short" not in html.replace("shortly", "")
    assert rows(app, "SELECT count(*) FROM users") == [(0,)]


def test_mismatched_confirmation_is_422_on_confirm_password(client):
    response = register(client, password=PASSWORD, confirm=PASSWORD + "x")
    assert response.status_code == 422
    assert 'id="confirm_password-error"' in response.text
    assert PASSWORD not in response.text


def test_missing_fields_are_422(client):
    token = csrf_token(client, "/register")
    response = client.post("/register", data={"csrf_token": token})
    assert response.status_code == 422
    for field in ("username", "email", "password"):
        assert f'id="{field}-error"' in response.text


def test_taken_username_ignoring_case_is_409(client, app):
    register(client, "alice", "alice@example.com")
    response = register(new_client(app), "ALICE", "other@example.com")
    assert response.status_code == 409
    assert 'id="username-error"' in response.text
    assert 'id="email-error"' not in response.text
    assert 'value="ALICE"' in response.text
    assert rows(app, "SELECT count(*) FROM users") == [(1,)]


def test_taken_email_ignoring_case_is_409(client, app):
    register(client, "alice", "alice@example.com")
    response = register(new_client(app), "bob", "ALICE@EXAMPLE.COM")
    assert response.status_code == 409
    assert 'id="email-error"' in response.text
    assert rows(app, "SELECT count(*) FROM users") == [(1,)]


def test_surrounding_white_space_is_trimmed_and_case_kept(client, app):
    response = register(client, "  JoHn  ", "  John@EXAMPLE.org ")
    assert response.status_code == 303
    assert rows(app, "SELECT username, email FROM users") == [("JoHn", "John@example.org")]
    assert login(new_client(app), "john").status_code == 303
    assert login(new_client(app), "JOHN@example.ORG").status_code == 303


def test_htmx_422_answers_with_the_form_partial_and_flash(client):
    response = register(client, "x", "bad", "short", **{"HX-Request": "true"})
    assert response.status_code == 422
    assert response.text.lstrip().startswith('<form id="register-form"')
    assert "<html" not in response.text
    assert 'hx-swap-oob="innerHTML"' in response.text
    assert response.headers["vary"] == "HX-Request"


def test_concurrent_registrations_of_one_name_leave_one_account(app):
    clients = [new_client(app) for _ in range(6)]
    tokens = [csrf_token(c, "/register") for c in clients]
    statuses: list[int] = []
    barrier = threading.Barrier(len(clients))

    def attempt(index: int) -> None:
        barrier.wait()
        response = clients[index].post(
            "/register",
            data={
                "username": "racer" if index % 2 else "RACER",
                "email": f"racer{index}@example.com",
                "password": PASSWORD,
                "confirm_password": PASSWORD,
                "csrf_token": tokens[index],
            },
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [303] + [409] * (len(clients) - 1)
    assert rows(app, "SELECT count(*) FROM users WHERE username_key = 'racer'") == [(1,)]


def test_register_without_csrf_token_is_403_and_writes_nothing(client, app):
    client.get("/register")
    response = client.post(
        "/register",
        data={
            "username": "alice",
            "email": "a@example.com",
            "password": PASSWORD,
            "confirm_password": PASSWORD,
        },
    )
    assert response.status_code == 403
    assert rows(app, "SELECT count(*) FROM users") == [(0,)]


def test_get_register_with_htmx_returns_the_partial(client: TestClient):
    response = client.get("/register", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<form id="register-form"')


def test_unread_flashes_do_not_grow_the_cookie_without_bound(client):
    token = csrf_token(client, "/register")
    for index in range(8):
        response = client.post(
            "/register",
            data={
                "username": f"user{index}",
                "email": f"user{index}@example.com",
                "password": PASSWORD,
                "confirm_password": PASSWORD,
                "csrf_token": token,
            },
        )
        assert response.status_code == 303
    cookie = client.cookies["browser"]
    assert len(cookie) < 1024
    page = client.get("/login").text
    assert page.count("New account created") == 3


def test_a_signed_in_browser_cannot_register_and_goes_home(client, app):
    token = signed_in(client)
    response = client.post(
        "/register",
        data={
            "username": "bob",
            "email": "bob@example.com",
            "password": PASSWORD,
            "confirm_password": PASSWORD,
            "csrf_token": token,
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert rows(app, "SELECT username FROM users") == [("alice",)]


def test_reserved_test_domains_are_valid_addresses(client, app):
    assert register(client, "tester", "tester@example.test").status_code == 303


def test_405_lists_every_method_of_the_path(client):
    for path, allowed in (
        ("/register", {"GET", "HEAD", "POST"}),
        ("/login", {"GET", "HEAD", "POST"}),
    ):
        response = client.put(path)
        assert response.status_code == 405
        assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


def test_a_trailing_slash_is_not_redirected_by_host(client):
    response = client.get("/login/", headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers
