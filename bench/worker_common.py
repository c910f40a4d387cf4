"""What every benchmark worker shares; the standard library and numpy only, so it runs in any venv.

A worker is a long-lived process that loads one system once, prints a ``ready`` JSON line, then
answers one JSON line per request on stdin (``{"op": "run", ...}``) with one JSON line on stdout,
timing itself. The suite keeps all workers alive and sends ``run`` to each in turn, so the runs
of different systems are interleaved round by round while each system stays in its own process
(and venv) with its own peak RSS. ``--loop N --audio FILE`` instead runs N times and prints one
JSON object, for use by hand.

Anything a library prints goes to stderr: stdout carries the protocol only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
_PROTOCOL = sys.stdout


def protect_stdout() -> None:
    """Send stray prints (progress bars, warnings) to stderr; keep stdout for the protocol."""
    global _PROTOCOL
    _PROTOCOL = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr


def send(message: dict) -> None:
    _PROTOCOL.write(json.dumps(message) + "\n")
    _PROTOCOL.flush()


def set_threads(threads: int | None) -> None:
    """Torch's intra-op threads (where torch is present); call before any heavy work."""
    if not threads:
        return
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


_AUDIO: dict[str, np.ndarray] = {}


def read_wav(path: str | os.PathLike) -> np.ndarray:
    """16 kHz mono 16-bit WAV (the benchmark inputs) as float32 in [-1, 1]; cached per path."""
    key = str(path)
    if key not in _AUDIO:
        with wave.open(key, "rb") as f:
            if (f.getframerate(), f.getnchannels(), f.getsampwidth()) != (SAMPLE_RATE, 1, 2):
                raise ValueError(f"{path}: expected 16 kHz mono 16-bit WAV")
            pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
        _AUDIO[key] = (pcm.astype(np.float32) / 32768.0)
    return _AUDIO[key]


def memory() -> dict[str, float]:
    """VmRSS and VmHWM (peak) of this process, MB (10^6 bytes)."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024 / 1e6
    return {"rss_mb": values.get("VmRSS", 0.0), "peak_rss_mb": values.get("VmHWM", 0.0)}


def timed(function: Callable[[], dict | None]) -> dict:
    start = time.perf_counter()
    extra = function() or {}
    return {"seconds": time.perf_counter() - start, **extra}


def serve(name: str, load: Callable[[], dict], handlers: dict[str, Callable[[dict], dict]]) -> None:
    """Load, report ``ready``, then answer requests until ``quit`` or end of input."""
    protect_stdout()
    try:
        start = time.perf_counter()
        info = load() or {}
        info["load_seconds"] = time.perf_counter() - start
    except Exception as error:  # noqa: BLE001 - reported to the suite, which decides
        send({"ready": False, "error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()})
        return
    send({"ready": True, "worker": name, "python": platform.python_version(), "pid": os.getpid(), **info,
          **memory()})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.get("op")
        if op == "quit":
            send({"ok": True, **memory()})
            return
        if op == "memory":
            send({"ok": True, **memory()})
            continue
        handler = handlers.get(op)
        if handler is None:
            send({"ok": False, "error": f"unknown op {op!r}"})
            continue
        try:
            send({"ok": True, **handler(request), **memory()})
        except Exception as error:  # noqa: BLE001
            send({"ok": False, "error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()})


def command_line(doc: str | None) -> argparse.ArgumentParser:
    """A worker's command line with the flags every worker takes; the worker adds its own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--loop", type=int, default=0, help="by hand: run this many times and print one JSON")
    parser.add_argument("--audio", default=None)
    parser.add_argument("--language", default="en")
    return parser


def main(name: str, args: argparse.Namespace, worker, handlers: dict[str, Callable[[dict], dict]],
         loop_request: dict | None = None) -> None:
    """Run a worker: ``--loop N`` by hand, else serve the suite's requests on stdin."""
    if args.loop:
        request = {"audio": args.audio, "language": args.language, **(loop_request or {})}
        loop_main(name, worker.load, worker.run, request, args.loop)
    else:
        serve(name, worker.load, handlers)


def loop_main(name: str, load: Callable[[], dict], run: Callable[[dict], dict], argv_request: dict, loops: int) -> None:
    """By hand: load, one warm-up, ``loops`` timed runs; print one JSON object."""
    protect_stdout()
    start = time.perf_counter()
    info = load() or {}
    info["load_seconds"] = time.perf_counter() - start
    run(argv_request)
    runs = [run(argv_request) for _ in range(loops)]
    send({"worker": name, **info, "seconds": [r["seconds"] for r in runs], "last": runs[-1], **memory()})
