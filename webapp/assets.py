"""Static files served from memory: gzip-compressed once, content-hashed URLs, cached a year.

The set of files is small and fixed at deploy time, so reading, hashing and
compressing them once at start-up is cheaper than doing any of it per request.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

# A year, in seconds: a versioned URL never changes content.
IMMUTABLE = "public, max-age=31536000, immutable"
# An unversioned URL may change at the next deploy.
REVALIDATE = "public, max-age=0, must-revalidate"
_COMPRESSIBLE = ("text/", "application/javascript", "image/svg+xml", "application/json")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    media_type: str
    version: str


def _load(path: Path) -> Asset:
    body = path.read_bytes()
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type == "application/javascript":
        media_type += "; charset=utf-8"
    gzipped = None
    if media_type.startswith(_COMPRESSIBLE) and len(body) > 256:
        gzipped = gzip.compress(body, compresslevel=9, mtime=0)
    return Asset(body, gzipped, media_type, hashlib.sha256(body).hexdigest()[:12])


class StaticAssets:
    """An ASGI app for /static, and `url()` for templates."""

    def __init__(self, directory: Path, *, mount: str = "/static") -> None:
        self.mount = mount
        self.assets = {
            path.relative_to(directory).as_posix(): _load(path)
            for path in sorted(directory.rglob("*"))
            if path.is_file() and not path.name.startswith(".")
        }

    def url(self, name: str) -> str:
        return f"{self.mount}/{name}?v={self.assets[name].version}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        name = scope["path"].removeprefix(scope.get("root_path", "")).removeprefix(self.mount)
        asset = self.assets.get(name.lstrip("/"))
        if asset is None:
            raise HTTPException(404)
        if method not in ("GET", "HEAD"):
            raise HTTPException(405, headers={"Allow": "GET, HEAD"})
        headers = Headers(scope=scope)
        etag = f'"{asset.version}"'
        query = scope.get("query_string", b"").decode("latin-1")
        cache = IMMUTABLE if query == f"v={asset.version}" else REVALIDATE
        common = [
            (b"cache-control", cache.encode()),
            (b"etag", etag.encode()),
            (b"vary", b"Accept-Encoding"),
        ]
        if headers.get("if-none-match") == etag:
            await _respond(send, 304, b"", common, method)
            return
        body = asset.body
        extra = [(b"content-type", asset.media_type.encode())]
        if asset.gzipped is not None and "gzip" in headers.get("accept-encoding", ""):
            body = asset.gzipped
            extra.append((b"content-encoding", b"gzip"))
        await _respond(send, 200, body, common + extra, method)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], method: str
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
