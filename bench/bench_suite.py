"""Earmark against its peers, side by side in one run; writes docs/benchmarks.md.

What it measures (same weights, same audio, same threads, every system in its own process):

1. Wall time per input (10 s, 30 s, 10 min of real recordings, bench/bench_inputs.py) of
   Earmark transcript only, Earmark transcript + tags (joint, one encoder pass), Earmark in two
   passes (transcribe, then tag in a second call), the original Whisper-AT code
   (``whisper-at`` 0.5, ``transcribe(at_time_res=10)``) and faster-whisper (transcript only:
   ``WhisperModel.transcribe`` in int8 and float32, and ``BatchedInferencePipeline`` in int8 with
   batch_size 8 and its own VAD). The runs are interleaved: each round runs every system once, in an order
   that rotates from round to round. Reported: median, min-max, and ratios computed pair by pair
   within each round (median and min-max of the per-round ratios).
2. Agreement of the tag probabilities with Whisper-AT's, on the same windows and the same head.
3. Peak RSS of each system (each runs in its own process).
4. The encoder alone on one 30 s window (Earmark batch 1 and 8, Whisper-AT).
5. "Where the time goes" in one joint request (decode, log-mel, encoder, head, decoder).
6. The HTTP service under loopback load at concurrency 1, 4, 16 (quick: 1, 4), micro-batching on and off
   (bench/bench_service.py's server and load generator).
7. Words on non-speech (bench/bench_nonspeech.py): the share of real non-speech clips each system
   writes words for, and its slowest clip. Full mode only (its clips come from Debian packages),
   unless ``--nonspeech-clips N``; ``--nonspeech-json FILE`` puts a separate run's results in.

Modes: ``--mode quick`` (CI smoke: tiny.en, one run, the inputs made from tests/fixtures, no
network; a couple of minutes) writes bench/results/benchmarks-quick.md; ``--mode full`` (base,
5 runs, the 10-minute file from Debian packages) writes docs/benchmarks.md and its raw numbers
in docs/benchmarks.json. ``--device cuda`` runs the same suite on a GPU (fp16 where the systems
use it) and adds a GPU section to the same document.

Peers come from bench/bench_peers.py (``setup`` creates their venvs); a missing peer is left
out of the tables with a note. The tagging head is a TL-Tr of the published shape with seeded
weights, saved in the official Whisper-AT layout (``--head PATH`` takes a trained one).

Run: .venv/bin/python bench/bench_suite.py --mode quick
     .venv/bin/python bench/bench_suite.py --mode full [--model base] [--runs 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import selectors
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

import bench_inputs
import bench_peers

FLOOR_SPEEDUP = 3.0  # Earmark joint against the original Whisper-AT code, 10-minute file, CPU
FLOOR_AGREEMENT = 1e-3  # largest difference of a tag probability on the same window
FLOOR_OVERHEAD = 1.02  # transcript + tags against transcript only (issue floor; goal 1.01)
GOAL_OVERHEAD = 1.01

SECTIONS = ("systems", "overhead", "encoder", "memory", "profile", "server", "nonspeech")
FW_BATCH = 8  # faster-whisper's BatchedInferencePipeline batch_size
REQUEST_TIMEOUT = 3 * 3600.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- workers


class WorkerError(RuntimeError):
    pass


class Worker:
    """A benchmark worker process (bench/worker_*.py) in some venv, spoken to in JSON lines."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.command = command
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen | None = None
        self.info: dict = {}
        self._buffer = b""

    def start(self, timeout: float = 900.0) -> dict:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open for the life of the worker
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._log)
        self.info = self._read(timeout)
        if not self.info.get("ready"):
            self.close()
            raise WorkerError(f"{self.name} did not start: {self.info.get('error')}\n{self.info.get('trace', '')}"
                              f"{self._tail()}")
        return self.info

    def request(self, op: str, timeout: float = REQUEST_TIMEOUT, **fields) -> dict:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
        self.process.stdin.flush()
        answer = self._read(timeout)
        if not answer.get("ok"):
            raise WorkerError(f"{self.name} {op} failed: {answer.get('error')}\n{answer.get('trace', '')}")
        return answer

    def _read(self, timeout: float) -> dict:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        try:
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkerError(f"{self.name}: no answer in {timeout:.0f} s{self._tail()}")
                if not selector.select(min(left, 5.0)):
                    if self.process.poll() is not None:
                        raise WorkerError(f"{self.name} exited with {self.process.returncode}{self._tail()}")
                    continue
                chunk = os.read(self.process.stdout.fileno(), 1 << 16)
                if not chunk:
                    self.process.wait(5)
                    raise WorkerError(f"{self.name} exited with {self.process.returncode}{self._tail()}")
                self._buffer += chunk
        finally:
            selector.close()
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _tail(self) -> str:
        try:
            return "\n--- worker log (tail) ---\n" + self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """End a worker that does not answer (no final memory reading)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        if getattr(self, "_log", None):
            self._log.close()
        self._buffer = b""

    def close(self) -> dict:
        final = {}
        if self.process is not None and self.process.poll() is None:
            try:
                final = self.request("quit", timeout=60)
            except (WorkerError, OSError, ValueError):
                pass
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if getattr(self, "_log", None):
            self._log.close()
        return final


def worker_env(threads: int) -> dict[str, str]:
    env = {**os.environ, "EARMARK_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    return env


# --------------------------------------------------------------------------- statistics


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": values}


def fmt_s(stats: dict | None, digits: int = 2) -> tuple[str, str]:
    if not stats:
        return "n/a", "n/a"
    return f"{stats['median']:.{digits}f}", f"{stats['min']:.{digits}f}–{stats['max']:.{digits}f}"


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory, 1), "os": os_name,
            "python": platform.python_version()}


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------- the systems


def batched_label(compute_type: str) -> str:
    return f"faster-whisper {compute_type} batched (batch {FW_BATCH} + its VAD), transcript only"


def plan_systems(args, head_file: Path, low: bool, at_root: Path | None, ct2: Path | None, workdir: Path) -> tuple[dict, list, dict]:
    """Workers to start and the candidates each round runs: (workers, candidates, notes)."""
    env = worker_env(args.threads)
    workers: dict[str, Worker] = {}
    notes: dict[str, str] = {}
    earmark = [sys.executable, str(BENCH / "worker_earmark.py"), "--model", args.model, "--head", str(head_file),
               "--device", args.device, "--threads", str(args.threads)]
    workers["earmark"] = Worker("earmark", earmark, env, workdir / "worker-earmark.log")
    candidates = [
        ("Earmark transcript only", "earmark", {"mode": "transcript"}),
        ("Earmark transcript + tags", "earmark", {"mode": "joint"}),
        ("Earmark two passes (transcribe, then tag)", "earmark", {"mode": "two_pass"}),
    ]
    if "whisper-at" in args.peers:
        problem = bench_peers.available("whisper-at")
        if problem:
            notes["whisper-at"] = problem
        else:
            command = [str(bench_peers.peer_python("whisper-at")), str(BENCH / "worker_whisper_at.py"),
                       "--root", str(at_root), "--model", args.model, "--device", args.device,
                       "--threads", str(args.threads)] + (["--low"] if low else [])
            workers["whisper-at"] = Worker("whisper-at", command, env, workdir / "worker-whisper-at.log")
            candidates.append(("Whisper-AT 0.5 (original code), transcript + tags", "whisper-at", {}))
    if "faster-whisper" in args.peers:
        problem = bench_peers.available("faster-whisper")
        if problem:
            notes["faster-whisper"] = problem
        else:
            types = ("int8", "float32") if args.device == "cpu" else ("int8_float16", "float16")
            # (key, compute type, batch size, label): sequential in both types, batched in the first
            plans = [(f"faster-whisper-{t}", t, 0, f"faster-whisper {t}, transcript only") for t in types]
            plans.insert(1, (f"faster-whisper-{types[0]}-batched", types[0], FW_BATCH, batched_label(types[0])))
            for key, compute_type, batch, label in plans:
                command = [str(bench_peers.peer_python("faster-whisper")), str(BENCH / "worker_faster_whisper.py"),
                           "--model-dir", str(ct2), "--compute-type", compute_type, "--batch-size", str(batch),
                           "--device", args.device.split(":")[0], "--threads", str(args.threads)]
                workers[key] = Worker(key, command, env, workdir / f"worker-{key}.log")
                candidates.append((label, key, {}))
    return workers, candidates, notes


def run_systems(args, inputs: dict[str, Path], workers: dict[str, Worker], candidates: list, workdir: Path) -> dict:
    """Interleaved rounds per input; per-round times, counters, texts; files for the agreement check."""
    results: dict[str, dict] = {}
    shortest = min(inputs, key=lambda name: bench_inputs.manifest(inputs[name])["seconds"])
    log(f"warm-up on {shortest}")
    for label, key, fields in candidates:
        workers[key].request("run", audio=str(inputs[shortest]), language=args.language, **fields)
    for name, path in inputs.items():
        seconds = bench_inputs.manifest(path)["seconds"]
        per: dict[str, dict] = {label: {"times": [], "runs": []} for label, _, _ in candidates}
        order = list(range(len(candidates)))
        rounds = args.warmup + args.runs
        for round_index in range(rounds):
            counted = round_index >= args.warmup
            shift = round_index % len(order)
            log(f"{name}: round {round_index + 1}/{rounds}{'' if counted else ' (warm-up)'}, load {load_average()}")
            for position in order[shift:] + order[:shift]:
                label, key, fields = candidates[position]
                request = {"audio": str(path), "language": args.language, **fields}
                first = counted and not per[label]["times"]
                if first and key == "whisper-at":
                    request["save"] = str(workdir / f"{name}-whisper-at.npy")
                if first and fields.get("mode") == "joint":
                    request["save"] = str(workdir / f"{name}-earmark.npy")
                answer = workers[key].request("run", **request)
                if counted:
                    per[label]["times"].append(answer["seconds"])
                    per[label]["runs"].append({k: v for k, v in answer.items()
                                               if k not in ("ok", "text", "trace")} | {"round": round_index})
                    per[label]["text"] = answer.get("text")
        for label, _, _ in candidates:
            per[label]["stats"] = summary(per[label]["times"])
            per[label]["rtf"] = per[label]["stats"]["median"] / seconds
        if "whisper-at" in workers:
            answer = workers["whisper-at"].request("tag_windows", audio=str(path),
                                                   save=str(workdir / f"{name}-whisper-at-windows.npy"))
            per["_whisper_at_tag_windows"] = {"seconds": answer["seconds"], "rows": answer["rows"]}
        results[name] = {"seconds": seconds, "systems": per}
    return results


PAIRS = [
    # (numerator, denominator, what the ratio says)
    ("Earmark transcript + tags", "Earmark transcript only", f"tag overhead on one pass (floor ≤ {FLOOR_OVERHEAD:g}, goal ≤ {GOAL_OVERHEAD:g})"),
    ("Earmark two passes (transcribe, then tag)", "Earmark transcript + tags", "two passes against one"),
    ("Whisper-AT 0.5 (original code), transcript + tags", "Earmark transcript + tags",
     f"Earmark's speed-up over the original code (floor ≥ {FLOOR_SPEEDUP:g} on 10 min)"),
    ("Whisper-AT 0.5 (original code), transcript + tags", "Earmark transcript only",
     "original joint code against Earmark transcript only"),
    ("Earmark transcript + tags", "Whisper-AT 0.5 (original code), transcript + tags",
     "Earmark joint against the original Whisper-AT code"),
    ("Earmark transcript + tags", "faster-whisper int8, transcript only", "Earmark joint against faster-whisper int8 (sequential)"),
    ("Earmark transcript + tags", batched_label("int8"), "Earmark joint against faster-whisper int8 batched"),
    (batched_label("int8"), "faster-whisper int8, transcript only", "faster-whisper batched against sequential"),
    ("Earmark transcript + tags", "faster-whisper float32, transcript only", "Earmark joint against faster-whisper float32"),
    ("Earmark transcript only", "faster-whisper float32, transcript only", "Earmark transcript against faster-whisper float32"),
    ("Earmark transcript + tags", "faster-whisper float16, transcript only", "Earmark joint against faster-whisper float16"),
    ("Earmark transcript + tags", "faster-whisper int8_float16, transcript only", "Earmark joint against faster-whisper int8_float16"),
    ("Earmark transcript + tags", batched_label("int8_float16"), "Earmark joint against faster-whisper int8_float16 batched"),
    (batched_label("int8_float16"), "faster-whisper int8_float16, transcript only", "faster-whisper batched against sequential"),
]

# Earmark joint against each peer, one column each in the summary table: (label, column heading)
PEERS_FOR_JOINT = [
    ("faster-whisper int8, transcript only", "faster-whisper int8 sequential"),
    (batched_label("int8"), f"faster-whisper int8 batched (batch {FW_BATCH})"),
    ("faster-whisper int8_float16, transcript only", "faster-whisper int8_float16 sequential"),
    (batched_label("int8_float16"), f"faster-whisper int8_float16 batched (batch {FW_BATCH})"),
    ("Whisper-AT 0.5 (original code), transcript + tags", "Whisper-AT 0.5 (original code)"),
]


def pair_ratios(per: dict) -> list[dict]:
    rows = []
    for top, bottom, meaning in PAIRS:
        if top not in per or bottom not in per:
            continue
        a, b = per[top]["times"], per[bottom]["times"]
        ratios = [x / y for x, y in zip(a, b)]
        if ratios:
            rows.append({"top": top, "bottom": bottom, "meaning": meaning, **summary(ratios)})
    return rows


# --------------------------------------------------------------------------- agreement and WER


def agreement(name: str, path: Path, workdir: Path) -> dict | None:
    """Earmark's joint tag probabilities against Whisper-AT's on the same windows.

    ``windows``: Whisper-AT's own encoder + head run on every full 30 s window Earmark encodes.
    ``transcribe``: the rows ``whisper_at.transcribe`` returns, where the row's last writer was a
    window at a seek that is a multiple of 30 s (the same encoder input as Earmark's)."""
    earmark_file = workdir / f"{name}-earmark.npy"
    if not earmark_file.is_file():
        return None
    earmark = np.load(earmark_file)
    out: dict = {"earmark_rows": int(earmark.shape[0])}
    windows_file = workdir / f"{name}-whisper-at-windows.npy"
    if windows_file.is_file():
        logits = np.load(windows_file)
        theirs = 1 / (1 + np.exp(-logits.astype(np.float64)))
        n = min(len(theirs), len(earmark))
        diff = np.abs(theirs[:n] - earmark[:n])
        out["windows"] = {"rows": n, "max_abs_diff": float(diff.max()) if n else None,
                          "mean_abs_diff": float(diff.mean()) if n else None,
                          "top1_agree": int((theirs[:n].argmax(1) == earmark[:n].argmax(1)).sum()) if n else 0}
    transcribe_file = workdir / f"{name}-whisper-at.npy"
    if transcribe_file.is_file():
        logits = np.load(transcribe_file)
        meta = json.loads(transcribe_file.with_suffix(".json").read_text())
        frames_per_row = round(meta["at_time_res"] * 100)
        writer: dict[int, int] = {}
        for seek, count in meta["at_calls"]:
            first = seek // frames_per_row
            for row in range(first, min(meta["rows"], first + count)):
                writer[row] = seek
        full_windows = meta["content_frames"] // 3000
        same = [row for row, seek in sorted(writer.items())
                if seek % 3000 == 0 and seek // 3000 < full_windows and row < len(earmark)]
        theirs = 1 / (1 + np.exp(-logits.astype(np.float64)))
        other = [row for row in writer if row not in same and row < len(earmark)]
        block = {"rows": meta["rows"], "same_window_rows": len(same), "other_rows": len(other)}
        if same:
            diff = np.abs(theirs[same] - earmark[same])
            block.update(max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()))
        if other:
            block["other_max_abs_diff"] = float(np.abs(theirs[other] - earmark[other]).max())
        out["transcribe"] = block
    return out


def word_error_rate(text: str | None, reference: str) -> float | None:
    if text is None or not reference.strip():
        return None
    try:
        import jiwer
        from whisper.normalizers import EnglishTextNormalizer
    except ImportError:
        return None
    normalise = EnglishTextNormalizer()
    truth, guess = normalise(reference), normalise(text)
    return float(jiwer.wer(truth, guess)) if truth.strip() else None


# --------------------------------------------------------------------------- other sections


def run_encoder(args, inputs: dict[str, Path], workers: dict[str, Worker]) -> dict:
    clip = inputs.get("30s") or next(iter(inputs.values()))
    repeat = max(3, args.runs)
    results: dict[str, list[float]] = {"Earmark encoder, batch 1": [], "Earmark encoder, batch 8 (per window)": []}
    if "whisper-at" in workers:
        results["Whisper-AT encoder (no SDPA), batch 1"] = []
    for _ in range(repeat):
        results["Earmark encoder, batch 1"].append(workers["earmark"].request("encoder", audio=str(clip), batch=1)["seconds"])
        results["Earmark encoder, batch 8 (per window)"].append(
            workers["earmark"].request("encoder", audio=str(clip), batch=8)["seconds"] / 8)
        if "whisper-at" in workers:
            results["Whisper-AT encoder (no SDPA), batch 1"].append(
                workers["whisper-at"].request("encoder", audio=str(clip))["seconds"])
    return {label: summary(values) for label, values in results.items()}


def run_profile(args, inputs: dict[str, Path], worker: Worker) -> dict:
    out = {}
    for name in [n for n in (("30s", "600s") if args.mode == "full" else ("30s",)) if n in inputs] or [next(iter(inputs))]:
        runs = [worker.request("profile", audio=str(inputs[name]), language=args.language)
                for _ in range(args.profile_runs)]
        stages = {stage: statistics.median(r["stages"].get(stage, 0.0) for r in runs) for stage in runs[0]["stages"]}
        out[name] = {"total": statistics.median(r["seconds"] for r in runs), "stages": stages,
                     "duration": runs[0]["duration"], "encoder_windows": runs[0]["encoder_windows"],
                     "decode_calls": runs[0]["decode_calls"], "fallback_decodes": runs[0]["fallback_decodes"]}
    return out


def run_overhead(args, inputs: dict[str, Path], worker: Worker) -> dict:
    """Tag overhead from adjacent pairs in one process (the interleaved rounds put minutes and
    other systems between the two runs, so machine drift enters their ratio)."""
    name = "600s" if "600s" in inputs else max(inputs, key=lambda n: bench_inputs.manifest(inputs[n])["seconds"])
    pairs = worker.request("overhead", audio=str(inputs[name]), language=args.language,
                           pairs=args.overhead_pairs, timeout=7200)["pairs"]
    ratios = [p["joint"] / p["transcript"] for p in pairs]
    return {"input": name, "pairs": pairs, "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def run_memory(args, inputs: dict[str, Path], head_file: Path, workdir: Path) -> dict:
    """Earmark in fresh processes, one configuration each, one run on the longest input."""
    by_length = sorted(inputs, key=lambda n: bench_inputs.manifest(inputs[n])["seconds"])
    longest = by_length[-1] if args.mode == "full" else by_length[min(1, len(by_length) - 1)]
    out = {}
    for label, mode, head in (("Earmark transcript only (no head loaded)", "transcript", "none"),
                              ("Earmark transcript + tags", "joint", str(head_file))):
        command = [sys.executable, str(BENCH / "worker_earmark.py"), "--model", args.model, "--head", head,
                   "--device", args.device, "--threads", str(args.threads)]
        worker = Worker(f"earmark-{mode}-memory", command, worker_env(args.threads), workdir / f"worker-memory-{mode}.log")
        ready = worker.start()
        answer = worker.request("run", audio=str(inputs[longest]), mode=mode, language=args.language)
        worker.close()
        out[label] = {"input": longest, "after_load_mb": ready["rss_mb"], "peak_rss_mb": answer["peak_rss_mb"]}
    return out


def run_server(args, clip_path: Path, head_file: Path, workdir: Path) -> dict:
    import bench_service

    clip = clip_path.read_bytes()
    duration = bench_inputs.manifest(clip_path)["seconds"]
    env = {"EARMARK_MODEL": args.model, "EARMARK_DEVICE": args.device, "EARMARK_HEAD": str(head_file),
           "EARMARK_API_KEYS": "", "EARMARK_THREADS": str(args.threads),
           "EARMARK_QUEUE_SIZE": str(max(64, 2 * max(args.concurrency)))}
    runs = []
    for concurrency in args.concurrency:
        requests = args.requests if args.requests else max(4, concurrency)
        if args.requests and args.mode == "full":
            requests = max(args.requests, 4 * concurrency)
        options = SimpleNamespace(requests=requests, concurrency=concurrency, max_seconds=args.server_max_seconds,
                                  endpoint="transcriptions")
        for label, batch in (("on (max 8)", 8), ("off (max 1)", 1)):
            log(f"server: concurrency {concurrency}, micro-batching {label}, {requests} requests, load {load_average()}")
            result = bench_service.run(f"c{concurrency}-b{batch}", {**env, "EARMARK_MAX_BATCH_SIZE": str(batch)},
                                       clip, duration, options, workdir)
            runs.append({**asdict(result), "batching": label, "req_per_s": result.req_per_s,
                         "audio_per_s": result.audio_per_s, "p50": result.percentile(50),
                         "p95": result.percentile(95), "p99": result.percentile(99)})
    return {"clip_seconds": duration, "runs": runs}


# --------------------------------------------------------------------------- the document


def floors(report: dict) -> list[dict]:
    rows = []
    systems = report.get("systems", {})
    target = "600s" if "600s" in systems else (max(systems, key=lambda n: systems[n]["seconds"]) if systems else None)
    full = report["config"]["mode"] == "full" and target == "600s" and report["config"]["device"] == "cpu"
    if target:
        speed = next((r for r in systems[target].get("pairs", []) if r["top"].startswith("Whisper-AT")
                      and r["bottom"] == "Earmark transcript + tags"), None)
        overhead = next((r for r in systems[target].get("pairs", []) if r["top"] == "Earmark transcript + tags"
                         and r["bottom"] == "Earmark transcript only"), None)
        if speed:
            rows.append({"floor": f"Earmark joint ≥ {FLOOR_SPEEDUP}× faster than Whisper-AT ({target})",
                         "measured": f"{speed['median']:.2f}× (per-round {speed['min']:.2f}–{speed['max']:.2f})",
                         "pass": speed["median"] >= FLOOR_SPEEDUP, "binding": full})
        paired = report.get("overhead")
        if paired:
            rows.append({"floor": f"tag overhead ≤ {(FLOOR_OVERHEAD - 1) * 100:.0f} % (goal ≤ {(GOAL_OVERHEAD - 1) * 100:.0f} %) "
                                  f"({paired['input']}, adjacent pairs)",
                         "measured": f"{(paired['median'] - 1) * 100:+.1f} % (per pair {(paired['min'] - 1) * 100:+.1f} "
                                     f"to {(paired['max'] - 1) * 100:+.1f} %, {len(paired['pairs'])} pairs)",
                         "pass": paired["median"] <= FLOOR_OVERHEAD, "binding": full})
        elif overhead:
            rows.append({"floor": f"tag overhead ≤ {(FLOOR_OVERHEAD - 1) * 100:.0f} % (goal ≤ {(GOAL_OVERHEAD - 1) * 100:.0f} %) ({target})",
                         "measured": f"{(overhead['median'] - 1) * 100:+.1f} % (per-round {(overhead['min'] - 1) * 100:+.1f} to {(overhead['max'] - 1) * 100:+.1f} %)",
                         "pass": overhead["median"] <= FLOOR_OVERHEAD, "binding": full})
    worst = None
    for block in (report.get("agreement") or {}).values():
        if block and block.get("windows", {}).get("max_abs_diff") is not None:
            worst = max(worst or 0.0, block["windows"]["max_abs_diff"])
        if block and block.get("transcribe", {}).get("max_abs_diff") is not None:
            worst = max(worst or 0.0, block["transcribe"]["max_abs_diff"])
    if worst is not None:
        rows.append({"floor": f"tag probabilities within {FLOOR_AGREEMENT:g} of Whisper-AT's on the same windows",
                     "measured": f"max abs Δp = {worst:.2e}", "pass": worst <= FLOOR_AGREEMENT,
                      "binding": report["config"]["mode"] == "full" and report["config"]["device"] == "cpu"})
    return rows


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_section(report: dict, heading: str) -> str:
    """One device's results as Markdown."""
    c = report["config"]
    out = [f"## {heading}", ""]
    if c["mode"] != "full":
        out += [("> Quick mode (CI smoke run): a small model, short inputs, one round. These numbers show that the "
                "suite and every system work; they are not the benchmark (`make bench MODE=full` is)."), ""]
    out.append(f"Measured {report['date']} with `{report['command']}` "
               f"({c['mode']} mode: model {c['model']}, {c['runs']} counted round(s) after {c['warmup']} warm-up round(s) "
               f"per input, {c['threads']} threads, device {c['device']}, language {c['language']}). "
               f"Load average before / after: {report['load_before']} / {report['load_after']}.")
    out.append("")
    m = report["machine"]
    versions = report.get("versions", {})
    rows = [["CPU", f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB"], ["OS, Python", f"{m['os']}, {m['python']}"]]
    for system, pins in versions.items():
        rows.append([system, ", ".join(f"{k} {v}" for k, v in pins.items())])
    rows.append(["Whisper weights", (f"{c['model']}: `{report['weights']['checkpoint_name']}` (sha256 {report['weights']['sha256'][:16]}…), "
                 "converted by Earmark from the bundled CTranslate2 package; faster-whisper loads that package's "
                 f"CTranslate2 files (model.bin sha256 {report['weights']['ct2_sha256'][:16]}…)")])
    rows.append(["Tagging head", report["head"]])
    out += [md_table(["", ""], rows), ""]
    for name, note in report.get("notes", {}).items():
        out.append(f"- **{name} left out**: {note}")
    if report.get("notes"):
        out.append("")

    if report.get("floors"):
        out += ["### Floors", ""]
        out.append(md_table(["floor", "measured", "verdict"], [
            [f["floor"], f["measured"], ("pass" if f["pass"] else "**FAIL**") + ("" if f["binding"] else " (not binding: " + ("smoke run" if c["mode"] != "full" else "not the 10-minute CPU run") + ")")]
            for f in report["floors"]]))
        out.append("")

    if report.get("inputs"):
        out += ["### Inputs", "",
                ("Real recordings only, assembled by `bench/bench_inputs.py` (each recording used once per file, never "
                "a clip repeated; manifests with every piece's source, licence and transcript sit beside the files)."), ""]
        out.append(md_table(["input", "length s", "recordings", "speech s", "sounds s", "sources", "sha256"], [
            [name, f"{i['seconds']:.0f}", i["recordings"], i["speech_seconds"], i["sound_seconds"],
             ", ".join(f"{p} {v['version']}" for p, v in i["packages"].items()), f"`{i['sha256'][:16]}`"]
            for name, i in report["inputs"].items()]))
        out.append("")

    systems = report.get("systems")
    if systems:
        out += ["### Wall time, same audio, weights and threads", "",
                ("Each system runs in its own process (Whisper-AT and faster-whisper in their own venvs) and is handed "
                "the same decoded 16 kHz samples, so file decoding is not timed (the profile below times it). "
                "Decoding settings are the same everywhere: language given, greedy at temperature 0 with fallback "
                "over 0.2 … 1.0 (best of 5), the usual compression-ratio, log-prob and no-speech thresholds, "
                "conditioning on previous text, no word timestamps. Earmark plans its windows with its voice-activity "
                "detector (cuts in pauses, windows without speech not decoded) as it always does; faster-whisper "
                "sequential and Whisper-AT run without VAD. faster-whisper's "
                f"`BatchedInferencePipeline` (batch_size {FW_BATCH}, greedy, the same weights and threads) "
                "works as its documentation shows: it always runs its Silero VAD, cuts the speech it finds into "
                "chunks of up to 30 s and decodes them in batches, at temperature 0 only (no fallback) and without "
                "conditioning on previous text; its VAD is part of its time. "
                "Encoder windows: windows of up to 30 s encoded (fallback re-encodes included); decoder calls: decodes of a window "
                "(fallback retries in parentheses). WER: against the transcripts of the speech in the file (sound "
                "passages have none), normalised as openai-whisper's English normaliser does."), ""]
        for name, block in systems.items():
            out += [f"#### {name} input ({block['seconds']:.0f} s)", ""]
            rows = []
            for label, s in block["systems"].items():
                if label.startswith("_"):
                    continue
                median, spread = fmt_s(s["stats"], 3 if block["seconds"] < 60 else 2)
                last = s["runs"][-1] if s["runs"] else {}
                windows = last.get("encoder_windows", last.get("encoder_calls", "n/a"))
                decodes = last.get("decode_calls")
                fallbacks = last.get("fallback_decodes")
                decoder = "n/a" if decodes is None else f"{decodes} ({fallbacks})"
                wer = s.get("wer")
                rows.append([label, median, spread, f"{s['rtf']:.3f}", windows, decoder,
                             "n/a" if wer is None else f"{wer * 100:.1f} %"])
            out.append(md_table(["system", "median s", "min–max s", "real-time factor", "encoder windows",
                                 "decoder calls (fallbacks)", "WER"], rows))
            out.append("")
            if block.get("pairs"):
                out.append(md_table(["ratio (per round, same run)", "median", "min–max", "what it says"], [
                    [f"{p['top']} / {p['bottom']}", f"{p['median']:.3f}", f"{p['min']:.3f}–{p['max']:.3f}", p["meaning"]]
                    for p in block["pairs"]]))
                out.append("")
        summary_rows, columns = joint_against_peers(systems)
        if summary_rows:
            out += ["#### Earmark transcript + tags against each peer", "",
                    ("Earmark's time for transcript + tags divided by the peer's time on the same input, round by "
                     "round (median, min–max in parentheses): below 1 Earmark is faster. faster-whisper gives a "
                     "transcript only, Whisper-AT a transcript and tags."), ""]
            out.append(md_table(["input", *columns], summary_rows))
            out.append("")

    paired = report.get("overhead")
    if paired:
        out += ["### Tag overhead, adjacent pairs in one process", "",
                (f"Earmark transcript only and transcript + tags on the {paired['input']} input, back to back in the "
                 "timing process, the order alternating pair by pair; the ratio is taken within each pair. The "
                 "interleaved rounds above put minutes and the other systems between the two runs, so the machine's "
                 "drift enters their ratio; here it falls on both runs alike."), ""]
        out.append(md_table(["pair", "order", "transcript only s", "transcript + tags s", "ratio"], [
            [str(i + 1), " then ".join(p), f"{p['transcript']:.2f}", f"{p['joint']:.2f}", f"{p['joint'] / p['transcript']:.3f}"]
            for i, p in enumerate(paired["pairs"])]))
        out += ["", f"Median ratio {paired['median']:.3f} (min–max {paired['min']:.3f}–{paired['max']:.3f})."
                + (f" This section was measured {paired['date']} with `{paired['command']}`, in a run of its own."
                   if paired.get("command") else ""), ""]

    if report.get("agreement"):
        out += ["### Tag agreement with the original Whisper-AT", "",
                ("The same head file (official layout) in both; probabilities are Whisper-AT's logits through a "
                "sigmoid against Earmark's probabilities, 10 s tag windows. *Same windows*: Whisper-AT's own encoder "
                "and head on every full 30 s window at 0, 30, 60 s … (what `transcribe` sees at a seek that is a "
                "multiple of 30 s). *As transcribe returns them*: the rows of `transcribe`'s `audio_tag` whose last "
                "writer was such a window; its other rows come from windows that start wherever the transcript's "
                "seek fell, or from the padded last window, so they are different audio (see the notes)."), ""]
        rows = []
        for name, a in report["agreement"].items():
            if not a:
                continue
            w = a.get("windows", {})
            t = a.get("transcribe", {})
            rows.append([name, w.get("rows", "n/a"),
                         "n/a" if w.get("max_abs_diff") is None else f"{w['max_abs_diff']:.2e} / {w['mean_abs_diff']:.2e}",
                         f"{w.get('top1_agree', 'n/a')} / {w.get('rows', 'n/a')}",
                         f"{t.get('same_window_rows', 'n/a')} of {t.get('rows', 'n/a')}",
                         "n/a" if t.get("max_abs_diff") is None else f"{t['max_abs_diff']:.2e}",
                         "n/a" if t.get("other_max_abs_diff") is None else f"{t['other_max_abs_diff']:.2e}"])
        out.append(md_table(["input", "same windows: rows", "max / mean abs Δp", "top-1 class agrees",
                             "transcribe rows from a 30 s-aligned window", "their max abs Δp",
                             "other rows: max abs Δp"], rows))
        out.append("")

    if report.get("memory"):
        out += ["### Peak memory (RSS of each process)", ""]
        rows = [[label, f"{v['after_load_mb']:.0f}", f"{v['peak_rss_mb']:.0f}", v["note"]] for label, v in report["memory"].items()]
        out.append(md_table(["process", "after load MB", "peak MB", "what ran in it"], rows))
        out.append("")

    if report.get("encoder"):
        out += ["### The encoder alone, one 30 s window", ""]
        rows = [[label, *fmt_s(s, 3)] for label, s in report["encoder"].items()]
        out.append(md_table(["encoder", "median s per window", "min–max s"], rows))
        out.append("")

    if report.get("profile"):
        out += ["### Where the time goes in one joint request", "",
                ("One `transcribe(..., tags=True)` from the file's bytes (so decoding is included), stages timed in "
                "place; median over the profile runs."), ""]
        for name, p in report["profile"].items():
            rows = [[stage, f"{seconds:.3f}", f"{seconds / p['total'] * 100:.1f} %"]
                    for stage, seconds in sorted(p["stages"].items(), key=lambda kv: -kv[1])]
            rows.append(["**total**", f"**{p['total']:.3f}**", "100 %"])
            calls = (f", {p['decode_calls']} decoder calls of which {p['fallback_decodes']} fallback retries"
                     if p.get("decode_calls") is not None else "")
            out += [(f"{name} input ({p['duration']:.0f} s; {p['encoder_windows']} encoder windows{calls}; the decoder "
                     "runs on its own thread beside the encoder, so the stages add up to more than the total):"), ""]
            out.append(md_table(["stage", "seconds", "share"], rows))
            out.append("")

    if report.get("server"):
        s = report["server"]
        out += ["### HTTP service under loopback load", "",
                (f"`POST /v1/audio/transcriptions` (verbose_json, tags, language en) of the {s['clip_seconds']:.0f} s "
                "input, from `bench/bench_service.py`'s server (its own uvicorn process on 127.0.0.1) and async client; "
                "after a warm-up burst of `concurrency` requests. Micro-batching on: up to 8 windows of different "
                "requests per encoder call (`EARMARK_MAX_BATCH_SIZE=8`); off: 1."), ""]
        rows = []
        for r in s["runs"]:
            errors = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "0"
            per_call = "n/a" if r["windows_per_call"] is None else f"{r['windows_per_call']:.2f}"
            rows.append([r["concurrency"], r["batching"], f"{r['ok']} / {r['requests']}", f"{r['req_per_s']:.2f}",
                         f"{r['audio_per_s']:.1f}", f"{r['p50']:.2f}", f"{r['p95']:.2f}", f"{r['p99']:.2f}", errors,
                         per_call, f"{r['rss_peak_mb']:.0f}"])
        out.append(md_table(["concurrency", "micro-batching", "ok / sent", "req/s", "audio s/s", "p50 s", "p95 s",
                             "p99 s", "errors", "windows per encoder call", "server peak RSS MB"], rows))
        pairs = []
        by = {(r["concurrency"], r["batching"].split()[0]): r for r in s["runs"]}
        for concurrency in sorted({r["concurrency"] for r in s["runs"]}):
            on, off = by.get((concurrency, "on")), by.get((concurrency, "off"))
            if on and off and off["req_per_s"] and off["p50"]:
                pairs.append([concurrency, f"{on['req_per_s'] / off['req_per_s']:.2f}×", f"{on['p50'] / off['p50']:.2f}×",
                              f"{on['p95'] / off['p95']:.2f}×"])
        if pairs:
            out += ["", md_table(["concurrency", "throughput on / off", "p50 on / off", "p95 on / off"], pairs)]
        out.append("")

    if report.get("nonspeech"):
        import bench_nonspeech

        out.append(bench_nonspeech.render(report["nonspeech"]))

    if report.get("explanations"):
        out += ["### Reading the numbers", ""]
        out += [f"- {line}" for line in report["explanations"]]
        out.append("")
    return "\n".join(out)


def joint_against_peers(systems: dict) -> tuple[list[list[str]], list[str]]:
    """Rows (one per input) of Earmark joint / peer, per-round median and min-max; the column headings."""
    present = [(label, heading) for label, heading in PEERS_FOR_JOINT
               if any(label in block["systems"] for block in systems.values())]
    rows = []
    for name, block in systems.items():
        row = [name]
        for label, _ in present:
            pair = next((p for p in block.get("pairs", []) if p["top"] == "Earmark transcript + tags"
                         and p["bottom"] == label), None)
            row.append("n/a" if pair is None else f"{pair['median']:.2f} ({pair['min']:.2f}–{pair['max']:.2f})")
        rows.append(row)
    return (rows if present else []), [heading for _, heading in present]


def explanations(report: dict) -> list[str]:
    """Plain statements drawn from the measured numbers of the longest input (nothing assumed)."""
    lines = []
    systems = report.get("systems", {})
    if systems:
        name = max(systems, key=lambda n: systems[n]["seconds"])
        per = systems[name]["systems"]
        joint = per.get("Earmark transcript + tags")
        at = per.get("Whisper-AT 0.5 (original code), transcript + tags")
        if joint and at and joint["runs"] and at["runs"]:
            ej, wa = joint["runs"][-1], at["runs"][-1]
            lines.append(
                f"Work done on the {name} input: Earmark encoded {ej.get('encoder_windows')} windows once each"
                + (f" and decoded {ej.get('decode_calls')} times ({ej.get('fallback_decodes')} temperature-fallback "
                   "retries, which reuse the encoded window)" if ej.get("decode_calls") is not None else "")
                + f". Whisper-AT ran its encoder {wa.get('encoder_calls')} times for "
                f"{wa.get('windows_decoded')} windows: it moves its 30 s window to the last timestamp of the previous "
                f"one (so windows overlap and there are more of them) and re-runs the encoder on every fallback "
                f"({wa.get('fallback_decodes')} here).")
            lines.append(
                "Why Earmark is faster than Whisper-AT: its text decoder is CTranslate2's (int8 on a CPU), fed the "
                "torch encoder's output, so no window is encoded twice; windows without speech are not decoded.")
            if joint.get("wer") is not None and at.get("wer") is not None and joint["wer"] > at["wer"] + 0.005:
                lines.append(
                    f"Transcript quality on the {name} input: WER {joint['wer'] * 100:.1f} % for Earmark against "
                    f"{at['wer'] * 100:.1f} % for Whisper-AT (openai-whisper's seeking). Earmark encodes each "
                    "sample once, in windows cut at pauses; openai-whisper and Whisper-AT restart the next window at "
                    "the last timestamp instead, at the price of more windows.")
        for label in ("faster-whisper int8, transcript only", "faster-whisper float32, transcript only",
                      "faster-whisper float16, transcript only", "faster-whisper int8_float16, transcript only"):
            fw = per.get(label)
            if fw and joint and fw["stats"]["median"] < joint["stats"]["median"]:
                lines.append(
                    f"{label.split(',')[0]} is faster than Earmark joint on the {name} input "
                    f"({fw['stats']['median']:.2f} s against {joint['stats']['median']:.2f} s). CTranslate2 runs the "
                    "encoder and the decoder as C++ kernels" + (" with int8 weights" if "int8" in label else "")
                    + " and computes only the logits it needs; Earmark runs openai-whisper's PyTorch modules one "
                    "token at a time from Python (its own loop, the vocabulary screened in int8). faster-whisper "
                    "gives no sound tags.")
        for label in (batched_label("int8"), batched_label("int8_float16")):
            fw = per.get(label)
            if not (fw and joint and fw["runs"]):
                continue
            last = fw["runs"][-1]
            after_vad = last.get("seconds_after_vad")
            lines.append(
                f"faster-whisper's batched pipeline on the {name} input: {fw['stats']['median']:.2f} s against "
                f"{joint['stats']['median']:.2f} s for Earmark joint"
                + (f", WER {fw['wer'] * 100:.1f} % against {joint['wer'] * 100:.1f} %"
                   if fw.get("wer") is not None and joint.get("wer") is not None else "")
                + (f". Its VAD kept {after_vad:.0f} s of the {systems[name]['seconds']:.0f} s" if after_vad is not None else "")
                + f", which it encoded as {last.get('encoder_windows', 'n/a')} chunks of up to 30 s in "
                f"{last.get('encoder_calls', 'n/a')} encoder calls of up to {FW_BATCH}, decoding a whole batch at "
                "once without fallback or conditioning on previous text.")
    encoder = report.get("encoder") or {}
    e1, e8, wa = (encoder.get("Earmark encoder, batch 1"), encoder.get("Earmark encoder, batch 8 (per window)"),
                  encoder.get("Whisper-AT encoder (no SDPA), batch 1"))
    if e1 and wa:
        lines.append(f"The encoder alone: {wa['median']:.3f} s per window for Whisper-AT against {e1['median']:.3f} s "
                     "for Earmark. openai-whisper's current encoder uses scaled-dot-product attention; Whisper-AT "
                     "ships a copy of the older model code without it, which also average-pools every block's output "
                     "inside the encoder.")
    if e1 and e8:
        lines.append(f"Batching windows in one encoder call on this device: {e8['median']:.3f} s per window at batch 8 "
                     f"against {e1['median']:.3f} s at batch 1.")
    profile = report.get("profile") or {}
    if profile:
        name = max(profile, key=lambda n: profile[n]["duration"])
        stages = profile[name]["stages"]
        decoder = stages.get("decoder (incl. fallback)", 0.0)
        lines.append(f"Where a joint request spends its time ({name}): {decoder / profile[name]['total'] * 100:.0f} % in "
                     "the text decoder, "
                     f"{stages.get('encoder (incl. block capture + 0.4 s pooling)', 0.0) / profile[name]['total'] * 100:.0f} % "
                     f"in the encoder, {stages.get('tagging head', 0.0) / profile[name]['total'] * 100:.1f} % in the tagging head.")
    lines.append("Whisper-AT's `transcribe` scores tag rows from the window at the current seek, starting "
                 "`(seek mod 10 s) / 0.4 s` steps into it, and writes them to the rows from `seek / 10 s` on: after a "
                 "seek that is not a multiple of 30 s its rows hold audio later than their time span. Its last window is "
                 "padded with the log-mel of silence; Earmark's (like openai-whisper's since 2023) with zeros, and "
                 "Earmark scores the last tag window on the real audio only. Those rows are not the same input and "
                 "are left out of the agreement floor.")
    return lines


def render(doc: dict, command_hint: str, json_name: str) -> str:
    parts = ["# Benchmarks", "",
             ("Earmark against the original Whisper-AT code and faster-whisper, measured side by side in one run on "
             "this machine. Every number in this file is written by `bench/bench_suite.py` "
             f"(`{command_hint}`); the raw numbers are in `{json_name}`. Ratios are computed round by round "
             "inside one run, never across runs."), ""]
    for key, heading in (("cpu", "CPU"), ("cuda", "GPU (CUDA)")):
        if key in doc:
            parts.append(render_section(doc[key], heading))
    if "cuda" not in doc:
        parts += ["## GPU (CUDA)", "", ("Not measured yet: no GPU was available. On a GPU machine: "
                  "`.venv/bin/python bench/bench_suite.py --mode full --device cuda` adds this section "
                  "(Earmark and Whisper-AT in fp16, faster-whisper float16 and int8_float16)."), ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("quick", "full"), default="quick")
    parser.add_argument("--model", default=None, help="tiny.en (quick) or base (full) by default")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--threads", type=int, default=None, help="threads for every system (default: all cores)")
    parser.add_argument("--runs", type=int, default=None, help="counted rounds per input (quick 1, full 5)")
    parser.add_argument("--warmup", type=int, default=None, help="uncounted rounds per input (quick 0, full 1)")
    parser.add_argument("--inputs", choices=("packages", "fixtures"), default=None,
                        help="where the inputs come from (quick: fixtures, full: packages)")
    parser.add_argument("--only-inputs", nargs="*", default=None, help="a subset of the inputs, e.g. 600s")
    parser.add_argument("--head", default="seeded", help="'seeded' or a TL-Tr head (official .pth or Earmark .safetensors)")
    parser.add_argument("--language", default="en")
    parser.add_argument("--peers", nargs="*", default=["whisper-at", "faster-whisper"])
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    parser.add_argument("--overhead-pairs", type=int, default=None, help="adjacent transcript/joint pairs (quick 1, full 6)")
    parser.add_argument("--requests", type=int, default=None, help="requests per server run (quick: max(4, c); full: max(32, 4c))")
    parser.add_argument("--concurrency", type=int, nargs="*", default=None, help="quick: 1 4; full: 1 4 16")
    parser.add_argument("--server-max-seconds", type=float, default=900.0)
    parser.add_argument("--nonspeech-clips", type=int, default=None,
                        help="words on non-speech on this many clips (full: all; quick: skipped unless given)")
    parser.add_argument("--nonspeech-json", default=None,
                        help="put the results of a bench/bench_nonspeech.py run in, instead of measuring")
    parser.add_argument("--profile-runs", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None, help="the Markdown file (quick: bench/results/benchmarks-quick.md)")
    parser.add_argument("--check-floors", action="store_true", help="exit 1 when a binding floor fails")
    parser.add_argument("--render", action="store_true", help="only rewrite the Markdown from the JSON beside it (ratio notes and floors as this script now states them)")
    args = parser.parse_args()
    quick = args.mode == "quick"
    args.model = args.model or ("tiny.en" if quick else "base")
    args.runs = args.runs or (1 if quick else 5)
    args.warmup = (0 if quick else 1) if args.warmup is None else args.warmup
    args.inputs = args.inputs or ("fixtures" if quick else "packages")
    args.profile_runs = args.profile_runs or (1 if quick else 3)
    args.overhead_pairs = args.overhead_pairs or (1 if quick else 6)
    args.threads = args.threads or os.cpu_count() or 1
    args.concurrency = args.concurrency or ([1, 4] if quick else [1, 4, 16])
    if quick and args.nonspeech_clips is None and "nonspeech" not in args.skip:
        args.skip.append("nonspeech")  # its clips come from Debian packages; quick mode stays offline
    if args.requests is None and not quick:
        args.requests = 32
    args.output = args.output or (ROOT / "docs" / "benchmarks.md" if not quick else ROOT / "bench" / "results" / "benchmarks-quick.md")
    return args


def write_doc(output: Path, doc: dict, mode: str) -> None:
    hint = "make bench MODE=full" if mode == "full" else "make bench"
    json_path = output.with_suffix(".json")
    try:
        json_name = str(json_path.resolve().relative_to(ROOT))
    except ValueError:
        json_name = str(json_path)
    output.write_text(render(doc, hint, json_name))


def main() -> None:
    args = parse_args()
    if args.render:
        doc = json.loads(args.output.with_suffix(".json").read_text())
        for report in doc.values():  # the ratios' notes and the floors as this script states them now
            for block in report.get("systems", {}).values():
                block["pairs"] = pair_ratios(block["systems"])
            report["floors"] = floors(report)
        write_doc(args.output, doc, args.mode)
        log(f"rewrote {args.output}")
        return
    os.environ["EARMARK_OFFLINE"] = "1"
    import torch

    from tagger.weights import BUNDLED_MODELS, resolve_weights

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this torch sees no CUDA GPU")
    torch.set_num_threads(args.threads)
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/bench_suite.py", *sys.argv[1:]])
    cache = bench_inputs.cache_dir()
    report: dict = {"date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "command": command,
                    "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "machine": machine(), "load_before": load_average(), "notes": {}}
    log(f"{args.mode} mode, model {args.model}, {args.runs} runs, {args.threads} threads, device {args.device}")

    inputs = all_inputs = bench_inputs.build(args.inputs)
    if args.only_inputs:
        inputs = {k: v for k, v in inputs.items() if k in args.only_inputs}
    report["inputs"] = {name: {k: v for k, v in bench_inputs.manifest(p).items() if k != "items"}
                        for name, p in inputs.items()}

    weights = resolve_weights(args.model)
    head_file, low = bench_peers.official_head(args.model, args.head, cache)
    at_root = bench_peers.whisper_at_root(args.model, weights.checkpoint, head_file, low, cache)
    ct2 = bench_peers.ct2_dir(args.model, cache) if args.model in BUNDLED_MODELS else None
    if ct2 is None and "faster-whisper" in args.peers:
        report["notes"]["faster-whisper"] = f"no bundled CTranslate2 weights for {args.model}"
        args.peers = [p for p in args.peers if p != "faster-whisper"]
    report["weights"] = {"checkpoint_name": weights.checkpoint.name, "sha256": weights.sha256,
                         "ct2_sha256": BUNDLED_MODELS[args.model].sha256 if args.model in BUNDLED_MODELS else "n/a"}
    report["head"] = ("TL-Tr of the published shape with seeded weights (torch.manual_seed(0)), saved in the official "
                      "Whisper-AT layout; both systems load that one file. Its cost is that of any trained TL-Tr; "
                      "its tags mean nothing" if args.head == "seeded" else f"{args.head} (both systems load {head_file.name})")

    with tempfile.TemporaryDirectory(prefix="earmark-bench-suite-") as tmp:
        workdir = Path(tmp)
        workers, candidates, notes = plan_systems(args, head_file, low, at_root, ct2, workdir)
        report["notes"].update(notes)
        versions = {}
        try:
            if {"systems", "overhead", "encoder", "profile", "memory"} - set(args.skip):
                for key, worker in list(workers.items()):
                    log(f"starting {key}")
                    try:
                        info = worker.start()
                    except WorkerError as error:
                        if key == "earmark":
                            raise
                        # a peer that cannot run here (e.g. no CUDA libraries for it) is left out, with the reason
                        report["notes"][key] = str(error).strip().splitlines()[0]
                        log(f"{key} left out: {report['notes'][key]}")
                        del workers[key]
                        candidates[:] = [c for c in candidates if c[1] != key]
                        continue
                    worker.ready = info
                    label = {"earmark": "Earmark"}.get(key, key.split("-float")[0].split("-int8")[0])
                    versions[label] = info.get("versions", {})
                for peer in ("whisper-at", "faster-whisper"):
                    if peer in args.peers and bench_peers.available(peer) is None:
                        versions[peer] = bench_peers.versions(peer)
            report["versions"] = versions
            if "systems" not in args.skip:
                systems = run_systems(args, inputs, workers, candidates, workdir)
                for name, block in systems.items():
                    reference = bench_inputs.reference_text(json.loads(inputs[name].with_suffix(".json").read_text()))
                    for label, s in block["systems"].items():
                        if not label.startswith("_"):
                            s["wer"] = word_error_rate(s.get("text"), reference)
                    block["pairs"] = pair_ratios(block["systems"])
                report["systems"] = systems
                report["agreement"] = {name: agreement(name, path, workdir) for name, path in inputs.items()}
            if "overhead" not in args.skip:
                log("tag overhead: adjacent pairs")
                report["overhead"] = run_overhead(args, inputs, workers["earmark"])
            if "encoder" not in args.skip:
                log("encoder alone")
                report["encoder"] = run_encoder(args, inputs, workers)
            if "profile" not in args.skip:
                log("profile")
                report["profile"] = run_profile(args, inputs, workers["earmark"])
        finally:
            finals = {key: worker.close() for key, worker in workers.items()}
        memory = {}
        for key, final in finals.items():
            if final and getattr(workers[key], "ready", None):
                memory[{"earmark": "Earmark timing process (three modes, encoder batch-8 test)"}.get(key, key)] = {
                    "after_load_mb": workers[key].ready["rss_mb"], "peak_rss_mb": final["peak_rss_mb"],
                    "note": "every run of the sections above"}
        if "memory" not in args.skip:
            log("memory: Earmark in fresh processes")
            for label, value in run_memory(args, inputs, head_file, workdir).items():
                memory[label] = {**value, "note": f"one run of the {value['input']} input"}
        report["memory"] = memory
        if "server" not in args.skip:
            clip = all_inputs.get("10s") or min(all_inputs.values(), key=lambda p: bench_inputs.manifest(p)["seconds"])
            report["server"] = run_server(args, clip, head_file, workdir)
    if args.nonspeech_json:
        report["nonspeech"] = json.loads(Path(args.nonspeech_json).read_text())
    elif "nonspeech" not in args.skip:
        import bench_nonspeech

        log("words on non-speech")
        report["nonspeech"] = bench_nonspeech.measure(args.model, args.device, args.threads, args.nonspeech_clips,
                                                      args.language)
    report["load_after"] = load_average()
    report["floors"] = floors(report)
    report["explanations"] = explanations(report)

    key = "cuda" if args.device.startswith("cuda") else "cpu"
    json_path = args.output.with_suffix(".json")
    doc = json.loads(json_path.read_text()) if json_path.is_file() else {}
    doc[key] = report
    args.output.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    write_doc(args.output, doc, args.mode)
    log(f"wrote {args.output} and {json_path}")
    print(render_section(report, "CPU" if key == "cpu" else "GPU (CUDA)"))
    failed = [f for f in report["floors"] if f["binding"] and not f["pass"]]
    if args.check_floors and failed:
        raise SystemExit(f"floors failed: {', '.join(f['floor'] for f in failed)}")


if __name__ == "__main__":
    main()
