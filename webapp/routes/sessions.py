"""Registering, signing in and signing out."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webapp.accounts import SIGNIN_FAILED, SigninFailed, Throttled
from webapp.auth import signed_in_user
from webapp.browser import browser_state
from webapp.cookies import clear_session_cookie, set_session_cookie
from webapp.csrf import require_csrf
from webapp.forms import InvalidForm, parse_registration, parse_signin, read_form
from webapp.navigation import safe_next, see_other
from webapp.proxy import client_of
from webapp.routes import by_method
from webapp.services import services
from webapp.settings import SESSION_LIFETIME
from webapp.templating import FormState, flash, render_page

ACCOUNT_CREATED = "New account created. Sign in to continue."
SIGNED_OUT = "You are signed out."


def _kept(fields: dict[str, str], *names: str) -> dict[str, str]:
    """What a form shows again: what was typed, never a password."""
    return {name: fields.get(name, "") for name in names}


def _already_signed_in(request: Request) -> Response:
    """Registering is for guests: a signed-in browser goes home, nothing is created."""
    response = see_other(request, "/")
    response.headers.add_vary_header("HX-Request")
    return response


async def register_page(request: Request) -> Response:
    if signed_in_user(request) is not None:
        return _already_signed_in(request)
    return render_page(
        request, "register.html", {"form": FormState()}, partial="partials/register_form.html"
    )


async def register(request: Request) -> Response:
    fields = await read_form(request)
    app = services(request)
    require_csrf(request, fields, key=app.csrf_key)
    if signed_in_user(request) is not None:
        return _already_signed_in(request)
    try:
        registration = parse_registration(
            fields, min_password_length=app.settings.password_min_length
        )
        await app.accounts.register(registration)
    except InvalidForm as exc:
        return render_page(
            request,
            "register.html",
            {"form": FormState(_kept(fields, "username", "email"), exc.errors)},
            status_code=exc.status_code,
            partial="partials/register_form.html",
            flashes=[flash("error", "The account was not created: see the marked fields.")],
        )
    browser_state(request).add_flash("success", ACCOUNT_CREATED)
    return see_other(request, "/login")


def _login_form(
    request: Request,
    form: FormState,
    next_url: str,
    *,
    status_code: int,
    message: str | None = None,
) -> Response:
    return render_page(
        request,
        "login.html",
        {"form": form, "next": next_url, "message": message},
        status_code=status_code,
        partial="partials/login_form.html",
    )


async def login_page(request: Request) -> Response:
    next_url = safe_next(request.query_params.get("next"))
    return _login_form(request, FormState(), next_url, status_code=200)


async def login(request: Request) -> Response:
    fields = await read_form(request)
    app = services(request)
    require_csrf(request, fields, key=app.csrf_key)
    next_url = safe_next(fields.get("next"))
    try:
        signin = parse_signin(fields)
    except InvalidForm as exc:
        form = FormState(_kept(fields, "username"), exc.errors)
        return _login_form(request, form, next_url, status_code=422)
    try:
        new_session = await app.accounts.sign_in(signin, client_of(request))
    except SigninFailed:
        # Nothing typed is echoed, so an unknown name and a wrong password read the same.
        return _login_form(request, FormState(), next_url, status_code=401, message=SIGNIN_FAILED)
    except Throttled as exc:
        minutes = -(-exc.retry_after // 60)
        response = _login_form(
            request,
            FormState(),
            next_url,
            status_code=429,
            message=f"Too many failed sign-ins. Try again in {minutes} minute(s).",
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    token = app.tokens.issue(
        user_id=new_session.account.id, session_id=new_session.session_id, now=int(time.time())
    )
    response = see_other(request, next_url)
    set_session_cookie(response, request, token, max_age=SESSION_LIFETIME)
    state = browser_state(request)
    # A new CSRF identity at sign-in: no token from before it is accepted after.
    state.renew_id()
    state.add_flash("success", f"Signed in as {new_session.account.username}.")
    return response


async def logout(request: Request) -> Response:
    fields = await read_form(request)
    app = services(request)
    require_csrf(request, fields, key=app.csrf_key)
    user = signed_in_user(request)
    if user is not None:
        await app.accounts.sign_out(user.session_id)
    response = see_other(request, "/")
    clear_session_cookie(response, request)
    state = browser_state(request)
    state.renew_id()
    state.add_flash("info", SIGNED_OUT)
    return response


routes = [
    Route("/register", by_method(GET=register_page, POST=register), methods=["GET", "POST"]),
    Route("/login", by_method(GET=login_page, POST=login), methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
]
