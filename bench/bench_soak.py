"""Soak test of the HTTP service: a mixed load at a steady concurrency for a long time.

The script starts the real server (``earmark serve``, as the tests do: its own process on a free
loopback port, ``EARMARK_OFFLINE=1``, its temporary directory a fresh empty folder), warms it up
with one request of every normal input, then keeps ``--concurrency`` requests in flight for
``--minutes``. Each request is drawn (seeded) from this mix:

- normal requests, answered 200: real speech (the speech fixtures, FLAC as recorded), real music
  (the music-on-hold fixtures), noise (white and pink, seeded), silence (the recorded 10 s silence
  prompt, digital zeros, a DC offset) and tones (1 s and 3 s sines, 10 ms of tone); each goes to
  ``/v1/audio/transcriptions`` (verbose_json, tags) or, one time in three, to ``/v1/audio/tags``;
- malformed uploads: the corpus of ``tests/malformed_uploads.py``, each with its expected status;
- stalled uploads: a raw connection that stops inside its headers or inside its body (the server
  answers 408 or closes it after ``EARMARK_IDLE_TIMEOUT``, set to ``--idle-timeout``);
- cancelled requests: a speech transcription the client abandons after 0.2 to 2 s.

Recorded: every response status (per kind), the server's RSS and open file descriptors every
``--sample-seconds``, the files in its temporary directory, and the latency of normal requests.
The report is a markdown table per slice of ``--slice-minutes`` (requests, 5xx, latency
percentiles of normal requests, RSS at the slice's end and its peak, temp files, descriptors),
a table of statuses by kind, and the checks: no 5xx, the final RSS within 10 % of the warm level
(the RSS at the end of the first slice), no new file left in the temporary directory (the files
there when the server became ready are listed: onnxruntime writes ``.ses`` once, on import), every
request answered as expected (malformed uploads with their corpus status, stalled ones 408).

Run (30 minutes at concurrency 8, tiny.en with its bundled head):

    nice -n 10 .venv/bin/python bench/bench_soak.py --minutes 30 --output bench/results/soak-tiny.en.md

The script stops by itself: no request starts after ``--minutes``, and each has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import wave
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from malformed_uploads import CASES, SERVER_ENV, tone
from service_server import server_process
from speech_fixtures import speech_clips

SAMPLE_RATE = 16000
TRANSCRIBE = "/v1/audio/transcriptions"
TAGS = "/v1/audio/tags"
NORMAL = ("speech", "music", "noise", "silence", "tones")
# kind -> weight in the mix
MIX = {"speech": 30, "music": 10, "noise": 8, "silence": 8, "tones": 8, "malformed": 18, "stalled": 6, "cancelled": 12}
REQUEST_TIMEOUT = 600.0  # seconds, per request


# --------------------------------------------------------------------------- inputs


def wav_bytes(samples: np.ndarray) -> bytes:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def pink_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """1/f noise: white noise shaped in the frequency domain."""
    n = round(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    noise = np.fft.irfft(spectrum, n)
    return (noise / np.abs(noise).max() * 0.3).astype(np.float32)


def inputs() -> dict[str, list[tuple[str, bytes]]]:
    """Normal inputs by kind: (file name, bytes)."""
    rng = np.random.default_rng(0)
    scenes = ROOT / "tests" / "fixtures" / "scenes"
    return {
        "speech": [(path.name, path.read_bytes()) for path, _ in speech_clips()],
        "music": [(path.name, path.read_bytes()) for path in sorted(scenes.glob("music-*.flac"))],
        "noise": [("white.wav", wav_bytes((rng.standard_normal(5 * SAMPLE_RATE) * 0.1).astype(np.float32))),
                  ("pink.wav", wav_bytes(pink_noise(5.0, rng)))],
        "silence": [("silence-asterisk-10s.flac", (scenes / "silence-asterisk-10s.flac").read_bytes()),
                    ("zeros.wav", wav_bytes(np.zeros(3 * SAMPLE_RATE, np.float32))),
                    ("dc.wav", wav_bytes(np.full(3 * SAMPLE_RATE, 0.5, np.float32)))],
        "tones": [("tone-1s.wav", wav_bytes(tone(1.0)[:, 0])), ("tone-3s-1k.wav", wav_bytes(tone(3.0, freq=1000.0)[:, 0])),
                  ("tone-10ms.wav", wav_bytes(tone(0.01)[:, 0]))],
    }


# --------------------------------------------------------------------------- the server's state


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    return math.nan


def file_names(folder: Path) -> set[str]:
    return {os.path.relpath(os.path.join(top, name), folder) for top, _, files in os.walk(folder) for name in files}


@dataclass
class Sample:
    t: float  # seconds since the start of the timed run (negative: warm-up)
    rss_mb: float
    temp_files: int  # files in the server's temp dir that were not there when it became ready
    fds: int


class Sampler:
    """The server's RSS, open descriptors and new temp files, every ``every`` seconds, on a thread."""

    def __init__(self, pid: int, temp: Path, baseline: set[str], every: float):
        self.pid, self.temp, self.baseline, self.every = pid, temp, baseline, every
        self.samples: list[Sample] = []
        self.origin = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def take(self) -> Sample:
        sample = Sample(time.monotonic() - self.origin, proc_rss_mb(self.pid), len(file_names(self.temp) - self.baseline),
                        len(os.listdir(f"/proc/{self.pid}/fd")))
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.take()
            except OSError:  # the server is gone
                return

    def __enter__(self) -> Sampler:  # noqa: PYI034 - a final class
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- the load


@dataclass
class Record:
    start: float  # seconds since the start of the timed run
    seconds: float
    kind: str
    what: str  # the input or the malformed case
    outcome: str  # the HTTP status, "cancelled", "closed" (the server closed without an answer) or an error name
    expected: str  # what the outcome should be


async def normal(client: httpx.AsyncClient, kind: str, name: str, data: bytes, rng: random.Random) -> tuple[str, str]:
    if rng.random() < 1 / 3:
        response = await client.post(TAGS, files={"file": (name, data)}, data={"tag_resolution": "2.0"})
    else:
        response = await client.post(TRANSCRIBE, files={"file": (name, data)},
                                     data={"response_format": "verbose_json", "language": "en"})
    return str(response.status_code), "200"


async def malformed(client: httpx.AsyncClient, rng: random.Random) -> tuple[str, str, str]:
    case = rng.choice(CASES)
    response = await client.request(**case.request())
    return case.name, str(response.status_code), str(case.expected)


async def stalled(host: str, port: int, idle: float, rng: random.Random) -> tuple[str, str, str]:
    """A connection that stops inside its headers or its body; the answer should be 408 or a close."""
    where = rng.choice(("headers", "body"))
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if where == "headers":
            writer.write(f"POST {TRANSCRIBE} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form".encode())
        else:
            body = b"--soak\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n" + b"\0" * 2048
            writer.write(f"POST {TRANSCRIBE} HTTP/1.1\r\nHost: {host}\r\n"
                         f"Content-Type: multipart/form-data; boundary=soak\r\nContent-Length: 400000\r\n\r\n".encode()
                         + body)
        await writer.drain()
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=idle + 30.0)
        except asyncio.TimeoutError:
            return f"stalled {where}", "no answer", "408"
        status = line.split()[1].decode() if len(line.split()) > 1 else "closed"
        return f"stalled {where}", status, "408"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def cancelled(client: httpx.AsyncClient, name: str, data: bytes, rng: random.Random) -> tuple[str, str]:
    after = rng.uniform(0.2, 2.0)
    try:
        response = await asyncio.wait_for(
            client.post(TRANSCRIBE, files={"file": (name, data)}, data={"response_format": "verbose_json"}), after)
    except asyncio.TimeoutError:
        return "cancelled", "cancelled"
    return str(response.status_code), "cancelled"


async def one(client: httpx.AsyncClient, url: str, idle: float, kind: str, corpus, rng: random.Random
              ) -> tuple[str, str, str]:
    """One request of ``kind``: (what, outcome, expected)."""
    host, port = url.removeprefix("http://").split(":")
    try:
        if kind in NORMAL:
            name, data = rng.choice(corpus[kind])
            return (name, *await normal(client, kind, name, data, rng))
        if kind == "malformed":
            return await malformed(client, rng)
        if kind == "stalled":
            return await stalled(host, int(port), idle, rng)
        name, data = rng.choice(corpus["speech"])
        return (name, *await cancelled(client, name, data, rng))
    except httpx.RemoteProtocolError:
        return kind, "closed", "an answer"
    except (httpx.HTTPError, OSError) as error:
        return kind, type(error).__name__, "an answer"


async def load(url: str, corpus, minutes: float, concurrency: int, idle: float, seed: int, origin: float,
               progress: float) -> list[Record]:
    """``concurrency`` workers, each sending one request after another until ``minutes`` have passed."""
    records: list[Record] = []
    end = origin + minutes * 60
    kinds, weights = list(MIX), list(MIX.values())
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    next_report = origin + progress

    async def worker(index: int) -> None:
        nonlocal next_report
        rng = random.Random(seed * 1000 + index)
        async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT, limits=limits) as client:
            while time.monotonic() < end:
                kind = rng.choices(kinds, weights)[0]
                started = time.monotonic()
                what, outcome, expected = await one(client, url, idle, kind, corpus, rng)
                records.append(Record(started - origin, time.monotonic() - started, kind, what, outcome, expected))
                if time.monotonic() >= next_report:
                    next_report += progress
                    fives = sum(r.outcome.startswith("5") for r in records)
                    print(f"# {(time.monotonic() - origin) / 60:.1f} min: {len(records)} requests, {fives} 5xx",
                          file=sys.stderr, flush=True)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return records


async def warm_up(url: str, corpus, concurrency: int) -> None:
    """Every normal input once, ``concurrency`` at a time (not counted)."""
    jobs = [(kind, name, data) for kind in NORMAL for name, data in corpus[kind]]
    limit = asyncio.Semaphore(concurrency)
    rng = random.Random(0)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT) as client:
        async def send(kind, name, data):
            async with limit:
                await normal(client, kind, name, data, rng)

        await asyncio.gather(*(send(*job) for job in jobs))


# --------------------------------------------------------------------------- report


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def is_ok(record: Record) -> bool:
    if record.expected == "408":
        return record.outcome in ("408", "closed")
    if record.expected == "cancelled":
        return record.outcome in ("cancelled", "200")
    return record.outcome == record.expected


def report(records: list[Record], samples: list[Sample], args, minutes: float, warm_rss: float,
           baseline: set[str], left_running: set[str], left_after: set[str], log_tail: str) -> tuple[str, dict]:
    width = args.slice_minutes * 60
    slices = max(1, math.ceil(minutes * 60 / width - 1e-9))
    mix = ", ".join(f"{k} {v}" for k, v in MIX.items())
    header = ("| slice (min) | requests | 5xx | normal 200 | p50 s | p95 s | p99 s | speech p50 s | RSS end MB "
              "| RSS peak MB | new temp files | open fds |")
    about = (f"Mix (weights): {mix}. Normal requests: speech, music, noise, silence, tones (verbose_json with tags, "
             f"or tags only). Idle timeout {args.idle_timeout:g} s. RSS after the warm-up: {warm_rss:.0f} MB.")
    lines = [f"# Soak: {minutes:g} min at concurrency {args.concurrency}, {args.model}, {os.cpu_count()} CPUs", "",
             about, "", header, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for i in range(slices):
        low, high = i * width, (i + 1) * width
        inside = [r for r in records if low <= r.start < high]
        normal_ok = [r.seconds for r in inside if r.kind in NORMAL and r.outcome == "200"]
        speech_ok = [r.seconds for r in inside if r.kind == "speech" and r.outcome == "200"]
        during = [s for s in samples if low <= s.t < high + 1e-6] or samples[-1:]
        row = {"slice": f"{low / 60:g}-{min(high, minutes * 60) / 60:g}", "requests": len(inside),
               "5xx": sum(r.outcome.startswith("5") for r in inside), "normal_ok": len(normal_ok),
               "p50": percentile(normal_ok, 50), "p95": percentile(normal_ok, 95), "p99": percentile(normal_ok, 99),
               "speech_p50": percentile(speech_ok, 50), "rss_end": during[-1].rss_mb,
               "rss_peak": max(s.rss_mb for s in during), "temp_files": max(s.temp_files for s in during),
               "fds": during[-1].fds}
        rows.append(row)
        lines.append(f"| {row['slice']} | {row['requests']} | {row['5xx']} | {row['normal_ok']} | {row['p50']:.2f} "
                     f"| {row['p95']:.2f} | {row['p99']:.2f} | {row['speech_p50']:.2f} | {row['rss_end']:.0f} "
                     f"| {row['rss_peak']:.0f} | {row['temp_files']} | {row['fds']} |")

    by_kind: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        by_kind[r.kind][r.outcome] += 1
    lines += ["", "| kind | requests | outcomes |", "|---|---|---|"]
    for kind in MIX:
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(by_kind[kind].items()))
        lines.append(f"| {kind} | {sum(by_kind[kind].values())} | {outcomes} |")

    wrong = Counter((r.kind, r.what, r.outcome, r.expected) for r in records if not is_ok(r))
    fives = sum(r.outcome.startswith("5") for r in records)
    warm = rows[0]["rss_end"]
    final = samples[-1].rss_mb
    first, last = rows[0]["p50"], rows[-1]["p50"]
    checks = {
        "no 5xx": fives == 0,
        "final RSS within 10 % of the warm level": abs(final / warm - 1) <= 0.10,
        "no file left in the temp dir": not left_running and not left_after,
        "every request answered as expected": not wrong,
    }
    summary = (f"Warm level (RSS at the end of the first slice): {warm:.0f} MB; final {final:.0f} MB "
               f"({(final / warm - 1) * 100:+.1f} %); peak over the run {max(s.rss_mb for s in samples):.0f} MB. "
               f"Normal-request p50, last slice / first: {last / first:.2f}x. New files in the server's temp dir at "
               f"the end: {len(left_running)} (after it stopped: {len(left_after)}"
               f"{': ' + ', '.join(sorted(left_running | left_after)) if left_running or left_after else ''}); "
               f"there when it became ready: {', '.join(sorted(baseline)) or 'none'}.")
    lines += ["", summary, ""]
    lines += [f"- {'PASS' if passed else 'FAIL'}: {name}" for name, passed in checks.items()]
    if wrong:
        lines += ["", "| kind | what | got | expected | times |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {w} | {o} | {e} | {n} |" for (k, w, o, e), n in wrong.most_common()]
    if fives and log_tail:
        lines += ["", "Server log (tail):", "", "```", log_tail, "```"]
    data = {"args": {k: str(v) for k, v in vars(args).items()}, "slices": rows, "checks": checks,
            "outcomes": {k: dict(v) for k, v in by_kind.items()}, "warm_rss_mb": warm, "final_rss_mb": final,
            "temp_files": {"at_ready": sorted(baseline), "left": sorted(left_running), "left_after_stop": sorted(left_after)},
            "samples": [asdict(s) for s in samples], "records": [asdict(r) for r in records]}
    return "\n".join(lines), data


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the timed run (default 30)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--model", default="tiny.en", help="Whisper model the server loads (default tiny.en)")
    parser.add_argument("--slice-minutes", type=float, default=5.0, help="latency and RSS per slice of this (default 5)")
    parser.add_argument("--idle-timeout", type=float, default=5.0, help="the server's EARMARK_IDLE_TIMEOUT (default 5)")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="RSS and temp files every this (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="also write the markdown here")
    parser.add_argument("--json", type=Path, default=None, help="write every record and sample here as JSON")
    args = parser.parse_args()
    if args.minutes <= 0 or args.concurrency < 1 or args.slice_minutes <= 0:
        parser.error("--minutes, --concurrency and --slice-minutes must be positive")

    corpus = inputs()
    temp = Path(tempfile.mkdtemp(prefix="earmark-soak-tmp-"))
    env = {**SERVER_ENV, "EARMARK_MODEL": args.model, "EARMARK_DEVICE": "cpu", "EARMARK_API_KEYS": "",
           "EARMARK_IDLE_TIMEOUT": str(args.idle_timeout), "EARMARK_LOG_LEVEL": "warning",
           "TMPDIR": str(temp), "TMP": str(temp), "TEMP": str(temp)}
    print(f"# soak: {args.minutes:g} min, concurrency {args.concurrency}, model {args.model}; server temp dir {temp}",
          file=sys.stderr, flush=True)
    try:
        with server_process(env, timeout=600.0) as server:
            pid = server.process.pid
            baseline = file_names(temp)  # what the libraries write once at start (onnxruntime: .ses)
            asyncio.run(warm_up(server.url, corpus, args.concurrency))
            warm_rss = proc_rss_mb(pid)
            with Sampler(pid, temp, baseline, args.sample_seconds) as sampler:
                sampler.take()
                origin = sampler.origin
                records = asyncio.run(load(server.url, corpus, args.minutes, args.concurrency, args.idle_timeout,
                                           args.seed, origin, progress=60.0))
                time.sleep(1.0)  # let the server finish what the last cancelled requests left
                sampler.take()
            minutes = max(args.minutes, max((r.start for r in records), default=0) / 60)
            left_running = file_names(temp) - baseline
            log_tail = server.logs()[-4000:]
        left_after = file_names(temp) - baseline
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    text, data = report(records, sampler.samples, args, minutes, warm_rss, baseline, left_running, left_after, log_tail)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
