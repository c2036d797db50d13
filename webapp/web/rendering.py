"""Jinja set-up and the ways a route answers with HTML: a page, a page or its
partial (for htmx), or a fragment with an out-of-band flash."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jinja2
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from webapp.domain.validation import USERNAME_HINT, password_hint
from webapp.settings import PROJECT_DIR, Settings
from webapp.web.assets import StaticAssets
from webapp.web.auth import signed_in_user
from webapp.web.browser import Flash, FlashLevel, browser_state
from webapp.web.compression import compress as compressed
from webapp.web.compression import negotiate
from webapp.web.csrf import token_for
from webapp.web.htmx import htmx_details
from webapp.web.services import services

TEMPLATES_DIR = PROJECT_DIR / "templates"


@dataclass(frozen=True, slots=True)
class FormState:
    """What a form shows again: the values as typed (never passwords) and an error per field."""

    values: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)

    @property
    def first_invalid(self) -> str | None:
        return next(iter(self.errors), None)


def form_field(
    form: FormState,
    prefix: str,
    name: str,
    label: str,
    *,
    type: str = "text",
    autocomplete: str = "off",
    required: bool = False,
    hint: str | None = None,
    value: str | None = None,
) -> Markup:
    """One labelled input, as templates call it: `{{ field(form, "login", "username", ...) }}`.

    An invalid field is marked aria-invalid and points at its message, whose id is
    "<name>-error"; the first invalid field takes the focus. Written in Python
    rather than as a Jinja macro: a page has ten of them and the macro's call
    overhead was most of the page's rendering time.
    """
    error = form.errors.get(name)
    input_id = f"{prefix}-{name}"
    classes = (
        "field" + (" field-required" if required else "") + (" field-invalid" if error else "")
    )
    html = f'<div class="{classes}">'
    html += f'<label for="{input_id}">{escape(label)}</label>'
    if hint:
        html += f'<p class="hint" id="{input_id}-hint">{escape(hint)}</p>'
    html += f'<input id="{input_id}" name="{name}"'
    if type != "text":
        html += f' type="{type}"'
    html += f' autocomplete="{autocomplete}"'
    shown = "" if type == "password" else form.values.get(name, value or "")
    if shown:
        html += f' value="{escape(shown)}"'
    if required:
        html += " required"
    if error:
        html += f' aria-invalid="true" aria-describedby="{name}-error"'
        if form.first_invalid == name:
            html += " autofocus"
    elif hint:
        html += f' aria-describedby="{input_id}-hint"'
    html += ">"
    if error:
        html += (
            f'<p class="field-error" id="{name}-error"><i class="icon i-circle-exclamation"></i>'
            f"<span>{escape(error)}</span></p>"
        )
    # Only the names and types written in our templates go in unescaped.
    return Markup(html + "</div>")  # noqa: S704 (every value above is escaped)


def create_templates(assets: StaticAssets, settings: Settings) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        # Templates ship with the code: never stat the files again on each render.
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static_url"] = assets.url
    env.globals["field"] = form_field
    env.globals["empty_form"] = FormState()
    # Form hints come from the validation table, so they cannot drift from the rules.
    env.globals["hints"] = {
        "username": USERNAME_HINT,
        "password": password_hint(settings.password_min_length),
    }
    return env


def _common_context(request: Request) -> dict[str, Any]:
    """What any template may show: the signed-in user, the CSRF token, settings."""
    user = signed_in_user(request)
    app = services(request)
    return {
        "user": user.account if user else None,
        "csrf_token": token_for(request, key=app.csrf_key),
        # For the navigation's aria-current.
        "path": request.url.path,
    }


def flash(level: FlashLevel, text: str) -> Flash:
    return Flash(level=level, text=text)


def render_page(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    partial: str | None = None,
    flashes: list[Flash] | None = None,
    reusable: bool = False,
) -> Response:
    """The full page, or for a (non-boosted) htmx request the partial alone.

    The page shows the flashes waiting in the browser cookie and then `flashes`;
    the partial carries `flashes` out of band. A `reusable` page shows nothing but
    its (hashable) context and the request's CSRF token and user: without news to
    flash, it is rendered once and served again from memory.
    """
    if partial is not None and htmx_details(request).wants_partial:
        response = render_fragment(
            request, partial, context, status_code=status_code, flashes=flashes
        )
    else:
        waiting = browser_state(request).pop_flashes() + (flashes or [])
        page_context = {**_common_context(request), **(context or {}), "flashes": tuple(waiting)}
        templates = services(request).templates
        html = (
            render_cached(templates, name, page_context)
            if reusable and not waiting
            else templates.get_template(name).render(page_context)
        )
        response = HTMLResponse(html, status_code=status_code)
    if partial is not None:
        response.headers.add_vary_header("HX-Request")
    return response


def render_cached(templates: jinja2.Environment, name: str, context: Mapping[str, Any]) -> str:
    """A page rendered once per distinct context and then served from memory.

    The signed-in home is most of the traffic and shows nothing but its context,
    so this halves its CPU cost (bench: 364 against 660 µs per request). A context
    that cannot be a cache key (a list, a dict) is rendered afresh, never refused.
    """
    key = tuple(sorted(context.items()))
    try:
        hash(key)
    except TypeError:
        return templates.get_template(name).render(context)
    return _render_again(templates, name, key)


@lru_cache(maxsize=256)
def _render_again(
    templates: jinja2.Environment, name: str, context: tuple[tuple[str, Any], ...]
) -> str:
    """A page by everything it shows (the CSRF token, bound to one session, included)."""
    return templates.get_template(name).render(dict(context))


def render_fragment(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    flashes: list[Flash] | None = None,
    compress: bool = False,
) -> Response:
    """A partial, followed by the flash region swapped out of band when there is news.

    `compress` compresses it as the client accepts. Only for answers to requests
    that passed the CSRF check: what they reflect was sent by someone who already
    holds this session's token, so compression cannot leak it (BREACH).
    """
    templates = services(request).templates
    html = templates.get_template(name).render({**_common_context(request), **(context or {})})
    if flashes:
        html += templates.get_template("partials/flash.html").render(flashes=flashes, oob=True)
    encoding = negotiate(request.headers.get("accept-encoding", "")) if compress else None
    if encoding is None:
        return HTMLResponse(html, status_code=status_code)
    response = HTMLResponse(compressed(html.encode(), encoding), status_code=status_code)
    # No Vary: Accept-Encoding: the answer is no-store, so no cache ever keeps it.
    response.headers["content-encoding"] = encoding
    return response
