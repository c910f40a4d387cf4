"""``POST /v1/audio/tags``: AudioSet sound tags over time; the decoder never runs."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from tagger import TagOptions, render

from ..errors import bad_request
from ..schemas import ERROR_RESPONSES, TagsForm, TagsResponse, multipart_schema
from .deps import MetricsDep, ReadyEngine, SettingsDep, require_api_key
from .inference import check_labels, check_tag_resolution, ensure_room, run_job
from .upload import missing_file, read_form

router = APIRouter(prefix="/v1/audio", tags=["audio"], dependencies=[Depends(require_api_key)])

TEXT_FORMATS = {"text": "txt", "srt": "srt", "vtt": "vtt", "tsv": "tsv"}


@router.post("/tags", summary="Sound tags over time (no transcript)", openapi_extra=multipart_schema(TagsForm),
             responses={200: {"model": TagsResponse, "description": "json, or text, srt, vtt, tsv"}, **ERROR_RESPONSES})
async def create_tags(request: Request, engine: ReadyEngine,
                      settings: SettingsDep, metrics: MetricsDep) -> Response:
    ensure_room(engine, metrics)
    upload = await read_form(request, settings.max_upload_bytes)
    form = TagsForm.from_fields(upload.fields)
    if upload.file is None:
        raise missing_file(upload)
    model = engine.model
    assert model is not None
    if model.head is None:
        raise bad_request(f"no tagging head is loaded on this server (model {model.name}); start it with "
                          "EARMARK_HEAD=PATH to serve tags", "no_tagging_head")
    check_tag_resolution(form.tag_resolution)
    labels = model.head.card.labels
    check_labels(labels, form.include, "include")
    check_labels(labels, form.exclude, "exclude")
    tags = TagOptions(form.tag_resolution, top_k=form.top_k, threshold=form.threshold, include=form.include or None,
                      exclude=form.exclude or None)
    open_job = partial(model.reader_job, upload.file, None, tags, settings.max_duration, form.audio_track)
    result = await run_job(request, engine, settings, metrics, open_job, "tag")
    if form.response_format == "json":
        return JSONResponse(TagsResponse.of(result).model_dump())
    fmt = TEXT_FORMATS[form.response_format]
    return PlainTextResponse(render(result, fmt), media_type="text/vtt" if fmt == "vtt" else "text/plain")
