"""FastAPI dependencies: what routes get from ``app.state`` (settings, metrics, the engine) and API-key checks."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from ..batching import Engine
from ..errors import AUTHENTICATION, ApiError, unavailable
from ..metrics import Metrics
from ..settings import Settings

LOADING_RETRY_AFTER = 5  # seconds


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
EngineDep = Annotated[Engine, Depends(get_engine)]


async def ready_engine(engine: EngineDep) -> Engine:
    """The engine once the model is loaded; 503 (with Retry-After while it loads) before that."""
    if engine.state == "failed":
        raise unavailable(f"the model failed to load: {engine.error}", "model_load_failed", 60)
    if not engine.ready:
        raise unavailable("the model is still loading", "model_loading", LOADING_RETRY_AFTER)
    return engine


ReadyEngine = Annotated[Engine, Depends(ready_engine)]


def key_matches(header: str | None, keys: list[str]) -> bool:
    """``Authorization: Bearer KEY`` against every configured key, in constant time per key."""
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return False
    given = token.encode("utf-8", "replace")
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.encode("utf-8"))
    return found


def check_key(request: Request, keys: list[str]) -> None:
    if keys and not key_matches(request.headers.get("authorization"), keys):
        given = "authorization" in request.headers
        message = "incorrect API key" if given else "missing API key: send 'Authorization: Bearer KEY'"
        raise ApiError(401, message, "invalid_api_key", type=AUTHENTICATION, headers={"WWW-Authenticate": "Bearer"})


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    check_key(request, settings.api_keys)


async def health_api_key(request: Request, settings: SettingsDep) -> None:
    if not settings.public_health:
        check_key(request, settings.api_keys)


async def metrics_api_key(request: Request, settings: SettingsDep) -> None:
    if not settings.public_metrics:
        check_key(request, settings.api_keys)
