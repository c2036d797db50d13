"""Passkeys over HTTP: the security page's list, the WebAuthn JSON endpoints that
static/js/passkeys.js calls, and signing in with one. The rules live in
webapp/domain/passkeys.py."""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from webapp.domain.errors import (
    AccountGone,
    DomainError,
    InvalidInput,
    PasskeyNotFound,
)
from webapp.domain.passkeys import PasskeyRejected
from webapp.web.auth import (
    NotSignedIn,
    complete_sign_in,
    require_user,
    requires_recent_authentication,
    requires_user,
    signed_in_user,
)
from webapp.web.browser import Flash, browser_state
from webapp.web.csrf import accepts_json
from webapp.web.errors import failure
from webapp.web.forms import body_of, form_fields
from webapp.web.middleware import client_of
from webapp.web.navigation import safe_next
from webapp.web.rendering import FormState, flash, render_fragment, render_page
from webapp.web.routes.security import page_context
from webapp.web.services import services

PANEL = "partials/passkeys_panel.html"
NOT_JSON = "Send the passkey as a JSON object."
NOT_ACCEPTED = "That passkey was not accepted. Try again, or sign in with your password."
NOT_FOUND = "That passkey is not one of yours, or it was removed already."
NO_STORE = {"Cache-Control": "no-store"}
# Row ids are 32-bit: a longer number names no passkey (and is never sent to the database).
MAX_ID = 2**31 - 1


def _json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body as an object (400 otherwise); an empty body is {}."""
    raw = body_of(request).raw
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise HTTPException(400, NOT_JSON) from None
    if not isinstance(value, dict):
        raise HTTPException(400, NOT_JSON)
    return value


def _refused(exc: DomainError) -> JSONResponse:
    """A refused passkey as JSON for passkeys.js: {"error": words for people}."""
    if isinstance(exc, PasskeyRejected):
        return JSONResponse({"error": NOT_ACCEPTED}, status_code=401, headers=NO_STORE)
    answer = failure(exc)
    return JSONResponse(
        {"error": answer.message or NOT_ACCEPTED},
        status_code=answer.status_code,
        headers={**NO_STORE, **answer.headers},
    )


def _passkey_id(request: Request) -> int:
    found: int = request.path_params["passkey_id"]
    if found > MAX_ID:
        raise PasskeyNotFound
    return found


def _credential(body: dict[str, Any]) -> dict[str, Any]:
    """The credential: `{"credential": {...}, ...}`, or the body itself when it is one."""
    inner = body.get("credential")
    if isinstance(inner, dict):
        return inner
    return body


async def _panel(
    request: Request,
    *,
    status_code: int = 200,
    form: FormState | None = None,
    flashes: list[Flash] | None = None,
    fragment: bool = False,
) -> Response:
    """The passkeys panel (#passkeys): the fragment for htmx and the JSON endpoints, else
    the whole security page around it."""
    context = await page_context(request)
    if form is not None:
        context["passkey_form"] = form
    if fragment:
        return render_fragment(request, PANEL, context, status_code=status_code, flashes=flashes)
    return render_page(
        request,
        "security.html",
        context,
        status_code=status_code,
        partial=PANEL,
        flashes=flashes,
    )


# -- the security page ----------------------------------------------------------------------


@accepts_json
@requires_recent_authentication
async def registration_options(request: Request) -> Response:
    """POST /security/passkeys/options: PublicKeyCredentialCreationOptions (JSON)."""
    user = require_user(request)
    _json_object(request)
    options = await services(request).passkeys.registration_options(
        user.account, browser=browser_state(request).ensure_id()
    )
    return Response(options, media_type="application/json", headers=NO_STORE)


@accepts_json
@requires_recent_authentication
async def add_passkey(request: Request) -> Response:
    """POST /security/passkeys: the created credential and a `name`; the list again."""
    user = require_user(request)
    body = _json_object(request)
    name = body.get("name", "")
    try:
        added = await services(request).passkeys.register(
            user.account.id,
            _credential(body),
            name if isinstance(name, str) else "",
            browser=browser_state(request).ensure_id(),
            client=client_of(request),
        )
    except InvalidInput as exc:
        message = next(iter(exc.errors.values()))
        return await _panel(
            request,
            status_code=422,
            form=FormState({"name": name if isinstance(name, str) else ""}, exc.errors),
            flashes=[flash("error", message)],
            fragment=True,
        )
    done = flash("success", f"Passkey “{added.name}” added: you can sign in with it now.")
    return await _panel(request, flashes=[done], fragment=True)


@requires_recent_authentication
async def remove_passkey(request: Request) -> Response:
    """DELETE /security/passkeys/{id}: one of the account's passkeys goes."""
    user = require_user(request)
    try:
        name = await services(request).passkeys.remove(
            user.account.id, _passkey_id(request), client_of(request)
        )
    except PasskeyNotFound:
        return await _panel(request, status_code=404, flashes=[flash("error", NOT_FOUND)])
    return await _panel(request, flashes=[flash("success", f"Passkey “{name}” removed.")])


@requires_recent_authentication
async def rename_passkey(request: Request) -> Response:
    """PATCH /security/passkeys/{id} with `name`."""
    user = require_user(request)
    name = form_fields(request).get("name", "")
    try:
        renamed = await services(request).passkeys.rename(
            user.account.id, _passkey_id(request), name
        )
    except PasskeyNotFound:
        return await _panel(request, status_code=404, flashes=[flash("error", NOT_FOUND)])
    except InvalidInput as exc:
        message = next(iter(exc.errors.values()))
        return await _panel(request, status_code=422, flashes=[flash("error", message)])
    return await _panel(request, flashes=[flash("success", f"Passkey renamed “{renamed.name}”.")])


# -- signing in ------------------------------------------------------------------------------


@accepts_json
async def signin_options(request: Request) -> Response:
    """POST /login/passkey/options: PublicKeyCredentialRequestOptions (JSON), no
    allowCredentials. Writes nothing."""
    _json_object(request)
    options = await services(request).passkeys.signin_options(
        browser=browser_state(request).ensure_id()
    )
    return Response(options, media_type="application/json", headers=NO_STORE)


@accepts_json
async def signin(request: Request) -> Response:
    """POST /login/passkey: the assertion; 200 {"redirect": …} and the session cookie."""
    body = _json_object(request)
    app = services(request)
    next_value = body.get("next")
    next_url = safe_next(
        next_value if isinstance(next_value, str) else request.query_params.get("next")
    )
    previous = signed_in_user(request)
    try:
        new_session = await app.passkeys.sign_in(
            _credential(body),
            browser=browser_state(request).ensure_id(),
            client=client_of(request),
            remember=body.get("remember") in (True, "on", "true", "1"),
            # Signing in ends the session this browser had, whoever it belonged to.
            replaces=previous.session_id if previous else None,
        )
    except DomainError as exc:
        return _refused(exc)
    response = JSONResponse({"redirect": next_url}, headers=NO_STORE)
    complete_sign_in(response, request, app.tokens, new_session, how=" with a passkey")
    return response


@accepts_json
@requires_user
async def reauthenticate(request: Request) -> Response:
    """POST /reauth/passkey: one of this account's passkeys instead of the password on
    /reauth; 200 {"redirect": next}. Another account's passkey is refused (401)."""
    user = require_user(request)
    body = _json_object(request)
    next_value = body.get("next")
    next_url = safe_next(next_value if isinstance(next_value, str) else None)
    try:
        await services(request).passkeys.reauthenticate(
            _credential(body),
            user_id=user.account.id,
            session_id=user.session_id,
            browser=browser_state(request).ensure_id(),
            client=client_of(request),
        )
    except AccountGone:
        raise NotSignedIn from None
    except DomainError as exc:
        return _refused(exc)
    return JSONResponse({"redirect": next_url}, headers=NO_STORE)


routes: list[BaseRoute] = [
    Route("/security/passkeys/options", registration_options, methods=["POST"]),
    Route("/security/passkeys", add_passkey, methods=["POST"]),
    Route("/security/passkeys/{passkey_id:int}", remove_passkey, methods=["DELETE"]),
    Route("/security/passkeys/{passkey_id:int}", rename_passkey, methods=["PATCH"]),
    Route("/login/passkey/options", signin_options, methods=["POST"]),
    Route("/login/passkey", signin, methods=["POST"]),
    Route("/reauth/passkey", reauthenticate, methods=["POST"]),
]
