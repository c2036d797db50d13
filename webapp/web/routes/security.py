"""The security page (two-factor sign-in with an authenticator app, recovery codes) and the
second step of a sign-in that needs a code. The rules live in webapp/domain/twofactor.py."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from webapp.domain.errors import DomainError, InvalidInput
from webapp.domain.twofactor import (
    ChallengeExpired,
    SecondFactorRequired,
    Setup,
    WrongCode,
)
from webapp.web.auth import (
    complete_sign_in,
    require_user,
    requires_recent_authentication,
    requires_user,
    signed_in_user,
)
from webapp.web.browser import Flash, browser_state
from webapp.web.errors import failure
from webapp.web.forms import form_fields
from webapp.web.middleware import client_of
from webapp.web.navigation import safe_next, see_other
from webapp.web.rendering import FormState, flash, render_page
from webapp.web.services import services

TOTP_PANEL = "partials/totp_panel.html"
TWO_FACTOR_FORM = "partials/two_factor_form.html"
CODE_WRONG = "That code is not correct."
SIGN_IN_AGAIN = "Your sign-in has expired. Sign in again with your password."
TOO_MANY_CODES = "Too many wrong codes. Sign in again with your password."


# -- the security page ----------------------------------------------------------------------


async def page_context(request: Request) -> dict[str, Any]:
    """What the whole security page shows: the authenticator app's state and the passkeys."""
    user = require_user(request)
    app = services(request)
    return {
        "status": await app.twofactor.status(user.account.id),
        "setup": None,
        "codes": [],
        "form": FormState(),
        "passkeys": await app.passkeys.of_account(user.account.id),
        "passkey_form": FormState(),
        "rp_is_ip": app.passkeys.rp.host_is_ip,
    }


async def _panel(
    request: Request,
    *,
    setup: Setup | None = None,
    codes: list[str] | None = None,
    form: FormState | None = None,
    status_code: int = 200,
    flashes: list[Flash] | None = None,
) -> Response:
    """The two-factor panel (#two-factor) as it is now: the page, or the panel for htmx."""
    context = {
        **await page_context(request),
        "setup": setup,
        "codes": codes or [],
        "form": form or FormState(),
    }
    return render_page(
        request,
        "security.html",
        context,
        status_code=status_code,
        partial=TOTP_PANEL,
        flashes=flashes,
    )


@requires_user
async def security_page(request: Request) -> Response:
    return await _panel(request)


@requires_recent_authentication
async def begin_totp(request: Request) -> Response:
    """POST /security/totp: a new secret to scan (#totp-setup); nothing is on yet."""
    user = require_user(request)
    setup = await services(request).twofactor.begin_setup(user.account)
    return await _panel(request, setup=setup)


@requires_recent_authentication
async def totp_qr(request: Request) -> Response:
    """GET /security/totp/qr.svg: the pending set-up as a QR code, an image from this site
    (the strict CSP allows no inline styles, so it is never inlined into the page)."""
    user = require_user(request)
    svg = await services(request).twofactor.pending_qr_svg(user.account)
    if svg is None:
        return Response(status_code=404)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@requires_user
async def confirm_totp(request: Request) -> Response:
    """POST /security/totp/confirm: a code from the app turns it on; the recovery codes are
    shown once. A wrong code: 422 and the set-up again."""
    user = require_user(request)
    app = services(request)
    code = form_fields(request).get("code", "")
    try:
        codes = await app.twofactor.confirm(user.account.id, code, client_of(request))
    except InvalidInput as exc:
        setup = await app.twofactor.pending_setup(user.account)
        message = next(iter(exc.errors.values()))
        return await _panel(
            request,
            setup=setup,
            form=FormState({}, exc.errors),
            status_code=422,
            flashes=[flash("error", message)],
        )
    done = flash("success", "Two-factor sign-in is on. Save your recovery codes now.")
    return await _panel(request, codes=codes, flashes=[done])


@requires_recent_authentication
async def renew_codes(request: Request) -> Response:
    """POST /security/recovery-codes: 10 new codes, shown once; the old ones stop working."""
    user = require_user(request)
    try:
        codes = await services(request).twofactor.renew_codes(user.account.id, client_of(request))
    except InvalidInput as exc:
        message = next(iter(exc.errors.values()))
        return await _panel(request, status_code=422, flashes=[flash("error", message)])
    done = flash("success", "New recovery codes: the old ones no longer work.")
    return await _panel(request, codes=codes, flashes=[done])


@requires_recent_authentication
async def disable_totp(request: Request) -> Response:
    """DELETE /security/totp: off, and the recovery codes are removed."""
    user = require_user(request)
    await services(request).twofactor.disable(user.account.id, client_of(request))
    return await _panel(request, flashes=[flash("success", "Two-factor sign-in is off.")])


# -- the second step of a sign-in ---------------------------------------------------------


def _code_form(
    request: Request,
    challenge: str,
    next_url: str,
    *,
    status_code: int,
    form: FormState | None = None,
    message: str | None = None,
) -> Response:
    return render_page(
        request,
        "two_factor.html",
        {"challenge": challenge, "next": next_url, "form": form or FormState(), "message": message},
        status_code=status_code,
        partial=TWO_FACTOR_FORM,
        flashes=[flash("error", message)] if message else None,
    )


def _sign_in_again(request: Request, next_url: str, message: str) -> Response:
    """The password form again (401): this second step is over."""
    return render_page(
        request,
        "login.html",
        {"form": FormState(), "next": next_url, "message": message},
        status_code=401,
        partial="partials/login_form.html",
        flashes=[flash("error", message)],
    )


async def ask_for_code(request: Request, pending: SecondFactorRequired, next_url: str) -> Response:
    """POST /login with the right password and two-factor sign-in on: 200 and the code form
    (#two-factor-form). No session cookie; the challenge is bound to this browser."""
    challenge = await services(request).twofactor.begin_signin(
        pending, browser=browser_state(request).ensure_id()
    )
    return _code_form(request, challenge, next_url, status_code=200)


async def login_two_factor(request: Request) -> Response:
    """POST /login/two-factor: a good code signs in (303, as POST /login does); a wrong one
    is 401 and counts against the account's sign-in limit."""
    fields = form_fields(request)
    app = services(request)
    next_url = safe_next(fields.get("next"))
    challenge = fields.get("challenge", "")
    previous = signed_in_user(request)
    try:
        new_session = await app.twofactor.complete_signin(
            token=challenge,
            browser=browser_state(request).ensure_id(),
            code=fields.get("code", ""),
            client=client_of(request),
            # Signing in ends the session this browser had, whoever it belonged to.
            replaces=previous.session_id if previous else None,
        )
    except InvalidInput as exc:
        form = FormState({}, exc.errors)
        message = next(iter(exc.errors.values()))
        return _code_form(request, challenge, next_url, status_code=422, form=form, message=message)
    except WrongCode as exc:
        if not exc.can_retry:
            return _sign_in_again(request, next_url, TOO_MANY_CODES)
        form = FormState({}, {"code": CODE_WRONG})
        return _code_form(
            request, challenge, next_url, status_code=401, form=form, message=CODE_WRONG
        )
    except ChallengeExpired:
        return _sign_in_again(request, next_url, SIGN_IN_AGAIN)
    except DomainError as exc:
        answer = failure(exc)
        response = _code_form(
            request, challenge, next_url, status_code=answer.status_code, message=answer.message
        )
        response.headers.update(answer.headers)
        return response
    response = see_other(request, next_url)
    complete_sign_in(response, request, app.tokens, new_session)
    return response


routes: list[BaseRoute] = [
    Route("/security", security_page, methods=["GET"]),
    Route("/security/totp", begin_totp, methods=["POST"]),
    Route("/security/totp", disable_totp, methods=["DELETE"]),
    Route("/security/totp/qr.svg", totp_qr, methods=["GET"]),
    Route("/security/totp/confirm", confirm_totp, methods=["POST"]),
    Route("/security/recovery-codes", renew_codes, methods=["POST"]),
    Route("/login/two-factor", login_two_factor, methods=["POST"]),
]
