"""Earmark's decoding modes on one bench input: sequential (each window's text prompts the next)
against batched (no prompt, windows decoded together), WER and wall time, interleaved rounds.

Run: .venv/bin/python bench/bench_modes.py --model tiny.en --input 600s [--runs 2]
Inputs come from bench/bench_inputs.py (the packages source, with transcripts).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_inputs import packages_input
from bench_suite import word_error_rate

from tagger import load_audio, load_model

MODES = {
    "sequential (condition_on_previous_text=True)": {"condition_on_previous_text": True},
    "batched (condition_on_previous_text=False)": {"condition_on_previous_text": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--input", default="600s")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tags", action="store_true", help="transcript + tags (default: transcript only)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path, reference = packages_input(args.input)
    audio = load_audio(path)
    model = load_model(args.model, device="cpu")
    model.transcribe(audio[:16000 * 5], language="en")  # warm-up
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    wers: dict[str, float | None] = {}
    for _ in range(args.runs):
        for mode, keywords in MODES.items():
            started = time.perf_counter()
            result = model.transcribe(audio, language="en", tags=args.tags, **keywords)
            times[mode].append(time.perf_counter() - started)
            wers[mode] = word_error_rate(result.text, reference)
    print(f"model {args.model}, input {args.input} ({len(audio) / 16000:.0f} s), {torch.get_num_threads()} threads, "
          f"{'transcript + tags' if args.tags else 'transcript only'}, {args.runs} interleaved rounds")
    print("| mode | median s | min-max s | WER |\n|---|---|---|---|")
    for mode in MODES:
        t = times[mode]
        print(f"| {mode} | {np.median(t):.2f} | {min(t):.2f}-{max(t):.2f} | {wers[mode] * 100:.1f} % |")


if __name__ == "__main__":
    main()
