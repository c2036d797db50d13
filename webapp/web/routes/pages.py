"""The home page and the health check."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webapp.db import UNAVAILABLE_ERRORS, unavailability
from webapp.web.auth import signed_in_user
from webapp.web.rendering import render_page
from webapp.web.services import services


async def home(request: Request) -> Response:
    user = signed_in_user(request)
    if user is None:
        return render_page(request, "home.html", partial="partials/guest.html")
    return render_page(
        request,
        "home.html",
        {"account": user.account},
        partial="partials/account.html",
        reusable=True,
    )


async def healthz(request: Request) -> Response:
    """200 when the database answers a read and takes a write; 503 otherwise, with the
    reason when it is not simply out of reach (a full disk, a read-only database)."""
    db = services(request).db
    try:
        await db.read(db.ping)
        await db.write(db.probe_write)
    except UNAVAILABLE_ERRORS as exc:
        reason = unavailability(exc)
        body = {"status": "unavailable"}
        if reason != "unreachable":
            body["reason"] = reason
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ok"})


routes = [
    Route("/", home, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
]
