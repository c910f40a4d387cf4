"""Train on your own sounds: every head type with the auto recipe, on real recordings of 10 classes.

The set: Debian package recordings that the default corpus' mapping table (``tagger/corpus/
sources.csv``) labels with one of ``CLASSES`` as their most specific AudioSet class, one label per
clip, given as AudioSet display names (the case ``--recipe auto`` narrows to the 10 classes and
trains single-label). Takes of one recording (``dir/door1.ogg``, ``dir/door2.ogg``) are one
recording, and every recording goes to one split only: per class ``TEST_SHARE`` of the
recordings (at least ``MIN_TEST``) are test, ``DEV_SHARE`` (at least 2) dev, the rest train. Train
takes up to ``TRAIN_PER_CLASS`` clips per class (one per recording first, then further takes),
test up to ``TEST_PER_RECORDING`` takes of each of its recordings. A clip is a recording's first
``CLIP_SECONDS`` s after its leading silence.

Then, per model: ``earmark extract`` for each split (one encoder pass per clip, cached), and per
head type ``earmark train --train train --dev dev --head TYPE`` (everything else the auto recipe's
choice) and ``earmark evaluate --features test``: test mAP and accuracy, and the training time
(the wall-clock of the ``earmark train`` command, run in this process, with the machine's load
average when it ended: other processes on a shared machine make it longer). The auto recipe's
schedule is 1,500 optimizer steps for any set below 2,400 clips, ended early when 15 dev
evaluations bring nothing better, so the time hardly depends on the number of clips.

Everything is cached under ``~/.cache/earmark-bench/own-sounds`` (``--cache``): the set, the
features and the trained heads with their results, so a rerun only does what is missing
(``--retrain`` trains the heads again). The packages come from the corpus' package cache
(``earmark data build-default`` fills it; downloaded with ``apt-get download`` when missing).

Floors (issue): with tiny.en and the defaults, test mAP >= 0.80 on recordings never trained on;
training on 300 clips from cached features in under 2 minutes on the 2-core CPU.

Run: nice -n 10 .venv/bin/python bench/bench_own_sounds.py [--models tiny.en,base] [--heads linear,wa_mlp]
[--device cuda]; ``--heads ""`` builds the set and extracts only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagger.heads import HEAD_TYPES
from tagger.train.trainer import state_dir

CLASSES = ("Speech", "Laughter", "Walk, footsteps", "Door", "Explosion", "Ringtone", "Bird vocalization, bird call, bird song",
           "Drum", "Cymbal", "Music")
HEADS = ("linear", "stats", "last_mlp", "wa_mlp", "wa_tr", "tl_tr")  # tl_tr_512 is TL-Tr for wide encoders
MODELS = ("tiny.en", "base")
SPLITS = ("train", "dev", "test")
TEST_SHARE, MIN_TEST = 0.35, 6
DEV_SHARE, MIN_DEV = 0.1, 2
MAX_RECORDINGS = 60  # per class (Speech has thousands)
TRAIN_PER_CLASS = 30
TEST_PER_RECORDING = 2
CLIP_SECONDS = 10.0
SEED = 0
DEFAULT_CACHE = Path.home() / ".cache" / "earmark-bench" / "own-sounds"


# ------------------------------------------------------------------------------------ the set


def _recordings() -> dict[str, dict[str, list]]:
    """class -> recording group -> its sources (takes), for the classes of CLASSES."""
    from tagger.corpus.packages import PackageError, fetch_debian
    from tagger.corpus.sources import package_sources, read_rules, rule_packages

    rules = [rule for rule in read_rules() if rule.labels and rule.labels[0] in CLASSES]
    found: dict[str, dict[str, list]] = {c: defaultdict(list) for c in CLASSES}
    seen: set[str] = set()
    for name in rule_packages(rules):
        try:
            package = fetch_debian(name)
        except PackageError as error:
            print(f"  {name}: left out ({error})", file=sys.stderr)
            continue
        for source in package_sources(package, rules, seen=seen):
            found[source.labels[0]][source.group].append(source)
    return found


def _clip(audio: np.ndarray, rate: int) -> np.ndarray:
    """The first CLIP_SECONDS after the leading silence (below 1 % of the peak)."""
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    start = int(np.argmax(np.abs(audio) > 0.01 * peak)) if peak > 0 else 0
    return audio[start : start + int(CLIP_SECONDS * rate)]


def build_set(root: Path) -> Path:
    """Write ``root/{train,dev,test}.csv`` and the clips under ``root/audio``; returns ``root``."""
    from tagger.audio import SAMPLE_RATE, write_flac

    done = root / "set.json"
    if done.is_file():
        return root
    rng = np.random.default_rng(SEED)
    recordings = _recordings()
    rows: dict[str, list[tuple[str, str, str]]] = {s: [] for s in SPLITS}  # (path, label, source id)
    summary: dict[str, dict] = {}
    for label in CLASSES:
        groups = sorted(recordings[label])
        rng.shuffle(groups)
        groups = groups[:MAX_RECORDINGS]
        n_test = max(MIN_TEST, round(TEST_SHARE * len(groups)))
        n_dev = max(MIN_DEV, round(DEV_SHARE * len(groups)))
        if len(groups) < n_test + n_dev + 10:
            raise SystemExit(f"{label}: {len(groups)} recordings, too few for the set")
        split_groups = {"test": groups[:n_test], "dev": groups[n_test : n_test + n_dev], "train": groups[n_test + n_dev :]}
        takes = {g: sorted(recordings[label][g], key=lambda s: s.source_id) for g in groups}
        chosen = {
            "train": _round_robin([takes[g] for g in split_groups["train"]], TRAIN_PER_CLASS),
            "dev": [takes[g][0] for g in split_groups["dev"]],
            "test": [s for g in split_groups["test"] for s in takes[g][:TEST_PER_RECORDING]],
        }
        summary[label] = {s: {"recordings": len(split_groups[s]), "clips": len(chosen[s])} for s in SPLITS}
        summary[label]["packages"] = dict(Counter(s.origin for g in groups for s in takes[g]))
        for split in SPLITS:
            for source in chosen[split]:
                try:
                    audio = _clip(source.load(), SAMPLE_RATE)
                except ValueError as error:  # an undecodable file
                    print(f"  {source.source_id}: left out ({error})", file=sys.stderr)
                    continue
                if audio.size < SAMPLE_RATE // 10:
                    continue
                path = Path("audio") / split / f"{split}-{len(rows[split]):04d}.flac"
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                write_flac(root / path, audio)
                rows[split].append((path.as_posix(), label, source.source_id))
        print(f"  {label}: " + ", ".join(f"{s} {summary[label][s]['clips']} clips of {summary[label][s]['recordings']} "
                                         f"recordings" for s in SPLITS), file=sys.stderr)
    for split in SPLITS:
        with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "labels", "source"])
            writer.writerows(rows[split])
    done.write_text(json.dumps({"classes": list(CLASSES), "seed": SEED, "per_class": summary}, indent=2) + "\n")
    return root


def _round_robin(lists: list[list], limit: int) -> list:
    """The first item of each list, then the second of each, ... up to ``limit`` items."""
    out = []
    for depth in range(max((len(x) for x in lists), default=0)):
        for items in lists:
            if depth < len(items) and len(out) < limit:
                out.append(items[depth])
    return out


# ------------------------------------------------------------------------------------ the runs


def _earmark(argv: list[str]) -> tuple[float, str]:
    """Run an ``earmark`` command in this process: (seconds, what it printed)."""
    import contextlib
    import io

    from tagger.cli import main

    printed = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    seconds = time.perf_counter() - started
    if code:
        raise SystemExit(f"earmark {' '.join(argv)} failed ({code})")
    return seconds, printed.getvalue()


def extract(root: Path, model: str, cache: Path) -> dict[str, Path]:
    caches = {}
    for split in SPLITS:
        out = cache / "features" / model / split
        done = out.with_name(f"{split}.done")  # the seconds it took
        if not done.is_file():
            print(f"earmark extract {split} ({model}) ...", file=sys.stderr)
            seconds, _ = _earmark(["extract", "--data", str(root / f"{split}.csv"), "--model", model, "--out", str(out),
                                   "--no-progress"])
            done.write_text(f"{seconds:.1f}\n")
        caches[split] = out
    return caches


def train_and_test(caches: dict[str, Path], model: str, head: str, cache: Path, retrain: bool, device: str) -> dict:
    out = cache / "heads" / device / f"{model}-{head}.safetensors"
    result_file = out.with_suffix(".result.json")
    if result_file.is_file() and not retrain:
        return json.loads(result_file.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(state_dir(out), ignore_errors=True)  # an interrupted run starts again: its time is measured whole
    print(f"earmark train {model} {head} ({device}) ...", file=sys.stderr, flush=True)
    seconds, _ = _earmark(["train", "--train", str(caches["train"]), "--dev", str(caches["dev"]), "--head", head,
                           "--out", str(out), "--no-plot", "--device", device])
    _, printed = _earmark(["evaluate", "--head", str(out), "--features", str(caches["test"]), "--json",
                           "--device", device])
    metrics = json.loads(printed)
    card = json.loads(out.with_suffix(".json").read_text())
    history = card["extra"]["history"]
    hyper = card["extra"]["hyperparameters"]
    result = {
        "model": model, "head": head, "device": device, "test_mAP": metrics["mAP"],
        "test_accuracy": metrics["accuracy"], "test_clips": metrics["n_clips"], "train_seconds": round(seconds, 1),
        "train_clips": card["extra"]["training_data"]["train"]["clips"],
        "steps": len(history) * hyper["epoch_steps"], "planned_steps": hyper["epochs"] * hyper["epoch_steps"],
        "selected": card["extra"]["metrics"]["selected"], "parameters": _parameters(out),
        "load_average": round(os.getloadavg()[0], 2),
    }
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _parameters(path: Path) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() for t in load_file(str(path)).values())


def table(cache: Path) -> str:
    """Every result under ``cache/heads``: the scores of the CPU run where there is one, the training
    time on each device."""
    found: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for path in sorted((cache / "heads").glob("*/*.result.json")):
        r = json.loads(path.read_text())
        found[(r["model"], r["head"])][r["device"]] = r
    devices = sorted({d for runs in found.values() for d in runs}, key=lambda d: (d != "cpu", d))
    lines = ["| model | head | test mAP | test accuracy | " + " | ".join(f"training time ({d})" for d in devices)
             + " | optimizer steps (of planned) | parameters |",
             "|---|---|---|---|" + "---|" * len(devices) + "---|---|"]
    order = {h: i for i, h in enumerate(HEADS)}
    for (model, head), runs in sorted(found.items(), key=lambda kv: (MODELS.index(kv[0][0]) if kv[0][0] in MODELS else 9,
                                                                    order.get(kv[0][1], 9))):
        r = runs.get("cpu") or next(iter(runs.values()))
        scored = "" if r["device"] == "cpu" else f" ({r['device']})"
        times = " | ".join(f"{runs[d]['train_seconds']:.0f} s (load {runs[d]['load_average']:.1f})" if d in runs else "-"
                           for d in devices)
        lines.append(f"| {model} | `{head}`{' (the auto default)' if head == 'stats' else ''} | "
                     f"{r['test_mAP']:.3f}{scored} | {r['test_accuracy']:.3f}{scored} | {times} | "
                     f"{r['steps']:,} of {r['planned_steps']:,} | {r['parameters']:,} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--heads", default=",".join(HEADS), help=f"of {', '.join(HEAD_TYPES)}")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--retrain", action="store_true", help="train the heads again (the set and features stay)")
    parser.add_argument("--device", default="cpu", help="where the heads train and are scored (default: cpu)")
    args = parser.parse_args()
    heads = [h for h in args.heads.split(",") if h]  # none: build the set and extract only
    unknown = [h for h in heads if h not in HEAD_TYPES]
    if unknown:
        raise SystemExit(f"unknown head types {unknown}; valid: {', '.join(HEAD_TYPES)}")
    load = os.getloadavg()[0]
    root = build_set(args.cache / "set")
    per_class = json.loads((root / "set.json").read_text())["per_class"]
    counts = {s: sum(v[s]["clips"] for v in per_class.values()) for s in SPLITS}
    print(f"set: {len(CLASSES)} classes; " + ", ".join(f"{s} {counts[s]} clips" for s in SPLITS))
    results = []
    for model in args.models.split(","):
        caches = extract(root, model, args.cache)
        for head in heads:
            result = train_and_test(caches, model, head, args.cache, args.retrain, args.device)
            print(f"{model} {head}: test mAP {result['test_mAP']:.3f}, accuracy {result['test_accuracy']:.3f}, "
                  f"{result['train_seconds']:.0f} s ({result['steps']} steps)", flush=True)
            results.append(result)
    report = {"set": {"classes": list(CLASSES), "clips": counts, "per_class": per_class}, "results": results,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "load_average": [round(load, 2), round(os.getloadavg()[0], 2)]}
    (args.cache / f"results-{args.device}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(args.cache))
    print(f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; results in {args.cache / f'results-{args.device}.json'}")


if __name__ == "__main__":
    main()
