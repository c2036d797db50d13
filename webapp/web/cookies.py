"""Cookie names and attributes: one helper sets and clears every cookie we use.

Over HTTPS (directly or through a trusted proxy) a cookie is `Secure` and takes
the `__Host-` prefix, which also pins it to this host and to `Path=/`.
"""

from __future__ import annotations

from http.cookies import SimpleCookie

from starlette.requests import HTTPConnection
from starlette.responses import Response

SESSION_COOKIE = "access_token"
REMEMBER_COOKIE = "remember_token"


def is_https(conn: HTTPConnection) -> bool:
    # The scope's scheme, after trusted-proxy handling; conn.url would build a whole URL.
    return bool(conn.scope["scheme"] == "https")


def cookie_name(base: str, conn: HTTPConnection) -> str:
    return f"__Host-{base}" if is_https(conn) else base


def cookie_header(name: str, value: str, conn: HTTPConnection, *, max_age: int) -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Lax, Path=/, no Domain, Secure over HTTPS."""
    cookie: SimpleCookie = SimpleCookie()
    cookie[name] = value
    morsel = cookie[name]
    morsel["path"] = "/"
    morsel["max-age"] = max_age
    morsel["httponly"] = True
    morsel["samesite"] = "Lax"
    if is_https(conn):
        morsel["secure"] = True
    return morsel.OutputString()


def set_cookie(
    response: Response, conn: HTTPConnection, base: str, value: str, *, max_age: int
) -> None:
    name = cookie_name(base, conn)
    response.headers.append("set-cookie", cookie_header(name, value, conn, max_age=max_age))


def clear_cookie(response: Response, conn: HTTPConnection, base: str) -> None:
    set_cookie(response, conn, base, "", max_age=0)


def session_token(conn: HTTPConnection) -> str | None:
    """The JWT, from the cookie only: never a header or the query string."""
    return conn.cookies.get(cookie_name(SESSION_COOKIE, conn)) or None


def remember_token(conn: HTTPConnection) -> str | None:
    return conn.cookies.get(cookie_name(REMEMBER_COOKIE, conn)) or None
