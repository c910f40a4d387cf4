"""A typed Python client for the Earmark HTTP API, sync and async.

```python
from service.client import Client, AsyncClient

with Client("http://127.0.0.1:8000", api_key=None) as client:
    result = client.transcribe("talk.mp3", tags=True, top_k=5)
    print(result.text)
    for window in result.tags:
        print(window.start, window.end, [label.name for label in window.labels])

async with AsyncClient("http://127.0.0.1:8000") as client:
    tags = await client.tag("street.wav", tag_resolution=2.0)
```

Both clients build their requests and parse their responses with the same code (``_Call`` and
the ``_build_*`` functions below); they differ only in how a request is sent and how the client
waits between retries. Only 503 answers and connection failures are retried (exponential
backoff; a ``Retry-After`` header wins); any other error answer raises an ``EarmarkError``
subclass at once.

Live streams (``stream``) go over a WebSocket to ``/v1/audio/stream``:

```python
for event in client.stream("talk.ogg"):          # or an iterator of raw 16-bit PCM chunks
    if isinstance(event, StreamSegment):
        print(event.start, event.end, event.text)
```

This module depends on httpx and pydantic (and websockets for ``stream``) only: it imports nothing
from the server, so it can be copied into, or installed with, any application.
"""

from __future__ import annotations

import asyncio
import email.utils
import io
import json
import mimetypes
import os
import random
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Generic, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "Client",
    "DeadlineExceeded",
    "EarmarkConnectionError",
    "EarmarkError",
    "EarmarkTimeout",
    "Label",
    "ModelInfo",
    "NotFound",
    "PayloadTooLarge",
    "Segment",
    "ServerError",
    "StreamDone",
    "StreamEvent",
    "StreamPartial",
    "StreamReady",
    "StreamSegment",
    "StreamTags",
    "TagLabel",
    "TagWindow",
    "Tags",
    "Transcription",
    "Unavailable",
    "UnsupportedMedia",
    "Word",
]

__version__ = "0.1.0"

AudioInput = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]
TextFormat = Literal["text", "srt", "vtt", "json", "verbose_json"]
TagsTextFormat = Literal["text", "srt", "vtt", "tsv", "json"]
TopK = int | Literal["all"] | None  # labels per window; "all": every class; None: the server's default (5)
T = TypeVar("T")

DEFAULT_TIMEOUT = 600.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 0.5  # seconds before the first retry; doubles each time
MAX_BACKOFF = 30.0  # no single wait is longer than this, whatever Retry-After says


# --------------------------------------------------------------------------- results


class _Model(BaseModel):
    # Unknown fields are kept (``model_extra``), so a newer server never breaks an older client.
    model_config = ConfigDict(extra="allow", frozen=False)


class TagLabel(_Model):
    """One AudioSet class and its probability."""

    index: int
    mid: str
    name: str
    probability: float


class TagWindow(_Model):
    """The sound tags of one stretch of audio, ``start`` to ``end`` seconds."""

    start: float
    end: float
    labels: list[TagLabel] = Field(default_factory=list)

    def names(self) -> list[str]:
        return [label.name for label in self.labels]


class Word(_Model):
    word: str
    start: float
    end: float
    probability: float | None = None


class Segment(_Model):
    """One transcript segment, OpenAI's verbose_json shape, plus the sound tags over its time."""

    id: int = 0
    seek: int = 0
    start: float
    end: float
    text: str
    tokens: list[int] = Field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: list[Word] | None = None
    tags: list[TagLabel] = Field(default_factory=list)


class Transcription(_Model):
    """A transcript (or translation) and the sound tags from the same encoder pass.

    ``language`` is as the server writes it (OpenAI's verbose_json uses the English name, "english");
    ``words`` is set only when word timestamps were asked for; ``tags`` is empty when the server has
    no tagging head or tags were turned off (``notes`` says which)."""

    task: str = "transcribe"
    language: str = ""
    duration: float = 0.0
    text: str
    segments: list[Segment] = Field(default_factory=list)
    words: list[Word] | None = None
    tags: list[TagWindow] = Field(default_factory=list)
    tag_resolution: float | None = None
    head: str | None = None
    notes: list[str] = Field(default_factory=list)


class Tags(_Model):
    """The answer of ``POST /v1/audio/tags``: sound tags only."""

    duration: float
    tag_resolution: float
    head: str | None = None
    tags: list[TagWindow] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- live stream events


class StreamReady(_Model):
    """The server took the stream's settings: audio may follow."""

    type: Literal["ready"] = "ready"
    id: str = ""
    model: str = ""
    head: str | None = None
    sample_rate: int = 16000


class StreamPartial(_Model):
    """Text of the audio from ``start`` to ``end`` that is not final yet (a later partial or the
    segments replace it)."""

    type: Literal["partial"] = "partial"
    start: float
    end: float
    text: str


class StreamSegment(Segment):
    """A final segment, the same as the whole file's."""

    type: Literal["segment"] = "segment"
    language: str | None = None
    no_speech: bool = False
    speech_prob: float | None = None


class StreamTags(TagWindow):
    """A finished tag window."""

    type: Literal["tags"] = "tags"


class StreamDone(_Model):
    """The end of the stream: the whole result (``Transcription``, or ``Tags`` for a tags-only stream)."""

    type: Literal["done"] = "done"
    result: Transcription | Tags


StreamEvent = StreamReady | StreamPartial | StreamSegment | StreamTags | StreamDone
_STREAM_EVENTS: dict[str, type[_Model]] = {"ready": StreamReady, "partial": StreamPartial, "segment": StreamSegment,
                                           "tags": StreamTags}


class Label(_Model):
    """One class the served head scores."""

    index: int
    mid: str
    name: str


class ModelInfo(_Model):
    """One entry of ``GET /v1/models`` (OpenAI's shape)."""

    id: str
    object: str = "model"
    created: int | None = None
    owned_by: str | None = None


# --------------------------------------------------------------------------- errors


class EarmarkError(Exception):
    """Any failure of a request. ``status`` is the HTTP status (None when no answer came);
    ``message``, ``code``, ``type`` and ``param`` come from the server's ``{"error": {...}}`` body;
    ``retry_after`` is the Retry-After header in seconds, if the answer had one."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 type: str | None = None, param: str | None = None, body: Any = None,
                 retry_after: float | None = None):
        super().__init__(f"{status} {message}" if status else message)
        self.message = message
        self.status = status
        self.code = code
        self.type = type
        self.param = param
        self.body = body
        self.retry_after = retry_after


class BadRequest(EarmarkError):
    """400 (or 422): an empty upload, a bad parameter."""


class AuthenticationError(EarmarkError):
    """401 / 403: a missing or wrong API key."""


class NotFound(EarmarkError):
    """404: no such endpoint."""


class PayloadTooLarge(EarmarkError):
    """413: the upload is over the size limit, or the audio over the length limit."""


class UnsupportedMedia(EarmarkError):
    """415: the upload is not audio the server can decode."""


class Unavailable(EarmarkError):
    """503 after every retry: the model is still loading or the queue is full."""


class DeadlineExceeded(EarmarkError):
    """504: the request did not finish within the server's deadline."""


class ServerError(EarmarkError):
    """Any other 5xx answer."""


class EarmarkConnectionError(EarmarkError):
    """No answer: the server could not be reached (after every retry)."""


class EarmarkTimeout(EarmarkError):
    """No answer within the client's timeout (timeouts are not retried)."""


_BY_STATUS: dict[int, type[EarmarkError]] = {
    400: BadRequest, 422: BadRequest, 401: AuthenticationError, 403: AuthenticationError, 404: NotFound,
    413: PayloadTooLarge, 415: UnsupportedMedia, 503: Unavailable, 504: DeadlineExceeded,
}

# Failures before any answer: safe to retry (transcribing has no side effects).
# Read, write and pool timeouts are not retried: the server may still be working on the request.
_RETRIED_TRANSPORT_ERRORS = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) in seconds from now; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(response: httpx.Response) -> EarmarkError:
    """The exception for an error answer: the class by status, the message from the error body."""
    status = response.status_code
    message, code, kind, param, body = response.reason_phrase or f"HTTP {status}", None, None, None, None
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        if text:
            message = text[:500]
    else:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            code = error.get("code")
            code = None if code is None else str(code)
            kind = error.get("type")
            param = error.get("param")
        elif isinstance(body, dict) and "detail" in body:  # a framework-level validation error
            message = str(body["detail"])
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else EarmarkError)
    return cls(message, status=status, code=code, type=kind, param=param, body=body,
               retry_after=retry_after_seconds(response.headers.get("retry-after")))


# --------------------------------------------------------------------------- requests


class _Upload:
    """An audio upload that can be sent again on a retry: a path is reopened for each attempt, a
    seekable file object at its start is streamed (httpx rewinds it to 0 for every attempt), and
    anything else (bytes, a pipe, a file object part-way through) is read into memory once, from
    where it stands."""

    def __init__(self, audio: AudioInput, filename: str | None = None):
        self._path: Path | None = None
        self._data: bytes | None = None
        self._file: IO[bytes] | None = None
        self._open: IO[bytes] | None = None
        if isinstance(audio, (str, os.PathLike)):
            self._path = Path(audio)
            if not self._path.is_file():
                raise FileNotFoundError(f"no such audio file: {self._path}")
            name = self._path.name
        elif isinstance(audio, (bytes, bytearray, memoryview)):
            self._data = bytes(audio)
            name = "audio"
        elif isinstance(audio, io.TextIOBase):
            raise TypeError("open the audio file in binary mode ('rb')")
        elif hasattr(audio, "read"):
            name = Path(str(getattr(audio, "name", "") or "audio")).name
            if _seekable(audio) and audio.tell() == 0:
                self._file = audio
            else:
                self._data = audio.read()
        else:
            raise TypeError(f"audio must be a path, bytes or a binary file object, not {type(audio).__name__}")
        self.filename = filename or name
        self.content_type = mimetypes.guess_type(self.filename)[0] or "application/octet-stream"

    def part(self) -> tuple[str, IO[bytes] | bytes, str]:
        """The ``files`` entry for one attempt."""
        self.release()
        if self._path is not None:
            self._open = content = self._path.open("rb")
        elif self._file is not None:
            self._file.seek(0)
            content = self._file
        else:
            content = self._data or b""
        return self.filename, content, self.content_type

    def release(self) -> None:
        if self._open is not None:
            self._open.close()
            self._open = None


def _seekable(stream: Any) -> bool:
    try:
        return bool(stream.seekable()) and isinstance(stream.tell(), int)
    except (AttributeError, OSError, io.UnsupportedOperation):
        return False


@dataclass
class _Call(Generic[T]):
    """One API call: what to send and how to read the answer. Built once, sent by either client."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    data: dict[str, Any] | None = None
    upload: _Upload | None = None
    retry: bool = True
    accept_status: tuple[int, ...] = ()  # non-2xx statuses handed to ``parse`` instead of raised

    def request_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.data is not None:
            kwargs["data"] = self.data
        if self.upload is not None:
            kwargs["files"] = {"file": self.upload.part()}
        return kwargs

    def finish_attempt(self) -> None:
        if self.upload is not None:
            self.upload.release()

    def read(self, response: httpx.Response) -> T:
        if response.is_success or response.status_code in self.accept_status:
            return self.parse(response)
        raise error_from_response(response)


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _form(**fields: Any) -> dict[str, Any]:
    """Form fields, leaving out those that are None (the server's defaults apply)."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        out[name] = [_form_value(v) for v in value] if isinstance(value, (list, tuple)) else _form_value(value)
    return out


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as error:
        raise EarmarkError(f"the server answered {response.status_code} with a body that is not JSON: "
                           f"{response.text[:200]!r}", status=response.status_code) from error


def _list_of(response: httpx.Response, *keys: str) -> list[Any]:
    body = _json(response)
    if isinstance(body, dict):
        for key in keys:
            if isinstance(body.get(key), list):
                return body[key]
    if isinstance(body, list):
        return body
    raise EarmarkError(f"unexpected answer from {response.request.url.path}: {str(body)[:200]}", status=response.status_code)


def _build_transcription(
    endpoint: str, audio: AudioInput, response_format: str, parse: Callable[[httpx.Response], T], *,
    model: str | None, language: str | None, prompt: str | None, temperature: float | None, word_timestamps: bool,
    tags: bool | None, top_k: TopK, threshold: float | None, tag_resolution: float | None,
    filename: str | None,
) -> _Call[T]:
    granularities = ["segment", "word"] if word_timestamps else None
    data = _form(model=model or "whisper-1", language=language, prompt=prompt, temperature=temperature,
                 response_format=response_format, tags=tags, top_k=top_k, threshold=threshold,
                 tag_resolution=tag_resolution)
    if granularities:
        data["timestamp_granularities[]"] = granularities
    return _Call("POST", f"/v1/audio/{endpoint}", parse, data=data, upload=_Upload(audio, filename))


def _parse_transcription(response: httpx.Response) -> Transcription:
    return Transcription.model_validate(_json(response))


def _parse_text(response: httpx.Response) -> str:
    return response.text


def _parse_tags(response: httpx.Response) -> Tags:
    return Tags.model_validate(_json(response))


def _build_tags(audio: AudioInput, response_format: str, parse: Callable[[httpx.Response], T], *, top_k: TopK,
                threshold: float | None, tag_resolution: float | None, include: list[str] | None,
                exclude: list[str] | None, filename: str | None) -> _Call[T]:
    data = _form(response_format=response_format, top_k=top_k, threshold=threshold, tag_resolution=tag_resolution,
                 include=include or None, exclude=exclude or None)
    return _Call("POST", "/v1/audio/tags", parse, data=data, upload=_Upload(audio, filename))


def _build_labels() -> _Call[list[Label]]:
    return _Call("GET", "/v1/audio/labels",
                 lambda r: [Label.model_validate(item) for item in _list_of(r, "data", "labels")])


def _build_models() -> _Call[list[ModelInfo]]:
    return _Call("GET", "/v1/models", lambda r: [ModelInfo.model_validate(item) for item in _list_of(r, "data", "models")])


def _build_health() -> _Call[dict[str, Any]]:
    return _Call("GET", "/healthz", _json, retry=False)


def _build_ready() -> _Call[bool]:
    return _Call("GET", "/readyz", lambda r: r.is_success, retry=False, accept_status=(503,))


def _build_metrics() -> _Call[str]:
    return _Call("GET", "/metrics", _parse_text)


# --------------------------------------------------------------------------- sending


@dataclass
class _Retrying:
    """When to try again, and after how long."""

    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    max_backoff: float = MAX_BACKOFF
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, attempt: int, call: _Call, response: httpx.Response | None,
              error: Exception | None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to stop retrying."""
        if not call.retry or attempt >= self.retries:
            return None
        if response is not None:
            if response.status_code != 503:
                return None
            after = retry_after_seconds(response.headers.get("retry-after"))
            if after is not None:  # never sooner than asked; jitter keeps many clients from coming back at once
                return min(self.max_backoff, after * (1 + 0.25 * self._random.random()))
        elif not isinstance(error, _RETRIED_TRANSPORT_ERRORS):
            return None
        wait = self.backoff * (2 ** attempt)
        return min(self.max_backoff, wait * (1 + 0.25 * self._random.random()))  # jitter spreads the herd


def _transport_error(error: httpx.TransportError, url: str) -> EarmarkError:
    if isinstance(error, httpx.TimeoutException) and not isinstance(error, httpx.ConnectTimeout):
        return EarmarkTimeout(f"no answer from {url} in time ({type(error).__name__})", code="timeout")
    return EarmarkConnectionError(f"cannot reach {url}: {error or type(error).__name__}", code="connection_error")


# --------------------------------------------------------------------------- live streams

STREAM_CHUNK = 32_000  # bytes per message when the client cuts the audio itself (1 s of 16 kHz s16 mono)


def _stream_start(encoding: str, sample_rate: int, channels: int, **fields: Any) -> str:
    settings = {k: v for k, v in fields.items() if v is not None}
    if settings.get("top_k") == "all":
        settings["top_k"] = None
    return json.dumps({"type": "start", "format": {"encoding": encoding, "sample_rate": sample_rate,
                                                   "channels": channels}, **settings})


def _stream_chunks(audio: Any) -> tuple[Iterable[bytes] | None, str]:
    """The audio as byte chunks and the encoding it defaults to: a path, bytes or a file object is a
    container the server decodes; an iterable of byte chunks is raw 16-bit PCM unless told otherwise."""
    if isinstance(audio, (bytes, bytearray, memoryview)):
        data = bytes(audio)
        return (data[i : i + STREAM_CHUNK] for i in range(0, len(data), STREAM_CHUNK)), "container"
    if isinstance(audio, (str, os.PathLike)):
        def read_path() -> Iterator[bytes]:
            with open(audio, "rb") as f:
                while chunk := f.read(STREAM_CHUNK):
                    yield chunk
        return read_path(), "container"
    if hasattr(audio, "read"):
        return iter(lambda: audio.read(STREAM_CHUNK), b""), "container"
    if isinstance(audio, AsyncIterable):
        return None, "pcm_s16le"
    return audio, "pcm_s16le"


def _stream_event(text: str | bytes) -> StreamEvent:
    """A server message as a typed event; an error event raises its EarmarkError subclass."""
    try:
        body = json.loads(text)
    except ValueError:
        raise EarmarkError(f"the server sent a message that is not JSON: {str(text)[:200]}", code="bad_message") from None
    kind = body.get("type") if isinstance(body, dict) else None
    if kind == "error":
        error = body.get("error") or {}
        status = body.get("status")
        cls = _BY_STATUS.get(status) or (ServerError if isinstance(status, int) and status >= 500 else EarmarkError)
        raise cls(str(error.get("message") or "stream error"), status=status, code=error.get("code"),
                  type=error.get("type"), param=error.get("param"), body=body)
    if kind == "done":
        fields = {k: v for k, v in body.items() if k != "type"}
        result = Transcription.model_validate(fields) if "text" in fields else Tags.model_validate(fields)
        return StreamDone(result=result)
    if kind in _STREAM_EVENTS:
        return _STREAM_EVENTS[kind].model_validate(body)
    return _Model.model_validate(body)  # a newer server's event: passed on as it is


def _bytes_per_second(encoding: str, sample_rate: int, channels: int) -> int:
    """Real speed of raw PCM (0: a container, which is not paced)."""
    return {"pcm_s16le": 2, "pcm_f32le": 4}.get(encoding, 0) * sample_rate * channels


def _closed_early(error: Exception | None, url: str) -> EarmarkError:
    detail = f": {error}" if error else ""
    return EarmarkConnectionError(f"the stream at {url} closed before it was done{detail}", code="stream_closed")


class _Base:
    def __init__(self, base_url: str, api_key: str | None, timeout: float | httpx.Timeout | None, retries: int,
                 backoff: float, headers: dict[str, str] | None):
        self.base_url = base_url.rstrip("/").removesuffix("/v1")  # an OpenAI-style base URL works too
        self.api_key = api_key if api_key is not None else os.environ.get("EARMARK_API_KEY") or None
        self.timeout = timeout
        self._open_timeout = timeout.connect if isinstance(timeout, httpx.Timeout) else timeout
        self._retrying = _Retrying(retries=retries, backoff=backoff)
        self._headers = {"User-Agent": f"earmark-client/{__version__}", **(headers or {})}
        if self.api_key:
            self._headers["Authorization"] = f"Bearer {self.api_key}"

    @property
    def _stream_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return ("wss" if scheme == "https" else "ws") + "://" + rest + "/v1/audio/stream"

    def _retry_wait(self, call: _Call, response: httpx.Response | None, error: Exception | None,
                    attempt: int) -> float | None:
        """Seconds to wait before trying ``call`` again, or None to stop."""
        return self._retrying.delay(attempt, call, response, error)


class Client(_Base):
    """The synchronous client. Use it as a context manager, or call ``close()``.

    ``base_url``: the server's root (a trailing ``/v1`` is accepted). ``api_key``: sent as a
    bearer token; defaults to the ``EARMARK_API_KEY`` environment variable. ``timeout``: seconds
    per request (connect, read, write). ``retries``: how many times a 503 answer or a connection
    failure is retried, with exponential backoff from ``backoff`` seconds (Retry-After wins).
    ``transport``: an httpx transport (for tests, proxies, unix sockets).
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES, *,
                 backoff: float = DEFAULT_BACKOFF, headers: dict[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None):
        super().__init__(base_url, api_key, timeout, retries, backoff, headers)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport)

    def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            response, error = None, None
            try:
                response = self._http.request(call.method, call.path, **call.request_kwargs())
            except httpx.TransportError as caught:
                error = caught
            finally:
                call.finish_attempt()
            wait = self._retry_wait(call, response, error, attempt)
            if wait is None:
                if error is not None:
                    raise _transport_error(error, self.base_url + call.path) from error
                return call.read(response)
            time.sleep(wait)
            attempt += 1

    # --- audio

    def transcribe(self, file: AudioInput, *, tags: bool | None = None, top_k: TopK = None,
                   language: str | None = None, prompt: str | None = None, temperature: float | None = None,
                   word_timestamps: bool = False, tag_resolution: float | None = None, threshold: float | None = None,
                   model: str | None = None, filename: str | None = None) -> Transcription:
        """Transcript + sound tags (``verbose_json``). ``file``: a path, bytes or a binary file object.
        Options left at None take the server's defaults."""
        return self._send(_build_transcription(
            "transcriptions", file, "verbose_json", _parse_transcription, model=model, language=language, prompt=prompt,
            temperature=temperature, word_timestamps=word_timestamps, tags=tags, top_k=top_k, threshold=threshold,
            tag_resolution=tag_resolution, filename=filename))

    def translate(self, file: AudioInput, *, tags: bool | None = None, top_k: TopK = None,
                  language: str | None = None, prompt: str | None = None, temperature: float | None = None,
                  word_timestamps: bool = False, tag_resolution: float | None = None, threshold: float | None = None,
                  model: str | None = None, filename: str | None = None) -> Transcription:
        """English translation + sound tags (needs a multilingual model). Same options as ``transcribe``."""
        return self._send(_build_transcription(
            "translations", file, "verbose_json", _parse_transcription, model=model, language=language, prompt=prompt,
            temperature=temperature, word_timestamps=word_timestamps, tags=tags, top_k=top_k, threshold=threshold,
            tag_resolution=tag_resolution, filename=filename))

    def transcribe_text(self, file: AudioInput, response_format: TextFormat = "text", *, task: str = "transcribe",
                        tags: bool | None = None, top_k: TopK = None, language: str | None = None,
                        prompt: str | None = None, temperature: float | None = None, word_timestamps: bool = False,
                        tag_resolution: float | None = None, threshold: float | None = None,
                        model: str | None = None, filename: str | None = None) -> str:
        """The answer body as text, in any ``response_format`` (text, srt, vtt, json, verbose_json).
        ``task="translate"`` uses the translations endpoint."""
        return self._send(_build_transcription(
            _endpoint(task), file, response_format, _parse_text, model=model, language=language, prompt=prompt,
            temperature=temperature, word_timestamps=word_timestamps, tags=tags, top_k=top_k, threshold=threshold,
            tag_resolution=tag_resolution, filename=filename))

    def tag(self, file: AudioInput, *, tag_resolution: float | None = None, top_k: TopK = None,
            threshold: float | None = None, include: list[str] | None = None, exclude: list[str] | None = None,
            filename: str | None = None) -> Tags:
        """Sound tags only: the server never runs the decoder. ``include`` / ``exclude``: only / never
        these classes (mids or names)."""
        return self._send(_build_tags(file, "json", _parse_tags, top_k=top_k, threshold=threshold,
                                      tag_resolution=tag_resolution, include=include, exclude=exclude,
                                      filename=filename))

    def tag_text(self, file: AudioInput, response_format: TagsTextFormat = "tsv", *,
                 tag_resolution: float | None = None, top_k: TopK = None, threshold: float | None = None,
                 include: list[str] | None = None, exclude: list[str] | None = None,
                 filename: str | None = None) -> str:
        """Sound tags as text: tsv, text, srt, vtt (or json)."""
        return self._send(_build_tags(file, response_format, _parse_text, top_k=top_k, threshold=threshold,
                                      tag_resolution=tag_resolution, include=include, exclude=exclude,
                                      filename=filename))

    # --- service

    def stream(self, audio: AudioInput | Iterable[bytes], *, encoding: str | None = None, sample_rate: int = 16000,
               channels: int = 1, realtime: bool = False, language: str | None = None, task: str = "transcribe",
               transcript: bool = True, tags: bool | None = None, top_k: TopK = None, threshold: float | None = None,
               tag_resolution: float | None = None, multilingual: bool | None = None, prompt: str | None = None,
               word_timestamps: bool | None = None, partials: bool = True, speech_gate: float | None = None
               ) -> Iterator[StreamEvent]:
        """Stream audio to ``/v1/audio/stream`` and yield its events as they come: ``StreamReady``,
        then ``StreamPartial``, ``StreamTags`` and ``StreamSegment`` (final) as the audio goes, and
        ``StreamDone`` with the whole result last. An error event raises its ``EarmarkError``.

        ``audio``: a path, bytes or a binary file object (sent as a container the server decodes:
        any format it reads for uploads that can be read front to back), or an iterable of byte chunks
        (raw PCM: ``encoding`` ``pcm_s16le`` by default, or ``pcm_f32le``, at ``sample_rate`` with
        ``channels`` interleaved; a generator reading a microphone is a live source). ``realtime``
        paces raw PCM at real speed. Leaving the loop early closes the stream."""
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        chunks, default = _stream_chunks(audio)
        encoding = encoding or default
        start = _stream_start(encoding, sample_rate, channels, language=language, task=task, transcript=transcript,
                              tags=tags, top_k=top_k, threshold=threshold, tag_resolution=tag_resolution,
                              multilingual=multilingual, prompt=prompt, word_timestamps=word_timestamps,
                              partials=partials, speech_gate=speech_gate)
        rate = _bytes_per_second(encoding, sample_rate, channels) if realtime else 0
        url = self._stream_url
        try:
            ws = connect(url, additional_headers=self._headers, max_size=None, open_timeout=self._open_timeout)
        except (OSError, WebSocketException) as error:
            raise EarmarkConnectionError(f"cannot open a stream at {url}: {error}", code="connection_error") from error
        failed: list[BaseException] = []

        def send_all() -> None:
            try:
                started, sent = time.monotonic(), 0
                for chunk in chunks:
                    if rate:
                        wait = started + sent / rate - time.monotonic()
                        if wait > 0:
                            time.sleep(wait)
                    ws.send(bytes(chunk))
                    sent += len(chunk)
                ws.send(json.dumps({"type": "end"}))
            except WebSocketException:
                pass  # the server closed the stream: its error event says why
            except BaseException as error:  # noqa: BLE001 - the caller's audio source failed: end the stream
                failed.append(error)
                ws.close()

        sender = threading.Thread(target=send_all, name="earmark-stream-send", daemon=True)
        with ws:
            try:
                ws.send(start)
                sender.start()
                for message in ws:
                    event = _stream_event(message)
                    yield event
                    if isinstance(event, StreamDone):
                        return
                if failed:
                    raise failed[0]
                raise _closed_early(None, url)
            except WebSocketException as error:
                if failed:
                    raise failed[0] from error
                raise _closed_early(error, url) from error

    def labels(self) -> list[Label]:
        return self._send(_build_labels())

    def models(self) -> list[ModelInfo]:
        return self._send(_build_models())

    def health(self) -> dict[str, Any]:
        return self._send(_build_health())

    def ready(self) -> bool:
        """True when the model is loaded; False while it loads or when the server cannot be reached."""
        try:
            return self._send(_build_ready())
        except (EarmarkConnectionError, EarmarkTimeout):
            return False

    def wait_until_ready(self, timeout: float = 300.0, interval: float = 0.5) -> None:
        """Poll ``/readyz`` until it answers 200; raise ``Unavailable`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() >= deadline:
                raise Unavailable(f"{self.base_url} was not ready after {timeout:.0f} s", code="not_ready")
            time.sleep(interval)

    def metrics(self) -> str:
        """The Prometheus metrics text."""
        return self._send(_build_metrics())

    # --- lifetime

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient(_Base):
    """The asyncio client: the same methods as ``Client``, awaited. ``async with AsyncClient(...)``,
    or ``await client.close()``."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES, *,
                 backoff: float = DEFAULT_BACKOFF, headers: dict[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(base_url, api_key, timeout, retries, backoff, headers)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=timeout,
                                       transport=transport)

    async def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            response, error = None, None
            try:
                response = await self._http.request(call.method, call.path, **call.request_kwargs())
            except httpx.TransportError as caught:
                error = caught
            finally:
                call.finish_attempt()
            wait = self._retry_wait(call, response, error, attempt)
            if wait is None:
                if error is not None:
                    raise _transport_error(error, self.base_url + call.path) from error
                return call.read(response)
            await asyncio.sleep(wait)
            attempt += 1

    # --- audio

    async def transcribe(self, file: AudioInput, *, tags: bool | None = None, top_k: TopK = None,
                         language: str | None = None, prompt: str | None = None, temperature: float | None = None,
                         word_timestamps: bool = False, tag_resolution: float | None = None,
                         threshold: float | None = None, model: str | None = None,
                         filename: str | None = None) -> Transcription:
        """Transcript + sound tags (``verbose_json``). See ``Client.transcribe``."""
        return await self._send(_build_transcription(
            "transcriptions", file, "verbose_json", _parse_transcription, model=model, language=language, prompt=prompt,
            temperature=temperature, word_timestamps=word_timestamps, tags=tags, top_k=top_k, threshold=threshold,
            tag_resolution=tag_resolution, filename=filename))

    async def translate(self, file: AudioInput, *, tags: bool | None = None, top_k: TopK = None,
                        language: str | None = None, prompt: str | None = None, temperature: float | None = None,
                        word_timestamps: bool = False, tag_resolution: float | None = None,
                        threshold: float | None = None, model: str | None = None,
                        filename: str | None = None) -> Transcription:
        """English translation + sound tags. See ``Client.translate``."""
        return await self._send(_build_transcription(
            "translations", file, "verbose_json", _parse_transcription, model=model, language=language, prompt=prompt,
            temperature=temperature, word_timestamps=word_timestamps, tags=tags, top_k=top_k, threshold=threshold,
            tag_resolution=tag_resolution, filename=filename))

    async def transcribe_text(self, file: AudioInput, response_format: TextFormat = "text", *,
                              task: str = "transcribe", tags: bool | None = None, top_k: TopK = None,
                              language: str | None = None, prompt: str | None = None,
                              temperature: float | None = None, word_timestamps: bool = False,
                              tag_resolution: float | None = None, threshold: float | None = None,
                              model: str | None = None, filename: str | None = None) -> str:
        """The answer body as text. See ``Client.transcribe_text``."""
        return await self._send(_build_transcription(
            _endpoint(task), file, response_format, _parse_text, model=model, language=language, prompt=prompt,
            temperature=temperature, word_timestamps=word_timestamps, tags=tags, top_k=top_k, threshold=threshold,
            tag_resolution=tag_resolution, filename=filename))

    async def tag(self, file: AudioInput, *, tag_resolution: float | None = None, top_k: TopK = None,
                  threshold: float | None = None, include: list[str] | None = None,
                  exclude: list[str] | None = None, filename: str | None = None) -> Tags:
        """Sound tags only. See ``Client.tag``."""
        return await self._send(_build_tags(file, "json", _parse_tags, top_k=top_k, threshold=threshold,
                                            tag_resolution=tag_resolution, include=include, exclude=exclude,
                                            filename=filename))

    async def tag_text(self, file: AudioInput, response_format: TagsTextFormat = "tsv", *,
                       tag_resolution: float | None = None, top_k: TopK = None, threshold: float | None = None,
                       include: list[str] | None = None, exclude: list[str] | None = None,
                       filename: str | None = None) -> str:
        """Sound tags as text. See ``Client.tag_text``."""
        return await self._send(_build_tags(file, response_format, _parse_text, top_k=top_k, threshold=threshold,
                                            tag_resolution=tag_resolution, include=include, exclude=exclude,
                                            filename=filename))

    # --- service

    async def stream(self, audio: AudioInput | Iterable[bytes] | AsyncIterable[bytes], *, encoding: str | None = None,
                     sample_rate: int = 16000, channels: int = 1, realtime: bool = False, language: str | None = None,
                     task: str = "transcribe", transcript: bool = True, tags: bool | None = None, top_k: TopK = None,
                     threshold: float | None = None, tag_resolution: float | None = None,
                     multilingual: bool | None = None, prompt: str | None = None, word_timestamps: bool | None = None,
                     partials: bool = True, speech_gate: float | None = None) -> AsyncIterator[StreamEvent]:
        """``Client.stream`` for asyncio: ``async for event in client.stream(...)``; ``audio`` may also
        be an async iterable of byte chunks (a live source)."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        chunks, default = _stream_chunks(audio)
        encoding = encoding or default
        start = _stream_start(encoding, sample_rate, channels, language=language, task=task, transcript=transcript,
                              tags=tags, top_k=top_k, threshold=threshold, tag_resolution=tag_resolution,
                              multilingual=multilingual, prompt=prompt, word_timestamps=word_timestamps,
                              partials=partials, speech_gate=speech_gate)
        rate = _bytes_per_second(encoding, sample_rate, channels) if realtime else 0
        url = self._stream_url
        try:
            ws = await connect(url, additional_headers=self._headers, max_size=None, open_timeout=self._open_timeout)
        except (OSError, WebSocketException) as error:
            raise EarmarkConnectionError(f"cannot open a stream at {url}: {error}", code="connection_error") from error
        failed: list[BaseException] = []

        async def source() -> AsyncIterator[bytes]:
            if chunks is None:
                async for chunk in audio:  # type: ignore[union-attr]
                    yield chunk
            else:
                for chunk in chunks:
                    yield chunk

        async def send_all() -> None:
            try:
                started, sent = time.monotonic(), 0
                async for chunk in source():
                    if rate:
                        wait = started + sent / rate - time.monotonic()
                        if wait > 0:
                            await asyncio.sleep(wait)
                    await ws.send(bytes(chunk))
                    sent += len(chunk)
                await ws.send(json.dumps({"type": "end"}))
            except WebSocketException:
                pass  # the server closed the stream: its error event says why
            except Exception as error:  # noqa: BLE001 - the caller's audio source failed: end the stream
                failed.append(error)
                await ws.close()

        sender: asyncio.Task | None = None
        try:
            await ws.send(start)
            sender = asyncio.create_task(send_all())
            async for message in ws:
                event = _stream_event(message)
                yield event
                if isinstance(event, StreamDone):
                    return
            if failed:
                raise failed[0]
            raise _closed_early(None, url)
        except WebSocketException as error:
            if failed:
                raise failed[0] from error
            raise _closed_early(error, url) from error
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
            await ws.close()

    async def labels(self) -> list[Label]:
        return await self._send(_build_labels())

    async def models(self) -> list[ModelInfo]:
        return await self._send(_build_models())

    async def health(self) -> dict[str, Any]:
        return await self._send(_build_health())

    async def ready(self) -> bool:
        try:
            return await self._send(_build_ready())
        except (EarmarkConnectionError, EarmarkTimeout):
            return False

    async def wait_until_ready(self, timeout: float = 300.0, interval: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while not await self.ready():
            if time.monotonic() >= deadline:
                raise Unavailable(f"{self.base_url} was not ready after {timeout:.0f} s", code="not_ready")
            await asyncio.sleep(interval)

    async def metrics(self) -> str:
        return await self._send(_build_metrics())

    # --- lifetime

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _endpoint(task: str) -> str:
    if task not in ("transcribe", "translate"):
        raise ValueError(f"task must be 'transcribe' or 'translate', not {task!r}")
    return "transcriptions" if task == "transcribe" else "translations"
