"""``GET /v1/models`` (OpenAI-compatible) and ``GET /v1/audio/labels`` (the served head's classes)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..batching import Engine
from ..errors import ApiError
from ..schemas import ERROR_RESPONSES, LabelList, LabelOut, ModelCard, ModelList
from .deps import EngineDep, ReadyEngine, require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)])

OPENAI_ALIAS = "whisper-1"  # clients written for OpenAI ask for this; the served model answers


def served_model(engine: Engine) -> ModelCard:
    model = engine.model
    if model is None:
        return ModelCard(id=engine.settings.model, ready=False)
    return ModelCard(id=model.name, ready=True, head=model.head_name, weights_sha256=model.weights.sha256)


@router.get("/v1/models", tags=["models"], response_model=ModelList, responses=ERROR_RESPONSES)
async def list_models(engine: EngineDep) -> ModelList:
    return ModelList(data=[served_model(engine)])


@router.get("/v1/models/{model_id:path}", tags=["models"], response_model=ModelCard, responses=ERROR_RESPONSES)
async def get_model(model_id: str, engine: EngineDep) -> ModelCard:
    card = served_model(engine)
    if model_id not in (card.id, OPENAI_ALIAS):
        raise ApiError(404, f"the model {model_id!r} does not exist; this server serves {card.id!r}",
                       "model_not_found", param="model")
    return card


@router.get("/v1/audio/labels", tags=["audio"], response_model=LabelList, responses=ERROR_RESPONSES)
async def list_labels(engine: ReadyEngine) -> LabelList:
    """The classes the served head scores, in its output order; empty when no head is loaded."""
    model = engine.model
    assert model is not None
    if model.head is None:
        return LabelList(label_set=None, head=None, data=[])
    labels = model.head.card.labels
    return LabelList(label_set=labels.name, head=model.head_name,
                     data=[LabelOut(index=label.index, mid=label.mid, name=label.name) for label in labels])
