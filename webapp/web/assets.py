"""Static files served from memory: compressed once, content-hashed URLs, cached a year.

The set of files is small and fixed at deploy time, so reading, hashing and
compressing them once at start-up is cheaper than doing any of it per request.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from webapp.web.compression import Encoding, compress, negotiate

# A year, in seconds: a versioned URL never changes content.
IMMUTABLE = "public, max-age=31536000, immutable"
# An unversioned URL may change at the next deploy.
REVALIDATE = "public, max-age=0, must-revalidate"
_COMPRESSIBLE = ("text/", "application/javascript", "image/svg+xml", "application/json")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    # The same body per content coding, where compressing pays.
    encoded: dict[Encoding, bytes]
    media_type: str
    version: str


def _load(path: Path) -> Asset:
    stat = path.stat()
    return _load_version(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=256)
def _load_version(path: Path, _mtime_ns: int, _size: int) -> Asset:
    """One file as it is now; brotli at its best is slow, so each version is read once
    per process however many apps (tests build one each) serve it."""
    body = path.read_bytes()
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type == "application/javascript":
        media_type += "; charset=utf-8"
    encoded: dict[Encoding, bytes] = {}
    if media_type.startswith(_COMPRESSIBLE) and len(body) > 256:
        encoded = {coding: compress(body, coding, best=True) for coding in ("br", "gzip")}
    return Asset(body, encoded, media_type, hashlib.sha256(body).hexdigest()[:12])


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
        encoding = negotiate(headers.get("accept-encoding", ""))
        if encoding in asset.encoded:
            body = asset.encoded[encoding]
            extra.append((b"content-encoding", encoding.encode()))
        await _respond(send, 200, body, common + extra, method)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], method: str
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
