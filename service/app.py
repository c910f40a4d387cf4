"""The FastAPI app factory. ``earmark serve`` runs ``uvicorn service.app:create_app --factory``.

The model loads in a background thread when the app starts; until it is ready, /readyz and the
inference routes answer 503 with Retry-After.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tagger import __version__

from .batching import Engine
from .errors import JsonCORSMiddleware, install_error_handlers
from .guards import UploadGuard
from .metrics import Metrics
from .routes import health, models, page, realtime, stream, tags, transcriptions
from .settings import Settings

log = logging.getLogger("service")
access_log = logging.getLogger("service.access")

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
REQUEST_ID_HEADER = "X-Request-ID"
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_STANDARD_RECORD_KEYS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            out["request_id"] = request_id
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD_RECORD_KEYS and not k.startswith("_")})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str) -> None:
    """JSON lines on stderr for the service's and uvicorn's loggers (uvicorn runs with log_config=None)."""
    root = logging.getLogger()
    for handler in list(root.handlers):  # e.g. the CLI's basicConfig: one format on stderr, ours
        if type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.stdout):
            root.removeHandler(handler)
    if not any(isinstance(h.formatter, JsonLines) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLines())
        root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # service.access logs each request instead


class RequestContext:
    """Pure ASGI middleware: request id (X-Request-ID in and out), access log line, request metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = MutableHeaders(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = given if VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            access_log.info("request", extra={"method": scope["method"], "path": scope["path"], "route": route,
                                              "status": status, "seconds": round(elapsed, 4)})
            REQUEST_ID.reset(token)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; settings come from EARMARK_* environment variables unless given."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    metrics = Metrics()
    engine = Engine(settings, metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log.info("starting", extra={"settings": settings.model_dump(exclude={"api_keys"}),
                                    "api_keys": len(settings.api_keys)})
        engine.start_loading()
        yield
        engine.close()

    # /docs and /redoc load Swagger UI and ReDoc from the fastapi-offline package, never from a CDN
    app = FastAPIOffline(title="Earmark", version=__version__, lifespan=lifespan,
                         description="Transcripts (OpenAI-compatible) and AudioSet sound tags from one Whisper encoder pass.")
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.engine = engine
    install_error_handlers(app)
    for module in (transcriptions, tags, stream, realtime, models, health):
        app.include_router(module.router)
    app.include_router(page.router)
    if settings.cors_origins:
        app.add_middleware(JsonCORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
                           expose_headers=[REQUEST_ID_HEADER, "Retry-After"])
    app.add_middleware(UploadGuard, settings=settings, metrics=metrics)
    app.add_middleware(RequestContext, metrics=metrics)
    return app
