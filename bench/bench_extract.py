"""Feature extraction, float32 against bfloat16 autocast (``earmark extract --bf16``), in one run.

Both runs extract the same committed real recordings (tests/fixtures: speech, music, silence,
drums) with the same model into fresh caches, alternating float32 and bfloat16 ``--rounds``
times; the report gives the best seconds of each, their ratio (the speed-up) and the relative
difference of the bfloat16 features from the float32 ones (norm of the difference over the norm,
over all clips). The speed-up needs a CPU with AVX512-BF16 or AMX; without them bfloat16 is slower.

Run: .venv/bin/python bench/bench_extract.py [--model base] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagger.pipeline import load_model
from tagger.train.datasets import Clip, resolve_labels
from tagger.train.features import FeatureCache, extract_features

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def fixture_clips() -> list[Clip]:
    paths = sorted(p for p in FIXTURES.rglob("*") if p.suffix in (".flac", ".wav", ".ogg"))
    return [Clip(clip_id=str(p.relative_to(FIXTURES)), path=p, labels=[p.parent.name]) for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    bf16_units = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CPU bfloat16 units: {bf16_units or 'none'}")
    model = load_model(args.model, head=None, device="cpu")
    clips = fixture_clips()
    labels = resolve_labels(clips)
    best: dict[str, float] = {}
    audio_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="earmark-bench-extract-") as scratch:
        for round_ in range(args.rounds):
            for kind in ("float32", "bfloat16"):
                out = Path(scratch) / f"{kind}-{round_}"
                started = time.perf_counter()
                report = extract_features(model, clips, out, labels, True, progress=False, bf16=kind == "bfloat16")
                seconds = time.perf_counter() - started
                audio_seconds = report.audio_seconds
                best[kind] = min(best.get(kind, seconds), seconds)
                print(f"round {round_ + 1} {kind}: {report.n_done} clips in {seconds:.1f} s", flush=True)
        fp32, bf16 = (FeatureCache.open(Path(scratch) / f"{kind}-0") for kind in ("float32", "bfloat16"))
        difference = norm = 0.0
        for i in range(len(fp32)):
            reference = np.asarray(fp32.features(i), np.float32)
            difference += float(np.sum((np.asarray(bf16.features(i), np.float32) - reference) ** 2))
            norm += float(np.sum(reference ** 2))
    print("\n| model | clips | audio s | float32 s | bfloat16 s | speed-up | relative difference |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {len(clips)} | {audio_seconds:.0f} | {best['float32']:.1f} | {best['bfloat16']:.1f} | "
          f"{best['float32'] / best['bfloat16']:.2f}x | {(difference / norm) ** 0.5:.4f} |")


if __name__ == "__main__":
    main()
