"""What the two longest stages of ``earmark data distil-default`` cost: extracting features and training.

- **Extraction**: one split of the pool (``--split``, default test), packed as ``distil-default``
  packs it, extracted afresh into a temporary cache per model; the report gives the seconds and
  the real-time factor.
- **Training**: base-style TL-Tr on the pool's train split against the teacher's labels, 100 steps
  of 48 at a time, full length and ``--by-length`` alternating (``--rounds`` times each); the
  report gives the seconds per 100 steps of each.

It needs a pool (``build-pool``) and the work folder of a ``distil-default`` run over it (its
label stores, and the model's train features for the training part). The machine's load average
is printed before and after: other processes on a shared machine lower the numbers.

Run: .venv/bin/python bench/bench_distil_stages.py --pool POOL --work WORK [--models base,tiny.en]
     [--split test] [--train-model base] [--rounds 2] [--skip-extract] [--skip-train]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagger.labels import audioset
from tagger.pipeline import load_model
from tagger.train.datasets import load_dataset
from tagger.train.features import FeatureCache, extract_features
from tagger.train.labelling import TeacherLabels, TeacherTargets
from tagger.train.trainer import TrainConfig, train_head


def extraction(pool: Path, split: str, models: list[str]) -> None:
    clips = load_dataset(pool / f"{split}.csv", "csv").clips
    for name in models:
        model = load_model(name, head=None, device="cpu")
        with tempfile.TemporaryDirectory() as tmp:
            r = extract_features(model, clips, Path(tmp) / name, audioset(), True, pack=True, progress=False)
        print(f"extract {name} pool-{split}: {r.n_done} pieces, {r.audio_seconds / 3600:.2f} h in "
              f"{r.wall_seconds:.0f} s: {r.audio_seconds / r.wall_seconds:.1f}x real time "
              f"(torch threads {torch.get_num_threads()})", flush=True)


def training(pool: Path, work: Path, model: str, rounds: int) -> None:
    listed = [clip.clip_id for clip in load_dataset(pool / "train.csv", "csv").clips]
    cache = FeatureCache.open(work / model / "pool-train").only(listed)
    train = TeacherTargets(cache, TeacherLabels.open(work / "labels" / "pool-train"), 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for by_length in (False, True):
                config = TrainConfig(head_type="tl_tr", epochs=1, epoch_steps=100, lr=5e-4, balanced=False,
                                     label_smoothing=0.0, by_length=by_length, progress=False)
                result = train_head(train, None, config, Path(tmp) / f"head-{by_length}", write_plot=False)
                print(f"train {model} tl_tr, {'by length' if by_length else 'full length'}: "
                      f"{result.history[0].seconds:.1f} s per 100 steps of 48", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=Path, required=True, help="a folder written by build-pool")
    parser.add_argument("--work", type=Path, required=True, help="a distil-default work folder over that pool")
    parser.add_argument("--models", default="base,tiny.en", help="models to extract with (default: base,tiny.en)")
    parser.add_argument("--split", default="test", help="the pool split to extract (default: test)")
    parser.add_argument("--train-model", default="base", help="the model whose train features train (default: base)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-extract", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    print("load average before:", " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    if not args.skip_extract:
        extraction(args.pool, args.split, [m.strip() for m in args.models.split(",") if m.strip()])
    if not args.skip_train:
        training(args.pool, args.work, args.train_model, args.rounds)
    print("load average after:", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
