"""OpenAI-compatible ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``, plus sound tags."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from tagger import DecodeOptions, TagOptions, TranscriptionResult, render

from ..batching import Engine
from ..errors import bad_request
from ..metrics import Metrics
from ..schemas import ERROR_RESPONSES, TranscriptionForm, TranscriptionJson, VerboseTranscription, multipart_schema
from ..settings import Settings
from .deps import MetricsDep, ReadyEngine, SettingsDep, require_api_key
from .inference import check_tag_resolution, ensure_room, run_job
from .sse import stream_transcription
from .upload import missing_file, read_form

router = APIRouter(prefix="/v1/audio", tags=["audio"], dependencies=[Depends(require_api_key)])

TAG_FORMATS = ("verbose_json", "srt", "vtt")  # the formats that show tags (srt/vtt as sound cues)
RESPONSES = {200: {"content": {"application/json": {"schema": VerboseTranscription.model_json_schema()},
                               "text/plain": {}}, "description": "json, verbose_json, text, srt or vtt"},
             **ERROR_RESPONSES}


async def transcribe(request: Request, engine: Engine, settings: Settings, metrics: Metrics, task: str) -> Response:
    ensure_room(engine, metrics)
    upload = await read_form(request, settings.max_upload_bytes)
    form = TranscriptionForm.from_fields(upload.fields)
    if upload.file is None:
        raise missing_file(upload)
    model = engine.model
    assert model is not None
    if task == "translate" and not model.is_multilingual:
        raise bad_request(f"the served model {model.name} is English-only and cannot translate; English speech is "
                          "transcribed by /v1/audio/transcriptions", "translation_unsupported")
    if form.language and form.language != "en" and not model.is_multilingual:
        raise bad_request(f"the served model {model.name} is English-only; language must be en (or unset)",
                          "unsupported_language", "language")
    check_tag_resolution(form.tag_resolution)
    wants_tags = model.head is not None and form.tags is not False and form.response_format in TAG_FORMATS
    decode = DecodeOptions(task=task, language=form.language, multilingual=form.multilingual,
                           temperature=form.temperatures, initial_prompt=form.prompt, speech_gate=form.speech_gate,
                           condition_on_previous_text=form.condition_on_previous_text,
                           word_timestamps=form.word_timestamps and form.response_format == "verbose_json")
    tags = TagOptions(form.tag_resolution, top_k=form.top_k, threshold=form.threshold) if wants_tags else None
    if form.stream:  # server-sent events as each window finishes (routes/sse.py)
        tags = TagOptions(form.tag_resolution, top_k=form.top_k, threshold=form.threshold) \
            if model.head is not None and form.tags is not False else None
        return await stream_transcription(request, engine, settings, metrics, partial(
            model.reader_job, upload.file, decode, tags, settings.max_duration, form.audio_track), task)
    open_job = partial(model.reader_job, upload.file, decode, tags, settings.max_duration, form.audio_track)
    result = await run_job(request, engine, settings, metrics, open_job, task)
    assert isinstance(result, TranscriptionResult)
    return render_transcription(result, form)


def render_transcription(result: TranscriptionResult, form: TranscriptionForm) -> Response:
    fmt = form.response_format
    if fmt == "json":
        return JSONResponse(TranscriptionJson(text=result.text).model_dump())
    if fmt == "verbose_json":
        body = VerboseTranscription.of(result, with_words=form.word_timestamps)
        return JSONResponse(body.model_dump(exclude_none=True))
    if fmt == "text":
        return PlainTextResponse(result.text + "\n")
    media = "text/vtt" if fmt == "vtt" else "text/plain"
    return PlainTextResponse(render(result, fmt), media_type=media)


@router.post("/transcriptions", summary="Transcribe audio (OpenAI-compatible), with sound tags",
             openapi_extra=multipart_schema(TranscriptionForm), responses=RESPONSES)
async def create_transcription(request: Request, engine: ReadyEngine, settings: SettingsDep,
                               metrics: MetricsDep) -> Response:
    return await transcribe(request, engine, settings, metrics, "transcribe")


@router.post("/translations", summary="Translate audio to English text (OpenAI-compatible), with sound tags",
             openapi_extra=multipart_schema(TranscriptionForm), responses=RESPONSES)
async def create_translation(request: Request, engine: ReadyEngine, settings: SettingsDep,
                             metrics: MetricsDep) -> Response:
    return await transcribe(request, engine, settings, metrics, "translate")
