"""The live order page's files (``gateway/static/``), served over plain HTTP GET.

``/`` is ``index.html``; ``/static/<path>`` is any file under the directory. Paths are
resolved and must stay inside it (no ``..``, no symbolic link out, no hidden files). Every
response carries an ETag (the content's SHA-256) and ``If-None-Match`` is answered 304.
``index.html`` must be revalidated on every load (``no-cache``), so a new page version shows
at once; the other files may be reused for five minutes without asking (they have no content
hash in their names: there is no build step). Files are read once per change (by mtime and
size) and kept in memory.
"""

from __future__ import annotations

import email.utils
import hashlib
import http
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response

INDEX = "index.html"
STATIC_PREFIX = "/static/"
ASSET_MAX_AGE_SECONDS = 300
MAX_FILE_BYTES = 8 * 1024 * 1024

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}

# The page talks to the same origin only (REST under /api, the socket under /ws).
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:;"
        " style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    ),
)


@dataclass(frozen=True, slots=True)
class _Cached:
    stamp: tuple[int, int]
    body: bytes
    etag: str


def content_type(path: Path) -> str:
    known = _TYPES.get(path.suffix.lower())
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def plain(status: http.HTTPStatus, text: str) -> Response:
    body = f"{text}\n".encode()
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


class StaticFiles:
    def __init__(self, root: Path) -> None:
        self._root = root.resolve()
        self._cache: dict[Path, _Cached] = {}

    def handles(self, path: str) -> bool:
        route = urlsplit(path).path
        return route == "/" or route.startswith(STATIC_PREFIX)

    def resolve(self, path: str) -> Path | None:
        """The file ``path`` names inside the root, or None."""
        route = unquote(urlsplit(path).path)
        relative = INDEX if route == "/" else route.removeprefix(STATIC_PREFIX)
        parts = relative.split("/")
        if not relative or "\x00" in relative or "\\" in relative:
            return None
        if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
            return None
        candidate = (self._root / relative).resolve()
        if not candidate.is_relative_to(self._root) or not candidate.is_file():
            return None
        return candidate

    def response(self, path: str, if_none_match: str | None) -> Response:
        file = self.resolve(path)
        if file is None:
            return plain(http.HTTPStatus.NOT_FOUND, "not found")
        cached = self._load(file)
        if cached is None:
            return plain(http.HTTPStatus.NOT_FOUND, "not found")
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("ETag", cached.etag),
                (
                    "Cache-Control",
                    "no-cache"
                    if file.name == INDEX
                    else f"public, max-age={ASSET_MAX_AGE_SECONDS}",
                ),
                *SECURITY_HEADERS,
            ]
        )
        if if_none_match is not None and cached.etag in _etags(if_none_match):
            headers["Content-Length"] = "0"
            status = http.HTTPStatus.NOT_MODIFIED
            return Response(status.value, status.phrase, headers, b"")
        headers["Content-Type"] = content_type(file)
        headers["Content-Length"] = str(len(cached.body))
        return Response(http.HTTPStatus.OK.value, "OK", headers, cached.body)

    def _load(self, file: Path) -> _Cached | None:
        try:
            stat = file.stat()
        except OSError:
            return None
        if stat.st_size > MAX_FILE_BYTES:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(file)
        if cached is None or cached.stamp != stamp:
            try:
                body = file.read_bytes()
            except OSError:
                return None
            cached = _Cached(stamp, body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
            self._cache[file] = cached
        return cached


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}
