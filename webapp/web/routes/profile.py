"""Profile updates from the home page: PATCH (partial) and PUT (full), answered with fragments."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webapp.domain.accounts import ProfileUpdate
from webapp.domain.errors import AccountGone, DomainError
from webapp.domain.validation import parse_profile_changes
from webapp.models import Account
from webapp.web.auth import NotSignedIn, require_user, requires_user, start_session
from webapp.web.browser import Flash
from webapp.web.errors import failure
from webapp.web.forms import form_fields
from webapp.web.middleware import client_of
from webapp.web.rendering import FormState, flash, render_fragment
from webapp.web.services import services

FIELD_NAMES = {"username": "username", "email": "e-mail", "password": "password"}
NOT_CHANGED = "Nothing was changed: see the marked fields."


def _render_update(
    request: Request,
    account: Account,
    *,
    forms: dict[str, FormState] | None = None,
    message: Flash,
    status_code: int = 200,
    renamed: bool = False,
) -> Response:
    return render_fragment(
        request,
        "partials/profile_update.html",
        {"account": account, "forms": forms or {}, "renamed": renamed},
        status_code=status_code,
        flashes=[message],
        # Safe: CSRFMiddleware let only holders of this session's token get here.
        compress=True,
    )


def _success_message(update: ProfileUpdate) -> Flash:
    if not update.changed:
        return flash("info", "Nothing to change: every field was left as it was.")
    changed = [label for field, label in FIELD_NAMES.items() if field in update.changed]
    listed = changed[0] if len(changed) == 1 else ", ".join(changed[:-1]) + " and " + changed[-1]
    return flash("success", f"Profile updated: your {listed} changed.")


async def _update(request: Request, *, every_field_required: bool) -> Response:
    fields = form_fields(request)
    user = require_user(request)
    if request.path_params["username"].lower() != user.account.username.lower():
        raise HTTPException(403, "You can only change your own profile.")
    app = services(request)
    form_name = "full" if every_field_required else "partial"
    kept = {"username": fields.get("username", ""), "email": fields.get("email", "")}
    try:
        changes = parse_profile_changes(
            fields,
            every_field_required=every_field_required,
            min_password_length=app.settings.password_min_length,
        )
        update = await app.accounts.update_profile(
            user.account,
            changes,
            session_id=user.session_id,
            client=client_of(request),
        )
    except AccountGone:
        raise NotSignedIn from None
    except DomainError as exc:
        answer = failure(exc)
        # A throttled current password is shown where it was typed, too.
        field_errors = answer.field_errors or {"current_password": answer.message or NOT_CHANGED}
        response = _render_update(
            request,
            user.account,
            forms={form_name: FormState(kept, field_errors)},
            message=flash("error", answer.message or NOT_CHANGED),
            status_code=answer.status_code,
        )
        response.headers.update(answer.headers)
        return response
    response = _render_update(
        request,
        update.account,
        message=_success_message(update),
        renamed="username" in update.changed,
    )
    if update.reissue_at is not None:
        # A token under the new name, or for the new session after a new password; the
        # session's absolute end stays where it was.
        start_session(
            response,
            request,
            app.tokens,
            account=update.account,
            session_id=update.session_id or user.session_id,
            expires_at=user.expires_at,
            now=update.reissue_at,
        )
    return response


@requires_user
async def partial_update(request: Request) -> Response:
    return await _update(request, every_field_required=False)


@requires_user
async def full_update(request: Request) -> Response:
    return await _update(request, every_field_required=True)


routes = [
    Route("/partial/{username}", partial_update, methods=["PATCH"]),
    Route("/update/{username}", full_update, methods=["PUT"]),
]
