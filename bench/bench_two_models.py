"""Earmark's one pass against the two-model pipeline a user could run instead: faster-whisper int8
for the transcript plus the AudioSet teacher (EfficientAT mn04, the one Earmark's default heads are
distilled from) for 527-class tags over 10 s windows. Same file, same Whisper weights, same threads;
the two run in turn, round after round, each round in a fresh process so that its peak memory is
its own. Reported per system: the wall time of the work (models loaded), the wall time including
loading, and the peak RSS.

Run: .venv/bin/python bench/bench_two_models.py --model base --input 600s [--runs 3] [--threads 2]
Inputs come from bench/bench_inputs.py (the packages source, with transcripts).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SYSTEMS = ("earmark", "two-models")


def child(system: str, model_name: str, audio_path: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    from tagger import load_audio, load_model

    audio = load_audio(audio_path)
    if system == "earmark":
        model = load_model(model_name, threads=threads)
        loaded = time.perf_counter()
        result = model.transcribe(audio, language="en")
        text, n_tags = result.text, len(result.tags)
    else:
        from faster_whisper import WhisperModel

        from tagger.train.teacher import DEFAULT_TEACHER, load_teacher, teacher_probs
        from tagger.weights import ct2_whisper_dir, resolve_weights

        whisper = WhisperModel(str(ct2_whisper_dir(resolve_weights(model_name))), device="cpu", compute_type="int8",
                               cpu_threads=threads, local_files_only=True)
        teacher = load_teacher(DEFAULT_TEACHER)
        loaded = time.perf_counter()
        segments, _ = whisper.transcribe(audio, language="en", beam_size=1, best_of=5,
                                         temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0], condition_on_previous_text=True)
        text = "".join(s.text for s in segments).strip()
        _, windows = teacher_probs(teacher, audio, window=10.0)
        n_tags = len(windows)
    done = time.perf_counter()
    return {"system": system, "work_s": done - loaded, "total_s": done - started, "tag_windows": n_tags,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "text": text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--input", default="600s")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.audio, args.threads)))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_inputs import packages_input
    from bench_suite import word_error_rate

    path, reference = packages_input(args.input)
    audio = str(path)
    rows: dict[str, list[dict]] = {s: [] for s in SYSTEMS}
    for run in range(args.runs):
        for system in SYSTEMS if run % 2 == 0 else reversed(SYSTEMS):
            out = subprocess.run([sys.executable, __file__, "--child", system, "--model", args.model, "--audio", audio,
                                  "--threads", str(args.threads)], capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["wer"] = word_error_rate(row.pop("text"), reference)
            rows[system].append(row)
            print(f"run {run + 1} {system}: work {row['work_s']:.1f} s, with loading {row['total_s']:.1f} s, "
                  f"peak RSS {row['peak_rss_mb']:.0f} MB, WER {row['wer']:.3f}", flush=True)
    print(f"\n{args.model}, {args.input}, {args.threads} threads, {args.runs} runs (medians):")
    print("| system | work s | with loading s | peak RSS MB | WER | tag windows |\n|---|---|---|---|---|---|")
    for system in SYSTEMS:
        r = rows[system]
        print(f"| {system} | {statistics.median(x['work_s'] for x in r):.1f} | "
              f"{statistics.median(x['total_s'] for x in r):.1f} | {statistics.median(x['peak_rss_mb'] for x in r):.0f} | "
              f"{statistics.median(x['wer'] for x in r):.3f} | {r[0]['tag_windows']} |")
    ratios = [e["work_s"] / t["work_s"] for e, t in zip(rows["earmark"], rows["two-models"])]
    print(f"Earmark / two models, work time per round: {', '.join(f'{x:.2f}' for x in ratios)} "
          f"(median {statistics.median(ratios):.2f})")


if __name__ == "__main__":
    main()
