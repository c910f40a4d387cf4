"""``GET /``: the web page (plain HTML, CSS and JavaScript from ``service/static``, no CDN, no build step).

The page and its files load without an API key; the page sends the key (which it asks for when
the API answers 401) with every API call. Only the files listed here are served.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from ..errors import ApiError

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parents[1] / "static"
FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
# Everything the page loads comes from this server; audio plays from blob: URLs of the chosen file.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def static_file(name: str, media_type: str) -> Response:
    return Response((STATIC / name).read_bytes(), media_type=media_type, headers=SECURITY_HEADERS)


@router.get("/")
async def page() -> Response:
    return static_file("index.html", "text/html; charset=utf-8")


@router.get("/static/{name}")
async def page_file(name: str) -> Response:
    if name not in FILES:
        raise ApiError(404, f"no such file: /static/{name}", "not_found")
    return static_file(name, FILES[name])
