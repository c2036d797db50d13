"""Every error answer: domain errors → status, wording and headers (one table), and the
error pages in the app's own layout, revealing nothing internal.

htmx requests get the status with `HX-Reswap: none` and the message in the
flash region, so an error never replaces the part of the page being edited.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.authentication import AuthenticationError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ExceptionHandler

from webapp.db import UNAVAILABLE_ERRORS, unavailability
from webapp.domain.errors import (
    AccountGone,
    DomainError,
    EmailNotVerified,
    InvalidInput,
    InvalidLink,
    PasskeyNotFound,
    SessionNotFound,
    SigninFailed,
    Taken,
    Throttled,
    ThrottledAction,
)
from webapp.web.auth import NotSignedIn
from webapp.web.htmx import client_redirect, htmx_details
from webapp.web.middleware import add_security_headers
from webapp.web.navigation import login_url
from webapp.web.rendering import flash, render_fragment, render_page

logger = logging.getLogger("webapp")

SIGNIN_FAILED = "Incorrect username, e-mail or password."
THROTTLED = {
    "signin": "Too many failed sign-ins.",
    "password": "Too many wrong passwords.",
    "registration": "Too many new accounts from your network.",
    "rename": "Too many username changes.",
    "email": "Too many e-mails asked for.",
}
SESSION_NOT_FOUND = "That session has already ended, or it is not one of yours."
NOT_VERIFIED = (
    "Confirm your e-mail address first: we have sent a new link to it. Follow it, then sign in."
)

# Domain error → HTTP status. The most specific class listed wins.
STATUS: dict[type[DomainError], int] = {
    Taken: 409,
    InvalidInput: 422,
    SigninFailed: 401,
    AccountGone: 401,
    Throttled: 429,
    InvalidLink: 400,
    EmailNotVerified: 403,
    SessionNotFound: 404,
    PasskeyNotFound: 404,
}


@dataclass(frozen=True, slots=True)
class Failure:
    """How a domain error is answered: status, a message for #flash, per-field messages."""

    status_code: int
    message: str | None
    field_errors: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def _throttled_message(action: ThrottledAction, retry_after: int) -> str:
    minutes = -(-retry_after // 60)
    return f"{THROTTLED[action]} Try again in {minutes} minute(s)."


def failure(exc: DomainError) -> Failure:
    """The one place that decides what a domain error looks like over HTTP."""
    status = next(code for cls, code in STATUS.items() if isinstance(exc, cls))
    if isinstance(exc, InvalidInput):
        return Failure(status, None, exc.errors)
    if isinstance(exc, Throttled):
        return Failure(
            status,
            _throttled_message(exc.action, exc.retry_after),
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, SigninFailed):
        return Failure(status, SIGNIN_FAILED)
    if isinstance(exc, EmailNotVerified):
        return Failure(status, NOT_VERIFIED)
    if isinstance(exc, InvalidLink):
        return Failure(status, "This link is unknown, used or expired.")
    if isinstance(exc, SessionNotFound):
        return Failure(status, SESSION_NOT_FOUND)
    return Failure(status, MESSAGES[401])


TITLES = {
    400: "Bad request",
    401: "Sign in required",
    403: "Forbidden",
    404: "Page not found",
    405: "Method not allowed",
    413: "Request too large",
    415: "Unsupported form encoding",
    500: "Something went wrong",
    503: "Service unavailable",
}
MESSAGES = {
    401: "Your session has ended or you are not signed in. Sign in to continue.",
    404: "There is nothing at this address.",
    405: "This address does not accept that kind of request.",
    500: "An unexpected error happened on our side. It has been logged; please try again.",
    503: "We cannot reach our database right now. Please try again in a moment.",
}


def error_response(
    conn: HTTPConnection,
    status_code: int,
    message: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    text = message or MESSAGES.get(status_code) or TITLES.get(status_code, "Error")
    request = Request(conn.scope)
    try:
        if htmx_details(conn).is_htmx:
            response = render_fragment(
                request,
                "partials/empty.html",
                status_code=status_code,
                flashes=[flash("error", text)],
            )
            response.headers["HX-Reswap"] = "none"
        else:
            response = render_page(
                request,
                "error.html",
                {
                    "status_code": status_code,
                    "title": TITLES.get(status_code, "Error"),
                    "message": text,
                },
                status_code=status_code,
            )
    except Exception:
        # Rendering itself failed (it needs nothing from the database, but be sure):
        # still answer with the status, never a traceback.
        logger.exception("could not render the %s page", status_code)
        response = PlainTextResponse(text, status_code=status_code)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    # htmx requests get a fragment, others the page.
    response.headers.add_vary_header("HX-Request")
    return response


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.detail != TITLES.get(exc.status_code) else None
    # Starlette's own details ("Not Found") are replaced by our wording.
    if exc.status_code in (404, 405):
        detail = None
    return error_response(request, exc.status_code, detail, dict(exc.headers or {}))


async def not_signed_in(request: Request, exc: Exception | None = None) -> Response:
    details = htmx_details(request)
    if details.is_htmx:
        # fetch() would follow a 303 silently; HX-Redirect makes htmx load the sign-in page.
        response = error_response(request, 401)
        return client_redirect(login_url(details.current_path()), response=response)
    if request.method in ("GET", "HEAD"):
        return RedirectResponse(login_url(request.url.path), status_code=303)
    return error_response(request, 401)


async def domain_error(request: Request, exc: Exception) -> Response:
    """A domain error no route answered itself: the status and wording from the table."""
    assert isinstance(exc, DomainError)
    if isinstance(exc, AccountGone):
        return await not_signed_in(request)
    answer = failure(exc)
    message = answer.message or next(iter(answer.field_errors.values()), None)
    return error_response(request, answer.status_code, message, answer.headers)


UNAVAILABLE_MESSAGES = {
    "unreachable": MESSAGES[503],
    "disk_full": "Our database has run out of space, so nothing can be saved right now. "
    "We are on it; please try again later.",
    "read_only": "Our database is read-only right now, so nothing can be saved. "
    "Please try again later.",
}


async def database_unavailable(request: Request, exc: Exception) -> Response:
    reason = unavailability(exc)
    logger.warning("database unavailable (%s): %s", reason, type(exc).__name__)
    return error_response(request, 503, UNAVAILABLE_MESSAGES[reason], headers={"Retry-After": "5"})


def auth_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """The session check itself failed: the database did not answer."""
    logger.warning("database unavailable while checking a session")
    return error_response(conn, 503, headers={"Retry-After": "5"})


async def server_error(request: Request, exc: Exception) -> Response:
    # Runs outside every middleware, so it adds the security headers itself.
    if isinstance(exc, UNAVAILABLE_ERRORS):
        response = await database_unavailable(request, exc)
    else:
        response = error_response(request, 500)
    add_security_headers(MutableHeaders(raw=response.raw_headers), request.url.scheme)
    return response


exception_handlers: dict[Any, ExceptionHandler] = {
    HTTPException: http_error,
    NotSignedIn: not_signed_in,
    DomainError: domain_error,
    **dict.fromkeys(UNAVAILABLE_ERRORS, database_unavailable),
    500: server_error,
}
