"""The home page and the health check."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webapp.db import UNAVAILABLE_ERRORS, read_in_thread
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
    try:
        await read_in_thread(services(request).db.ping)
    except UNAVAILABLE_ERRORS:
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


routes = [
    Route("/", home, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
]
