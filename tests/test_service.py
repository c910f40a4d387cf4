"""The HTTP service against real uvicorn servers in subprocesses (tests/service_server.py).

Two servers for the whole module, both tiny.en:
- ``main``: the bundled default head (real tags: speech is tagged Speech), API keys,
  /metrics behind the key, the corpus's size and duration limits, micro-batching on; it is caught
  while its model loads (EARMARK_LOAD_DELAY) to check readiness;
- ``busy``: no head (EARMARK_HEAD=none), a one-place queue and micro-batching off, for overload and
  disconnects.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import deque
from pathlib import Path

import httpx
import jiwer
import openai
import pytest
from malformed_uploads import CASES, SERVER_ENV, UPLOAD_LIMIT_MB, Case, tone, wav
from openai import OpenAI
from service_server import ServerProcess, server_process
from speech_fixtures import is_speech_class, long_speech, speech_clips
from whisper.normalizers import EnglishTextNormalizer

from tagger.heads import card_path
from tagger.pipeline import bundled_head_path

KEY = "service-test-key"
TRANSCRIBE = "/v1/audio/transcriptions"
normalise = EnglishTextNormalizer()


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalise(reference), normalise(hypothesis))


def check_error(response: httpx.Response, status: int) -> dict:
    """A JSON error body in OpenAI's shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["code"], str) and error["code"]
    return error


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def clips() -> list[tuple[Path, str]]:
    """The English speech clips, shortest first."""
    return sorted(speech_clips(), key=lambda clip: clip[0].stat().st_size)


@pytest.fixture(scope="module")
def main_server(clips):
    """The main server, plus what it answered while its model was still loading."""
    env = {"EARMARK_MODEL": "tiny.en", "EARMARK_DEVICE": "cpu",
           "EARMARK_API_KEYS": f"{KEY},second-key", "EARMARK_PUBLIC_METRICS": "false",
           "EARMARK_MAX_BATCH_SIZE": "8", "EARMARK_MAX_WAIT_MS": "20", "EARMARK_QUEUE_SIZE": "64",
           "EARMARK_CORS_ORIGINS": "https://app.example", "EARMARK_LOAD_DELAY": "1.5", **SERVER_ENV}
    with server_process(env, ready=False) as server:
        auth = {"Authorization": f"Bearer {KEY}"}
        early = {
            "readyz": httpx.get(f"{server.url}/readyz"),
            "labels": httpx.get(f"{server.url}/v1/audio/labels", headers=auth),
            "transcribe": httpx.post(f"{server.url}{TRANSCRIBE}", headers=auth,
                                     files={"file": ("a.flac", clips[0][0].read_bytes())}),
        }
        server.wait_until("/readyz", timeout=180)
        server.early = early
        yield server


@pytest.fixture(scope="module")
def client(main_server: ServerProcess):
    with httpx.Client(base_url=main_server.url, headers=main_server.headers(), timeout=120.0) as c:
        yield c


@pytest.fixture(scope="module")
def busy_server():
    env = {"EARMARK_MODEL": "tiny.en", "EARMARK_HEAD": "none", "EARMARK_DEVICE": "cpu", "EARMARK_QUEUE_SIZE": "1",
           "EARMARK_MAX_BATCH_SIZE": "1", "EARMARK_DECODE_THREADS": "1"}
    with server_process(env) as server:
        yield server


# --------------------------------------------------------------------------- readiness, auth, basics


def test_503_with_retry_after_until_the_model_is_loaded(main_server: ServerProcess):
    early = main_server.early
    for name, response in early.items():
        error = check_error(response, 503)
        assert error["code"] == "model_loading", name
        assert int(response.headers["Retry-After"]) > 0
    ready = httpx.get(f"{main_server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["model"] == "tiny.en"
    assert httpx.get(f"{main_server.url}/healthz").json() == {"status": "ok"}


def test_a_model_that_fails_to_load_keeps_readyz_at_503():
    with server_process({"EARMARK_MODEL": "/nonexistent/whisper.pt"}, ready=False) as server:
        response = server.wait_until("/readyz", timeout=60, statuses=(503,))
        for _ in range(600):
            if response.json()["error"]["code"] != "model_loading":
                break
            time.sleep(0.1)
            response = httpx.get(f"{server.url}/readyz")
        assert check_error(response, 503)["code"] == "model_load_failed"
        assert "/nonexistent/whisper.pt" in response.json()["error"]["message"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # alive, not ready


def test_api_keys(main_server: ServerProcess):
    url = main_server.url
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}):
        for method, path in (("GET", "/v1/models"), ("POST", TRANSCRIBE), ("POST", "/v1/audio/tags"),
                             ("GET", "/v1/audio/labels"), ("GET", "/metrics")):
            response = httpx.request(method, url + path, headers=headers)
            assert check_error(response, 401)["code"] == "invalid_api_key", (headers, path)
            assert response.headers["WWW-Authenticate"] == "Bearer"
    for key in (KEY, "second-key"):
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    # health is public on this server, metrics are not
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/readyz").status_code == 200
    assert httpx.get(f"{url}/metrics", headers=main_server.headers()).status_code == 200


def test_models_labels_docs_cors_and_request_ids(client: httpx.Client, main_server: ServerProcess):
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny.en" and models["data"][0]["ready"]
    assert client.get("/v1/models/whisper-1").json()["id"] == "tiny.en"
    labels = client.get("/v1/audio/labels").json()
    served = json.loads(card_path(bundled_head_path("tiny.en")).read_text())["labels"]
    assert labels["data"] == served and labels["head"] == "earmark-default-tiny.en"
    assert labels["data"][0] == {"index": 0, "mid": "/m/09x0r", "name": "Speech"}
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "multipart/form-data" in spec["paths"][TRANSCRIBE]["post"]["requestBody"]["content"]

    preflight = client.options("/v1/models", headers={"Origin": "https://app.example",
                                                      "Access-Control-Request-Method": "GET"})
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in client.options(
        "/v1/models", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}).headers

    mine = f"test-{uuid.uuid4().hex}"
    assert client.get("/healthz", headers={"X-Request-ID": mine}).headers["X-Request-ID"] == mine
    made = client.get("/healthz").headers["X-Request-ID"]
    assert made and made != mine
    assert client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"}).headers["X-Request-ID"] != "bad id"
    time.sleep(0.2)
    logged = [line for line in main_server.logs().splitlines() if mine in line]
    assert logged and all(line.startswith("{") for line in logged)


# --------------------------------------------------------------------------- transcripts and tags


def test_openai_sdk_verbose_json_gets_the_words_right(main_server: ServerProcess, clips):
    path, reference = clips[3]
    sdk = OpenAI(base_url=f"{main_server.url}/v1", api_key=KEY, max_retries=0, timeout=120)
    with open(path, "rb") as audio:
        result = sdk.audio.transcriptions.create(model="whisper-1", file=audio, response_format="verbose_json")
    assert wer(reference, result.text) <= 0.25, (result.text, reference)
    assert result.language == "english" and 0 < result.duration < 30
    assert result.segments and result.segments[0].start >= 0 and result.segments[-1].end <= result.duration + 0.05
    assert all(segment.seek == 0 and segment.tokens and segment.temperature == 0.0 for segment in result.segments)
    assert result.words is None
    extra = result.model_extra or {}
    assert extra["tags"] and extra["tags"][0]["start"] == 0.0  # the head is loaded, so tags come by default
    assert all(len(segment.model_extra["tags"]) == 5 for segment in result.segments)
    assert is_speech_class(extra["tags"][0]["labels"][0]["name"])  # real speech, tagged by the default head


@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json", "verbose_json+word"])
def test_every_response_format_through_the_sdk(main_server: ServerProcess, clips, fmt):
    path, reference = clips[0]
    sdk = OpenAI(base_url=f"{main_server.url}/v1", api_key=KEY, max_retries=0, timeout=120)
    words = fmt.endswith("+word")
    extra = {"timestamp_granularities": ["word", "segment"]} if words else {}
    with open(path, "rb") as audio:
        result = sdk.audio.transcriptions.create(model="whisper-1", file=audio, language="en",
                                                 response_format=fmt.removesuffix("+word"), **extra)
    if fmt == "json":
        text = result.text
    elif fmt == "text":
        text = result
        assert isinstance(text, str) and text.endswith("\n")
    elif fmt in ("srt", "vtt"):
        lines = result.strip().splitlines()
        if fmt == "srt":
            assert lines[0] == "1" and re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", lines[1])
        else:
            assert lines[0] == "WEBVTT" and " --> " in lines[2]
        text = " ".join(line for line in lines if line and "-->" not in line and not line.isdigit() and line != "WEBVTT")
    else:
        text = result.text
        if words:
            assert result.words and all(w.word.strip() and 0 <= w.start <= w.end for w in result.words)
            assert [w.start for w in result.words] == sorted(w.start for w in result.words)
        else:
            assert result.words is None
    assert wer(reference, text) <= 0.3, (fmt, text, reference)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks translations deprecated
def test_translation_on_an_english_only_model_says_why_it_cannot(main_server: ServerProcess, clips):
    path, _ = clips[1]
    sdk = OpenAI(base_url=f"{main_server.url}/v1", api_key=KEY, max_retries=0, timeout=120)
    with open(path, "rb") as audio, pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.translations.create(model="whisper-1", file=audio, response_format="verbose_json")
    assert caught.value.code == "translation_unsupported" and "English-only" in str(caught.value)


def test_tags_in_verbose_json(client: httpx.Client, clips):
    path, _ = clips[4]
    response = client.post(TRANSCRIBE, files={"file": (path.name, path.read_bytes())},
                           data={"response_format": "verbose_json", "top_k": "3", "tag_resolution": "2.0",
                                 "language": "en", "unknown_openai_field": "ignored"})
    body = response.json()
    assert response.status_code == 200, body
    windows = body["tags"]
    assert windows[0]["start"] == 0.0 and windows[-1]["end"] == pytest.approx(body["duration"], abs=0.01)
    assert all(w["end"] - w["start"] == pytest.approx(2.0) for w in windows[:-1])
    for window in windows:
        probabilities = [label["probability"] for label in window["labels"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert all(0 <= p <= 1 for p in probabilities)
    assert all(len(segment["tags"]) == 3 for segment in body["segments"])
    assert body["head"] and body["tag_resolution"] == 2.0
    # tags can be switched off
    # tags can be switched off; timestamp_granularities also works without the brackets
    plain = client.post(TRANSCRIBE, files={"file": (path.name, path.read_bytes())},
                        data={"response_format": "verbose_json", "tags": "false", "language": "en",
                              "timestamp_granularities": "word"}).json()
    assert plain["tags"] == [] and all(segment["tags"] == [] for segment in plain["segments"])
    assert plain["text"] == body["text"] and plain["words"] and "words" not in body


def test_tags_endpoint(client: httpx.Client, clips):
    path, _ = clips[2]
    data = path.read_bytes()
    response = client.post("/v1/audio/tags", files={"file": (path.name, data)},
                           data={"top_k": "4", "tag_resolution": "0.8", "exclude": ["Speech", "/m/04rlf"]})
    body = response.json()
    assert response.status_code == 200, body
    assert body["tag_resolution"] == 0.8 and len(body["tags"]) == int(-(-body["duration"] // 0.8))
    labels = [label for window in body["tags"] for label in window["labels"]]
    assert all(len(window["labels"]) == 4 for window in body["tags"])
    assert not {"Speech", "Music"} & {label["name"] for label in labels}

    only = client.post("/v1/audio/tags", files={"file": (path.name, data)},
                       data={"top_k": "all", "include[]": ["Speech", "Dog"], "threshold": "0"}).json()
    assert all({label["name"] for label in window["labels"]} == {"Speech", "Dog"} for window in only["tags"])
    tsv = client.post("/v1/audio/tags", files={"file": (path.name, data)}, data={"response_format": "tsv", "top_k": "1"})
    assert tsv.status_code == 200 and tsv.text.startswith("start\tend\tmid\tname\tprobability\n")


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_malformed_upload_gets_its_4xx_and_the_server_stays_healthy(client: httpx.Client, case: Case):
    response = client.request(**case.request())
    assert response.status_code == case.expected, (case.name, response.status_code, response.text[:300])
    if case.expected >= 400:
        check_error(response, case.expected)
    else:
        assert "text" in response.json()
    assert client.get("/healthz").status_code == 200


def test_no_server_errors_after_the_corpus(client: httpx.Client, main_server: ServerProcess):
    text = client.get("/metrics").text
    served = {m.group(1) for m in re.finditer(r'earmark_requests_total\{.*status="(\d+)"', text)}
    assert served and not {s for s in served if s.startswith("5") and s != "503"}, served
    assert main_server.process.poll() is None


async def read_response(reader: asyncio.StreamReader, timeout: float = 15) -> tuple[bytes, bytes]:
    """Status line + headers, and the body by its Content-Length, from a raw HTTP/1.1 connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    return head, await asyncio.wait_for(reader.readexactly(length), timeout)


def test_content_length_over_the_limit_is_refused_before_the_body(main_server: ServerProcess):
    host, port = main_server.url.removeprefix("http://").split(":")

    async def run() -> bytes:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write((f"POST {TRANSCRIBE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                      f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {10**12}\r\n\r\n").encode())
        await writer.drain()
        head, body = await read_response(reader)
        writer.close()
        return head, body

    head, body = asyncio.run(run())
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b'"code":"file_too_large"' in body


def test_streamed_upload_over_the_limit_gets_413_before_it_ends(main_server: ServerProcess):
    """A chunked upload that never finishes: the 413 must come while the client is still sending."""
    host, port = main_server.url.removeprefix("http://").split(":")
    chunk = b"\0" * (256 * 1024)
    limit = UPLOAD_LIMIT_MB * 1_000_000

    async def run() -> tuple[bytes, int]:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write((f"POST {TRANSCRIBE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                      "Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        writer.write(b"%x\r\n%s\r\n" % (len(head), head))
        sent = 0
        while sent <= limit + len(chunk):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            sent += len(chunk)
        # the body is not finished (no closing boundary, no last chunk): the answer must come anyway
        head, body = await read_response(reader)
        writer.close()
        return head + body, sent

    answer, sent = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b'"code":"file_too_large"' in answer and sent < 2 * limit


def test_streaming_generator_body_over_the_limit_gets_413(main_server: ServerProcess):
    limit = UPLOAD_LIMIT_MB * 1_000_000
    boundary = "streamed"
    yielded = 0

    async def body():
        nonlocal yielded
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'.encode()
        while yielded < 2 * limit:
            piece = b"\1" * 65536
            yielded += len(piece)
            yield piece
            await asyncio.sleep(0)
        yield f"\r\n--{boundary}--\r\n".encode()

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(timeout=60) as c:
            return await c.post(f"{main_server.url}{TRANSCRIBE}", content=body(),
                                headers={**main_server.headers(),
                                         "Content-Type": f"multipart/form-data; boundary={boundary}"})

    assert check_error(asyncio.run(run()), 413)["code"] == "file_too_large"
    assert httpx.get(f"{main_server.url}/healthz").status_code == 200


# --------------------------------------------------------------------------- concurrency


def test_50_concurrent_requests_all_succeed_and_get_their_own_transcript(main_server: ServerProcess, clips):
    chosen = clips[:5]
    before = httpx.get(f"{main_server.url}/metrics", headers=main_server.headers()).text

    async def one(c: httpx.AsyncClient, i: int) -> tuple[int, int, str]:
        path, _ = chosen[i % len(chosen)]
        response = await c.post(TRANSCRIBE, files={"file": (path.name, path.read_bytes())},
                                data={"language": "en", "response_format": "json", "tags": "false"})
        return i, response.status_code, response.text

    async def run():
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=main_server.url, headers=main_server.headers(), timeout=180,
                                     limits=limits) as c:
            return await asyncio.gather(*(one(c, i) for i in range(50)))

    results = asyncio.run(run())
    assert [status for _, status, _ in results] == [200] * 50, [r for r in results if r[1] != 200][:3]
    by_clip: dict[int, set[str]] = {}
    for i, _, text in results:
        by_clip.setdefault(i % len(chosen), set()).add(httpx.Response(200, text=text).json()["text"])
    for index, texts in by_clip.items():
        assert len(texts) == 1, texts  # greedy decoding: batching must not change or mix transcripts
        assert wer(chosen[index][1], texts.pop()) <= 0.35
    after = httpx.get(f"{main_server.url}/metrics", headers=main_server.headers()).text
    calls = metric(after, "earmark_batch_windows_count") - metric(before, "earmark_batch_windows_count")
    windows = metric(after, "earmark_batch_windows_sum") - metric(before, "earmark_batch_windows_sum")
    assert windows == 50 and calls < 50, (calls, windows)  # windows of different requests shared encoder calls
    rounds = metric(after, "earmark_decoder_windows_count") - metric(before, "earmark_decoder_windows_count")
    decoded = metric(after, "earmark_decoder_windows_sum") - metric(before, "earmark_decoder_windows_sum")
    assert decoded == 50 and rounds < 50, (rounds, decoded)  # and shared text-decoder calls
    for name in ("earmark_requests_total", "earmark_request_duration_seconds_bucket", "earmark_audio_seconds_total",
                 "earmark_real_time_factor_bucket", "earmark_queue_depth", "earmark_batch_windows_bucket"):
        assert name in after, name
    assert metric(after, "earmark_audio_seconds_total", task="transcribe") > 0


def test_overload_answers_503_with_retry_after(busy_server: ServerProcess, clips):
    path, reference = clips[0]
    data = path.read_bytes()

    async def one(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post(TRANSCRIBE, files={"file": (path.name, data)}, data={"language": "en"})

    async def run():
        async with httpx.AsyncClient(base_url=busy_server.url, timeout=120) as c:
            return await asyncio.gather(*(one(c) for _ in range(12)))

    responses = asyncio.run(run())
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, statuses
    for response in responses:
        if response.status_code == 503:
            assert check_error(response, 503)["code"] == "queue_full"
            assert int(response.headers["Retry-After"]) >= 1
        else:
            assert wer(reference, response.json()["text"]) <= 0.35
    assert httpx.get(f"{busy_server.url}/readyz").status_code == 200
    again = httpx.post(f"{busy_server.url}{TRANSCRIBE}", files={"file": (path.name, data)}, timeout=120)
    assert again.status_code == 200
    metrics = httpx.get(f"{busy_server.url}/metrics").text
    assert metric(metrics, "earmark_rejected_total", reason="queue_full") >= 1
    # micro-batching is off here: one window per encoder call
    assert metric(metrics, "earmark_batch_windows_bucket", le="1.0") == metric(metrics, "earmark_batch_windows_count")


def test_a_client_that_leaves_has_its_queued_work_dropped(busy_server: ServerProcess):
    samples, _ = long_speech(55.0)  # two windows: the only worker stays busy for a while
    long_wav = wav(samples[:, None], 16000)
    url = busy_server.url
    host, port = url.removeprefix("http://").split(":")
    short = httpx.Request("POST", url + TRANSCRIBE, files={"file": ("short.wav", wav(tone(2.0), 16000))})
    short_body = short.read()

    async def gauge(c: httpx.AsyncClient, name: str, **labels: str) -> float:
        return metric((await c.get("/metrics")).text, name, **labels)

    async def wait_for(c: httpx.AsyncClient, name: str, value: float, **labels: str) -> None:
        for _ in range(400):
            if await gauge(c, name, **labels) >= value:
                return
            await asyncio.sleep(0.025)
        raise TimeoutError(name)

    async def run():
        async with httpx.AsyncClient(base_url=url, timeout=180) as c:
            before = await gauge(c, "earmark_dropped_total", reason="abandoned")
            first = asyncio.create_task(c.post(TRANSCRIBE, files={"file": ("long.wav", long_wav)},
                                               data={"language": "en"}))
            await wait_for(c, "earmark_active_jobs", 1)  # the worker took up the long one
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"POST {TRANSCRIBE} HTTP/1.1\r\nHost: x\r\nContent-Type: {short.headers['content-type']}\r\n"
                         f"Content-Length: {len(short_body)}\r\n\r\n".encode() + short_body)
            await writer.drain()
            await wait_for(c, "earmark_queue_depth", 1)  # the short one waits for the worker...
            writer.close()  # ... and its client leaves
            await wait_for(c, "earmark_dropped_total", before + 1, reason="abandoned")
            busy = await gauge(c, "earmark_active_jobs")
            return await first, before, busy

    first, before, busy = asyncio.run(run())
    assert busy == 1  # it was dropped while the long one still ran, not after
    assert first.status_code == 200 and len(first.json()["text"].split()) > 20
    metrics = httpx.get(f"{url}/metrics").text
    assert metric(metrics, "earmark_dropped_total", reason="abandoned") == before + 1
    assert metric(metrics, "earmark_requests_total", route=TRANSCRIBE, status="499") == 1
    assert httpx.get(f"{url}/healthz").status_code == 200


# --------------------------------------------------------------------------- the batcher alone (no model)


class FakeJob:
    """Stands in for tagger's AudioJob: ``n`` windows, each encoded window recorded in order."""

    def __init__(self, name: str, n: int):
        self.name, self.n_windows, self.next_window = name, n, 0

    @property
    def encoded_all(self) -> bool:
        return self.next_window >= self.n_windows

    def windows(self, first: int, last: int):
        import torch

        return torch.full((last - first, 1, 1), float(len(self.name)))

    def take(self, first: int, encoded) -> None:
        assert first == self.next_window
        self.next_window += len(encoded.features)

    undecoded = 0  # no text to decode: the job is done once encoded

    @property
    def decoded_all(self) -> bool:
        return self.encoded_all

    def result(self) -> str:
        return f"{self.name} done"


class FakeModel:
    def __init__(self):
        from tagger.backbone import Encoded

        self.batches: list[int] = []
        self.backbone = self
        self.decode_batch_size = 8
        self._encoded = Encoded

    def encode(self, mel, bf16=False):
        self.batches.append(len(mel))
        return self._encoded(features=mel, pooled=mel)


def fake_batcher(max_batch_size: int = 4, queue_size: int = 8, max_wait: float = 0.01):
    from service.batching import Batcher
    from service.metrics import Metrics

    model = FakeModel()
    return model, Batcher(model, max_batch_size=max_batch_size, max_wait=max_wait, queue_size=queue_size,
                          metrics=Metrics())


async def never_disconnected() -> bool:
    return False


def test_batcher_round_robins_windows_of_several_requests_into_one_encoder_call():
    model, batcher = fake_batcher(max_batch_size=4)
    jobs = [FakeJob("a", 3), FakeJob("b", 1), FakeJob("c", 5)]

    async def run():
        deadline = time.monotonic() + 10
        tasks = [asyncio.create_task(batcher.run(batcher.reserve(), job, deadline, never_disconnected)) for job in jobs]
        await asyncio.sleep(0.05)  # all three queued before the worker starts
        batcher.start()
        return await asyncio.gather(*tasks)

    try:
        assert asyncio.run(run()) == ["a done", "b done", "c done"]
    finally:
        batcher.stop()
    # a1 b1 c1 a2 | a3 c2 c3 c4 | c5
    assert model.batches == [4, 4, 1]


def test_batcher_queue_bound_deadline_and_dropped_work():
    from service.batching import ClientGone, DeadlineExceeded, QueueFull

    model, batcher = fake_batcher(max_batch_size=1, queue_size=2)
    first, second = batcher.reserve(), batcher.reserve()
    with pytest.raises(QueueFull):
        batcher.reserve()
    second.cancel()
    second.cancel()  # giving a place back twice is harmless
    assert batcher.depth == 1

    async def gone() -> bool:
        return True

    async def run():
        with pytest.raises(ClientGone):  # not started: the work waits, its client leaves, it is dropped
            await batcher.run(first, FakeJob("left", 2), time.monotonic() + 10, gone)
        with pytest.raises(DeadlineExceeded):
            await batcher.run(batcher.reserve(), FakeJob("late", 2), time.monotonic() + 0.3, never_disconnected)

    try:
        asyncio.run(run())
        assert batcher.depth == 0 and batcher._pending == deque()
        batcher.start()
        time.sleep(0.1)
    finally:
        batcher.stop()
    assert model.batches == []  # dropped work never reached the encoder
