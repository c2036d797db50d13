"""Your security history, your data (export) and leaving (delete the account)."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from webapp.domain.errors import AccountGone, DomainError
from webapp.models import utcnow
from webapp.web.auth import (
    NotSignedIn,
    end_session,
    require_user,
    requires_recent_authentication,
    requires_user,
)
from webapp.web.browser import browser_state
from webapp.web.errors import failure
from webapp.web.forms import form_fields
from webapp.web.middleware import client_of
from webapp.web.navigation import see_other
from webapp.web.rendering import FormState, flash, render_page
from webapp.web.services import services

DELETED = (
    "Your account and everything we held about it are deleted. "
    "A last e-mail to {email} confirms it. Goodbye!"
)
NOT_DELETED = "Your account was not deleted: see the marked field."
# Event ids are positive and fit in 63 bits.
MAX_CURSOR = 2**63 - 1


def _cursor(request: Request) -> int | None:
    """`?before=<event id>`: where an older page starts; absent for the newest events."""
    raw = request.query_params.getlist("before")
    if not raw:
        return None
    if len(raw) > 1 or not raw[0].isascii() or not raw[0].isdigit():
        raise HTTPException(400, "The page of events asked for is not a number.")
    before = int(raw[0])
    if not 0 < before <= MAX_CURSOR:
        raise HTTPException(400, "The page of events asked for is not a number.")
    return before


@requires_user
async def activity_page(request: Request) -> Response:
    """The page, or (htmx) the next page of events, swapped in where its button was."""
    user = require_user(request)
    app = services(request)
    before = _cursor(request)
    page = await app.activity.page(user.account.id, before=before)
    context = {
        "page": page,
        "before": before,
        "retention_days": app.settings.activity_retention_days,
    }
    return render_page(request, "activity.html", context, partial="partials/activity_events.html")


@requires_recent_authentication
async def export(request: Request) -> Response:
    user = require_user(request)
    try:
        document = await services(request).activity.export(user.account.id)
    except AccountGone:
        raise NotSignedIn from None
    body = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    # Usernames are ASCII letters and digits: safe in a header as they are.
    filename = f"account-{user.account.username}-{utcnow():%Y-%m-%d}.json"
    return Response(
        body,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _delete_form(
    request: Request, form: FormState, *, status_code: int = 200, message: str | None = None
) -> Response:
    return render_page(
        request,
        "account_delete.html",
        {"form": form},
        status_code=status_code,
        flashes=[flash("error", message)] if message else None,
    )


@requires_user
async def delete_page(request: Request) -> Response:
    return _delete_form(request, FormState())


@requires_user
async def delete_account(request: Request) -> Response:
    fields = form_fields(request)
    user = require_user(request)
    try:
        deleted = await services(request).activity.delete_account(
            user.account.id,
            current_password=fields.get("current_password", ""),
            client=client_of(request),
        )
    except AccountGone:
        raise NotSignedIn from None
    except DomainError as exc:
        answer = failure(exc)
        errors = answer.field_errors or {"current_password": answer.message or NOT_DELETED}
        response = _delete_form(
            request,
            FormState({}, errors),
            status_code=answer.status_code,
            message=answer.message or NOT_DELETED,
        )
        response.headers.update(answer.headers)
        return response
    response = see_other(request, "/")
    end_session(response, request)
    state = browser_state(request)
    # A new CSRF identity, as at sign-out: nothing of the deleted account's session is valid.
    state.renew_id()
    state.add_flash("success", DELETED.format(email=deleted.email))
    return response


routes: list[BaseRoute] = [
    Route("/activity", activity_page, methods=["GET"]),
    Route("/account/export", export, methods=["GET"]),
    Route("/account/delete", delete_page, methods=["GET"]),
    Route("/account/delete", delete_account, methods=["POST"]),
]
