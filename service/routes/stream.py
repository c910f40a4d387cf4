"""Live audio over WebSocket: ``/v1/audio/stream``, Earmark's own protocol (README, "Live streams").

The client sends one JSON ``start`` message with its settings, then audio as binary messages, then
``{"type": "end"}``. The server answers ``ready``, then ``partial``, ``tags`` and ``segment`` events
as they come, and ``done`` (the verbose_json result) or ``error`` (the HTTP error body, plus the
status an HTTP request would have had), and closes.

A stream is a ``StreamJob`` in the same batcher as the HTTP requests: its windows are encoded and
decoded with theirs. Its partial texts are jobs of their own that the batcher takes only when no
other work waits, so under load they thin out and the finals keep their pace.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
import uuid
from typing import Literal

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.websockets import WebSocketState

from tagger import (
    SAMPLE_RATE,
    AudioError,
    AudioFormat,
    ContainerDecoder,
    DecodeOptions,
    PcmDecoder,
    StreamJob,
    TagOptions,
    TranscriptionResult,
    partial_of,
    steps_per_window,
)

from ..batching import ClientGone, DeadlineExceeded, Engine, QueueFull, Stopped
from ..errors import SERVER_ERROR, ApiError, bad_request, from_audio_error
from ..metrics import Metrics
from ..schemas import (
    SegmentOut,
    TagsResponse,
    TagWindowOut,
    VerboseTranscription,
    fallback_temperatures,
    language_code,
)
from ..settings import Settings
from .deps import key_matches

log = logging.getLogger("service.stream")
router = APIRouter()

PUMP_SECONDS = 0.05  # how often a stream looks for new segments and tags to send
PARTIAL_DEADLINE = 15.0  # seconds a partial may wait in the batcher before it is dropped
# WebSocket close codes (RFC 6455): a refused or failed stream closes with one of these, its reason the error code
NORMAL, POLICY, TOO_BIG, INTERNAL, TRY_LATER = 1000, 1008, 1009, 1011, 1013


class StreamFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    encoding: Literal["pcm_s16le", "pcm_f32le", "container"] = "pcm_s16le"
    sample_rate: int = Field(SAMPLE_RATE, ge=1000, le=384_000)
    channels: int = Field(1, ge=1, le=8)


class StreamStart(BaseModel):
    """The first message of a stream: its settings (every field optional)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["start"] = "start"
    format: StreamFormat = Field(default_factory=StreamFormat)
    transcript: bool = Field(True, description="false: sound tags only, the decoder never runs")
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None
    multilingual: bool = False
    prompt: str | None = Field(None, max_length=4000)
    condition_on_previous_text: bool = False
    temperature: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    speech_gate: float | None = Field(0.5, ge=0, le=1)
    word_timestamps: bool = False
    tags: bool | None = Field(None, description="sound tags; default: when a head is loaded")
    top_k: int | None = Field(5, ge=1)
    threshold: float | None = Field(None, ge=0, le=1)
    tag_resolution: float = Field(10.0, gt=0, le=3600, allow_inf_nan=False)
    partials: bool = True

    @field_validator("language", mode="before")
    @classmethod
    def _language_code(cls, value: object) -> object:
        return language_code(value)

    @property
    def temperatures(self) -> tuple[float, ...]:
        return fallback_temperatures(self.temperature)


class Closed(Exception):
    """The stream is over (answered with an error, or the client left)."""


class Session:
    """One stream: its job, its audio decoder, and what it has sent."""

    def __init__(self, websocket: WebSocket, engine: Engine, settings: Settings, metrics: Metrics):
        self.ws = websocket
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.loop = asyncio.get_running_loop()
        self.send_lock = asyncio.Lock()
        self.id = uuid.uuid4().hex
        self.start: StreamStart | None = None
        self.job: StreamJob | None = None
        self.pcm: PcmDecoder | None = None
        self.container: ContainerDecoder | None = None
        self.run_task: asyncio.Task | None = None
        self.partial_task: asyncio.Task | None = None
        self.ended = False
        self.gone = False
        self.failure: ApiError | None = None  # from the container's decoding thread
        self.arrivals: list[int] = []  # samples received after each piece of audio ...
        self.arrival_times: list[float] = []  # ... and when it came (time.monotonic())
        self.last_partial_at = 0.0  # seconds of audio when the last partial was asked for
        self.last_partial_text: str | None = None

    # --- sending ---------------------------------------------------------------------------------

    async def send(self, event: dict) -> None:
        if self.gone:
            raise Closed()
        async with self.send_lock:
            try:
                await self.ws.send_text(json.dumps(event, ensure_ascii=False))
            except Exception:  # noqa: BLE001 - the client left while we sent
                self.gone = True
                raise Closed() from None

    async def fail(self, error: ApiError, close_code: int) -> None:
        """Send the error event and close with ``close_code`` (reason: the error code)."""
        log.info("stream refused or failed", extra={"stream": self.id, "code": error.code, "status": error.status})
        try:
            await self.send({"type": "error", "status": error.status, **error.body()})
            async with self.send_lock:
                await self.ws.close(close_code, reason=error.code[:120])
        except Exception:  # noqa: BLE001, S110 - it may be gone already
            pass
        self.gone = True
        raise Closed()

    # --- audio in --------------------------------------------------------------------------------

    def arrived(self, count: int) -> None:
        """Note when the audio up to sample ``self.job.received`` came (``count`` new samples)."""
        assert self.job is not None
        self.arrivals.append(self.job.received)
        self.arrival_times.append(time.monotonic())
        self.metrics.stream_audio_seconds.inc(count / SAMPLE_RATE)

    def arrival_of(self, seconds: float) -> float | None:
        """When the audio up to ``seconds`` had all come."""
        if not self.arrivals:
            return None
        index = bisect.bisect_left(self.arrivals, round(seconds * SAMPLE_RATE))
        return self.arrival_times[min(index, len(self.arrival_times) - 1)]  # times are rounded: the end is the last

    def forget_arrivals(self, seconds: float) -> None:
        index = bisect.bisect_left(self.arrivals, round(seconds * SAMPLE_RATE))
        if index > 1000:  # trim now and then, not on every event
            del self.arrivals[:index], self.arrival_times[:index]

    def feed_now(self, samples) -> None:
        """Feed samples to the job (on a worker thread: planning runs the voice detector)."""
        assert self.job is not None
        if len(samples):
            planned = self.job.feed(samples)
            self.arrived(len(samples))
            if planned:
                self.engine.batcher.wake()

    def container_samples(self, samples) -> None:  # on the container's decoding thread
        self.feed_now(samples)

    def container_end(self, error: Exception | None) -> None:  # on the container's decoding thread
        assert self.job is not None
        if error is None:
            try:
                self.job.end()
            except AudioError as failure:
                error = failure
        if error is not None:
            api = from_audio_error(error) if isinstance(error, AudioError) else \
                ApiError(500, "decoding the stream failed", "internal_error", type=SERVER_ERROR)
            self.loop.call_soon_threadsafe(self._set_failure, api)
        self.engine.batcher.wake()

    def _set_failure(self, error: ApiError) -> None:
        self.failure = self.failure or error

    async def audio(self, data: bytes) -> None:
        assert self.job is not None and self.start is not None
        if self.ended:
            await self.fail(bad_request("audio came after the end message", "frame_after_end"), POLICY)
        if len(data) > self.settings.max_frame_bytes:
            await self.fail(ApiError(413, f"a message holds {len(data)} bytes; the limit is "
                                     f"{self.settings.max_frame_bytes}", "frame_too_large"), TOO_BIG)
        if self.container is not None:
            self.container.push(data)
            return
        assert self.pcm is not None
        try:
            samples = self.pcm.push(data)
            await self.engine.decode(self.feed_now, samples)
        except AudioError as error:
            await self.fail(from_audio_error(error), TOO_BIG if error.code == "audio_too_long" else POLICY)

    async def end(self) -> None:
        assert self.job is not None
        if self.ended:
            await self.fail(bad_request("a second end message", "frame_after_end"), POLICY)
        self.ended = True
        if self.container is not None:
            self.container.close()
            return
        assert self.pcm is not None
        try:
            await self.engine.decode(self.feed_now, self.pcm.flush())
            await self.engine.decode(self.job.end)
        except AudioError as error:
            await self.fail(from_audio_error(error), POLICY)
        self.engine.batcher.wake()

    # --- the stream --------------------------------------------------------------------------------

    async def open(self) -> None:
        """Check the key, the model and the limits; read and apply the start message."""
        settings, engine = self.settings, self.engine
        if settings.api_keys:
            header = self.ws.headers.get("authorization")
            query = self.ws.query_params.get("api_key")
            if not (key_matches(header, settings.api_keys) or (query and key_matches(f"Bearer {query}", settings.api_keys))):
                await self.fail(ApiError(401, "missing or incorrect API key: send 'Authorization: Bearer KEY' "
                                         "(or ?api_key=KEY)", "invalid_api_key"), POLICY)
        if engine.state == "failed":
            await self.fail(ApiError(503, f"the model failed to load: {engine.error}", "model_load_failed",
                                     type=SERVER_ERROR), TRY_LATER)
        if not engine.ready:
            await self.fail(ApiError(503, "the model is still loading", "model_loading", type=SERVER_ERROR), TRY_LATER)
        message = await self.receive(settings.stream_idle_timeout)
        if message.get("bytes") is not None:
            await self.fail(bad_request("the first message must be the JSON start message, not audio",
                                        "invalid_message"), POLICY)
        try:
            self.start = StreamStart.model_validate_json(message.get("text") or "")
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in error.errors())
            await self.fail(bad_request(f"invalid start message: {problems}", "invalid_value"), POLICY)
        assert self.start is not None
        model = engine.model
        assert model is not None and engine.batcher is not None
        start = self.start
        try:
            audio_format = AudioFormat(start.format.encoding, start.format.sample_rate, start.format.channels)
            wants_tags = model.head is not None and start.tags is not False
            if start.tags and model.head is None:
                raise ValueError("tags need a tagging head, and none is loaded on this server")
            if not start.transcript and not wants_tags:
                raise ValueError("a stream with transcript false needs tags, and there are none here")
            steps_per_window(start.tag_resolution)
            if start.task == "translate" and not model.is_multilingual:
                raise ValueError(f"the served model {model.name} is English-only and cannot translate")
            options = None if not start.transcript else DecodeOptions(
                task=start.task, language=start.language, multilingual=start.multilingual,
                temperature=start.temperatures, initial_prompt=start.prompt, speech_gate=start.speech_gate,
                condition_on_previous_text=start.condition_on_previous_text, word_timestamps=start.word_timestamps)
            tags = TagOptions(start.tag_resolution, top_k=start.top_k, threshold=start.threshold) if wants_tags else None
            self.job = StreamJob(model, options, tags, max_duration=settings.max_stream_duration)
        except ValueError as error:
            await self.fail(bad_request(str(error)), POLICY)
        if audio_format.encoding == "container":
            self.container = ContainerDecoder(self.container_samples, self.container_end)
        else:
            self.pcm = PcmDecoder(audio_format)
        try:
            ticket = engine.batcher.reserve()
        except QueueFull as error:
            self.metrics.rejected.labels("queue_full").inc()
            await self.fail(ApiError(503, f"the server is busy ({error}); retry later", "queue_full",
                                     type=SERVER_ERROR), TRY_LATER)
        except Stopped:
            await self.fail(ApiError(503, "the server is shutting down", "shutting_down", type=SERVER_ERROR), TRY_LATER)
        deadline = time.monotonic() + settings.max_stream_duration + settings.request_timeout

        async def disconnected() -> bool:
            return self.gone

        self.run_task = asyncio.create_task(engine.batcher.run(ticket, self.job, deadline, disconnected, self.id))
        await self.send({"type": "ready", "id": self.id, "model": model.name, "head": model.head_name if wants_tags else None,
                         "sample_rate": SAMPLE_RATE, "transcript": start.transcript, "tags": wants_tags})

    async def receive(self, timeout: float | None) -> dict:
        try:
            message = await asyncio.wait_for(self.ws.receive(), timeout)
        except asyncio.TimeoutError:
            await self.fail(ApiError(408, f"nothing came for {timeout:g} s", "idle_timeout"), POLICY)
        except Exception:  # noqa: BLE001 - the connection broke
            self.gone = True
            raise Closed() from None
        if message["type"] == "websocket.disconnect":
            self.gone = True
            raise Closed()
        return message

    async def receive_loop(self) -> None:
        """Audio and the end message; after the end, only a disconnect or a frame too many may come."""
        while True:
            message = await self.receive(None if self.ended else self.settings.stream_idle_timeout)
            if message.get("bytes") is not None:
                await self.audio(message["bytes"])
                continue
            try:
                body = json.loads(message.get("text") or "")
            except ValueError:
                body = None
            if not isinstance(body, dict) or body.get("type") != "end":
                kind = body.get("type") if isinstance(body, dict) else None
                await self.fail(bad_request(f"expected audio (binary messages) or {{\"type\": \"end\"}}; got "
                                            f"{'type ' + repr(kind) if kind else 'a text message that is not that'}",
                                            "invalid_message"), POLICY)
            await self.end()

    async def emit(self) -> None:
        """Send the tag windows and segments final since the last look."""
        job = self.job
        assert job is not None
        for window in job.new_tag_windows():
            await self.send({"type": "tags", **TagWindowOut.of(window).model_dump()})
            if job.decoder is None:  # with a transcript, segments (decoded later) still need these times
                self.forget_arrivals(window.start)
        for segment in job.new_segments():
            arrived = self.arrival_of(segment.end)
            if arrived is not None:
                self.metrics.stream_final_latency.observe(time.monotonic() - arrived)
            body = SegmentOut.of(segment).model_dump(exclude_none=True)
            if not (self.start and self.start.word_timestamps):
                body.pop("words", None)
            await self.send({"type": "segment", **body})
            self.forget_arrivals(segment.start)

    def maybe_partial(self) -> None:
        job, start = self.job, self.start
        assert job is not None and start is not None
        if (not start.partials or not start.transcript or self.ended or self.partial_task is not None
                or job.seconds - self.last_partial_at < self.settings.partial_interval):
            return
        self.last_partial_at = job.seconds
        self.partial_task = asyncio.create_task(self.partial())

    async def partial(self) -> None:
        """One partial text of the window being filled, through the batcher at low priority."""
        job, engine = self.job, self.engine
        assert job is not None and engine.batcher is not None
        try:
            made = await engine.decode(job.partial_job)
            if made is None:
                return
            begin, partial_job = made
            try:
                ticket = engine.batcher.reserve()
            except (QueueFull, Stopped):
                return  # no room: this partial is skipped

            async def disconnected() -> bool:
                return self.gone

            await engine.batcher.run(ticket, partial_job, time.monotonic() + PARTIAL_DEADLINE, disconnected,
                                     self.id, low=True)
            partial = partial_of(begin, partial_job)
            if job.planned_seconds > partial.start or partial.text == self.last_partial_text:
                return  # its window was planned meanwhile (finals follow), or nothing new was said
            self.last_partial_text = partial.text
            arrived = self.arrival_of(partial.end)
            if arrived is not None:
                self.metrics.stream_partial_latency.observe(time.monotonic() - arrived)
            await self.send({"type": "partial", "start": partial.start, "end": partial.end, "text": partial.text})
        except (DeadlineExceeded, ClientGone, Stopped, Closed, ValueError):
            pass  # a partial that cannot be made is left out
        except Exception:
            log.exception("a partial failed", extra={"stream": self.id})
        finally:
            self.partial_task = None

    async def pump(self) -> None:
        """Send what is final as it comes, ask for partials; at the end, ``done`` and close."""
        assert self.run_task is not None
        while not self.run_task.done():
            await asyncio.wait({self.run_task}, timeout=PUMP_SECONDS)
            if self.failure is not None:
                await self.fail(self.failure, TOO_BIG if self.failure.code == "audio_too_long" else POLICY)
            await self.emit()
            self.maybe_partial()
        try:
            result = self.run_task.result()
        except DeadlineExceeded:
            await self.fail(ApiError(504, "the stream ran past its deadline", "timeout", type=SERVER_ERROR), POLICY)
        except Stopped:
            await self.fail(ApiError(503, "the server is shutting down", "shutting_down", type=SERVER_ERROR), TRY_LATER)
        except ClientGone:
            raise Closed() from None
        except Exception as error:
            log.error("a stream failed: %s", error, exc_info=error, extra={"stream": self.id})
            await self.fail(ApiError(500, f"the stream failed: {type(error).__name__}", "internal_error",
                                     type=SERVER_ERROR), INTERNAL)
        await self.emit()
        assert self.start is not None
        if isinstance(result, TranscriptionResult):
            body = VerboseTranscription.of(result, with_words=self.start.word_timestamps).model_dump(exclude_none=True)
        else:
            body = TagsResponse.of(result).model_dump()
        await self.send({"type": "done", **body})
        async with self.send_lock:
            await self.ws.close(NORMAL)
        self.gone = True

    def close(self) -> None:
        """Let go of everything at once: the batcher's work, the decoding thread, the partial."""
        self.gone = True
        for task in (self.run_task, self.partial_task):
            if task is not None and not task.done():
                task.cancel()
        if self.container is not None:
            self.container.stop()
        self.job = None


@router.websocket("/v1/audio/stream")
async def stream(websocket: WebSocket) -> None:
    state = websocket.app.state
    settings: Settings = state.settings
    metrics: Metrics = state.metrics
    engine: Engine = state.engine
    await websocket.accept()
    session = Session(websocket, engine, settings, metrics)
    open_now = getattr(state, "streams_open", 0)
    if open_now >= settings.max_streams:
        metrics.rejected.labels("too_many_streams").inc()
        try:
            await session.fail(ApiError(503, f"{open_now} streams are open, the most this server takes "
                                        f"(EARMARK_MAX_STREAMS); retry later", "too_many_streams",
                                        type=SERVER_ERROR), TRY_LATER)
        except Closed:
            return
    state.streams_open = open_now + 1
    metrics.streams_open.inc()
    receiver: asyncio.Task | None = None
    try:
        await session.open()
        receiver = asyncio.create_task(session.receive_loop())
        pump = asyncio.create_task(session.pump())
        done, _ = await asyncio.wait({receiver, pump}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.exception() is not None and not isinstance(task.exception(), Closed):
                raise task.exception()
        if pump in done:
            receiver.cancel()
        else:
            pump.cancel()
    except Closed:
        pass
    except Exception as error:
        log.error("a stream failed: %s", error, exc_info=error, extra={"stream": session.id})
        try:
            await session.fail(ApiError(500, "internal server error", "internal_error", type=SERVER_ERROR), INTERNAL)
        except Closed:
            pass
    finally:
        if receiver is not None and not receiver.done():
            receiver.cancel()
        session.close()
        state.streams_open = getattr(state, "streams_open", 1) - 1
        metrics.streams_open.dec()
        if websocket.client_state == WebSocketState.CONNECTED:
            try:
                await websocket.close(NORMAL)
            except Exception:  # noqa: BLE001, S110 - it is gone already
                pass
