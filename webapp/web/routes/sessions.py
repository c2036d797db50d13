"""Registering, signing in and signing out."""

from __future__ import annotations

from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webapp.domain.errors import DomainError, InvalidInput
from webapp.domain.twofactor import SecondFactorRequired
from webapp.domain.validation import parse_registration, parse_signin
from webapp.web.auth import complete_sign_in, end_session, signed_in_user
from webapp.web.browser import browser_state
from webapp.web.errors import failure
from webapp.web.forms import form_fields
from webapp.web.middleware import client_of
from webapp.web.navigation import safe_next, see_other
from webapp.web.rendering import FormState, flash, render_page
from webapp.web.routes.security import ask_for_code
from webapp.web.services import services

ACCOUNT_CREATED = "New account created. Sign in to continue."
SIGNED_OUT = "You are signed out."
NOT_CREATED = "The account was not created: see the marked fields."


def _kept(fields: dict[str, str], *names: str) -> dict[str, str]:
    """What a form shows again: what was typed, never a password."""
    return {name: fields.get(name, "") for name in names}


def _already_signed_in(request: Request) -> Response:
    """Registering is for guests: a signed-in browser goes home, nothing is created."""
    response = see_other(request, "/")
    response.headers.add_vary_header("HX-Request")
    return response


class Register(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        if signed_in_user(request) is not None:
            return _already_signed_in(request)
        return render_page(
            request, "register.html", {"form": FormState()}, partial="partials/register_form.html"
        )

    async def post(self, request: Request) -> Response:
        fields = form_fields(request)
        app = services(request)
        if signed_in_user(request) is not None:
            return _already_signed_in(request)
        try:
            await app.accounts.count_registration_attempt(client_of(request))
            registration = parse_registration(
                fields, min_password_length=app.settings.password_min_length
            )
            await app.accounts.register(registration)
        except DomainError as exc:
            answer = failure(exc)
            response = render_page(
                request,
                "register.html",
                {"form": FormState(_kept(fields, "username", "email"), answer.field_errors)},
                status_code=answer.status_code,
                partial="partials/register_form.html",
                flashes=[flash("error", answer.message or NOT_CREATED)],
            )
            response.headers.update(answer.headers)
            return response
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
        # Every form failure's message is also in #flash, where screen readers hear it.
        flashes=[flash("error", message)] if message else None,
    )


class Login(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        next_url = safe_next(request.query_params.get("next"))
        return _login_form(request, FormState(), next_url, status_code=200)

    async def post(self, request: Request) -> Response:
        fields = form_fields(request)
        app = services(request)
        next_url = safe_next(fields.get("next"))
        previous = signed_in_user(request)
        try:
            signin = parse_signin(fields)
            new_session = await app.sessions.sign_in(
                signin,
                client_of(request),
                remember=bool(fields.get("remember")),
                # Signing in ends the session this browser had, whoever it belonged to.
                replaces=previous.session_id if previous else None,
            )
        except SecondFactorRequired as pending:
            # The password was right: 200 and the code form, no session cookie yet.
            return await ask_for_code(request, pending, next_url)
        except InvalidInput as exc:
            form = FormState(_kept(fields, "username", "remember"), exc.errors)
            return _login_form(request, form, next_url, status_code=422)
        except DomainError as exc:
            # Nothing typed is echoed, so an unknown name and a wrong password read the same.
            answer = failure(exc)
            response = _login_form(
                request,
                FormState(),
                next_url,
                status_code=answer.status_code,
                message=answer.message,
            )
            response.headers.update(answer.headers)
            return response
        response = see_other(request, next_url)
        complete_sign_in(response, request, app.tokens, new_session)
        return response


async def logout(request: Request) -> Response:
    app = services(request)
    user = signed_in_user(request)
    if user is not None:
        await app.sessions.sign_out(user.session_id, client_of(request))
    response = see_other(request, "/")
    end_session(response, request)
    state = browser_state(request)
    state.renew_id()
    state.add_flash("info", SIGNED_OUT)
    return response


routes = [
    Route("/register", Register),
    Route("/login", Login),
    Route("/logout", logout, methods=["POST"]),
]
