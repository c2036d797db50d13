"""One module per area of the site; `app.py` gathers their routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

Endpoint = Callable[[Request], Awaitable[Response]]


def by_method(**endpoints: Endpoint) -> Endpoint:
    """One endpoint per HTTP method on one path, so a 405 lists every allowed method.

    (Two Routes on one path each answer 405 with only their own methods in Allow.)
    HEAD is answered by the GET endpoint.
    """

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await endpoints[method](request)

    return endpoint
