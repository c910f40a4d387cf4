"""Head training throughput from cached features (clips/s), base-sized: L=6, D=512, T=25 (10 s).

A feature cache of random float16 features and random AudioSet labels is written with the
feature cache's own writer, then ``train_head`` runs the full recipe (balanced sampling, mixup,
time masking, Adam, no dev set) for a few short epochs per head type; the epoch log's clips/s
(training only, every clip a 10 s window) is reported, best and median over the epochs after
the first. The machine's load average is printed before and after: other processes on a shared
machine lower the numbers.

Floors (issue): last_mlp >= 500 clips/s, tl_tr >= 20 clips/s on the 2-core CPU.

Run: .venv/bin/python bench/bench_train.py [--heads last_mlp,tl_tr] [--bf16] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagger.labels import audioset
from tagger.train.datasets import Clip
from tagger.train.features import FeatureCache, _consolidate, _RankWriter, _write_json_atomic
from tagger.train.trainer import TrainConfig, train_head

FLOORS = {"last_mlp": 500.0, "tl_tr": 20.0}


def write_random_cache(out: Path, n_clips: int, n_layers: int = 6, d_model: int = 512, steps: int = 25,
                       seed: int = 0) -> FeatureCache:
    """A cache in the format ``earmark extract`` writes, of random features and 1-3 random labels per clip."""
    rng = np.random.default_rng(seed)
    labels = audioset()
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "earmark-features", "format_version": 1, "backbone": "random", "backbone_sha256": "0" * 64,
        "n_layers": n_layers, "d_model": d_model, "dtype": "float16", "steps_per_second": 2.5, "pool_frames": 20,
        "max_duration": None, "multi_label": True, "label_set": labels.name, "labels": labels.to_json(),
        "shards": [], "clips": [], "skipped": [],
    }
    _write_json_atomic(out / "index.json", meta)
    writer = _RankWriter(out, 0, shard_clips=2048)
    for i in range(n_clips):
        feats = rng.standard_normal((n_layers, steps, d_model), dtype=np.float32).astype(np.float16)
        classes = sorted(set(rng.integers(0, len(labels), size=int(rng.integers(1, 4))).tolist()))
        clip = Clip(clip_id=f"clip{i:06d}", path=Path(f"clip{i:06d}.wav"), labels=[labels[c].mid for c in classes])
        writer.add(clip, classes, feats, steps / 2.5)
    writer.close()
    _consolidate(out)
    return FeatureCache.open(out)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", default="last_mlp,tl_tr")
    parser.add_argument("--clips", type=int, default=None, help="clips per epoch (default: 2400 last_mlp, 480 others)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--bf16", action="store_true", help="autocast bfloat16")
    parser.add_argument("--batch-size", type=int, default=48)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs; load average before: {load_average()}")
    heads = args.heads.split(",")
    sizes = {h: args.clips or (2400 if h in ("last_mlp", "wa_mlp") else 480) for h in heads}
    with tempfile.TemporaryDirectory(prefix="earmark-bench-train-") as scratch:
        started = time.perf_counter()
        cache = write_random_cache(Path(scratch) / "feats", max(sizes.values()))
        print(f"wrote a cache of {len(cache)} random base-sized clips in {time.perf_counter() - started:.1f} s")
        print("\n| head | clips/epoch | clips/s (best) | clips/s (median) | floor | |")
        print("|---|---|---|---|---|---|")
        for head in heads:
            data = cache.subset(np.arange(sizes[head]))
            config = TrainConfig(head_type=head, epochs=args.epochs, batch_size=args.batch_size, bf16=args.bf16,
                                 threads=args.threads, progress=False, preload="yes")
            result = train_head(data, None, config, Path(scratch) / f"{head}.safetensors", write_plot=False)
            rates = [row.clips_per_s for row in result.history[1:]] or [result.history[0].clips_per_s]
            floor = FLOORS.get(head)
            verdict = "" if floor is None else ("ok" if max(rates) >= floor else "BELOW")
            print(f"| {head}{' bf16' if args.bf16 else ''} | {sizes[head]} | {max(rates):.1f} | "
                  f"{statistics.median(rates):.1f} | {floor or ''} | {verdict} |", flush=True)
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
