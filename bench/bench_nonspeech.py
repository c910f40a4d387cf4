"""Words on non-speech: how often each system writes words for audio that holds no speech.

The clips are real recordings from Debian packages that the default tagging heads' corpus
(tagger/corpus/sources.csv) does not use: sound effects and foley from games, system sounds,
and instrumental game and on-hold music. Each clip is 2-30 s: a file as it is when it is that
long (leading and trailing digital silence cut), else one excerpt at a seeded place. The files
are chosen by folder and name so that none holds a voice (no voice samples, no songs: of the
on-hold music only the three Macroform pieces). Every clip is
brought to the same RMS level (a gain only) and faded in and out over 50 ms. The set is built
once into the benchmark cache, with a manifest: package, version, file, licence, excerpt, sha256.

Systems, each in its own process, with the same weights and threads:

- Earmark through its Python API, ``tagger.load_model(MODEL)`` (the bundled default head)
  then ``transcribe(samples, language="en", tags=False)`` and ``tags=True``
  (bench/worker_earmark.py, ``--head auto``);
- openai-whisper's ``transcribe`` (bench/worker_openai_whisper.py, Earmark's venv);
- faster-whisper int8 sequential without VAD, the same with ``vad_filter=True``, and
  ``BatchedInferencePipeline`` (batch 8, its own VAD) (bench/worker_faster_whisper.py).

A clip "gets words" when its text still holds a letter or a digit once punctuation, symbols
(such as the note sign) and white space are taken out. Reported per system: the share of clips
with words (all, effects, music), the share with any output at all, and the per-clip times
(median, the slowest clip, total). Each clip is run once per system; the order of the systems
rotates from clip to clip. A run that takes longer than 120 s + 10 s per second of audio
(``--clip-timeout`` sets one limit for all clips) is stopped: its worker is ended and started
again, and the clip counts as timed out for that system (neither with nor without words).

Run: .venv/bin/python bench/bench_nonspeech.py --model tiny.en            # all clips
     .venv/bin/python bench/bench_nonspeech.py --model base --limit 8     # a spread of 8 clips
     .venv/bin/python bench/bench_nonspeech.py --build-only               # only the clip set
Writes bench/results/nonspeech-MODEL.json and .md (``--output`` for another place).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shlex
import statistics
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

import bench_inputs
import bench_peers
from bench_suite import Worker, WorkerError, load_average, log, machine, md_table, worker_env

BUILD_VERSION = 1  # bump when the clip set changes: the cached set is rebuilt
SEED = 2024
MIN_SECONDS = 2.0
MAX_SECONDS = 30.0
EXCERPT_SECONDS = (10.0, 30.0)  # length range of an excerpt cut from a longer file
LEVEL_DB = -22.0  # RMS of every clip (bench_inputs.SOUND_DB)
FW_BATCH = 8

# Debian packages (bookworm) and the versions the clip set was built from. None of them is in
# tagger/corpus/sources.csv (checked at build time).
PACKAGES: dict[str, str] = {
    "extremetuxracer-data": "0.8.2-1",
    "stormbaancoureur-data": "2.1.6-3.1",
    "knavalbattle": "4:22.12.3-1",
    "kgoldrunner": "4:22.12.3-1",
    "granatier": "4:22.12.3-1",
    "chromium-bsu-data": "0.9.16.1-3",
    "colobot-common-sounds": "0.2.0-2",
    "oxygen-sounds": "4:5.27.5-2",
    "neverball-common": "1.6.0+git20180603-3",
    "xmoto-data": "0.6.1+repack-9",
    "tumiki-fighters-data": "0.2.dfsg1-10",
    "a7xpg-data": "0.11.dfsg1-11",
    "funnyboat": "1.5-11",
    "asterisk-moh-opsound-wav": "2.03-1.1",
}


@dataclass(frozen=True)
class Source:
    package: str
    pattern: str  # a glob inside the unpacked package
    kind: str  # "effect" or "music"
    licence: str  # what the package's copyright file says for these files
    what: str
    limit: int = 0  # at most this many clips, a seeded choice (0: all)
    min_seconds: float = MIN_SECONDS


SOURCES = [
    Source("extremetuxracer-data", "usr/share/games/etr/sounds/*.wav", "effect", "GPL-2+",
           "foley: sliding on snow, ice, grass, mud, rock, leaves"),
    Source("extremetuxracer-data", "usr/share/games/etr/music/*.ogg", "music", "GPL-2+", "game music", limit=6),
    Source("stormbaancoureur-data", "usr/share/games/stormbaancoureur/sounds/*.wav", "effect", "GPL-3",
           "car engine"),
    Source("knavalbattle", "usr/share/knavalbattle/sounds/*.ogg", "effect", "GPL-2+", "cannon shots, splash"),
    Source("kgoldrunner", "usr/share/kgoldrunner/themes/default/*.ogg", "effect", "GPL-2+", "game sounds and jingles"),
    Source("granatier", "usr/share/granatier/sounds/*.wav", "effect", "GPL-2+", "game sounds and jingles"),
    Source("chromium-bsu-data", "usr/share/games/chromium-bsu/wav/*.wav", "effect", "Expat",
           "explosions, short game music loops"),
    Source("colobot-common-sounds", "usr/share/games/colobot/sounds/*.wav", "effect", "GPL-3+",
           "game sound effects (motors, machines, impacts)", limit=8),
    Source("colobot-common-sounds", "usr/share/games/colobot/music/*.ogg", "music", "GPL-3+", "game music", limit=6),
    Source("oxygen-sounds", "usr/share/sounds/Oxygen-*.ogg", "effect", "LGPL-3.0-or-later",
           "KDE system sounds (log-in and log-out music)", min_seconds=4.0),
    Source("neverball-common", "usr/share/games/neverball/bgm/*.ogg", "music", "GPL-2+", "game music", limit=6),
    Source("xmoto-data", "usr/share/games/xmoto/Textures/Musics/*.ogg", "music", "GPL-2+", "game music", limit=6),
    Source("tumiki-fighters-data", "usr/share/games/tumiki-fighters/sounds/*.ogg", "music", "BSD-2-Clause",
           "game music"),
    Source("a7xpg-data", "usr/share/games/a7xpg/sounds/bgm*.ogg", "music", "BSD-2-Clause", "game music"),
    Source("funnyboat", "usr/share/games/funnyboat/data/JDruid-*.ogg", "music", "Expat", "game music"),
    # the three Macroform pieces; the package's other two tracks (from ccMixter and Jamendo) may carry vocals
    Source("asterisk-moh-opsound-wav", "usr/share/asterisk/moh/macroform-*.wav", "music", "CC-BY-SA-3.0",
           "music on hold (Macroform)"),
]

SYSTEMS = [
    # (label, worker, request fields)
    ("Earmark transcript only", "earmark", {"mode": "transcript"}),
    ("Earmark transcript + tags", "earmark", {"mode": "joint"}),
    ("openai-whisper", "openai-whisper", {}),
    ("faster-whisper int8, no VAD", "faster-whisper", {"vad": False}),
    ("faster-whisper int8, vad_filter=True", "faster-whisper", {"vad": True}),
    (f"faster-whisper int8 batched (batch {FW_BATCH}, its VAD)", "faster-whisper-batched", {}),
]


# --------------------------------------------------------------------------- the clip set


def corpus_packages() -> set[str]:
    with open(ROOT / "tagger" / "corpus" / "sources.csv", newline="", encoding="utf-8") as f:
        return {row["package"] for row in csv.DictReader(f)}


def clip_dir(cache: Path) -> Path:
    return cache / "nonspeech" / f"v{BUILD_VERSION}"


def build_clips(cache: Path, force: bool = False) -> dict:
    """Build (or reuse) the clip set; returns its manifest."""
    out = clip_dir(cache)
    manifest_path = out / "manifest.json"
    if not force and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if all((out / clip["file"]).is_file() for clip in manifest["clips"]):
            return manifest
    used = corpus_packages() & set(PACKAGES)
    if used:
        raise SystemExit(f"the default heads' corpus uses {', '.join(sorted(used))}: not non-speech test data")
    trees = bench_inputs.fetch_packages(cache, PACKAGES)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    clips = []
    for source in SOURCES:
        tree = Path(trees[source.package]["root"])
        paths = sorted(p for p in tree.glob(source.pattern) if p.is_file())
        candidates = []
        for path in paths:
            samples = bench_inputs._trim_silence(bench_inputs.load_audio(str(path)))
            seconds = samples.size / bench_inputs.SAMPLE_RATE
            if seconds < source.min_seconds:
                continue
            start = 0.0
            if seconds > MAX_SECONDS:
                length = round(float(rng.uniform(*EXCERPT_SECONDS)), 1)
                start = round(float(rng.uniform(0.0, seconds - length)), 1)
                first = round(start * bench_inputs.SAMPLE_RATE)
                samples = samples[first : first + round(length * bench_inputs.SAMPLE_RATE)]
            if any(same_recording(samples, other) for _, _, other in candidates):
                continue  # e.g. knavalbattle's player-2 shot, the player-1 shot mirrored
            candidates.append((path, start, samples))
        if source.limit and len(candidates) > source.limit:
            chosen = sorted(rng.choice(len(candidates), source.limit, replace=False))
            candidates = [candidates[i] for i in chosen]
        for path, start, samples in candidates:
            samples, gain = bench_inputs._gain_to(bench_inputs._fade(samples), LEVEL_DB)
            name = f"{len(clips):03d}-{source.package}-{path.stem}.wav"
            digest = bench_inputs.write_wav(out / name, samples)
            clips.append({"id": len(clips), "file": name, "kind": source.kind, "package": source.package,
                          "version": trees[source.package]["version"], "source": path.relative_to(tree).as_posix(),
                          "licence": source.licence, "what": source.what, "start": start,
                          "seconds": round(samples.size / bench_inputs.SAMPLE_RATE, 2),
                          "gain_db": round(gain, 2), "sha256": digest})
    packages = {}
    for clip in clips:
        entry = packages.setdefault(clip["package"], {"version": clip["version"], "licence": set(), "what": [],
                                                      "clips": 0, "seconds": 0.0})
        entry["licence"].add(clip["licence"])
        if clip["what"] not in entry["what"]:
            entry["what"].append(clip["what"])
        entry["clips"] += 1
        entry["seconds"] = round(entry["seconds"] + clip["seconds"], 2)
    for entry in packages.values():
        entry["licence"] = ", ".join(sorted(entry["licence"]))
        entry["what"] = "; ".join(entry["what"])
    manifest = {"build_version": BUILD_VERSION, "seed": SEED, "level_db": LEVEL_DB, "clips": clips,
                "packages": packages, "seconds": round(sum(c["seconds"] for c in clips), 1)}
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def same_recording(a: np.ndarray, b: np.ndarray) -> bool:
    """The same length and a correlation above 0.99: one recording twice."""
    if a.size != b.size or not a.size:
        return False
    return bool(np.corrcoef(a, b)[0, 1] > 0.99)


def spread(clips: list[dict], limit: int | None) -> list[dict]:
    """``limit`` clips spread evenly over the set (so over packages and kinds), or all."""
    if not limit or limit >= len(clips):
        return clips
    picks = np.linspace(0, len(clips) - 1, limit).round().astype(int)
    return [clips[i] for i in sorted(set(picks.tolist()))]


# --------------------------------------------------------------------------- measuring


def has_words(text: str | None) -> bool:
    """A letter or a digit left once punctuation, symbols and white space are taken out."""
    return any(unicodedata.category(ch)[0] in "LN" for ch in text or "")


def plan_workers(model: str, device: str, threads: int, workdir: Path) -> tuple[dict[str, Worker], list, dict]:
    from tagger.weights import BUNDLED_MODELS, resolve_weights

    cache = bench_inputs.cache_dir()
    env = worker_env(threads)
    notes: dict[str, str] = {}
    workers: dict[str, Worker] = {}
    common = ["--device", device, "--threads", str(threads)]
    workers["earmark"] = Worker("earmark", [sys.executable, str(BENCH / "worker_earmark.py"), "--model", model,
                                            "--head", "auto", *common], env, workdir / "worker-earmark.log")
    checkpoint = resolve_weights(model).checkpoint
    workers["openai-whisper"] = Worker("openai-whisper", [sys.executable, str(BENCH / "worker_openai_whisper.py"),
                                                          "--checkpoint", str(checkpoint), *common], env,
                                       workdir / "worker-openai-whisper.log")
    problem = bench_peers.available("faster-whisper")
    if model not in BUNDLED_MODELS:
        problem = f"no bundled CTranslate2 weights for {model}"
    if problem:
        notes["faster-whisper"] = problem
    else:
        ct2 = bench_peers.ct2_dir(model, cache)
        compute_type = "int8" if device == "cpu" else "int8_float16"
        for key, batch in (("faster-whisper", 0), ("faster-whisper-batched", FW_BATCH)):
            command = [str(bench_peers.peer_python("faster-whisper")), str(BENCH / "worker_faster_whisper.py"),
                       "--model-dir", str(ct2), "--compute-type", compute_type, "--batch-size", str(batch),
                       "--device", device.split(":")[0], "--threads", str(threads)]
            workers[key] = Worker(key, command, env, workdir / f"worker-{key}.log")
    systems = [s for s in SYSTEMS if s[1] in workers]
    return workers, systems, notes


def clip_timeout(seconds: float, fixed: float | None = None) -> float:
    return fixed if fixed else 120.0 + 10.0 * seconds


def measure(model: str, device: str = "cpu", threads: int | None = None, limit: int | None = None,
            language: str = "en", systems: list[str] | None = None, cache: Path | None = None,
            timeout: float | None = None) -> dict:
    """Build the clip set, run every system on every clip; the report (a JSON-able dict)."""
    threads = threads or os.cpu_count() or 1
    cache = cache or bench_inputs.cache_dir()
    manifest = build_clips(cache)
    clips = spread(manifest["clips"], limit)
    folder = clip_dir(cache)
    report = {"date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "model": model, "device": device,
              "threads": threads, "language": language, "machine": machine(), "load_before": load_average(),
              "clip_set": {"build_version": manifest["build_version"], "clips": len(manifest["clips"]),
                           "seconds": manifest["seconds"], "packages": manifest["packages"]},
              "measured_clips": len(clips), "measured_seconds": round(sum(c["seconds"] for c in clips), 1),
              "measured": [clip["id"] for clip in clips], "clips": manifest["clips"], "clip_timeout": timeout,
              "notes": {}, "versions": {}, "systems": {}}
    log(f"non-speech: {len(clips)} of {len(manifest['clips'])} clips ({report['measured_seconds']} s), "
        f"model {model}, {threads} threads, device {device}")
    with tempfile.TemporaryDirectory(prefix="earmark-bench-nonspeech-") as tmp:
        workers, plan, notes = plan_workers(model, device, threads, Path(tmp))
        report["notes"].update(notes)
        if systems:
            plan = [s for s in plan if s[0] in systems or s[1] in systems]
            workers = {k: w for k, w in workers.items() if any(s[1] == k for s in plan)}
        per = {label: {"runs": []} for label, _, _ in plan}
        try:
            for key, worker in list(workers.items()):
                log(f"starting {key}")
                info = worker.start()
                report["versions"][key] = info.get("versions", {})
            first = str(folder / clips[0]["file"])
            for label, key, fields in plan:  # warm-up, not counted
                workers[key].request("run", audio=first, language=language, **fields)
            for index, clip in enumerate(clips):
                shift = index % len(plan)
                limit_s = clip_timeout(clip["seconds"], timeout)
                for label, key, fields in plan[shift:] + plan[:shift]:
                    try:
                        answer = workers[key].request("run", timeout=limit_s, audio=str(folder / clip["file"]),
                                                      language=language, **fields)
                    except WorkerError as error:
                        if "no answer in" not in str(error):
                            raise
                        log(f"{label}: no answer on clip {clip['id']} in {limit_s:.0f} s; restarting {key}")
                        workers[key].kill()
                        workers[key].start()
                        per[label]["runs"].append({"clip": clip["id"], "seconds": limit_s, "text": None,
                                                   "words": None, "timed_out": True})
                        continue
                    per[label]["runs"].append({"clip": clip["id"], "seconds": answer["seconds"],
                                               "text": answer.get("text", ""), "words": has_words(answer.get("text"))})
                slowest = max(per[label]["runs"][-1]["seconds"] for label, _, _ in plan)
                log(f"non-speech: clip {index + 1}/{len(clips)} (id {clip['id']}, {clip['seconds']:.1f} s), "
                    f"slowest system {slowest:.1f} s, load {load_average()}")
        finally:
            for worker in workers.values():
                worker.close()
    kinds = {clip["id"]: clip["kind"] for clip in clips}
    for label, block in per.items():
        runs = block["runs"]
        done = [r for r in runs if not r.get("timed_out")]
        times = [r["seconds"] for r in runs]
        slowest = max(runs, key=lambda r: r["seconds"])
        block.update({
            "clips": len(runs), "timed_out": len(runs) - len(done), "with_words": sum(r["words"] for r in done),
            "with_output": sum(bool((r["text"] or "").strip()) for r in done),
            "by_kind": {kind: {"clips": sum(kinds[r["clip"]] == kind for r in runs),
                               "with_words": sum(r["words"] for r in done if kinds[r["clip"]] == kind)}
                        for kind in sorted(set(kinds.values()))},
            "median_seconds": statistics.median(times), "total_seconds": sum(times),
            "slowest": {"clip": slowest["clip"], "seconds": slowest["seconds"],
                        "timed_out": bool(slowest.get("timed_out"))},
        })
    report["systems"] = per
    report["load_after"] = load_average()
    return report


# --------------------------------------------------------------------------- the document


def render(report: dict, level: str = "###") -> str:
    """The results as Markdown (a section the suite puts into docs/benchmarks.md)."""
    clips = {clip["id"]: clip for clip in report["clips"]}
    subset = report["measured_clips"] < report["clip_set"]["clips"]
    out = [f"{level} Words on non-speech", "",
           (f"{report['measured_clips']} clips of real recordings without speech "
            f"({report['measured_seconds']:.0f} s{', a spread of the ' + str(report['clip_set']['clips']) + '-clip set' if subset else ''}): "
            "sound effects, foley, system sounds and instrumental music from Debian packages that the default "
            "tagging heads were not trained on (`bench/bench_nonspeech.py`). Model "
            f"{report['model']}, {report['threads']} threads, device {report['device']}, language "
            f"{report['language']}; measured {report['date']}, load average {report['load_before']} / "
            f"{report['load_after']}. A clip gets words when its text keeps a letter or a digit once punctuation, "
            "symbols (such as ♪) and white space are taken out; bracketed captions such as \"[Music]\" count as "
            "words. Earmark runs through `tagger.load_model(model)` (the bundled default head) and "
            "`transcribe(samples, language=\"en\")` with `tags=False` and `tags=True`; faster-whisper is int8 "
            "with the same weights; its batched pipeline always runs its Silero VAD."), ""]
    versions = "; ".join(f"{key}: " + ", ".join(f"{k} {v}" for k, v in pins.items())
                         for key, pins in report.get("versions", {}).items() if pins)
    if versions:
        out += [f"Versions: {versions}.", ""]
    for name, note in report.get("notes", {}).items():
        out.append(f"- **{name} left out**: {note}")
    if report.get("notes"):
        out.append("")
    kinds = sorted({clips[i]["kind"] for i in report["measured"]})
    rows = []
    for label, s in report["systems"].items():
        n = s["clips"]
        by_kind = [f"{s['by_kind'][k]['with_words']} / {s['by_kind'][k]['clips']}" for k in kinds]
        slowest = clips[s["slowest"]["clip"]]
        late = "> " if s["slowest"].get("timed_out") else ""
        rows.append([label, f"{s['with_words']} / {n}", f"**{s['with_words'] / n * 100:.0f} %**", *by_kind,
                     f"{s['with_output'] / n * 100:.0f} %", str(s.get("timed_out", 0)), f"{s['median_seconds']:.2f}",
                     f"{late}{s['slowest']['seconds']:.2f} (clip {slowest['id']}, {slowest['seconds']:.0f} s)",
                     f"{s['total_seconds']:.1f}"])
    out.append(md_table(["system", "clips with words", "share", *[f"{k} clips with words" for k in kinds],
                         "any output", "timed out", "median s per clip", "slowest clip s", "total s"], rows))
    limit = f"{report['clip_timeout']:.0f} s" if report.get("clip_timeout") else "120 s + 10 s per second of audio"
    out += ["", (f"Timed out: no answer within {limit} (the run was stopped; the clip counts neither with nor without "
                 "words, and its time is the limit). Slowest clip: the clip's id in the manifest and its length.")]
    out += ["", ("The clip set (16 kHz mono WAV, each brought to the same RMS level; the manifest lists every "
                 "clip's package, version, file, excerpt and licence):"), ""]
    out.append(md_table(["package", "version", "licence", "clips", "seconds", "what"], [
        [name, p["version"], p["licence"], p["clips"], f"{p['seconds']:.0f}", p["what"]]
        for name, p in report["clip_set"]["packages"].items()]))
    out.append("")
    return "\n".join(out)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="threads for every system (default: all cores)")
    parser.add_argument("--limit", type=int, default=None, help="only this many clips, spread over the set")
    parser.add_argument("--language", default="en")
    parser.add_argument("--systems", nargs="*", default=None,
                        help="a subset: labels or workers (earmark, openai-whisper, faster-whisper, faster-whisper-batched)")
    parser.add_argument("--output", type=Path, default=None, help="the JSON (default bench/results/nonspeech-MODEL.json)")
    parser.add_argument("--build-only", action="store_true", help="build the clip set and print it")
    parser.add_argument("--force", action="store_true", help="rebuild the clip set")
    parser.add_argument("--render", action="store_true", help="only rewrite the Markdown from the JSON")
    parser.add_argument("--clip-timeout", type=float, default=None,
                        help="stop a run after this many seconds (default: 120 s + 10 s per second of audio)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    output = args.output or BENCH / "results" / f"nonspeech-{args.model}.json"
    if args.render:
        output.with_suffix(".md").write_text(render(json.loads(output.read_text())))
        return
    os.environ["EARMARK_OFFLINE"] = "1"
    if args.build_only or args.force:
        manifest = build_clips(bench_inputs.cache_dir(), force=args.force)
        for clip in manifest["clips"]:
            print(f"{clip['id']:3d} {clip['kind']:6s} {clip['seconds']:5.1f} s  {clip['package']} {clip['version']}  "
                  f"{clip['source']}" + (f" from {clip['start']} s" if clip["start"] else "") + f"  {clip['licence']}")
        print(f"{len(manifest['clips'])} clips, {manifest['seconds']} s, in {clip_dir(bench_inputs.cache_dir())}")
        if args.build_only:
            return
    report = measure(args.model, args.device, args.threads, args.limit, args.language, args.systems,
                     timeout=args.clip_timeout)
    report["command"] = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/bench_nonspeech.py", *sys.argv[1:]])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    output.with_suffix(".md").write_text(render(report))
    log(f"wrote {output} and {output.with_suffix('.md')}")
    print(render(report))


if __name__ == "__main__":
    main()
