"""Your sessions (see them, end one or all others) and recent authentication (/reauth)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from webapp.domain.errors import AccountGone, DomainError, SessionNotFound
from webapp.web.auth import NotSignedIn, SignedInUser, end_session, require_user, requires_user
from webapp.web.browser import Flash, browser_state
from webapp.web.errors import failure
from webapp.web.forms import form_fields
from webapp.web.htmx import htmx_details
from webapp.web.middleware import client_of
from webapp.web.navigation import safe_next, see_other
from webapp.web.rendering import FormState, flash, render_fragment, render_page
from webapp.web.routes.sessions import SIGNED_OUT
from webapp.web.services import services

SESSIONS_LIST = "partials/sessions_list.html"
NOT_CONFIRMED = "Your password was not confirmed."


# -- your sessions ------------------------------------------------------------------------


async def _sessions_list(
    request: Request,
    user: SignedInUser,
    *,
    status_code: int = 200,
    flashes: list[Flash] | None = None,
) -> Response:
    """The list (#sessions) as it is now, with the flash out of band."""
    listed = await services(request).sessions.live_sessions(
        user.account.id, current_sid=user.session_id
    )
    response = render_fragment(
        request, SESSIONS_LIST, {"sessions": listed}, status_code=status_code, flashes=flashes
    )
    response.headers.add_vary_header("HX-Request")
    return response


@requires_user
async def sessions_page(request: Request) -> Response:
    user = require_user(request)
    listed = await services(request).sessions.live_sessions(
        user.account.id, current_sid=user.session_id
    )
    return render_page(request, "sessions.html", {"sessions": listed}, partial=SESSIONS_LIST)


@requires_user
async def revoke_session(request: Request) -> Response:
    """DELETE /sessions/{handle}: end one session; this browser's own is a sign-out."""
    user = require_user(request)
    try:
        ended = await services(request).sessions.end_session(
            user.account.id,
            request.path_params["handle"],
            current_sid=user.session_id,
            client=client_of(request),
        )
    except SessionNotFound as exc:
        if not htmx_details(request).is_htmx:
            raise
        # The list may be out of date (ended elsewhere): show it as it is now.
        message = failure(exc).message or ""
        return await _sessions_list(
            request, user, status_code=404, flashes=[flash("error", message)]
        )
    if ended.current:
        # As POST /logout: cookies cleared, a new CSRF identity, home (HX-Redirect for htmx).
        response = see_other(request, "/")
        end_session(response, request)
        state = browser_state(request)
        state.renew_id()
        state.add_flash("info", SIGNED_OUT)
        return response
    done = flash("success", f"Signed out the session on {ended.device}.")
    return await _sessions_list(request, user, flashes=[done])


@requires_user
async def revoke_others(request: Request) -> Response:
    """POST /sessions/revoke-others: every session of the user but this one ends."""
    user = require_user(request)
    count = await services(request).sessions.end_other_sessions(
        user.account.id, current_sid=user.session_id, client=client_of(request)
    )
    if count == 0:
        done = flash("info", "There were no other sessions to sign out.")
    else:
        done = flash("success", f"Signed out {count} other session{'' if count == 1 else 's'}.")
    if htmx_details(request).is_htmx:
        return await _sessions_list(request, user, flashes=[done])
    browser_state(request).add_flash(done["level"], done["text"])
    response = RedirectResponse("/sessions", status_code=303)
    response.headers.add_vary_header("HX-Request")
    return response


# -- recent authentication ----------------------------------------------------------------


def _reauth_form(
    request: Request,
    next_url: str,
    *,
    form: FormState | None = None,
    status_code: int = 200,
    message: str | None = None,
    has_passkeys: bool = False,
) -> Response:
    return render_page(
        request,
        "reauth.html",
        {"form": form or FormState(), "next": next_url, "has_passkeys": has_passkeys},
        status_code=status_code,
        partial="partials/reauth_form.html",
        flashes=[flash("error", message)] if message else None,
    )


@requires_user
async def reauth(request: Request) -> Response:
    """GET: the password form; POST: check it, then on to a safe `next` (303)."""
    user = require_user(request)
    if request.method != "POST":
        # "Confirm with a passkey" (POST /reauth/passkey) is offered to those who have one.
        passkeys = await services(request).passkeys.of_account(user.account.id)
        next_url = safe_next(request.query_params.get("next"))
        return _reauth_form(request, next_url, has_passkeys=bool(passkeys))
    fields = form_fields(request)
    app = services(request)
    next_url = safe_next(fields.get("next"))
    try:
        await app.sessions.reauthenticate(
            app.accounts,
            user_id=user.account.id,
            session_id=user.session_id,
            password=fields.get("password", ""),
            client=client_of(request),
        )
    except AccountGone:
        raise NotSignedIn from None
    except DomainError as exc:
        answer = failure(exc)
        # A throttled attempt is shown where it was typed, too.
        errors = answer.field_errors or {"password": answer.message or NOT_CONFIRMED}
        response = _reauth_form(
            request,
            next_url,
            form=FormState({}, errors),
            status_code=answer.status_code,
            message=answer.message or next(iter(errors.values())),
        )
        response.headers.update(answer.headers)
        return response
    return see_other(request, next_url)


routes: list[BaseRoute] = [
    Route("/sessions", sessions_page, methods=["GET"]),
    # Before /sessions/{handle}, which would take "revoke-others" for a handle.
    Route("/sessions/revoke-others", revoke_others, methods=["POST"]),
    Route("/sessions/{handle}", revoke_session, methods=["DELETE"]),
    Route("/reauth", reauth, methods=["GET", "POST"]),
]
