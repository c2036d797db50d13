"""The floor of the benchmark: a bare Starlette app whose one route answers "hello".

Served by `bench/run.py` under the same uvicorn settings as the real app.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


async def hello(_request: Request) -> Response:
    return PlainTextResponse("hello")


app = Starlette(routes=[Route("/", hello, methods=["GET"])])
