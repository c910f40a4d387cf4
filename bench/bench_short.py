"""How long a few seconds of non-speech take: a clean 1 s 440 Hz tone, 4 s of white and of brown
noise, and 4 s of music, transcribed with tags (the bundled head) on one model, against the
encoder alone on one window, in the same run. No text should come out, and none of them should cost
much more than the encoder: windows without speech are never decoded.

Run: .venv/bin/python bench/bench_short.py --model base [--runs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from tagger import SAMPLE_RATE, load_audio, load_model
from tagger.mel import log_mel

MUSIC = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "scenes" / "music-macroform-cold_day.flac"


def clips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    brown = np.cumsum(rng.standard_normal(4 * SAMPLE_RATE))
    return {
        "440 Hz tone, 1 s": (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        "white noise, 4 s": (0.1 * rng.standard_normal(4 * SAMPLE_RATE)).astype(np.float32),
        "brown noise, 4 s": (0.3 * brown / np.abs(brown).max()).astype(np.float32),
        "music, 4 s": load_audio(MUSIC)[: 4 * SAMPLE_RATE],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, threads=args.threads)
    inputs = clips()
    mel = log_mel(torch.from_numpy(inputs["white noise, 4 s"]), model.whisper.dims.n_mels, model.device)[None]
    model.transcribe(inputs["440 Hz tone, 1 s"], language="en")  # warm-up: the detector and the decoder load
    times: dict[str, list[float]] = {name: [] for name in [*inputs, "encoder alone, one window"]}
    texts: dict[str, str] = {}
    for _ in range(args.runs):
        for name, audio in inputs.items():
            start = time.perf_counter()
            texts[name] = model.transcribe(audio, language="en").text
            times[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        model.backbone.encode(mel)
        times["encoder alone, one window"].append(time.perf_counter() - start)
    print(f"{args.model}, {args.threads} threads, {args.runs} runs\n")
    print("| input | median s | slowest s | text |\n|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {max(values):.2f} | {texts.get(name, '')!r} |")


if __name__ == "__main__":
    main()
