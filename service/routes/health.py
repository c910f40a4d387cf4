"""``GET /healthz`` (the process is alive), ``GET /readyz`` (the model is loaded), ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..schemas import ErrorBody, Health, Readiness
from .deps import EngineDep, MetricsDep, ReadyEngine, health_api_key, metrics_api_key

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, dependencies=[Depends(health_api_key)])
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, dependencies=[Depends(health_api_key)],
            responses={503: {"model": ErrorBody, "description": "the model is loading (Retry-After) or failed to load"}})
async def readyz(engine: ReadyEngine) -> Readiness:
    model = engine.model
    assert model is not None
    return Readiness(status="ready", model=model.name, head=model.head_name, device=str(model.device))


@router.get("/metrics", dependencies=[Depends(metrics_api_key)], response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
async def metrics(registry: MetricsDep, engine: EngineDep) -> Response:
    if engine.batcher is not None:
        registry.queue_depth.set(engine.batcher.depth)
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
