"""The transcription subset of OpenAI's Realtime API over WebSocket: ``/v1/realtime``.

What a transcription client of that API does works here: ``session.update`` (or the older
``transcription_session.update``) with the input format and language, ``input_audio_buffer.append``
with base64 audio, ``input_audio_buffer.commit`` (or ``.clear``); the server answers
``session.created`` / ``session.updated``, ``input_audio_buffer.committed``, then
``conversation.item.input_audio_transcription.delta`` as each segment of the item becomes final and
``conversation.item.input_audio_transcription.completed`` with the whole transcript, or ``error``.

Each committed item is a ``StreamJob`` fed as its audio is appended (so its windows are encoded while
it comes) and ended by the commit: its transcript equals ``transcribe`` of the same audio. Turn
detection is not done here: the client commits (``turn_detection`` is reported as null).
Audio: ``audio/pcm`` (16-bit little-endian mono, 24 kHz unless the session says another rate).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid

from fastapi import APIRouter, WebSocket
from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

from tagger import AudioError, AudioFormat, DecodeOptions, PcmDecoder, StreamJob

from ..batching import ClientGone, DeadlineExceeded, Engine, QueueFull, Stopped
from ..metrics import Metrics
from ..settings import Settings
from .deps import key_matches

log = logging.getLogger("service.realtime")
router = APIRouter()

DEFAULT_RATE = 24000  # the Realtime API's PCM rate
PUMP_SECONDS = 0.05


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class Item:
    """One committed (or filling) buffer of audio and its job in the batcher."""

    def __init__(self, job: StreamJob, decoder: PcmDecoder):
        self.id = new_id("item")
        self.job = job
        self.decoder = decoder
        self.task: asyncio.Task | None = None  # the batcher's run
        self.pump: asyncio.Task | None = None


class RealtimeSession:
    def __init__(self, ws: WebSocket, engine: Engine, settings: Settings, metrics: Metrics):
        self.ws, self.engine, self.settings, self.metrics = ws, engine, settings, metrics
        self.id = new_id("sess")
        self.language: str | None = None
        self.prompt: str | None = None
        self.rate = DEFAULT_RATE
        self.item: Item | None = None
        self.previous: str | None = None
        self.lock = asyncio.Lock()
        self.items: set[Item] = set()

    async def send(self, body: dict) -> None:
        async with self.lock:
            await self.ws.send_text(json.dumps({"event_id": new_id("event"), **body}, ensure_ascii=False))

    async def error(self, message: str, code: str, param: str | None = None, kind: str = "invalid_request_error") -> None:
        await self.send({"type": "error", "error": {"type": kind, "code": code, "message": message, "param": param}})

    def session(self) -> dict:
        return {"id": self.id, "object": "realtime.session", "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": self.rate},
                                    "transcription": {"model": "whisper-1", "language": self.language,
                                                      "prompt": self.prompt or ""},
                                    "turn_detection": None, "noise_reduction": None}}}

    def new_item(self) -> Item:
        model = self.engine.model
        assert model is not None
        options = DecodeOptions(language=self.language, initial_prompt=self.prompt or None)
        job = StreamJob(model, options, None, max_duration=self.settings.max_stream_duration)
        return Item(job, PcmDecoder(AudioFormat("pcm_s16le", self.rate, 1)))

    async def update(self, body: dict) -> None:
        session = body.get("session") if isinstance(body.get("session"), dict) else {}
        audio_in = (session.get("audio") or {}).get("input") or {}
        transcription = audio_in.get("transcription") or session.get("input_audio_transcription") or {}
        fmt = audio_in.get("format") or session.get("input_audio_format")
        if isinstance(fmt, dict):
            if fmt.get("type") not in (None, "audio/pcm"):
                await self.error(f"only audio/pcm input is supported, not {fmt.get('type')!r}", "unsupported_value",
                                 "session.audio.input.format.type")
                return
            self.rate = int(fmt.get("rate") or DEFAULT_RATE)
        elif fmt not in (None, "pcm16"):
            await self.error(f"only pcm16 input is supported, not {fmt!r}", "unsupported_value", "session.input_audio_format")
            return
        language = transcription.get("language") if isinstance(transcription, dict) else None
        if language:
            key = str(language).strip().lower()
            language = key if key in LANGUAGES else TO_LANGUAGE_CODE.get(key)
            model = self.engine.model
            if language is None or (language != "en" and model is not None and not model.is_multilingual):
                await self.error(f"language {transcription.get('language')!r} is not one the served model speaks",
                                 "unsupported_language", "session.audio.input.transcription.language")
                return
        self.language = language or None
        self.prompt = transcription.get("prompt") if isinstance(transcription, dict) else None
        if self.item is not None and not self.item.job.received:
            self.item = None  # nothing appended yet: the next append starts with the new settings
        kind = "transcription_session.updated" if body.get("type") == "transcription_session.update" else "session.updated"
        await self.send({"type": kind, "session": self.session()})

    async def append(self, body: dict) -> None:
        try:
            data = base64.b64decode(body.get("audio") or "", validate=True)
        except (binascii.Error, ValueError):
            await self.error("audio must be base64", "invalid_value", "audio")
            return
        if len(data) > self.settings.max_frame_bytes:
            await self.error(f"an append holds {len(data)} bytes; the limit is {self.settings.max_frame_bytes}",
                             "frame_too_large", "audio")
            return
        if self.item is None:
            self.item = self.new_item()
            self.start(self.item)
        item = self.item
        samples = item.decoder.push(data)
        try:
            if len(samples):
                planned = await self.engine.decode(item.job.feed, samples)
                self.metrics.stream_audio_seconds.inc(len(samples) / 16000)
                if planned:
                    self.engine.batcher.wake()
        except AudioError as failure:
            await self.error(str(failure), failure.code, "audio")
            self.drop(item)

    def start(self, item: Item) -> None:
        batcher = self.engine.batcher
        assert batcher is not None
        try:
            ticket = batcher.reserve()
        except (QueueFull, Stopped):
            item.task = None
            return
        deadline = time.monotonic() + self.settings.max_stream_duration + self.settings.request_timeout

        async def gone() -> bool:
            return False

        item.task = asyncio.create_task(batcher.run(ticket, item.job, deadline, gone, self.id))
        self.items.add(item)

    async def commit(self) -> None:
        item = self.item
        if item is None or not item.job.received:
            await self.error("the input audio buffer is empty", "input_audio_buffer_commit_empty")
            return
        self.item = None
        if item.task is None:
            await self.error("the server is busy; retry later", "queue_full", kind="server_error")
            return
        try:
            tail = item.decoder.flush()
            if len(tail):
                await self.engine.decode(item.job.feed, tail)
            await self.engine.decode(item.job.end)
        except AudioError as failure:
            await self.error(str(failure), failure.code, "audio")
            self.drop(item)
            return
        self.engine.batcher.wake()
        await self.send({"type": "input_audio_buffer.committed", "item_id": item.id, "previous_item_id": self.previous})
        self.previous = item.id
        item.pump = asyncio.create_task(self.pump(item))

    async def pump(self, item: Item) -> None:
        """Deltas as segments become final, then the completed transcript."""
        assert item.task is not None
        first = True

        async def deltas() -> None:
            nonlocal first
            for segment in item.job.new_segments():
                if segment.no_speech or not segment.text.strip():
                    continue
                await self.send({"type": "conversation.item.input_audio_transcription.delta", "item_id": item.id,
                                 "content_index": 0, "delta": segment.text.lstrip() if first else segment.text})
                first = False

        try:
            while not item.task.done():
                await asyncio.wait({item.task}, timeout=PUMP_SECONDS)
                await deltas()
            try:
                result = item.task.result()
            except (DeadlineExceeded, ClientGone, Stopped) as failure:
                await self.error(f"the transcription stopped: {type(failure).__name__}", "timeout", kind="server_error")
                return
            await deltas()
            await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item.id,
                             "content_index": 0, "transcript": result.text})
        except Exception as failure:
            log.error("a realtime item failed: %s", failure, exc_info=failure)
            try:
                await self.error("internal server error", "internal_error", kind="server_error")
            except Exception:  # noqa: BLE001, S110 - the client is gone
                pass
        finally:
            self.items.discard(item)

    def drop(self, item: Item) -> None:
        if item.task is not None and not item.task.done():
            item.task.cancel()
        if item.pump is not None and not item.pump.done():
            item.pump.cancel()
        self.items.discard(item)
        if self.item is item:
            self.item = None

    def close(self) -> None:
        for item in list(self.items) + ([self.item] if self.item else []):
            self.drop(item)


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    state = websocket.app.state
    settings: Settings = state.settings
    engine: Engine = state.engine
    await websocket.accept()
    session = RealtimeSession(websocket, engine, settings, state.metrics)
    header = websocket.headers.get("authorization")
    if settings.api_keys and not key_matches(header, settings.api_keys):
        await session.error("missing or incorrect API key", "invalid_api_key", kind="authentication_error")
        await websocket.close(1008, "invalid_api_key")
        return
    if not engine.ready:
        await session.error("the model is still loading", "model_loading", kind="server_error")
        await websocket.close(1013, "model_loading")
        return
    open_now = getattr(state, "streams_open", 0)
    if open_now >= settings.max_streams:  # a realtime session is a stream: the same limit
        state.metrics.rejected.labels("too_many_streams").inc()
        await session.error(f"{open_now} streams are open, the most this server takes; retry later",
                            "too_many_streams", kind="server_error")
        await websocket.close(1013, "too_many_streams")
        return
    state.streams_open = open_now + 1
    state.metrics.streams_open.inc()
    kind = "transcription_session.created" if websocket.query_params.get("intent") == "transcription" else "session.created"
    try:
        await session.send({"type": kind, "session": session.session()})
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive(), settings.stream_idle_timeout)
            except asyncio.TimeoutError:
                if session.items:
                    continue  # transcripts are still coming
                await session.error(f"nothing came for {settings.stream_idle_timeout:g} s", "idle_timeout")
                await websocket.close(1008, "idle_timeout")
                return
            if message["type"] == "websocket.disconnect":
                return
            try:
                body = json.loads(message.get("text") or "")
            except ValueError:
                body = None
            if not isinstance(body, dict):
                await session.error("every message must be a JSON object with a type", "invalid_message")
                continue
            kind = body.get("type")
            if kind in ("session.update", "transcription_session.update"):
                await session.update(body)
            elif kind == "input_audio_buffer.append":
                await session.append(body)
            elif kind == "input_audio_buffer.commit":
                await session.commit()
            elif kind == "input_audio_buffer.clear":
                if session.item is not None:
                    session.drop(session.item)
                await session.send({"type": "input_audio_buffer.cleared"})
            else:
                await session.error(f"event type {kind!r} is not supported here (only the transcription subset)",
                                    "unsupported_event")
    except Exception as failure:
        if not isinstance(failure, RuntimeError):
            log.error("a realtime session failed: %s", failure, exc_info=failure)
    finally:
        session.close()
        state.streams_open = getattr(state, "streams_open", 1) - 1
        state.metrics.streams_open.dec()
