"""E-mail links and requests: confirm an address, reset a password, undo an address change.

A GET on a link only shows a page with one button (mail scanners follow links); the
POST acts. A bad link answers 400 with a way to get a new one.
"""

from __future__ import annotations

from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webapp.domain.emails import Purpose
from webapp.domain.errors import DomainError, InvalidInput, InvalidLink
from webapp.web.auth import end_session, require_user, requires_user
from webapp.web.browser import browser_state
from webapp.web.errors import error_response, failure
from webapp.web.forms import form_fields
from webapp.web.htmx import htmx_details
from webapp.web.middleware import client_of
from webapp.web.navigation import see_other
from webapp.web.rendering import FormState, flash, render_fragment, render_page
from webapp.web.services import services

CONFIRMED = "Your e-mail address is confirmed. Thank you."
LINK_SENT = "A new confirmation link is on its way to {email}."
PASSWORD_SET = "Your new password is set and every session was signed out. Sign in with it."
REVERTED = (
    "Your old address is back and everyone was signed out. "
    "We sent it a link to choose a new password."
)


def _invalid_link(request: Request, purpose: Purpose | str) -> Response:
    return render_page(request, "link_invalid.html", {"purpose": purpose}, status_code=400)


def _token(request: Request) -> str:
    token: str = request.path_params["token"]
    return token


async def _link_page(request: Request, purpose: Purpose, template: str) -> Response:
    """What a GET on a link shows: one button (the GET itself changes nothing)."""
    try:
        found = await services(request).emails.check(_token(request), purpose)
    except InvalidLink:
        return _invalid_link(request, purpose)
    context = {"token": _token(request), "email": found.email, "username": found.username}
    return render_page(request, template, context)


def _to_sign_in(request: Request, message: str) -> Response:
    """Every session of the account has ended: this browser's cookies go too."""
    response = see_other(request, "/login")
    end_session(response, request)
    state = browser_state(request)
    state.renew_id()
    state.add_flash("success", message)
    return response


class VerifyLink(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        return await _link_page(request, "verify", "verify_email.html")

    async def post(self, request: Request) -> Response:
        try:
            await services(request).emails.verify(_token(request), client_of(request))
        except InvalidLink:
            return _invalid_link(request, "verify")
        browser_state(request).add_flash("success", CONFIRMED)
        return see_other(request, "/")


@requires_user
async def resend_verification(request: Request) -> Response:
    user = require_user(request)
    app = services(request)
    try:
        await app.emails.resend_verification(user.account.id)
    except DomainError as exc:
        answer = failure(exc)
        if not htmx_details(request).is_htmx:
            return error_response(request, answer.status_code, answer.message, answer.headers)
        response = render_fragment(
            request,
            "partials/profile.html",
            {"account": user.account},
            status_code=answer.status_code,
            flashes=[flash("error", answer.message or "No link was sent.")],
        )
        response.headers.update(answer.headers)
        return response
    sent = LINK_SENT.format(email=user.account.email)
    if not htmx_details(request).is_htmx:
        browser_state(request).add_flash("info", sent)
        return see_other(request, "/")
    return render_fragment(
        request, "partials/profile.html", {"account": user.account}, flashes=[flash("info", sent)]
    )


class PasswordReset(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        return render_page(request, "password_reset.html", {"form": FormState(), "sent": False})

    async def post(self, request: Request) -> Response:
        fields = form_fields(request)
        kept = {"email": fields.get("email", "")}
        try:
            await services(request).emails.request_reset(
                fields.get("email", ""), client_of(request)
            )
        except DomainError as exc:
            answer = failure(exc)
            response = render_page(
                request,
                "password_reset.html",
                {"form": FormState(kept, answer.field_errors), "sent": False},
                status_code=answer.status_code,
                flashes=[flash("error", answer.message)] if answer.message else None,
            )
            response.headers.update(answer.headers)
            return response
        # The same answer whether or not an account uses the address.
        return render_page(request, "password_reset.html", {"form": FormState(), "sent": True})


class PasswordResetLink(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        try:
            found = await services(request).emails.check(_token(request), "reset")
        except InvalidLink:
            return _invalid_link(request, "reset")
        return self._form(request, found.username, FormState())

    @staticmethod
    def _form(request: Request, username: str, form: FormState, status: int = 200) -> Response:
        return render_page(
            request,
            "password_reset_confirm.html",
            {"token": _token(request), "username": username, "form": form},
            status_code=status,
        )

    async def post(self, request: Request) -> Response:
        fields = form_fields(request)
        emails = services(request).emails
        try:
            await emails.reset_password(
                _token(request),
                fields.get("password", ""),
                fields.get("confirm_password", ""),
                client_of(request),
            )
        except InvalidLink:
            return _invalid_link(request, "reset")
        except InvalidInput as exc:
            found = await emails.check(_token(request), "reset")
            return self._form(request, found.username, FormState({}, exc.errors), status=422)
        return _to_sign_in(request, PASSWORD_SET)


class EmailRevertLink(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        return await _link_page(request, "revert", "email_revert.html")

    async def post(self, request: Request) -> Response:
        try:
            await services(request).emails.revert(_token(request), client_of(request))
        except InvalidLink:
            return _invalid_link(request, "revert")
        return _to_sign_in(request, REVERTED)


routes = [
    Route("/verify-email", resend_verification, methods=["POST"]),
    Route("/verify-email/{token}", VerifyLink),
    Route("/password-reset", PasswordReset),
    Route("/password-reset/{token}", PasswordResetLink),
    Route("/email-revert/{token}", EmailRevertLink),
]
