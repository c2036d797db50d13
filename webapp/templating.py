"""Jinja set-up and the ways a route answers with HTML: a page, a page or its
partial (for htmx), or a fragment with an out-of-band flash."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.templating import Jinja2Templates

from webapp.assets import StaticAssets
from webapp.auth import signed_in_user
from webapp.browser import Flash, FlashLevel, browser_state
from webapp.csrf import token_for
from webapp.htmx import htmx_details
from webapp.services import services
from webapp.settings import PROJECT_DIR

TEMPLATES_DIR = PROJECT_DIR / "templates"


@dataclass(frozen=True, slots=True)
class FormState:
    """What a form shows again: the values as typed (never passwords) and an error per field."""

    values: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)

    @property
    def first_invalid(self) -> str | None:
        return next(iter(self.errors), None)


def create_templates(assets: StaticAssets) -> Jinja2Templates:
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
    env.globals["empty_form"] = FormState()
    return Jinja2Templates(env=env, context_processors=[_common_context])


def _common_context(request: Request) -> dict[str, Any]:
    user = signed_in_user(request)
    app = services(request)
    return {
        "user": user.account if user else None,
        "csrf_token": token_for(request, key=app.csrf_key),
        "password_min_length": app.settings.password_min_length,
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
) -> Response:
    """The full page, or for a (non-boosted) htmx request the partial alone.

    The page shows the flashes waiting in the browser cookie and then `flashes`;
    the partial carries `flashes` out of band.
    """
    templates = services(request).templates
    if partial is not None and htmx_details(request).wants_partial:
        response = render_fragment(
            request, partial, context, status_code=status_code, flashes=flashes
        )
    else:
        waiting = browser_state(request).pop_flashes()
        page_context = {"flashes": waiting + (flashes or []), **(context or {})}
        response = templates.TemplateResponse(request, name, page_context, status_code=status_code)
    if partial is not None:
        response.headers.add_vary_header("HX-Request")
    return response


def render_fragment(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    flashes: list[Flash] | None = None,
) -> Response:
    """A partial, followed by the flash region swapped out of band when there is news."""
    templates = services(request).templates
    full_context = {"request": request, **_common_context(request), **(context or {})}
    html = templates.get_template(name).render(full_context)
    if flashes:
        html += templates.get_template("partials/flash.html").render(flashes=flashes, oob=True)
    return HTMLResponse(html, status_code=status_code)
