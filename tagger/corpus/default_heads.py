"""Train the default heads on a built corpus with the project's own pipeline, compare head types,
and install the chosen ones under ``tagger/data/heads`` (fp16 safetensors + JSON card).

For each Whisper model: ``extract_features`` on the train, dev and test CSVs (the covered classes
of ``labels.csv``, multi-label), ``train_head`` for each head type (selected on dev), then test mAP
and the head's cost per 30 s window (three 10 s tag windows) on this machine. The results go to
``OUT/comparison.json`` and ``OUT/comparison.md``.

``final_fit``: once the recipe is settled on dev, train on train + dev together with that fixed
recipe (no selection: the average of the last epochs' weights) and report test mAP as before;
the test split is never trained on.
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbone import STEPS_PER_WINDOW
from ..heads import LoadedHead, card_path, int8_head, load_head, save_head
from ..labels import Label, LabelSet
from ..pipeline import load_model
from ..train.datasets import load_dataset
from ..train.evaluate import evaluate_head
from ..train.features import FeatureCache, extract_features, join_caches
from ..train.trainer import TrainConfig, train_head
from .build import SPLITS

DEFAULT_LABEL_SET = "earmark-default"
INSTALL_DIR = Path(__file__).resolve().parent.parent / "data" / "heads"


@dataclass
class HeadResult:
    model: str
    head_type: str
    path: Path
    test_mAP: float
    test_mAUC: float
    dev_mAP: float | None
    train_seconds: float
    ms_per_window: float  # head only, one 30 s window = three 10 s tag windows, CPU, int8 as served
    parameters: int


def corpus_config(epochs: int = 30, decay_start: int | None = None, decay_every: int | None = None,
                  **options) -> TrainConfig:
    """The recipe of the corpus-trained heads: the reference's lr schedule (30 epochs: decay after
    15, then every 5) stretched to ``epochs`` unless ``decay_start`` and ``decay_every`` say
    otherwise; ``options``: other ``TrainConfig`` fields."""
    return TrainConfig(epochs=epochs, progress=False,
                       lr_decay_start=decay_start if decay_start is not None else epochs // 2,
                       lr_decay_every=decay_every if decay_every is not None else max(1, round(epochs / 6)), **options)


def corpus_labels(corpus: Path) -> LabelSet:
    with open(corpus / "labels.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return LabelSet(DEFAULT_LABEL_SET, tuple(Label(i, row["mid"], row["display_name"]) for i, row in enumerate(rows)))


def extract_corpus(model_name: str, corpus: Path, work: Path, batch_size: int | None = None,
                   bf16: bool = False) -> dict[str, FeatureCache]:
    """Feature caches of the three splits (resumed when they exist); ``bf16``: encoder autocast."""
    model = load_model(model_name, head=None, device="cpu")
    labels = corpus_labels(corpus)
    caches = {}
    for split in SPLITS:
        clips = load_dataset(corpus / f"{split}.csv", "csv").clips
        out = work / model.name / split
        report = extract_features(model, clips, out, labels, True, batch_size=batch_size,
                                  progress=sys.stderr.isatty(), bf16=bf16)
        print(f"{model.name} {split}: {report.n_done} clips extracted ({report.n_cached} cached), "
              f"{report.audio_seconds / 60:.1f} min of audio in {report.wall_seconds:.0f} s "
              f"(real-time factor {report.real_time_factor:.0f}x)", flush=True)
        caches[split] = FeatureCache.open(out)
    return caches


def head_cost_ms(head: LoadedHead, repeats: int = 20) -> float:
    """Median milliseconds for the head over one 30 s window (three 10 s tag windows) on the CPU,
    as ``load_model`` serves it there by default: its Linear layers in int8 (``int8_head``)."""
    card = head.card
    x = torch.randn(3, card.n_layers, STEPS_PER_WINDOW // 3, card.d_model)
    module = int8_head(head).module  # a float32 copy on the CPU, quantized; ``head`` stays as it is
    times = []
    with torch.inference_mode():
        module(x)
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def train_one(caches: dict[str, FeatureCache], head_type: str, out: Path, config: TrainConfig,
              final_fit: bool = False) -> HeadResult:
    """Train on train (selected on dev), or on train + dev (``final_fit``); test on test."""
    started = time.perf_counter()
    if final_fit:
        result = train_head(join_caches([caches["train"], caches["dev"]]), None, config, out)
    else:
        result = train_head(caches["train"], caches["dev"], config, out)
    seconds = time.perf_counter() - started
    head = load_head(result.path)
    test = evaluate_head(head, caches["test"]).metrics
    return HeadResult(
        model=caches["train"].backbone, head_type=head_type, path=result.path, test_mAP=test.mAP, test_mAUC=test.mAUC,
        dev_mAP=result.dev_metrics.mAP if result.dev_metrics else None, train_seconds=round(seconds, 1),
        ms_per_window=round(head_cost_ms(head), 2), parameters=sum(p.numel() for p in head.module.parameters()))


def install(result: HeadResult, target_dir: Path = INSTALL_DIR) -> Path:
    """Copy a trained head to ``tagger/data/heads/MODEL.safetensors`` as float16, with its card."""
    head = load_head(result.path)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{result.model}.safetensors"
    card = head.card
    card.source = f"earmark-default-{result.model}"
    card.extra = dict(card.extra, test_metrics={"mAP": result.test_mAP, "mAUC": result.test_mAUC})
    save_head(head.module, card, target, dtype=torch.float16)
    return target


def write_comparison(results: list[HeadResult], out: Path) -> None:
    rows = [{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(r).items()} for r in results]
    (out / "comparison.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| model | head | test mAP | test mAUC | dev mAP | train s | head ms / 30 s window (int8, CPU) | parameters |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        dev = f"{r.dev_mAP:.3f}" if r.dev_mAP is not None else ""
        lines.append(f"| {r.model} | {r.head_type} | {r.test_mAP:.3f} | {r.test_mAUC:.3f} | {dev} | {r.train_seconds:.0f} | "
                     f"{r.ms_per_window:.1f} | {r.parameters / 1e6:.2f}M |")
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def train_defaults(corpus: Path, work: Path, models: list[str], head_types: list[str], config: TrainConfig,
                   install_type: str | None = None, extract_bf16: bool = False,
                   final_fit: bool = False) -> list[HeadResult]:
    """Extract, train every head type for every model, compare; install ``install_type`` heads."""
    results = []
    for model_name in models:
        caches = extract_corpus(model_name, corpus, work, bf16=extract_bf16)
        for head_type in head_types:
            config.head_type = head_type
            out = work / "heads" / f"{caches['train'].backbone}-{head_type}.safetensors"
            results.append(train_one(caches, head_type, out, config, final_fit))
            write_comparison(results, work)
    if install_type:
        for result in results:
            if result.head_type == install_type:
                target = install(result)
                shutil.copyfile(result.path.with_name(result.path.stem + ".train.csv"),
                                work / f"{result.model}-default.train.csv")
                print(f"installed {target} ({card_path(target).name})")
    return results
