"""The typed client (service/client.py) against a real server, and its retry logic against a
scripted loopback server.

One real server for the module: tiny.en with its bundled default head (real tags), API keys on,
so that auth is tested without a second start.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from speech_fixtures import is_speech_class, speech_clips
from whisper.normalizers import EnglishTextNormalizer

from service.client import (
    AsyncClient,
    AuthenticationError,
    BadRequest,
    Client,
    EarmarkConnectionError,
    EarmarkError,
    Tags,
    Transcription,
    Unavailable,
    UnsupportedMedia,
)
from tagger.heads import card_path
from tagger.pipeline import bundled_head_path

KEY = "test-client-key"
NOISE = np.random.default_rng(0).integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes()  # seeded: not audio
normalise = EnglishTextNormalizer()


def word_overlap(got: str, reference: str) -> float:
    """The share of the reference's words that the transcript has (a loose check for tiny.en)."""
    want = normalise(reference).split()
    have = set(normalise(got).split())
    return sum(word in have for word in want) / max(1, len(want))


# --------------------------------------------------------------------------- the real server


SERVED_CLASSES = len(json.loads(card_path(bundled_head_path("tiny.en")).read_text())["labels"])


@pytest.fixture(scope="module")
def startup():
    """The server, and what the client saw while its model was still loading (EARMARK_LOAD_DELAY)."""
    from service_server import running_server

    env = {"EARMARK_MODEL": "tiny.en", "EARMARK_OFFLINE": "1",
           "EARMARK_API_KEYS": KEY, "EARMARK_DEVICE": "cpu", "EARMARK_LOAD_DELAY": "1.5"}
    with running_server(env, ready=False) as base_url:
        seen = {}
        with Client(base_url, api_key=KEY, retries=0) as impatient:
            seen["ready_at_start"] = impatient.ready()
            try:
                impatient.labels()
            except Unavailable as error:
                seen["loading_error"] = error
        with Client(base_url, api_key=KEY, retries=8) as patient:  # 503 + Retry-After until loaded
            seen["labels_after_retries"] = patient.labels()
            patient.wait_until_ready(timeout=120)
            seen["ready_later"] = patient.ready()
        yield base_url, seen


@pytest.fixture(scope="module")
def server(startup):
    return startup[0]


@pytest.fixture(scope="module")
def client(server):
    with Client(server, api_key=KEY, timeout=120.0) as c:
        yield c


@pytest.fixture(scope="module")
def clips():
    return speech_clips()[:3]


def check_tag_windows(windows, duration: float, top_k: int) -> None:
    assert windows, "no tag windows"
    assert windows[0].start == 0.0
    assert windows[-1].end == pytest.approx(duration, abs=0.05)
    for window in windows:
        assert window.start < window.end <= duration + 0.05
        assert len(window.labels) == top_k
        assert all(0.0 <= label.probability <= 1.0 and label.mid.startswith("/") and label.name for label in window.labels)
        probabilities = [label.probability for label in window.labels]
        assert probabilities == sorted(probabilities, reverse=True)


def test_503_while_loading_is_retried_until_ready(startup):
    _, seen = startup
    assert seen["ready_at_start"] is False and seen["ready_later"] is True
    error = seen["loading_error"]
    assert error.status == 503 and error.code == "model_loading" and error.retry_after is not None
    assert len(seen["labels_after_retries"]) == SERVED_CLASSES


def test_sync_transcribe_text_and_tags(client: Client, clips):
    path, reference = clips[0]
    result = client.transcribe(path, tags=True, top_k=3, language="en")
    assert isinstance(result, Transcription)
    assert word_overlap(result.text, reference) >= 0.6, (result.text, reference)
    assert result.language in ("en", "english") and result.task == "transcribe" and result.duration > 0
    assert result.segments and all(segment.text and segment.end > segment.start for segment in result.segments)
    check_tag_windows(result.tags, result.duration, 3)
    assert all(len(segment.tags) == 3 for segment in result.segments)
    assert all(is_speech_class(window.labels[0].name) for window in result.tags)  # real speech, real tags

    # the same audio as bytes and as a file object: the same (greedy) transcript
    data = Path(path).read_bytes()
    assert client.transcribe(data, tags=False, language="en").text == result.text
    with open(path, "rb") as f:
        assert client.transcribe(f, tags=False, language="en").text == result.text


def test_tags_only(client: Client, clips):
    path, _ = clips[1]
    result = client.tag(path, tag_resolution=2.0, top_k=5)
    assert isinstance(result, Tags)
    assert result.tag_resolution == 2.0 and result.head
    check_tag_windows(result.tags, result.duration, 5)
    assert all(window.end - window.start == pytest.approx(2.0, abs=0.01) for window in result.tags[:-1])
    assert all(a.end == pytest.approx(b.start) for a, b in zip(result.tags, result.tags[1:]))


def test_async_client_concurrent_requests(server, clips):
    (path0, ref0), (path1, ref1) = clips[0], clips[1]

    async def run(file):
        async with AsyncClient(server, api_key=KEY, timeout=120.0) as c:
            assert await c.ready()
            first, second, tags = await asyncio.gather(
                c.transcribe(path0, top_k=2, language="en"),
                c.transcribe(file, top_k=2, language="en", word_timestamps=True),
                c.tag(Path(path0).read_bytes(), top_k=1, tag_resolution=4.0),
            )
            return first, second, tags, await c.transcribe_text(path0, "srt", language="en")

    with open(path1, "rb") as f:
        first, second, tags, srt = asyncio.run(run(f))
    assert word_overlap(first.text, ref0) >= 0.6, (first.text, ref0)
    assert word_overlap(second.text, ref1) >= 0.6, (second.text, ref1)
    check_tag_windows(first.tags, first.duration, 2)
    assert second.words and all(word.end >= word.start for word in second.words)
    check_tag_windows(tags.tags, tags.duration, 1)
    assert srt.startswith("1\n") and " --> " in srt


def test_raw_text_formats(client: Client, clips):
    path, reference = clips[2]
    text = client.transcribe_text(path, "text", language="en")
    assert word_overlap(text, reference) >= 0.6, (text, reference)
    vtt = client.transcribe_text(path, "vtt", language="en")
    assert vtt.startswith("WEBVTT") and " --> " in vtt
    srt = client.transcribe_text(path, "srt", language="en")
    assert srt.splitlines()[0] == "1" and "," in srt.splitlines()[1]
    body = json.loads(client.transcribe_text(path, "json", language="en"))
    assert body["text"].strip() == text.strip()


def test_service_endpoints(client: Client):
    assert client.ready() is True
    assert isinstance(client.health(), dict)
    labels = client.labels()
    assert len(labels) == SERVED_CLASSES and labels[0].index == 0 and labels[0].name == "Speech"
    assert [model.id for model in client.models()]
    assert "earmark" in client.metrics()


def test_error_mapping(client: Client, server):
    with pytest.raises(UnsupportedMedia) as caught:
        client.transcribe(NOISE, filename="noise.wav")
    assert caught.value.status == 415 and caught.value.message and caught.value.code
    with pytest.raises(UnsupportedMedia):
        client.tag(b"this is not audio at all")
    with pytest.raises(BadRequest) as caught:
        client.transcribe(b"", filename="empty.wav")
    assert caught.value.status == 400 and caught.value.message
    for key in ("wrong-key", ""):  # "" sends no key at all
        with Client(server, api_key=key, retries=0) as stranger:
            with pytest.raises(AuthenticationError) as caught:
                stranger.tag(b"RIFF....WAVE")
            assert caught.value.status == 401 and isinstance(caught.value, EarmarkError)
            assert stranger.ready() is True  # health and readiness stay public


# --------------------------------------------------------------------------- retries, no model


class Scripted:
    """A throwaway loopback HTTP server answering from a script: [(status, headers, body), ...];
    the last answer repeats. It records (method, path, body) of every request."""

    def __init__(self, script):
        self.script = list(script)
        self.seen: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                outer.seen.append((self.command, self.path, body))
                status, headers, payload = outer.script[min(len(outer.seen), len(outer.script)) - 1]
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


BUSY = (503, {"Retry-After": "0"}, {"error": {"message": "queue full", "type": "server_error", "code": "queue_full"}})
TAGS = (200, {}, {"duration": 1.0, "tag_resolution": 10.0, "head": "seeded", "notes": [],
                  "tags": [{"start": 0.0, "end": 1.0, "labels": [{"index": 0, "mid": "/m/09x0r", "name": "Speech",
                                                                   "probability": 0.5}]}]})


def test_sync_retries_503_then_succeeds_resending_the_same_upload():
    with Scripted([BUSY, BUSY, TAGS]) as fake, Client(fake.url, retries=3, backoff=5.0) as c:
        upload = io.BytesIO(b"header" + bytes(range(256)) * 4)
        upload.seek(6)  # sent from where the file object stands, on every attempt
        result = c.tag(upload, top_k=1)  # Retry-After: 0 wins over the 5 s backoff
    assert result.tags[0].labels[0].name == "Speech"
    assert [path for _, path, _ in fake.seen] == ["/v1/audio/tags"] * 3
    for _, _, body in fake.seen:  # the file object was rewound each time
        assert b"\r\n\r\n" + bytes(range(256)) * 4 + b"\r\n--" in body and b"header" not in body


def test_async_retries_503_then_succeeds():
    async def run(url, upload):
        async with AsyncClient(url, retries=2) as c:
            return await c.tag(upload)

    with Scripted([BUSY, BUSY, TAGS]) as fake:
        assert asyncio.run(run(fake.url, io.BytesIO(b"0123456789" * 50))).head == "seeded"
    assert len(fake.seen) == 3
    assert all(b"\r\n\r\n" + b"0123456789" * 50 + b"\r\n--" in body for _, _, body in fake.seen)


def test_retries_run_out_and_4xx_is_never_retried():
    with Scripted([BUSY]) as fake, Client(fake.url, retries=2) as c, pytest.raises(Unavailable) as caught:
        c.tag(b"audio")
    assert len(fake.seen) == 3 and caught.value.status == 503 and caught.value.code == "queue_full"
    assert caught.value.retry_after == 0.0
    bad = (400, {}, {"error": {"message": "empty file", "type": "invalid_request_error", "code": "empty_audio"}})
    with Scripted([bad, TAGS]) as fake, Client(fake.url, retries=3) as c, pytest.raises(BadRequest) as caught:
        c.tag(b"audio")
    assert len(fake.seen) == 1 and caught.value.code == "empty_audio" and caught.value.message == "empty file"


def test_translate_and_form_fields_reach_the_server():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"text": "hello", "language": "de", "task": "translate", "duration": 2.0})

    with Client("http://earmark.test/v1", api_key="k", transport=httpx.MockTransport(handler)) as c:
        result = c.translate(b"audio", language="de", word_timestamps=True, top_k=2, tags=True, temperature=0.0)
    assert result.task == "translate" and result.tags == [] and result.segments == []
    request = seen[0]
    assert request.url.path == "/v1/audio/translations" and request.headers["authorization"] == "Bearer k"
    body = request.read().decode("latin-1")
    for field, value in (("response_format", "verbose_json"), ("language", "de"), ("top_k", "2"), ("tags", "true"),
                         ("timestamp_granularities[]", "word"), ("temperature", "0.0")):
        assert f'name="{field}"\r\n\r\n{value}\r\n' in body, field


def test_connection_errors_are_retried_then_raised():
    with Scripted([TAGS]) as fake:
        url = fake.url  # a port that is free once the server is gone
    with Client(url, retries=2, backoff=0.01) as c:
        with pytest.raises(EarmarkConnectionError) as caught:
            c.tag(b"audio")
        assert caught.value.status is None
        assert c.ready() is False
