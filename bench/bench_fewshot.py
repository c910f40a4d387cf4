"""A small everyday-sound task from the default corpus: 10 classes, up to 30 training clips each.

Trains a head with ``earmark train``'s defaults on the feature caches that ``earmark data
train-default`` wrote (clips with exactly one of the ten classes; the most specific label
wins), and reports mAP and accuracy on the corpus test split (recordings never trained on).

Run: .venv/bin/python bench/bench_fewshot.py --features WORK/tiny.en [--head tl_tr] [--per-class 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from tagger.heads import load_head
from tagger.labels import Label, LabelSet
from tagger.train.evaluate import evaluate_head
from tagger.train.features import ArrayFeatures, FeatureCache
from tagger.train.trainer import TrainConfig, train_head

CLASSES = ("Bark", "Rain", "Helicopter", "Crowing, cock-a-doodle-doo", "Door", "Walk, footsteps", "Thunder",
           "Applause", "Laughter", "Moo")


def pick(cache: FeatureCache, per_class: int, labels: LabelSet) -> tuple[ArrayFeatures, dict[str, int]]:
    """Clips of the cache with exactly one of CLASSES, at most ``per_class`` each."""
    counts = dict.fromkeys(CLASSES, 0)
    features, targets = [], []
    for i, record in enumerate(cache.records):
        hits = [c for c in CLASSES if c in {cache.labels[k].name for k in record.labels}]
        if len(hits) != 1 or counts[hits[0]] >= per_class:
            continue
        counts[hits[0]] += 1
        features.append(np.asarray(cache.features(i)))
        targets.append(np.eye(len(CLASSES), dtype=np.float32)[CLASSES.index(hits[0])])
    return ArrayFeatures(features, np.array(targets), labels, False, cache.backbone, cache.backbone_sha256), counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, required=True, help="a folder with train/ and test/ feature caches")
    parser.add_argument("--head", default="tl_tr")
    parser.add_argument("--per-class", type=int, default=30)
    args = parser.parse_args()

    labels = LabelSet("everyday-10", tuple(Label(i, f"custom:{c}", c) for i, c in enumerate(CLASSES)))
    train, train_counts = pick(FeatureCache.open(args.features / "train"), args.per_class, labels)
    test, test_counts = pick(FeatureCache.open(args.features / "test"), 1000, labels)
    print(f"train clips per class {train_counts}\ntest clips per class {test_counts}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_head(train, None, TrainConfig(head_type=args.head, progress=False),
                            Path(tmp) / "head.safetensors", write_plot=False)
        metrics = evaluate_head(load_head(result.path), test).metrics
    print(f"{train.backbone} {args.head}, earmark train defaults: test mAP {metrics.mAP:.3f}, "
          f"accuracy {metrics.accuracy:.3f} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
