"""Live streams at real-time pace: how far behind the audio the partial and final text arrive, and
how many streams keep up, with and without file uploads beside them.

For each model and each number of concurrent streams the script starts its own server (``earmark
serve`` on a free loopback port, offline, ``tests/service_server.py``), then opens that many
WebSocket streams at once (``service.client.AsyncClient.stream``). Each stream sends
``--seconds`` of real speech (distinct recordings, tests/speech_fixtures.py; each stream starts at
another recording) as 16-bit PCM in 100 ms messages, paced at real time. With ``--uploads N``,
N clients post a 10 s clip to ``/v1/audio/transcriptions`` in a loop meanwhile.

Before measuring, one 20 s upload and one 5 s stream warm the server up (not counted).
Latency of an event: the time it arrives minus the time the last audio it covers was sent
(a partial covers up to its ``end``, a final segment up to its ``end``). Reported per run: partial
and final latency p50 and p95, the final latency of the first and the last third of the stream
(growing lag shows there), how long ``done`` took after the end message, and whether the streams
kept up: final lag in the last third no more than ``--lag-slack`` s above the first third, and
``done`` within a window's time (30 s) of the end.

Run:  .venv/bin/python bench/bench_stream.py --models tiny.en,base --streams 1,2,4,6 --seconds 120  # at most 130
      .venv/bin/python bench/bench_stream.py --models tiny.en --streams 4 --uploads 2
      .venv/bin/python bench/bench_stream.py --models tiny.en --streams 1 --seconds 20   # a short check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from service.client import AsyncClient, StreamDone, StreamPartial, StreamSegment

SAMPLE_RATE = 16000
FRAME = 3200  # bytes per message: 100 ms of 16 kHz s16 mono
FIXTURE_SECONDS = 130.0  # distinct speech the fixtures hold (135.7 s): the longest stream


def speech(seconds: float, offset: int) -> bytes:
    """``seconds`` of distinct real speech as 16-bit PCM, starting ``offset`` recordings in."""
    from speech_fixtures import long_speech

    audio, spans = long_speech(min(seconds + 60.0, FIXTURE_SECONDS))
    if seconds * SAMPLE_RATE > len(audio):
        raise SystemExit(f"the speech fixtures hold {len(audio) / SAMPLE_RATE:.0f} s of distinct recordings; "
                         f"--seconds {seconds:g} is more (a repeated clip would trip Whisper's fallback)")
    start = round(spans[offset % len(spans)][0] * SAMPLE_RATE)
    audio = np.concatenate([audio[start:], audio[:start]])[: round(seconds * SAMPLE_RATE)]
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


async def one_stream(url: str, pcm: bytes, language: str | None) -> dict:
    sent_at: list[tuple[int, float]] = []  # (bytes sent so far, when)

    async def chunks():
        started = time.monotonic()
        for i in range(0, len(pcm), FRAME):
            wait = started + i / (2 * SAMPLE_RATE) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            yield pcm[i : i + FRAME]
            sent_at.append((i + len(pcm[i : i + FRAME]), time.monotonic()))

    def sent_time(seconds: float) -> float | None:
        wanted = round(seconds * SAMPLE_RATE) * 2
        for count, when in sent_at:
            if count >= wanted:
                return when
        return sent_at[-1][1] if sent_at else None

    partial, final = [], []
    done_after = None
    async with AsyncClient(url, timeout=None) as client:
        async for event in client.stream(chunks(), language=language):
            now = time.monotonic()
            if isinstance(event, StreamPartial) and (sent := sent_time(event.end)) is not None:
                partial.append(now - sent)
            elif isinstance(event, StreamSegment) and (sent := sent_time(event.end)) is not None:
                final.append((event.end, now - sent))
            elif isinstance(event, StreamDone):
                done_after = now - sent_at[-1][1]
    return {"partial": partial, "final": final, "done_after": done_after}


async def uploader(url: str, wav: bytes, stop: asyncio.Event, counts: dict) -> None:
    async with AsyncClient(url, timeout=None, retries=0) as client:
        while not stop.is_set():
            try:
                await client.transcribe(wav, language="en")
                counts["ok"] += 1
            except Exception:  # noqa: BLE001 - counted, the run goes on
                counts["failed"] += 1


async def run(url: str, streams: int, seconds: float, uploads: int, language: str | None, slack: float) -> dict:
    from bench_service import speech_clip

    audio = [speech(seconds, 3 * i) for i in range(streams)]
    stop, counts = asyncio.Event(), {"ok": 0, "failed": 0}
    wav = speech_clip(10.0)[0]
    async with AsyncClient(url, timeout=None) as client:  # warm-up, not measured: a fresh server's first calls are slow
        await client.transcribe(speech_clip(20.0)[0], language="en")
        async for _ in client.stream([audio[0][: 5 * 2 * SAMPLE_RATE]], language="en"):
            pass
    workers = [asyncio.create_task(uploader(url, wav, stop, counts)) for _ in range(uploads)]
    results = await asyncio.gather(*(one_stream(url, pcm, language) for pcm in audio))
    stop.set()
    await asyncio.gather(*workers)
    partial = [x for r in results for x in r["partial"]]
    finals = [(end, lag) for r in results for end, lag in r["final"]]
    first = [lag for end, lag in finals if end <= seconds / 3]
    last = [lag for end, lag in finals if end >= 2 * seconds / 3]
    done = [r["done_after"] for r in results if r["done_after"] is not None]
    first_median = statistics.median(first) if first else None
    last_median = statistics.median(last) if last else None
    kept_up = (len(done) == streams and max(done) <= 30.0 and first_median is not None and last_median is not None
               and last_median <= first_median + slack)
    return {"streams": streams, "uploads": uploads, "seconds": seconds,
            "partial_p50": percentile(partial, 50), "partial_p95": percentile(partial, 95), "partials": len(partial),
            "final_p50": percentile([lag for _, lag in finals], 50), "final_p95": percentile([lag for _, lag in finals], 95),
            "finals": len(finals), "final_first_third_median": first_median, "final_last_third_median": last_median,
            "done_after_max": max(done) if done else None, "uploads_ok": counts["ok"], "uploads_failed": counts["failed"],
            "kept_up": kept_up}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny.en", help="comma-separated Whisper models (default: tiny.en)")
    parser.add_argument("--streams", default="1,2,4", help="comma-separated numbers of concurrent streams")
    parser.add_argument("--seconds", type=float, default=120.0, help="audio per stream, sent at real time")
    parser.add_argument("--uploads", type=int, default=0, help="clients uploading a 10 s clip in a loop meanwhile")
    parser.add_argument("--language", default="en")
    parser.add_argument("--lag-slack", type=float, default=10.0,
                        help="seconds the final lag may grow from the first to the last third and still keep up")
    parser.add_argument("--stop-after-fail", action="store_true", help="stop raising the stream count once one falls behind")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    from service_server import server_process

    rows = []
    for model in args.models.split(","):
        for streams in [int(n) for n in args.streams.split(",")]:
            env = {"EARMARK_MODEL": model, "EARMARK_MAX_STREAMS": str(streams + 4)}
            with server_process(env, timeout=600) as server:
                row = {"model": model, **asyncio.run(run(server.url, streams, args.seconds, args.uploads,
                                                         args.language, args.lag_slack))}
            rows.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            if args.stop_after_fail and not row["kept_up"]:
                break
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
