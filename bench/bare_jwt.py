"""The yardstick for a signed-in page: a bare Starlette app that only checks the JWT cookie.

It verifies the `access_token` cookie exactly as the app's `decode_token` does
(PyJWT, one algorithm, issuer, audience, every claim required, `iat` checked) and
answers a few bytes: no database, no template, no middleware. `run.py` serves it
under the same uvicorn settings as the app and hands it the app's JWT key through
the environment (BENCH_JWT_KEY_HEX, JWT_ALGORITHM, JWT_ISSUER, JWT_AUDIENCE).
"""

from __future__ import annotations

import os

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from webapp.web.tokens import REQUIRED_CLAIMS

KEY = bytes.fromhex(os.environ.get("BENCH_JWT_KEY_HEX", ""))
ALGORITHM = os.environ.get("JWT_ALGORITHM", "HS256")
ISSUER = os.environ.get("JWT_ISSUER", "webapp")
AUDIENCE = os.environ.get("JWT_AUDIENCE", "webapp")
OPTIONS: jwt.types.Options = {"require": list(REQUIRED_CLAIMS), "verify_iat": True}


async def home(request: Request) -> Response:
    token = request.cookies.get("access_token")
    if not token:
        return PlainTextResponse("guest", status_code=401)
    try:
        claims = jwt.decode(
            token, KEY, algorithms=[ALGORITHM], issuer=ISSUER, audience=AUDIENCE, options=OPTIONS
        )
    except jwt.PyJWTError:
        return PlainTextResponse("invalid", status_code=401)
    return PlainTextResponse(f"user {claims['sub']}")


app = Starlette(routes=[Route("/", home, methods=["GET"])])
