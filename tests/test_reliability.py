"""No request can hold the service hostage: slow and lying clients, caps on uploads and connections,
one error shape for everything the server answers, memory bounded by the declared duration, honest
answers on odd input.

One real server for the module (tiny.en with its bundled head, on loopback), with short timeouts
and small caps so that each limit is reached in a second or two. Raw sockets play the clients that
no HTTP library would be: stalled headers, stalled bodies, a byte at a time, bad chunks.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import re
import socket
import struct
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import httpx
import numpy as np
import pytest
from malformed_uploads import tone, wav
from service_server import ServerProcess, server_process
from speech_fixtures import speech_clips

from service.errors import HTTP_CODES
from tagger import AudioError, AudioTooLongError, EmptyAudioError, UndecodableAudioError, load_audio
from tagger.audio import AudioTrackError, write_flac

TRANSCRIBE = "/v1/audio/transcriptions"
TAGS = "/v1/audio/tags"
IDLE = 3.0  # EARMARK_IDLE_TIMEOUT of the server
PER_CLIENT = 10  # EARMARK_MAX_CONNECTIONS_PER_CLIENT
MAX_UPLOADS = 4
UPLOAD_MB = 4
BUFFERED_MB = 6
MAX_DURATION = 60
HELD = 20  # EARMARK_MAX_AUDIO_HELD: seconds
ORIGIN = "https://app.example"

ENV = {"EARMARK_MODEL": "tiny.en", "EARMARK_DEVICE": "cpu", "EARMARK_IDLE_TIMEOUT": str(IDLE),
       "EARMARK_MIN_UPLOAD_RATE": "10", "EARMARK_MAX_UPLOADS": str(MAX_UPLOADS),
       "EARMARK_MAX_UPLOAD_MB": str(UPLOAD_MB), "EARMARK_MAX_BUFFERED_MB": str(BUFFERED_MB),
       "EARMARK_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT), "EARMARK_MAX_DURATION": str(MAX_DURATION),
       "EARMARK_CORS_ORIGINS": ORIGIN, "EARMARK_MAX_AUDIO_HELD": str(HELD)}


@pytest.fixture(scope="module")
def server():
    with server_process(ENV) as running:
        yield running


@pytest.fixture(scope="module")
def speech() -> tuple[Path, str]:
    return min(speech_clips(), key=lambda clip: clip[0].stat().st_size)


def check_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return error_of(response.json())


def error_of(body: dict) -> dict:
    """The OpenAI-style error object, checked for its shape."""
    assert set(body) == {"error"}, body
    error = body["error"]
    for key in ("message", "type", "code"):
        assert isinstance(error[key], str) and error[key], body
    return error


# --------------------------------------------------------------------------- raw connections


class Raw:
    """One TCP connection to the server, written and read by hand."""

    def __init__(self, server: ServerProcess):
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.received = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        """The next response: status, headers (lower-case names) and body."""
        self.sock.settimeout(timeout)
        while b"\r\n\r\n" not in self.received:
            chunk = self.sock.recv(65536)
            assert chunk, f"the connection closed without an answer: {self.received!r}"
            self.received += chunk
        head, _, rest = self.received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            assert chunk, "the connection closed inside the answer"
            rest += chunk
        self.received = rest[length:]
        return status, headers, rest[:length]

    def error(self, status: int, timeout: float = 30.0) -> dict:
        got, headers, body = self.answer(timeout)
        assert got == status, (got, body)
        assert headers["content-type"].startswith("application/json"), headers
        return error_of(json.loads(body))

    def closed(self, timeout: float = 10.0) -> bool:
        """Whether the server closes the connection within ``timeout`` (what it still sends is dropped)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def upload_head(length: int, path: str = TRANSCRIBE, chunked: bool = False) -> bytes:
    size = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}"
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n{size}\r\n\r\n"
            '--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n').encode()


# --------------------------------------------------------------------------- 2. slow and lying clients


def test_headers_that_never_finish_get_408_after_the_idle_timeout(server: ServerProcess):
    raw = Raw(server)
    started = time.monotonic()
    raw.send(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n")
    error = raw.error(408, timeout=IDLE + 20)
    waited = time.monotonic() - started
    assert error["code"] == "header_timeout" and "headers" in error["message"]
    assert IDLE * 0.8 <= waited <= IDLE + 15, waited
    assert raw.closed()


def test_headers_sent_a_byte_at_a_time_get_408(server: ServerProcess):
    raw = Raw(server)
    started = time.monotonic()
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    for byte in request:  # a byte every 0.1 s: never idle, never finished
        if time.monotonic() - started > IDLE + 1.5:
            break
        try:
            raw.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.1)
    assert raw.error(408, timeout=IDLE + 20)["code"] == "header_timeout"
    assert time.monotonic() - started <= IDLE + 15


def test_an_idle_connection_is_closed(server: ServerProcess):
    raw = Raw(server)
    started = time.monotonic()
    assert raw.closed(timeout=IDLE + 15)
    assert time.monotonic() - started >= IDLE * 0.8


def test_a_stalled_body_gets_408_and_a_byte_a_second_too(server: ServerProcess):
    stalled = Raw(server)
    stalled.send(upload_head(100_000) + b"\0" * 1000)
    trickle = Raw(server)
    trickle.send(upload_head(100_000))
    started = time.monotonic()
    answer: list = []

    def read() -> None:
        answer.append(trickle.error(408, timeout=IDLE * 4 + 20))

    reader = threading.Thread(target=read)
    reader.start()
    while reader.is_alive() and time.monotonic() - started < IDLE * 4 + 20:
        try:
            trickle.send(b"\0")  # never idle for long, far below the minimum rate
        except OSError:
            break
        time.sleep(0.3)
    reader.join()
    error = stalled.error(408, timeout=IDLE + 20)
    assert error["code"] == "upload_timeout" and "no data came" in error["message"]
    assert answer and answer[0]["code"] == "upload_timeout" and "slower than" in answer[0]["message"]
    assert stalled.closed() and trickle.closed()


def test_uploads_at_once_and_their_bytes_are_capped(server: ServerProcess, speech):
    path, _ = speech
    audio = path.read_bytes()
    stalled = []
    for _ in range(MAX_UPLOADS):
        raw = Raw(server)
        raw.send(upload_head(1_000_000) + b"\0" * 10_000)
        stalled.append(raw)
    time.sleep(0.5)
    response = httpx.post(server.url + TRANSCRIBE, files={"file": (path.name, audio)}, timeout=60)
    error = check_error(response, 503)
    assert error["code"] == "too_many_uploads" and response.headers["retry-after"] == "1"
    for raw in stalled:
        assert raw.error(408, timeout=IDLE + 20)["code"] == "upload_timeout"
        raw.close()

    # one upload holds most of the buffer; the next one passes the total and is refused
    big = Raw(server)
    big.send(upload_head(UPLOAD_MB * 1_000_000 - 1000) + b"\0" * int((BUFFERED_MB - 2.5) * 1_000_000))
    time.sleep(0.5)
    second = Raw(server)
    second.send(upload_head(3_500_000) + b"\0" * 3_400_000)
    error = second.error(503, timeout=30)
    assert error["code"] == "server_busy"
    assert big.error(408, timeout=IDLE + 20)["code"] == "upload_timeout"

    # everything was given back: a normal request goes through
    response = httpx.post(server.url + TRANSCRIBE, files={"file": (path.name, audio)}, timeout=120)
    assert response.status_code == 200, response.text
    metrics = httpx.get(server.url + "/metrics").text
    for reason in ("too_many_uploads", "server_busy", "upload_timeout"):
        assert f'earmark_rejected_total{{reason="{reason}"}}' in metrics


def test_connections_per_client_address_are_capped(server: ServerProcess):
    held = [Raw(server) for _ in range(PER_CLIENT)]
    time.sleep(0.3)
    extra = Raw(server)
    error = extra.error(503, timeout=10)
    assert error["code"] == "too_many_connections" and "127.0.0.1" in error["message"]
    assert extra.closed()
    for raw in held:
        raw.close()
    time.sleep(0.3)
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_stalled_clients_do_not_slow_normal_requests(server: ServerProcess, speech):
    path, _ = speech
    audio = path.read_bytes()

    def timed() -> float:
        started = time.perf_counter()
        response = httpx.post(server.url + TRANSCRIBE, files={"file": (path.name, audio)}, timeout=120)
        assert response.status_code == 200, response.text
        return time.perf_counter() - started

    timed()
    alone = min(timed() for _ in range(2))
    stalled = [Raw(server) for _ in range(3)]
    for raw in stalled:
        raw.send(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n")
    body = Raw(server)
    body.send(upload_head(1_000_000) + b"\0" * 1000)
    crowded = min(timed() for _ in range(2))
    for raw in [*stalled, body]:
        raw.close()
    assert crowded <= 2 * alone + 1.0, (alone, crowded)


# --------------------------------------------------------------------------- 5. one error shape


def raw_error(server: ServerProcess, request: bytes, status: int) -> dict:
    raw = Raw(server)
    try:
        raw.send(request)
        return raw.error(status)
    finally:
        raw.close()


def test_errors_raised_before_a_route_runs_have_the_json_shape(server: ServerProcess):
    assert raw_error(server, b"NOT HTTP AT ALL\r\n\r\n", 400)["code"] == "malformed_request"
    assert raw_error(server, b"GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n", 400)["code"] == "malformed_request"
    assert raw_error(server, b"GET /healthz HTTP/1.1\r\n\r\n", 400)["code"] == "malformed_request"  # no Host
    too_big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000
    assert raw_error(server, too_big, 431)["code"] == "headers_too_large"
    bad_chunk = upload_head(0, chunked=True).split(b"\r\n\r\n")[0] + b"\r\n\r\nZZ\r\nhello\r\n"
    assert raw_error(server, bad_chunk, 400)["code"] == "malformed_request"
    # a chunked body over the size limit
    chunk = b"\0" * 1_000_000
    body = upload_head(0, chunked=True)
    head, _, first = body.partition(b"\r\n\r\n")
    over = head + b"\r\n\r\n" + b"%x\r\n%s\r\n" % (len(first), first)
    over += b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(UPLOAD_MB + 1))
    assert raw_error(server, over, 413)["code"] == "file_too_large"


def test_errors_from_routing_and_forms_have_the_json_shape(server: ServerProcess):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert check_error(client.get("/no/such/route"), 404)["code"] == "not_found"
        assert check_error(client.delete("/v1/models"), 405)["code"] == "method_not_allowed"
        assert check_error(client.get(TRANSCRIBE), 405)["code"] == "method_not_allowed"
        malformed = client.post(TRANSCRIBE, content=b"--b\r\nnot a header\r\n\r\n",
                                headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert check_error(malformed, 400)["code"] == "malformed_form"
        preflight = client.options("/v1/models", headers={"Origin": "https://elsewhere.example",
                                                          "Access-Control-Request-Method": "GET"})
        assert check_error(preflight, 400)["code"] == "cors_rejected"
        fine = client.options("/v1/models", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
        assert fine.status_code == 200


# --------------------------------------------------------------------------- health after all that


def test_the_server_is_still_healthy_and_answered_no_5xx_but_its_503s(server: ServerProcess):
    assert httpx.get(server.url + "/readyz").status_code == 200
    metrics = httpx.get(server.url + "/metrics").text
    statuses = re.findall(r'earmark_requests_total\{[^}]*status="(\d+)"\} (\S+)', metrics)
    assert not [s for s, n in statuses if s.startswith("5") and s != "503" and float(n) > 0], statuses


# --------------------------------------------------------------------------- every code in the README


def service_error_codes() -> set[str]:
    """Every ``code`` the service's source can answer with: the code argument of each ApiError,
    bad_request and unavailable call, routing's HTTP codes and the audio errors' codes."""
    position = {"ApiError": 2, "bad_request": 1, "unavailable": 1}
    codes = {"invalid_value"} | set(HTTP_CODES.values())
    codes |= {kind.code for kind in (AudioError, AudioTooLongError, AudioTrackError, EmptyAudioError, UndecodableAudioError)}
    root = Path(__file__).resolve().parents[1] / "service"
    for path in root.rglob("*.py"):
        if path.name == "client.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name not in position:
                continue
            given = [k.value for k in node.keywords if k.arg == "code"]
            if len(node.args) > position[name]:
                given.append(node.args[position[name]])
            codes |= {g.value for g in given if isinstance(g, ast.Constant) and isinstance(g.value, str)}
    return codes


def test_the_readme_lists_every_error_code():
    codes = service_error_codes()
    assert {"header_timeout", "upload_timeout", "too_many_uploads", "malformed_request", "no_tagging_head"} <= codes
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme[readme.index("### Errors"):readme.index("### Metrics")]
    missing = sorted(code for code in codes if f"`{code}`" not in table)
    assert not missing, f"the README's error table lacks {missing}"


# --------------------------------------------------------------------------- 3. bounded memory per request


def silence_flac(seconds: float, declared: bool = True) -> bytes:
    """Digital silence as FLAC (a few kB a minute); ``declared=False`` zeroes the total-samples field of
    its STREAMINFO, so that its length is known only by decoding it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "silence.flac"
        write_flac(path, np.zeros(round(seconds * 16000), np.int16))
        data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"
    if not declared:
        fields = int.from_bytes(data[18:26], "big")
        data[18:26] = (fields & ~((1 << 36) - 1)).to_bytes(8, "big")
    return bytes(data)


def peak_bytes(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_long_declared_duration_is_refused_before_decoding_and_an_undeclared_one_at_the_limit():
    half_hour = 1800
    declared, undeclared = silence_flac(half_hour), silence_flac(half_hour, declared=False)
    assert len(declared) < 2_000_000

    def load(data: bytes) -> None:
        with pytest.raises(AudioTooLongError) as caught:
            load_audio(data, max_duration=300)
        messages.append(str(caught.value))

    messages: list[str] = []
    refused = peak_bytes(lambda: load(declared))
    stopped = peak_bytes(lambda: load(undeclared))
    assert "declares 1800.0 s" in messages[0] and "before decoding" in messages[0]
    assert "decoding stopped there" in messages[1]
    assert refused < 2_000_000, refused  # nothing decoded
    whole = half_hour * 16000 * 4
    limit = 300 * 16000 * 4
    assert limit <= stopped < 1.6 * limit < whole, stopped  # decoded up to the limit, not the whole half hour


def test_the_server_refuses_a_declared_long_file_at_once(server: ServerProcess):
    data = silence_flac(20 * 60)
    started = time.monotonic()
    response = httpx.post(server.url + TRANSCRIBE, files={"file": ("silence.flac", data)}, timeout=60)
    error = check_error(response, 413)
    assert error["code"] == "audio_too_long" and "declares 1200.0 s" in error["message"], error
    assert time.monotonic() - started < 10


def test_decoded_audio_held_at_once_is_capped(server: ServerProcess):
    data = wav(tone(HELD * 0.7), 16000)  # four at once: the first holds 14 s, the next would pass 20 s

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(client.post(TRANSCRIBE, files={"file": ("a.wav", data)}) for _ in range(4)))

    responses = asyncio.run(run())
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200 and statuses[-1] == 503, statuses
    busy = [r for r in responses if r.status_code == 503]
    assert all(check_error(r, 503)["code"] == "server_busy" and r.headers["retry-after"] for r in busy)


def test_audio_held_by_a_streamed_answer_is_let_go_when_its_client_leaves(server: ServerProcess):
    """stream=true, the client gone after the first event or before any: what the request held is
    released, or the next request of the same length would be refused (two pass HELD)."""
    data = wav(tone(HELD * 0.7), 16000)
    for read_first in (True, False):
        with httpx.Client(base_url=server.url, timeout=60) as client, \
                client.stream("POST", TRANSCRIBE, files={"file": ("a.wav", data)},
                              data={"stream": "true", "response_format": "json"}) as response:
            assert response.status_code == 200, response.read()
            if read_first:
                next(response.iter_lines())
        end = time.monotonic() + 30
        while True:
            after = httpx.post(server.url + TRANSCRIBE, files={"file": ("a.wav", data)}, timeout=60)
            if after.status_code == 200 or time.monotonic() > end:
                break
            time.sleep(0.5)
        assert after.status_code == 200, after.text


# --------------------------------------------------------------------------- 6. honest answers on odd input


def seven_bit_wav() -> bytes:
    """16-bit samples under a header that says 7 bits per sample (and a 16-bit byte rate)."""
    data = bytearray(wav(tone(1.0), 16000))
    struct.pack_into("<H", data, 34, 7)
    return bytes(data)


@pytest.mark.parametrize("name, samples, float32", [
    ("digital silence", np.zeros((3 * 16000, 1), np.float32), False),
    ("DC offset", np.full((3 * 16000, 1), 0.5, np.float32), False),
    ("all NaN", np.full((3 * 16000, 1), np.nan, np.float32), True),
    ("10 ms of tone", tone(0.01), False),
])
def test_degenerate_audio_gets_a_note_not_confident_tags(server: ServerProcess, name, samples, float32):
    data = wav(samples, 16000, float32=float32)
    response = httpx.post(server.url + TAGS, files={"file": ("odd.wav", data)}, data={"tag_resolution": "0.4"},
                          timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tags"] and all(window["labels"] == [] for window in body["tags"]), (name, body["tags"])
    assert body["events"] == [], (name, body["events"])
    assert any("silent" in note or "too short" in note for note in body["notes"]), body["notes"]
    verbose = httpx.post(server.url + TRANSCRIBE, files={"file": ("odd.wav", data)},
                         data={"response_format": "verbose_json"}, timeout=60).json()
    assert all(window["labels"] == [] for window in verbose["tags"]) and verbose["notes"], verbose
    assert verbose["events"] == [] and verbose["text"] == "", verbose
    subtitles = httpx.post(server.url + TRANSCRIBE, files={"file": ("odd.wav", data)},
                           data={"response_format": "srt"}, timeout=60)
    assert subtitles.status_code == 200 and "[" not in subtitles.text, subtitles.text  # no sound cue such as [Music]


def test_the_audio_track_with_speech_is_used_and_named(server: ServerProcess):
    from test_audio import SPEECH_8K, matroska, read_native, resample

    native, rate = read_native(SPEECH_8K)
    speech = resample(native, rate, 16000)
    data = matroska([np.zeros_like(speech), speech], codec="libopus", rate=48000)
    verbose = httpx.post(server.url + TRANSCRIBE, files={"file": ("two.mkv", data)},
                         data={"response_format": "verbose_json"}, timeout=120)
    assert verbose.status_code == 200, verbose.text
    body = verbose.json()
    assert "telemarketers" in body["text"].lower(), body["text"]
    assert body["notes"][0].startswith("the file has 2 audio tracks; track 2 was used"), body["notes"]
    tags = httpx.post(server.url + TAGS, files={"file": ("two.mkv", data)}, data={"audio_track": "1"}, timeout=60)
    assert tags.status_code == 200, tags.text
    notes = tags.json()["notes"]
    assert notes[0] == "audio track 1 of the file's 2 was used, as asked" and "silent" in notes[1], notes
    for track, code in (("3", "invalid_audio_track"), ("0", "invalid_value"), ("two", "invalid_value")):
        response = httpx.post(server.url + TRANSCRIBE, files={"file": ("two.mkv", data)}, data={"audio_track": track},
                              timeout=60)
        error = check_error(response, 400)
        assert error["code"] == code and "audio_track" in error["message"], error


def test_a_real_sound_still_gets_its_tags(server: ServerProcess):
    body = httpx.post(server.url + TAGS, files={"file": ("tone.wav", wav(tone(3.0), 16000))}, timeout=60).json()
    assert all(window["labels"] for window in body["tags"]) and not body["notes"], body


def test_translation_on_an_english_only_model_is_refused(server: ServerProcess, speech):
    path, _ = speech
    response = httpx.post(server.url + "/v1/audio/translations", files={"file": (path.name, path.read_bytes())},
                          timeout=60)
    error = check_error(response, 400)
    assert error["code"] == "translation_unsupported" and "English-only" in error["message"]


@pytest.mark.parametrize("field", ["audio", "File"])
def test_a_file_under_another_field_is_told_to_go_under_file(server: ServerProcess, field):
    response = httpx.post(server.url + TRANSCRIBE, files={field: ("a.wav", wav(tone(1.0), 16000))}, timeout=60)
    error = check_error(response, 400)
    assert error["code"] == "missing_file" and f"'{field}'" in error["message"] and "'file'" in error["message"]


def test_a_wav_header_with_7_bits_per_sample_is_415(server: ServerProcess):
    response = httpx.post(server.url + TRANSCRIBE, files={"file": ("a.wav", seven_bit_wav())}, timeout=60)
    error = check_error(response, 415)
    assert error["code"] == "undecodable_audio" and "header" in error["message"]


def test_a_10000_character_file_name_is_accepted(server: ServerProcess, speech):
    path, _ = speech
    response = httpx.post(server.url + TRANSCRIBE, files={"file": ("n" * 10_000 + ".flac", path.read_bytes())},
                          timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["text"].strip()


# --------------------------------------------------------------------------- 4. offline for real


def test_the_api_docs_load_nothing_from_elsewhere(server: ServerProcess):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page)
            assert html.status_code == 200 and "text/html" in html.headers["content-type"]
            sources = re.findall(r'(?:src|href)="([^"]+)"', html.text) + re.findall(r"url: '([^']+)'", html.text)
            assert sources, html.text
            for source in sources:
                assert source.startswith("/"), f"{page} loads {source} from elsewhere"
                asset = client.get(source)
                assert asset.status_code == 200 and asset.content, source
        script = client.get("/static-offline-docs/swagger-ui-bundle.js")
        assert len(script.content) > 500_000  # the real Swagger UI bundle


# --------------------------------------------------------------------------- 8. micro-batching by device


def test_a_cpu_server_encodes_one_window_per_call_unless_told(server: ServerProcess):
    """EARMARK_MAX_BATCH_SIZE is unset here: on a CPU, requests in flight together are not batched."""
    clips = [wav(tone(5.0, freq=300.0 + 200 * i), 16000) for i in range(3)]  # 15 s: under EARMARK_MAX_AUDIO_HELD

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(client.post(TAGS, files={"file": ("t.wav", clip)}) for clip in clips))

    assert [r.status_code for r in asyncio.run(run())] == [200, 200, 200]
    metrics = httpx.get(server.url + "/metrics").text
    calls = float(re.search(r"^earmark_batch_windows_count (\S+)", metrics, re.MULTILINE).group(1))
    single = float(re.search(r'^earmark_batch_windows_bucket\{le="1\.0"\} (\S+)', metrics, re.MULTILINE).group(1))
    assert calls >= 3 and single == calls, (single, calls)


def test_a_long_upload_takes_turns_with_short_ones_when_batching_is_off():
    """One window per encoder call (a CPU's default) must not mean one request at a time: a short
    tags-only request sent while a 10-minute one is being encoded is answered before it."""
    noise = (np.random.default_rng(0).standard_normal((600 * 16000, 1)) * 0.05).astype(np.float32)
    long, short = wav(noise, 16000), wav(tone(5.0), 16000)
    with server_process({"EARMARK_MODEL": "tiny.en", "EARMARK_DEVICE": "cpu"}) as server:
        answered: dict[str, tuple[int, float]] = {}

        def send(name: str, data: bytes) -> None:
            response = httpx.post(server.url + TAGS, files={"file": (f"{name}.wav", data)}, timeout=600)
            answered[name] = (response.status_code, time.monotonic())

        thread = threading.Thread(target=send, args=("long", long))
        thread.start()
        end = time.monotonic() + 300
        while time.monotonic() < end:  # until two of the long upload's 20 windows are encoded
            metrics = httpx.get(server.url + "/metrics").text
            calls = re.search(r"^earmark_batch_windows_count (\S+)", metrics, re.MULTILINE)
            if calls and float(calls.group(1)) >= 2:
                break
            time.sleep(0.2)
        send("short", short)
        thread.join()
    assert answered["long"][0] == answered["short"][0] == 200, answered
    assert answered["short"][1] < answered["long"][1], "the short request waited for the long one to be encoded"


# --------------------------------------------------------------------------- 7. the client's retries


def test_the_client_adds_jitter_to_retry_after_and_never_retries_sooner():
    from service.client import _Call, _Retrying

    busy = httpx.Response(503, headers={"Retry-After": "2"})
    call = _Call(method="POST", path="/v1/audio/tags", parse=lambda r: r)
    waits = [_Retrying(retries=3).delay(0, call, busy, None) for _ in range(50)]
    assert all(2.0 <= wait <= 2.5 for wait in waits), waits
    assert len(set(waits)) > 40  # spread out, not all at once
    assert _Retrying(retries=3).delay(0, call, httpx.Response(503, headers={"Retry-After": "0"}), None) == 0.0


# --------------------------------------------------------------------------- 1. deadlines and fairness


DEADLINE = 30.0  # EARMARK_REQUEST_TIMEOUT of the second server


@pytest.fixture(scope="module")
def deadline_server():
    with server_process({"EARMARK_MODEL": "tiny.en", "EARMARK_DEVICE": "cpu",
                         "EARMARK_REQUEST_TIMEOUT": str(DEADLINE)}) as running:
        yield running


def test_a_pathological_request_ends_at_its_deadline_and_others_keep_going(deadline_server: ServerProcess, speech):
    """One clip tiled for ten minutes trips Whisper's fallback on every window (each is decoded
    again and again at higher temperatures): it must end with 504 at its deadline, its work dropped,
    while short tags-only requests are answered as usual."""
    path, _ = speech
    clip = load_audio(path)
    tiled = np.tile(clip, math.ceil(600 * 16000 / clip.size))[: 600 * 16000]
    slow, short = wav(tiled[:, None], 16000), path.read_bytes()
    url = deadline_server.url

    def tags_latency() -> float:
        started = time.perf_counter()
        response = httpx.post(url + TAGS, files={"file": (path.name, short)}, timeout=60)
        assert response.status_code == 200, response.text
        return time.perf_counter() - started

    tags_latency()
    alone = min(tags_latency() for _ in range(3))
    outcome: dict = {}

    def pathological() -> None:
        started = time.perf_counter()
        outcome["response"] = httpx.post(url + TRANSCRIBE, files={"file": ("tiled.wav", slow)}, timeout=120)
        outcome["seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=pathological)
    thread.start()
    time.sleep(1.5)  # decoded, queued, being encoded or decoded
    crowded = min(tags_latency() for _ in range(3))
    thread.join()
    error = check_error(outcome["response"], 504)
    assert error["code"] == "timeout"
    assert DEADLINE <= outcome["seconds"] <= DEADLINE + 20, outcome["seconds"]
    assert crowded <= 3 * alone + 2.0, (alone, crowded)
    metrics = httpx.get(url + "/metrics").text
    assert re.search(r'earmark_rejected_total\{reason="deadline"\} [1-9]', metrics), metrics[-2000:]
    dropped = r'earmark_dropped_total\{reason="(deadline|abandoned)"\} [1-9]'
    end = time.monotonic() + 30  # the worker lets go of it at its next step or decoding attempt
    while not re.search(dropped, metrics) and time.monotonic() < end:
        time.sleep(0.5)
        metrics = httpx.get(url + "/metrics").text
    assert re.search(dropped, metrics), metrics[-2000:]
    assert httpx.get(url + "/readyz").status_code == 200


def test_a_long_upload_is_held_window_by_window(deadline_server: ServerProcess):
    """Its audio is decoded a piece at a time as its windows are encoded: the server's memory does
    not grow with its length (20 minutes are 77 MB of float32 whole)."""
    data = silence_flac(20 * 60)
    warm = httpx.post(deadline_server.url + TAGS, files={"file": ("warm.flac", silence_flac(120))}, timeout=120)
    assert warm.status_code == 200, warm.text  # the first windows' one-time allocations are not the upload's
    pid = deadline_server.process.pid
    before = rss_bytes(pid)
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes(pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        response = httpx.post(deadline_server.url + TAGS, files={"file": ("silence.flac", data)}, timeout=120)
    finally:
        done.set()
        watcher.join()
    assert response.status_code in (200, 504), response.text  # 504: a slow machine; the memory is what counts
    if response.status_code == 200:
        body = response.json()
        assert body["duration"] == pytest.approx(1200, abs=0.1) and "silent" in body["notes"][0], body
    assert peak[0] - before < 100_000_000, (before, peak[0])  # whole: 235 MB more (measured)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
