"""A corpus of malformed, odd and hostile uploads, each with the status the service must answer.

Every case is built in memory from synthetic signals (tones, noise, hand-written headers), so the
corpus needs no files. ``CASES`` is the list; ``Case.request()`` gives httpx keyword arguments.
The server under test must run with ``UPLOAD_LIMIT_MB`` and ``DURATION_LIMIT_S`` (see ``SERVER_ENV``).
The rule: never a 5xx, never a hang; every 4xx carries ``{"error": {"message", "type", "code"}}``.
Odd-but-valid audio (8 channels, 192 kHz, NaN samples, a lying header) is decoded and answered 200.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

UPLOAD_LIMIT_MB = 4
DURATION_LIMIT_S = 60
SERVER_ENV = {"EARMARK_MAX_UPLOAD_MB": str(UPLOAD_LIMIT_MB), "EARMARK_MAX_DURATION": str(DURATION_LIMIT_S)}

TRANSCRIBE = "/v1/audio/transcriptions"
TAGS = "/v1/audio/tags"


# --- signals and containers -------------------------------------------------------------------


def tone(seconds: float, rate: int = 16000, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    """A quiet sine with a little seeded noise, float32 [frames, channels] in [-1, 1]."""
    n = max(0, round(seconds * rate))
    t = np.arange(n) / rate
    rng = np.random.default_rng(7)
    mono = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def wav(samples: np.ndarray, rate: int, *, float32: bool = False, data_size: int | None = None,
        format_tag: int | None = None) -> bytes:
    """A RIFF/WAVE file: 16-bit PCM (or 32-bit float); ``data_size`` and ``format_tag`` can lie."""
    channels = samples.shape[1]
    if float32:
        payload, bits, tag = samples.astype("<f4").tobytes(), 32, 3
    else:
        payload, bits, tag = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes(), 16, 1
    tag = tag if format_tag is None else format_tag
    block = channels * bits // 8
    size = len(payload) if data_size is None else data_size
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, tag, channels, rate, rate * block, block, bits)
    riff_size = min(0xFFFFFFFF, 4 + len(fmt) + 8 + size)
    return struct.pack("<4sI4s", b"RIFF", riff_size, b"WAVE") + fmt + struct.pack("<4sI", b"data", size) + payload


def encoded(container: str, codec: str, seconds: float = 3.0, rate: int = 16000) -> bytes:
    """A tone encoded with PyAV, e.g. ``("flac", "flac")`` or ``("mp3", "libmp3lame")``."""
    out = io.BytesIO()
    samples = (tone(seconds, rate)[:, 0] * 32767).astype(np.int16)
    with av.open(out, "w", format=container) as sink:
        stream = sink.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
        frame.rate = rate
        for packet in stream.encode(frame):
            sink.mux(packet)
        for packet in stream.encode(None):
            sink.mux(packet)
    return out.getvalue()


def png_bytes() -> bytes:
    """A 1x1 PNG: media, but no audio stream."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
            + chunk(b"IEND", b""))


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "earmarkboundary") -> tuple[bytes, str]:
    """A hand-built multipart body: (name, filename or None, bytes) per part."""
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# --- the corpus -------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    expected: int
    path: str = TRANSCRIBE
    method: str = "POST"
    files: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def request(self) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client.request``."""
        kwargs: dict[str, Any] = {"method": self.method, "url": self.path, "headers": dict(self.headers)}
        if self.files is not None:
            kwargs["files"] = self.files
        if self.data:
            kwargs["data"] = self.data
        if self.content is not None:
            kwargs["content"] = self.content
        return kwargs


def upload(name: str, expected: int, data: bytes, filename: str = "audio.wav", path: str = TRANSCRIBE,
           **fields: Any) -> Case:
    return Case(name, expected, path=path, files={"file": (filename, data)}, data=fields)


def hand_built(name: str, expected: int, parts: list[tuple[str, str | None, bytes]], *, cut: int | None = None,
               content_type: str | None = None) -> Case:
    body, header = multipart(parts)
    return Case(name, expected, content=body[:cut] if cut else body, headers={"Content-Type": content_type or header})


def build_cases() -> list[Case]:
    one_second = wav(tone(1.0), 16000)
    flac = encoded("flac", "flac")
    mp3 = encoded("mp3", "libmp3lame")
    rng = np.random.default_rng(0)
    noise_bytes = rng.integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes()
    nan_samples = tone(1.0)
    nan_samples[::3] = np.nan
    nan_samples[1::7] = np.inf
    too_long = wav(tone(DURATION_LIMIT_S + 5.0, rate=4000), 4000)  # 65 s at 4 kHz: 520 KB, under the size limit
    oversize = rng.integers(0, 256, int(UPLOAD_LIMIT_MB * 1_000_000) + 200_000, dtype=np.uint8).tobytes()
    return [
        # The file itself
        upload("empty file", 400, b""),
        upload("random bytes", 415, noise_bytes, "noise.wav"),
        upload("zeros", 415, bytes(256 * 1024), "zeros.mp3"),
        upload("plain text", 415, b"this is not audio, just a sentence in a text file\n" * 20, "notes.txt"),
        upload("json document", 415, b'{"audio": [0.1, 0.2, 0.3]}', "audio.json"),
        upload("png image, no audio stream", 415, png_bytes(), "picture.png"),
        upload("truncated flac header", 415, flac[:40], "cut.flac"),
        upload("truncated flac", 200, flac[: len(flac) // 2], "cut.flac"),
        upload("truncated mp3 header", 415, mp3[:3], "cut.mp3"),
        upload("truncated mp3", 200, mp3[: len(mp3) // 2], "cut.mp3"),
        upload("wav named .mp3", 200, one_second, "really-a-wav.mp3"),
        upload("flac with no extension", 200, flac, "audio"),
        upload("1 ms of audio", 400, wav(tone(0.001), 16000)),
        upload("wav header only", 400, wav(tone(0.0), 16000)),
        upload("8 channels", 200, wav(tone(1.0, channels=8), 16000)),
        upload("192 kHz", 200, wav(tone(1.0, rate=192000), 192000)),
        upload("NaN and inf samples", 200, wav(nan_samples, 16000, float32=True)),
        upload("wav header claims 4 GB", 200, wav(tone(1.0), 16000, data_size=0xFFFFFFF0)),
        upload("wav with unknown codec tag", 415, wav(tone(1.0), 16000, format_tag=0x7777)),
        upload("wav with sample rate 0", 415, wav(tone(1.0), 0)),
        upload("audio longer than the duration limit", 413, too_long),
        upload("upload over the size limit", 413, oversize, "huge.wav"),
        # The form
        Case("no file field", 400, data={"model": "whisper-1"}, files={"other": ("x.wav", one_second)}),
        Case("file sent as a text field", 415, data={"file": "hello, I am a string", "model": "whisper-1"},
             files={"dummy": ("d.txt", b"d")}),
        upload("temperature is a word", 400, one_second, temperature="hot"),
        upload("temperature out of range", 400, one_second, temperature="5"),
        upload("unknown response_format", 400, one_second, response_format="xml"),
        upload("tag_resolution not a multiple of 0.4", 400, one_second, tag_resolution="0.3"),
        upload("negative tag_resolution", 400, one_second, tag_resolution="-1"),
        upload("tag_resolution is NaN", 400, one_second, tag_resolution="nan"),
        upload("top_k zero", 400, one_second, top_k="0"),
        upload("threshold above 1", 400, one_second, threshold="2"),
        upload("unknown language", 400, one_second, language="klingon"),
        upload("unknown timestamp granularity", 400, one_second, **{"timestamp_granularities[]": "char"}),
        upload("tags is not a boolean", 400, one_second, tags="maybe"),
        upload("stream is not a boolean", 400, one_second, stream="maybe"),
        hand_built("binary bytes in a text field", 400, [("file", "a.wav", one_second), ("prompt", None, b"\xff\xfe\x00bad")]),
        hand_built("two files", 400, [("file", "a.wav", one_second), ("file", "b.wav", one_second)]),
        hand_built("huge text field", 400, [("file", "a.wav", one_second), ("prompt", None, b"word " * 40_000)]),
        hand_built("body cut before the closing boundary", 400, [("file", "a.wav", one_second)], cut=len(one_second) // 2),
        hand_built("multipart without a boundary", 400, [("file", "a.wav", one_second)], content_type="multipart/form-data"),
        Case("multipart garbage", 400, content=b"--xyz\r\nthis is not a header block at all" + noise_bytes[:512],
             headers={"Content-Type": "multipart/form-data; boundary=xyz"}),
        Case("json body instead of a form", 400, content=b'{"file": "jfk.flac"}', headers={"Content-Type": "application/json"}),
        Case("no body at all", 400, content=b""),
        # Tags and other routes
        upload("tags: unknown include label", 400, one_second, path=TAGS, include="Definitely not a sound class"),
        upload("tags: bad tag_resolution", 400, one_second, path=TAGS, tag_resolution="0"),
        upload("tags: random bytes", 415, noise_bytes, path=TAGS),
        Case("tags: no file", 400, path=TAGS, data={"top_k": "3"}, files={"other": ("x", b"x")}),
        Case("GET on an upload route", 405, method="GET"),
        Case("unknown route", 404, path="/v1/audio/nothing-here"),
        Case("unknown model id", 404, method="GET", path="/v1/models/gpt-17"),
    ]


CASES = build_cases()
