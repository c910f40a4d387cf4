"""Load test of the HTTP service on loopback: micro-batching on against micro-batching off.

For each configuration the script starts its own server (``uvicorn service.app:create_app``) on
a free loopback port, waits until it is ready, sends one warm-up request, then ``--requests``
transcription requests (verbose_json with tags) of one ~10 s speech clip at ``--concurrency``
through the async client, and stops the server. The clip is assembled from distinct real
recordings (tests/speech_fixtures.py), none repeated within it.

Reported per run: throughput (requests/s and audio seconds per second), latency p50/p95/p99,
errors by status, the server's RSS (VmRSS) when ready, after a warm-up burst ("before") and after the run, its peak (VmHWM), and
the mean number of 30 s windows per encoder call (from /metrics). Then the ratio of the two runs.

Run:  .venv/bin/python bench/bench_service.py [--requests 500] [--concurrency 16] [--model tiny.en]

The tagging head is a TL-Tr of the published shape with seeded weights (``--head seeded``): its
cost is that of any trained head of the same type, its tags mean nothing. Everything stays on
127.0.0.1 and every loop is bounded: the script stops by itself (``--max-seconds`` per run).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from service.client import AsyncClient, Client, EarmarkError

SAMPLE_RATE = 16000
# Encoder depth and width of the official models, to build a seeded head of the right shape.
HEAD_SHAPES = {"tiny": (4, 384), "base": (6, 512), "small": (12, 768), "medium": (24, 1024), "large": (32, 1280)}


# --------------------------------------------------------------------------- inputs


def speech_clip(seconds: float, gap: float = 0.3) -> tuple[bytes, float]:
    """About ``seconds`` (±0.5 s) of real speech, as 16-bit WAV bytes: distinct fixture recordings,
    each used once, joined by ``gap`` seconds of silence. Clips that would overshoot are skipped."""
    from speech_fixtures import speech_clips

    from tagger.audio import load_audio

    silence = np.zeros(round(gap * SAMPLE_RATE), np.float32)
    pieces: list[np.ndarray] = []
    length = 0
    for path, _transcript in speech_clips():
        if length >= (seconds - 0.5) * SAMPLE_RATE:
            break
        samples = load_audio(path)
        added = samples.size + (silence.size if pieces else 0)
        if length + added > (seconds + 0.5) * SAMPLE_RATE:
            continue
        pieces.extend([silence, samples] if pieces else [samples])
        length += added
    if length < (seconds - 0.5) * SAMPLE_RATE:
        raise SystemExit(f"the speech fixtures cannot make {seconds} s of distinct clips (got {length / SAMPLE_RATE:.1f} s)")
    pcm = (np.clip(np.concatenate(pieces), -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue(), len(pcm) / SAMPLE_RATE


def seeded_head(model: str, directory: Path) -> Path:
    import torch

    from tagger.heads import HeadCard, create_head, save_head
    from tagger.labels import audioset

    family = model.split(".")[0].split("-")[0]
    if family not in HEAD_SHAPES:
        raise SystemExit(f"no seeded head shape known for {model!r}; pass --head PATH or --head none")
    n_layers, d_model = HEAD_SHAPES[family]
    torch.manual_seed(0)
    module = create_head("tl_tr", n_layers, d_model).eval()
    card = HeadCard(head_type="tl_tr", n_layers=n_layers, d_model=d_model, labels=audioset(), source="bench-seeded")
    return save_head(module, card, directory / f"seeded-{model}.safetensors")


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MB (10^6 bytes)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024 / 1e6
    return values


class Server:
    """``uvicorn service.app:create_app`` in a child process, on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path, ready_timeout: float = 300.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        self.env = {**os.environ, "EARMARK_OFFLINE": "1", **env}
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:  # noqa: PYI034 - a final class
        command = [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
                   "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout
        with Client(self.url, retries=0, timeout=5.0) as client:
            while not client.ready():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    tail = self.log_path.read_text(errors="replace")[-3000:]
                    raise SystemExit(f"the server did not become ready (exit {self.process.returncode}):\n{tail}")
                time.sleep(0.25)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


# --------------------------------------------------------------------------- the load


@dataclass
class RunResult:
    name: str
    requests: int
    concurrency: int
    wall_s: float = 0.0
    ok: int = 0
    audio_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    rss_ready_mb: float = 0.0
    rss_warm_mb: float = 0.0  # after the warm-up burst: the "before" of the growth figure
    rss_after_mb: float = 0.0
    rss_peak_mb: float = 0.0
    windows_per_call: float | None = None

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]

    @property
    def req_per_s(self) -> float:
        return self.ok / self.wall_s if self.wall_s else 0.0

    @property
    def audio_per_s(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s else 0.0


async def load(url: str, clip: bytes, duration: float, requests: int, concurrency: int, max_seconds: float,
               result: RunResult, endpoint: str, on_warm=lambda: None) -> None:
    """``requests`` requests, ``concurrency`` at a time; none starts after ``max_seconds``.

    First a warm-up burst of ``concurrency`` requests at once (not counted) brings the server's
    buffers and allocator pools to their working size; ``on_warm`` runs after it."""
    counter = iter(range(requests))
    deadline = time.monotonic() + max_seconds
    errors: Counter[str] = Counter()

    async with AsyncClient(url, retries=0, timeout=max(60.0, max_seconds)) as client:
        async def send():
            if endpoint == "tags":
                return await client.tag(clip, filename="clip.wav")
            return await client.transcribe(clip, filename="clip.wav", tags=True, language="en")

        await asyncio.gather(*(send() for _ in range(concurrency)))  # warm-up, not counted
        on_warm()

        async def worker():
            for _ in counter:
                if time.monotonic() > deadline:
                    errors["not sent (--max-seconds)"] += 1
                    continue
                start = time.perf_counter()
                try:
                    await send()
                except EarmarkError as error:
                    errors[str(error.status or type(error).__name__)] += 1
                    continue
                result.latencies.append(time.perf_counter() - start)
                result.ok += 1
                result.audio_s += duration

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - start
    result.errors = dict(errors)


def windows_per_call(url: str) -> float | None:
    """Mean 30 s windows per encoder call, from the server's /metrics."""
    with Client(url, retries=0, timeout=10.0) as client:
        try:
            text = client.metrics()
        except EarmarkError:
            return None
    values = {}
    for line in text.splitlines():
        if line.startswith(("earmark_batch_windows_sum", "earmark_batch_windows_count")):
            name, _, value = line.partition(" ")
            values[name.split("{")[0]] = float(value)
    count = values.get("earmark_batch_windows_count")
    return values["earmark_batch_windows_sum"] / count if count else None


def run(name: str, env: dict[str, str], clip: bytes, duration: float, args, workdir: Path) -> RunResult:
    result = RunResult(name, args.requests, args.concurrency)
    with Server(env, workdir / f"server-{name.replace(' ', '-')}.log") as server:
        result.rss_ready_mb = rss_mb(server.pid)["VmRSS"]
        def record_warm() -> None:
            result.rss_warm_mb = rss_mb(server.pid)["VmRSS"]

        asyncio.run(load(server.url, clip, duration, args.requests, args.concurrency, args.max_seconds, result,
                         args.endpoint, record_warm))
        memory = rss_mb(server.pid)
        result.rss_after_mb, result.rss_peak_mb = memory["VmRSS"], memory["VmHWM"]
        result.windows_per_call = windows_per_call(server.url)
    return result


# --------------------------------------------------------------------------- report


def table(results: list[RunResult]) -> str:
    lines = [
        "| run | ok / sent | concurrency | req/s | audio s/s | p50 s | p95 s | p99 s | errors | windows/call "
        + "| RSS ready MB | RSS before MB | RSS after MB | growth | RSS peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items())) or "0"
        per_call = f"{r.windows_per_call:.2f}" if r.windows_per_call is not None else "n/a"
        lines.append(f"| {r.name} | {r.ok} / {r.requests} | {r.concurrency} | {r.req_per_s:.2f} | {r.audio_per_s:.1f} "
                     f"| {r.percentile(50):.2f} | {r.percentile(95):.2f} | {r.percentile(99):.2f} | {errors} "
                     f"| {per_call} | {r.rss_ready_mb:.0f} | {r.rss_warm_mb:.0f} | {r.rss_after_mb:.0f} "
                     f"| {(r.rss_after_mb / r.rss_warm_mb - 1) * 100:+.1f} % | {r.rss_peak_mb:.0f} |")
    if len(results) == 2 and results[1].req_per_s and results[1].percentile(50):
        a, b = results
        lines.append(f"| ratio {a.name} / {b.name} | | | {a.req_per_s / b.req_per_s:.2f}× "
                     f"| {a.audio_per_s / b.audio_per_s:.2f}× | {a.percentile(50) / b.percentile(50):.2f}× "
                     f"| {a.percentile(95) / b.percentile(95):.2f}× | {a.percentile(99) / b.percentile(99):.2f}× | "
                     f"| | | | | | {a.rss_peak_mb / b.rss_peak_mb:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="requests per run (default 500)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--model", default="tiny.en", help="Whisper model the server loads (default tiny.en)")
    parser.add_argument("--head", default="seeded", help="'seeded' (default), 'none', or a head checkpoint path")
    parser.add_argument("--endpoint", choices=("transcriptions", "tags"), default="transcriptions")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the speech clip (default 10)")
    parser.add_argument("--batch-size", type=int, default=8, help="EARMARK_MAX_BATCH_SIZE of the batched run (default 8)")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="no request starts later than this in a run")
    parser.add_argument("--threads", type=int, default=None, help="EARMARK_THREADS for the server (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args()
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be positive")

    clip, duration = speech_clip(args.seconds)
    with tempfile.TemporaryDirectory(prefix="earmark-bench-") as tmp:
        workdir = Path(tmp)
        env = {"EARMARK_MODEL": args.model, "EARMARK_DEVICE": "cpu",
               "EARMARK_QUEUE_SIZE": str(max(64, 2 * args.concurrency)), "EARMARK_API_KEYS": ""}
        if args.threads:
            env["EARMARK_THREADS"] = str(args.threads)
        if args.head == "seeded":
            env["EARMARK_HEAD"] = str(seeded_head(args.model, workdir))
        else:
            env["EARMARK_HEAD"] = args.head  # a path, or none
        print(f"# {args.requests} × {duration:.1f} s clip, concurrency {args.concurrency}, model {args.model}, "
              f"head {args.head}, endpoint {args.endpoint}, {os.cpu_count()} CPUs", flush=True)
        results = []
        for name, batch in ((f"batched (max {args.batch_size})", args.batch_size), ("unbatched (max 1)", 1)):
            print(f"# run: {name} ...", file=sys.stderr, flush=True)
            results.append(run(name, {**env, "EARMARK_MAX_BATCH_SIZE": str(batch)}, clip, duration, args, workdir))
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "clip_seconds": duration,
                   "runs": [{**asdict(r), "req_per_s": r.req_per_s, "audio_per_s": r.audio_per_s,
                             "p50": r.percentile(50), "p95": r.percentile(95), "p99": r.percentile(99)} for r in results]}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
