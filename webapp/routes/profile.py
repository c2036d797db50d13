"""Profile updates from the home page: PATCH (partial) and PUT (full), answered with fragments."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webapp.accounts import Account, AccountGone, ProfileUpdate, Throttled
from webapp.auth import NotSignedIn, require_user
from webapp.browser import Flash
from webapp.cookies import set_session_cookie
from webapp.csrf import require_csrf
from webapp.forms import InvalidForm, parse_profile_changes, read_form
from webapp.proxy import client_of
from webapp.services import services
from webapp.settings import SESSION_LIFETIME
from webapp.templating import FormState, flash, render_fragment

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
        # Only after require_csrf: see render_fragment.
        compress=True,
    )


def _success_message(update: ProfileUpdate) -> Flash:
    if not update.changed:
        return flash("info", "Nothing to change: every field was left as it was.")
    changed = [label for field, label in FIELD_NAMES.items() if field in update.changed]
    listed = changed[0] if len(changed) == 1 else ", ".join(changed[:-1]) + " and " + changed[-1]
    return flash("success", f"Profile updated: your {listed} changed.")


async def _update(request: Request, *, every_field_required: bool) -> Response:
    fields = await read_form(request)
    user = require_user(request)
    if request.path_params["username"].lower() != user.account.username.lower():
        raise HTTPException(403, "You can only change your own profile.")
    app = services(request)
    require_csrf(request, fields, key=app.csrf_key)
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
    except InvalidForm as exc:
        return _render_update(
            request,
            user.account,
            forms={form_name: FormState(kept, exc.errors)},
            message=flash("error", NOT_CHANGED),
            status_code=exc.status_code,
        )
    except Throttled as exc:
        wait = f"Too many wrong passwords. Try again in {-(-exc.retry_after // 60)} minute(s)."
        response = _render_update(
            request,
            user.account,
            forms={form_name: FormState(kept, {"current_password": wait})},
            message=flash("error", wait),
            status_code=429,
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except AccountGone:
        raise NotSignedIn from None
    renewed_at = update.session_renewed_at
    response = _render_update(
        request, update.account, message=_success_message(update), renamed=renewed_at is not None
    )
    if renewed_at is not None:
        # A new cookie for the renewed session; its exp is never past the row's expiry.
        token = app.tokens.issue(
            user_id=update.account.id, session_id=user.session_id, now=int(renewed_at.timestamp())
        )
        set_session_cookie(response, request, token, max_age=SESSION_LIFETIME)
    return response


async def partial_update(request: Request) -> Response:
    return await _update(request, every_field_required=False)


async def full_update(request: Request) -> Response:
    return await _update(request, every_field_required=True)


routes = [
    Route("/partial/{username}", partial_update, methods=["PATCH"]),
    Route("/update/{username}", full_update, methods=["PUT"]),
]
