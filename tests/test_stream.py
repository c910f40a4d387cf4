"""Live streams: the library's StreamJob, WebSocket /v1/audio/stream on a real server, the clients
and ``earmark stream``, on real speech with music in it and the real tiny.en weights and head.

The one promise: a stream's final segments and tags equal the whole file's, whatever the frames."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from service_server import ROOT, server_process
from speech_fixtures import long_speech, speech_clips
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from service.client import (
    AsyncClient,
    Client,
    StreamDone,
    StreamPartial,
    StreamReady,
    StreamSegment,
    StreamTags,
)
from tagger import DecodeOptions, Partial, Segment, StreamJob, TagOptions, TagWindow, load_audio, load_model
from tagger.audio import write_flac
from tagger.onepass import Slice, encode_step
from tagger.stream import stream_transcribe

SCENES = ROOT / "tests" / "fixtures" / "scenes"


@pytest.fixture(scope="module")
def model():
    """tiny.en with its bundled tagging head, as the server loads it."""
    return load_model("tiny.en", device="cpu")


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """Over 60 s of distinct real speech with 8 s of music between two recordings, on the 16-bit
    grid (what a client sends as PCM is exactly this audio)."""
    speech, spans = long_speech(65.0)
    music = load_audio(SCENES / "music-macroform-cold_day.flac")[: 8 * 16000]
    middle = round(spans[len(spans) // 2][0] * 16000)
    audio = np.concatenate([speech[:middle], music, speech[middle:]])
    return (np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16).astype(np.float32) / 32768).astype(np.float32)


@pytest.fixture(scope="module")
def offline(model, scene):
    return model.transcribe(scene, language="en")


def int16(audio: np.ndarray) -> np.ndarray:
    """The 16-bit samples a client sends of ``audio``: written to a FLAC as these, a file carries the
    very samples raw PCM does (``write_flac`` scales floats by 32767, the decoders by 1/32768)."""
    return np.round(audio * 32768).clip(-32768, 32767).astype("<i2")


def pcm_bytes(audio: np.ndarray) -> bytes:
    return int16(audio).tobytes()

# The default head is int8 on a CPU (tagger.heads.int8_head): each call quantizes its activations,
# so a difference in the last float bits of the features (the server's encoder runs on other
# threads; a FLAC and raw PCM decode alike only to rounding) can move an activation across a
# rounding step. Tags then agree to about 0.005 (0.0002 on average), not to the 1e-5 of a float head.
TAG_TOLERANCE = 0.02


def same_but_probabilities(ours: str, theirs: str) -> None:
    """Two printouts with sound cues: the same text, and probabilities within TAG_TOLERANCE."""
    number = re.compile(r"\b\d\.\d\d\b")
    assert number.sub("P", ours) == number.sub("P", theirs)
    for a, b in zip(number.findall(ours), number.findall(theirs)):
        assert abs(float(a) - float(b)) <= TAG_TOLERANCE + 0.01, (a, b)  # printed to two decimals


def assert_same_segments(streamed, offline_segments) -> None:
    assert [s.text for s in streamed] == [s.text for s in offline_segments]
    for ours, theirs in zip(streamed, offline_segments):
        assert abs(ours.start - theirs.start) <= 0.02 and abs(ours.end - theirs.end) <= 0.02
        assert bool(ours.no_speech) == bool(theirs.no_speech)
        assert [t.mid for t in ours.tags] == [t.mid for t in theirs.tags]
        for a, b in zip(ours.tags, theirs.tags):
            assert abs(a.probability - b.probability) <= TAG_TOLERANCE


def assert_same_tags(streamed, offline_windows) -> None:
    assert len(streamed) == len(offline_windows)
    for ours, theirs in zip(streamed, offline_windows):
        assert abs(ours.start - theirs.start) <= 0.02 and abs(ours.end - theirs.end) <= 0.02
        assert [t.mid for t in ours.labels] == [t.mid for t in theirs.labels]
        for a, b in zip(ours.labels, theirs.labels):
            assert abs(a.probability - b.probability) <= TAG_TOLERANCE


# --- the library ------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [320, 4000, 4013, None], ids=["20ms", "250ms", "odd", "whole"])
def test_a_stream_ends_equal_to_the_whole_file(model, scene, offline, frame):
    frame = frame or len(scene)
    chunks = (scene[i : i + frame] for i in range(0, len(scene), frame))
    events = list(stream_transcribe(model, chunks, DecodeOptions(language="en"), TagOptions(), partials=False))
    result = events[-1]
    assert len(scene) / 16000 > 60 and offline.tags and offline.segments
    assert result.text == offline.text
    assert_same_segments(result.segments, offline.segments)
    assert_same_segments([e for e in events if isinstance(e, Segment)], offline.segments)
    assert_same_tags([e for e in events if isinstance(e, TagWindow)], offline.tags)
    np.testing.assert_allclose(result.scores, offline.scores, atol=1e-4)
    assert any("Music" in {t.name for t in w.labels} for w in result.tags)  # the sounds are in it


def test_a_stream_carries_the_previous_text_as_the_prompt_when_asked(model, scene):
    audio = scene[: 65 * 16000]
    options = DecodeOptions(language="en", condition_on_previous_text=True)
    chunks = (audio[i : i + 4013] for i in range(0, len(audio), 4013))
    result = list(stream_transcribe(model, chunks, options, None, partials=False))[-1]
    offline = model.transcribe(audio, language="en", condition_on_previous_text=True, tags=False)
    assert len(offline.segments) > 5 and result.text == offline.text
    assert_same_segments(result.segments, offline.segments)


def test_a_stream_holds_at_most_two_windows_of_audio(model, scene):
    """Samples are dropped once encoded: what the job holds does not grow with the stream."""
    job = StreamJob(model, None, TagOptions())
    limit = model.window_options.max_samples
    held = []
    for i in range(0, len(scene), 4013):
        job.feed(scene[i : i + 4013])
        while job.next_window < job.n_windows:
            job.take(job.next_window, encode_step(model.backbone, [Slice(job, job.next_window, 1)])[0])
        held.append(len(job.samples))
    job.end()
    while job.next_window < job.n_windows:
        job.take(job.next_window, encode_step(model.backbone, [Slice(job, job.next_window, 1)])[0])
    assert max(held) <= 2 * limit < len(scene)
    assert len(job.samples) == 0
    assert_same_tags(job.result().tags, model.tag(scene).tags)


def test_silence_in_a_stream_gets_the_notes_and_the_empty_tags_of_the_whole_file(model, scene):
    """Its samples are gone by the end: a stream keeps the level of each 0.4 s to judge silence."""
    audio = np.concatenate([scene[: 6 * 16000], np.zeros(36 * 16000, np.float32), np.full(4 * 16000, 0.2, np.float32)])
    offline = model.transcribe(audio, language="en", tag_resolution=2.0)
    chunks = (audio[i : i + 4013] for i in range(0, len(audio), 4013))
    events = list(stream_transcribe(model, chunks, DecodeOptions(language="en"), TagOptions(2.0), partials=False))
    result = events[-1]
    assert offline.notes == ["20 of 23 tag windows are silent (no level above -60 dBFS), so they carry no tags"]
    assert result.notes == offline.notes
    assert [bool(w.labels) for w in result.tags] == [bool(w.labels) for w in offline.tags] == [True] * 3 + [False] * 20
    assert_same_tags([e for e in events if isinstance(e, TagWindow)], offline.tags)
    silent = list(stream_transcribe(model, iter([np.zeros(5 * 16000, np.float32)]), None, TagOptions(), partials=False))
    assert silent[-1].notes == [model.tag(np.zeros(5 * 16000, np.float32)).notes[0]] and not silent[-1].tags[0].labels


def test_partials_show_text_before_it_is_final(model, scene):
    audio = scene[: 12 * 16000]
    chunks = (audio[i : i + 8000] for i in range(0, len(audio), 8000))
    events = list(stream_transcribe(model, chunks, DecodeOptions(language="en"), None))
    partials = [e for e in events if isinstance(e, Partial)]
    first_final = next(i for i, e in enumerate(events) if isinstance(e, Segment))
    assert partials and events.index(partials[0]) < first_final
    assert any(p.text.strip() for p in partials)
    assert all(p.start == 0.0 and p.end <= 12.0 for p in partials)
    words = set(re.findall(r"[a-z']+", events[-1].text.lower()))
    assert set(re.findall(r"[a-z']+", partials[-1].text.lower())) & words


# --- the service --------------------------------------------------------------------------------

LIMITS = {"EARMARK_MODEL": "tiny.en", "EARMARK_MAX_STREAMS": "2", "EARMARK_STREAM_IDLE_TIMEOUT": "4",
          "EARMARK_MAX_STREAM_DURATION": "120", "EARMARK_MAX_FRAME_KB": "100"}


@pytest.fixture(scope="module")
def server():
    with server_process(LIMITS) as running:
        yield running


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/v1/audio/stream"


def metric(server, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    found = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def wait_for_metric(server, name: str, value: float, seconds: float = 120.0) -> None:
    end = time.monotonic() + seconds
    while metric(server, name) != value:
        assert time.monotonic() < end, f"{name} stayed at {metric(server, name)}, not {value}"
        time.sleep(0.2)


def test_stream_over_websocket_equals_offline_with_20ms_frames(server, scene, offline):
    data = pcm_bytes(scene)
    frames = (data[i : i + 640] for i in range(0, len(data), 640))
    with Client(server.url) as client:
        events = list(client.stream(frames, language="en", partials=False))
    assert isinstance(events[0], StreamReady) and isinstance(events[-1], StreamDone)
    result = events[-1].result
    assert result.text == offline.text
    assert_same_segments([e for e in events if isinstance(e, StreamSegment)], offline.segments)
    assert_same_segments(result.segments, offline.segments)
    assert_same_tags([e for e in events if isinstance(e, StreamTags)], offline.tags)
    assert_same_tags(result.tags, offline.tags)
    assert metric(server, "earmark_stream_audio_seconds_total") >= len(scene) / 16000 - 0.01
    assert metric(server, "earmark_stream_final_latency_seconds_count") >= len(offline.segments)


def test_async_stream_of_a_container_equals_offline(server, scene, offline, tmp_path):
    path = tmp_path / "scene.flac"
    write_flac(path, int16(scene))

    async def run():
        async with AsyncClient(server.url) as client:
            return [event async for event in client.stream(path.read_bytes(), language="en")]

    events = asyncio.run(run())
    result = events[-1].result
    assert result.text == offline.text
    assert_same_segments([e for e in events if isinstance(e, StreamSegment)], offline.segments)
    assert_same_tags(result.tags, offline.tags)


def test_partials_arrive_before_the_finals_at_real_time_pace(server):
    path, _ = speech_clips()[1]
    audio = load_audio(path)[: 8 * 16000]
    data = pcm_bytes(audio)
    with Client(server.url) as client:
        events = list(client.stream((data[i : i + 3200] for i in range(0, len(data), 3200)), language="en",
                                    realtime=True, tags=False))
    partials = [e for e in events if isinstance(e, StreamPartial)]
    assert partials and any(p.text.strip() for p in partials)
    assert events.index(partials[0]) < next(i for i, e in enumerate(events) if isinstance(e, StreamSegment))
    assert events[-1].result.text


def test_http_requests_and_streams_share_the_model(server):
    path, _ = speech_clips()[0]
    audio = load_audio(path)
    data = pcm_bytes(audio)
    outcome = {}

    def stream():
        with Client(server.url) as client:
            outcome["stream"] = list(client.stream((data[i : i + 3200] for i in range(0, len(data), 3200)),
                                                   language="en", realtime=True))[-1]

    thread = threading.Thread(target=stream)
    thread.start()
    with Client(server.url) as client:
        answer = client.transcribe(path, language="en")
    thread.join()
    assert answer.text.strip()
    assert outcome["stream"].result.text == answer.text


def expect_error(server, messages: list, code: str, close_code: int = 1008) -> dict:
    """Send ``messages`` (str: text, bytes: binary, float: a pause) and expect an error event and a close."""
    with connect(ws_url(server), max_size=None) as ws:
        received = []
        try:
            for message in messages:
                if isinstance(message, float):
                    time.sleep(message)
                else:
                    ws.send(message)
        except ConnectionClosed:
            pass
        try:
            for text in ws:
                received.append(json.loads(text))
        except ConnectionClosed:
            pass
        errors = [m for m in received if m["type"] == "error"]
        assert errors, received
        assert errors[-1]["error"]["code"] == code, errors
        assert ws.close_code == close_code and ws.close_reason == code
        assert not any(m["type"] == "done" for m in received)
        return errors[-1]


START = json.dumps({"type": "start", "language": "en"})
SECOND = b"\x00\x01" * 16000


@pytest.mark.parametrize("messages,code,close_code", [
    (["not json"], "invalid_value", 1008),
    ([json.dumps({"type": "start", "sample_rate": 8000})], "invalid_value", 1008),  # unknown field: a typo
    ([json.dumps({"format": {"encoding": "mp9"}})], "invalid_value", 1008),
    ([json.dumps({"format": {"sample_rate": 10}})], "invalid_value", 1008),
    ([json.dumps({"language": "de"})], "invalid_value", 1008),  # tiny.en speaks English only
    ([json.dumps({"tag_resolution": 0.5})], "invalid_value", 1008),
    ([SECOND], "invalid_message", 1008),  # audio before the settings
    ([START, SECOND, "garbage"], "invalid_message", 1008),
    ([START, SECOND, json.dumps({"type": "pause"})], "invalid_message", 1008),
    ([START, json.dumps({"type": "end"})], "empty_audio", 1008),
    ([START, SECOND, json.dumps({"type": "end"}), SECOND], "frame_after_end", 1008),
    ([START, b"\x00" * 200_000], "frame_too_large", 1009),
    ([json.dumps({"format": {"encoding": "container"}}), bytes(range(256)) * 64, json.dumps({"type": "end"})],
     "undecodable_audio", 1008),
    ([START, SECOND, 6.0], "idle_timeout", 1008),
], ids=["not-json", "unknown-field", "bad-encoding", "bad-rate", "language", "tag-resolution", "audio-first",
        "garbage-text", "unknown-type", "empty", "after-end", "frame-too-large", "garbage-container", "idle"])
def test_bad_input_gets_an_error_event_and_a_close(server, messages, code, close_code):
    error = expect_error(server, messages, code, close_code)
    assert error["error"]["message"] and isinstance(error["status"], int)
    assert httpx.get(server.url + "/readyz").status_code == 200
    wait_for_metric(server, "earmark_streams_open", 0.0)


def test_a_never_ending_stream_is_stopped_at_its_limit(server):
    messages = [json.dumps({"type": "start", "tags": False})] + [b"\x00\x00" * 16000] * 125
    expect_error(server, messages, "audio_too_long", 1009)
    assert httpx.get(server.url + "/readyz").status_code == 200


def test_streams_beyond_the_limit_are_refused_with_a_close_code(server):
    with connect(ws_url(server)) as first, connect(ws_url(server)) as second:
        for ws in (first, second):
            ws.send(START)
            assert json.loads(ws.recv())["type"] == "ready"
        expect_error(server, [START], "too_many_streams", 1013)
    wait_for_metric(server, "earmark_streams_open", 0.0)
    with Client(server.url) as client:
        events = list(client.stream([SECOND * 2], tags=False, language="en"))
    assert isinstance(events[-1], StreamDone)


def test_a_client_that_vanishes_frees_its_stream(server, scene):
    data = pcm_bytes(scene[: 40 * 16000])
    with connect(ws_url(server)) as ws:
        ws.send(START)
        assert json.loads(ws.recv())["type"] == "ready"
        for i in range(0, len(data), 32000):
            ws.send(data[i : i + 32000])
        ws.socket.shutdown(socket.SHUT_RDWR)  # gone without a close handshake
        ws.socket.close()
    wait_for_metric(server, "earmark_streams_open", 0.0)
    wait_for_metric(server, "earmark_active_jobs", 0.0)
    assert httpx.get(server.url + "/readyz").status_code == 200


# --- earmark stream -------------------------------------------------------------------------------


def test_earmark_stream_reads_raw_pcm_from_stdin_and_a_file_at_real_time(tmp_path):
    path, transcript = speech_clips()[0]
    audio = load_audio(path)
    command = [sys.executable, "-m", "tagger.cli", "stream", "--model", "tiny.en", "--language", "en"]
    env = {"EARMARK_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    piped = subprocess.run([*command, "-"], input=pcm_bytes(audio), capture_output=True, cwd=ROOT, env=env, check=False,
                           timeout=600)
    assert piped.returncode == 0, piped.stderr.decode()[-2000:]
    last_word = re.sub(r"\W", "", transcript.split()[-1].lower())
    assert last_word in piped.stdout.decode().lower()
    assert re.search(r"^\[00:00\.\d\d --> 00:\d\d\.\d\d\] ", piped.stdout.decode(), re.MULTILINE)
    flac = tmp_path / "clip.flac"
    write_flac(flac, int16(audio))
    paced = subprocess.run([*command, str(flac), "--realtime"], capture_output=True, cwd=ROOT, env=env, check=False, timeout=600)
    assert paced.returncode == 0, paced.stderr.decode()[-2000:]
    same_but_probabilities(paced.stdout.decode(), piped.stdout.decode())
    assert "~ [00:00.00 -->" in paced.stderr.decode()  # partials on standard error


def test_stream_frames_of_odd_sizes_decode_to_the_same_samples():
    """A sample may straddle two messages; stereo and 8 kHz go through the resampler."""
    from tagger import AudioFormat, PcmDecoder

    rng = np.random.default_rng(0)
    values = rng.integers(-20000, 20000, 16000, dtype=np.int16)
    data = values.astype("<i2").tobytes()
    decoder = PcmDecoder(AudioFormat("pcm_s16le"))
    pieces = [decoder.push(data[i : i + 7]) for i in range(0, len(data), 7)]
    np.testing.assert_array_equal(np.concatenate(pieces), values.astype(np.float32) / 32768)
    stereo = PcmDecoder(AudioFormat("pcm_f32le", 8000, 2))
    block = np.stack([np.sin(np.arange(8000) / 5), np.sin(np.arange(8000) / 5)], axis=1).astype("<f4").tobytes()
    out = np.concatenate([stereo.push(block[i : i + 999]) for i in range(0, len(block), 999)] + [stereo.flush()])
    assert abs(len(out) - 16000) <= 64 and np.abs(out).max() <= 1.0


def test_openai_sdk_stream_true_gets_text_as_each_window_finishes(server, scene, tmp_path):
    openai = pytest.importorskip("openai")
    path = tmp_path / "long.flac"
    write_flac(path, int16(scene[: 45 * 16000]))  # two windows
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with open(path, "rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, stream=True, language="en"))
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.delta") >= 2
    assert "transcript.tags" in kinds  # Earmark's tag windows ride along
    text = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert text == events[-1].text
    with Client(server.url) as ours:
        assert ours.transcribe(path, language="en").text == text


def test_openai_realtime_transcription_through_the_sdk(server, tmp_path):
    """The transcription subset of the Realtime API, driven by the openai SDK's own realtime client:
    24 kHz PCM appended in base64, committed, deltas and the completed transcript back."""
    openai = pytest.importorskip("openai")
    import base64
    import wave

    path, _ = speech_clips()[2]
    audio = load_audio(path)
    at_24k = np.interp(np.arange(len(audio) * 3 // 2) / 24000, np.arange(len(audio)) / 16000, audio)
    pcm = (np.round(at_24k * 32767).clip(-32768, 32767).astype("<i2")).tobytes()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        assert connection.recv().type in ("session.created", "transcription_session.created")
        connection.session.update(session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": None}}})
        assert connection.recv().type == "session.updated"
        for i in range(0, len(pcm), 4800):
            connection.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 4800]).decode())
        connection.input_audio_buffer.commit()
        events = []
        for event in connection:
            events.append(event)
            assert event.type != "error", event
            if event.type == "conversation.item.input_audio_transcription.completed":
                break
        connection.input_audio_buffer.commit()  # nothing appended since: an error event, the session goes on
        assert connection.recv().type == "error"
    kinds = [e.type for e in events]
    assert kinds[0] == "input_audio_buffer.committed"
    deltas = [e.delta for e in events if e.type == "conversation.item.input_audio_transcription.delta"]
    assert deltas and "".join(deltas) == events[-1].transcript
    wav = tmp_path / "24k.wav"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(24000)
        out.writeframes(pcm)
    with Client(server.url) as ours:
        assert ours.transcribe(wav, language="en").text == events[-1].transcript


def test_a_tags_only_stream_equals_tag(server, model, scene):
    audio = scene[: 35 * 16000]
    data = pcm_bytes(audio)
    with Client(server.url) as client:
        events = list(client.stream((data[i : i + 4013] for i in range(0, len(data), 4013)), transcript=False))
    assert not [e for e in events if isinstance(e, (StreamSegment, StreamPartial))]
    whole = model.tag(audio)
    assert_same_tags([e for e in events if isinstance(e, StreamTags)], whole.tags)
    assert_same_tags(events[-1].result.tags, whole.tags)
