"""Peak memory of the HTTP service under rounds of long, highly compressed uploads.

Each upload is a ~2 MB FLAC holding hours of digital silence. For each kind of file the script
starts a fresh server (``uvicorn service.app:create_app``, its own loopback port, tiny.en, the
default settings: ``EARMARK_MAX_DURATION=7200``, two decode threads), sends one short speech request
to warm it up, then ``--rounds`` rounds of ``--concurrency`` such uploads at once, and reads the
server's VmRSS after each round and its peak (VmHWM) at the end:

- ``declared``: the FLAC's header declares its length (3 h): refused (413) before decoding;
- ``undeclared``: the same file with the length field of its header zeroed: it is decoded up to
  the 7200 s limit and then refused;
- ``speech``: a ~10 s speech clip, the baseline of a normal request.

Run:  .venv/bin/python bench/bench_memory.py [--rounds 3] [--concurrency 8] [--hours 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from bench_service import Server, rss_mb, speech_clip

from tagger.audio import write_flac

TRANSCRIBE = "/v1/audio/transcriptions"


def silence_flac(hours: float, declared: bool) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "silence.flac"
        write_flac(path, np.zeros(round(hours * 3600 * 16000), np.int16))
        data = bytearray(path.read_bytes())
    if not declared:  # STREAMINFO's 36-bit total-samples field: 0 means "unknown"
        fields = int.from_bytes(data[18:26], "big")
        data[18:26] = (fields & ~((1 << 36) - 1)).to_bytes(8, "big")
    return bytes(data)


async def round_of(url: str, data: bytes, concurrency: int) -> tuple[Counter, float]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        responses = await asyncio.gather(*(client.post(TRANSCRIBE, files={"file": ("a.flac", data)})
                                           for _ in range(concurrency)))
        return Counter(r.status_code for r in responses), time.perf_counter() - started


def measure(kind: str, data: bytes, warmup: bytes, args, workdir: Path) -> dict:
    env = {"EARMARK_MODEL": args.model, "EARMARK_DEVICE": "cpu"}
    with Server(env, workdir / f"{kind}.log") as server:
        httpx.post(server.url + TRANSCRIBE, files={"file": ("warm.wav", warmup)}, timeout=600).raise_for_status()
        ready = rss_mb(server.pid)["VmRSS"]
        statuses: Counter = Counter()
        seconds, after = [], []
        for _ in range(args.rounds):
            answered, took = asyncio.run(round_of(server.url, data, args.concurrency))
            statuses += answered
            seconds.append(took)
            after.append(rss_mb(server.pid)["VmRSS"])
        peak = rss_mb(server.pid)["VmHWM"]
    return {"kind": kind, "bytes": len(data), "statuses": dict(statuses), "round_s": seconds,
            "rss_warm": ready, "rss_after": after, "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--hours", type=float, default=3.0, help="hours of silence in each FLAC")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--kinds", default="declared,undeclared,speech")
    args = parser.parse_args()

    speech, _ = speech_clip(10.0)
    inputs = {"declared": lambda: silence_flac(args.hours, True), "undeclared": lambda: silence_flac(args.hours, False),
              "speech": lambda: speech}
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.kinds.split(","):
            results.append(measure(kind, inputs[kind](), speech, args, Path(folder)))
            print(results[-1], flush=True)
    print(f"\n{args.rounds} rounds of {args.concurrency} uploads at once, model {args.model}; RSS in MB (10^6 bytes)\n")
    print("| upload | size | answers | s per round | RSS warm | RSS after each round | peak RSS | peak - warm |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        answers = ", ".join(f"{n}x {status}" for status, n in sorted(r["statuses"].items()))
        rounds = " / ".join(f"{s:.1f}" for s in r["round_s"])
        after = " / ".join(f"{m:.0f}" for m in r["rss_after"])
        print(f"| {r['kind']} | {r['bytes'] / 1e6:.1f} MB | {answers} | {rounds} | {r['rss_warm']:.0f} | {after} "
              f"| {r['peak']:.0f} | {r['peak'] - r['rss_warm']:+.0f} |")


if __name__ == "__main__":
    main()
