"""``earmark data distil-default``: the default heads over all 527 AudioSet classes, distilled from
an AudioSet teacher on the pool (``build-pool``), every stage resumable from its cache.

1. **Label**: the teacher's probabilities for every pool piece and every clip of the labelled
   corpus' test split (and train and dev splits, ``with_corpus``) (``WORK/labels/...``,
   ``earmark label`` stores).
2. **Extract**, per Whisper model: the pool's splits (and the corpus' train and dev splits)
   packed into full windows (``WORK/MODEL/pool-SPLIT``), the corpus' test split one clip to a
   window as it is served (``WORK/MODEL/corpus-test``).
3. **Train** each head type on the pool's train split against the teacher (mixed with the
   pieces' own labels where a package mapping gives them), selected on the pool's dev split;
   from fresh weights, from ``init_heads``, or (``corpus_first``) from a head trained first on
   the labelled corpus' own labels (``corpus_head``).
4. **Measure** on held-out audio:
   - the pool's test split: mAP against the teacher's labels binarised at ``teacher_threshold``
     (macro over the classes with positives), the correlation of the probabilities, per class;
   - the labelled corpus' test split (its 166 classes, hard labels): mAP, beside the teacher's own;
   - per-class event thresholds, calibrated on the pool's dev split: the threshold that maximises
     F1 against the teacher's labels (classes with fewer than ``CALIBRATION_POSITIVES`` positives
     there keep ``teacher_threshold``).
5. **Install** one head type per model under ``tagger/data/heads`` (float16, card with the
   measures and the thresholds).

``WORK/distillation.json`` and ``WORK/distillation.md`` hold the comparison.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..heads import load_head, save_head
from ..labels import audioset
from ..pipeline import load_model
from ..train.datasets import load_dataset
from ..train.evaluate import correlations, evaluate_head
from ..train.features import ArrayFeatures, FeatureCache, extract_features, join_caches
from ..train.labelling import TeacherLabels, TeacherTargets, label_clips
from ..train.metrics import compute_metrics, map_standard_error
from ..train.scoring import label_mapping, score_clips
from ..train.trainer import TrainConfig, state_dir, train_head
from .build import SPLITS
from .default_heads import INSTALL_DIR, corpus_config, corpus_labels, head_cost_ms


@dataclass
class DistilResult:
    model: str
    head_type: str
    path: Path
    pool_test_mAP: float  # against the teacher's labels, binarised
    pool_test_correlation: float
    pool_test_mAP_se: float | None  # its bootstrap standard error over the test pieces (None: measured before it was)
    corpus_test_mAP: float  # the corpus' own labels (166 classes)
    teacher_corpus_test_mAP: float
    dev_mAP: float | None
    train_seconds: float
    ms_per_window: float
    parameters: int
    per_class: list[dict] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)


EVAL_STEPS = 100  # optimizer steps between dev evaluations


def distil_config(steps: int, lr: float, early_stop: int | None = None, **options) -> TrainConfig:
    """The distillation recipe: ``steps`` optimizer steps (evaluated every ``EVAL_STEPS``), a linear
    warm-up over a tenth, a cosine decay, early stopping after half the evaluations without a
    better dev mAP; uniform sampling, no label smoothing. Half, not a quarter: on 400 dev pieces the
    dev mAP moves by up to 0.08 between evaluations, and a quarter stopped tiny.en's TL-Tr at 1,800
    of 3,000 steps while its training loss was still falling. The teacher gives every clip a
    probability for every class, so no class is rare in the targets: the balanced sampler's
    oversampling of the few clips the teacher calls positive for a class lowered dev mAP (tiny.en,
    wa_mlp, 1500 steps: 0.27 balanced, 0.32 uniform). No mixup and no time masking: they slowed
    the fit to the teacher's probabilities (base's TL-Tr from fresh weights, 1,000 steps: pool test
    mAP against the teacher 0.373 with them, 0.422 without)."""
    epochs = max(1, math.ceil(steps / EVAL_STEPS))
    if early_stop is None:
        early_stop = max(5, epochs // 2)
    options = {"mixup": 0.0, "time_mask": 0, **options}
    return TrainConfig(epochs=epochs, epoch_steps=EVAL_STEPS, lr=lr, warmup_steps=max(1, steps // 10),
                       schedule="cosine", early_stop=early_stop, balanced=False, label_smoothing=0.0,
                       progress=False, **options)


def label_all(pool: Path, corpus: Path, work: Path, teacher_path: Path, device: str = "cpu",
              with_corpus: bool = False) -> dict[str, Path]:
    """The teacher's label stores of the pool's splits and of the corpus' test split (and, with
    ``with_corpus``, of its train and dev splits)."""
    from ..train.teacher import load_teacher

    teacher = load_teacher(teacher_path, device)
    stores = {}
    corpus_splits = SPLITS if with_corpus else ("test",)
    for name, data in [*((f"pool-{s}", pool / f"{s}.csv") for s in SPLITS),
                       *((f"corpus-{s}", corpus / f"{s}.csv") for s in corpus_splits)]:
        out = work / "labels" / name
        report = label_clips(teacher, teacher_path, load_dataset(data, "csv").clips, out, progress=sys.stderr.isatty())
        print(f"label {name}: {report.n_done} clips labelled ({report.n_cached} cached, {len(report.skipped)} "
              f"skipped), {report.audio_seconds / 60:.1f} min in {report.wall_seconds:.0f} s", flush=True)
        stores[name] = out
    return stores


def extract_all(model_name: str, pool: Path, corpus: Path, work: Path, bf16: bool = False,
                with_corpus: bool = False) -> dict[str, FeatureCache]:
    """Feature caches: the pool's splits packed, the corpus' test split as it is (and its train and
    dev splits packed, with ``with_corpus``)."""
    model = load_model(model_name, head=None, device="cpu")
    caches = {}
    jobs = [(f"pool-{s}", pool / f"{s}.csv", audioset(), True) for s in SPLITS]
    if with_corpus:
        jobs += [(f"corpus-{s}", corpus / f"{s}.csv", corpus_labels(corpus), True) for s in ("train", "dev")]
    jobs.append(("corpus-test", corpus / "test.csv", corpus_labels(corpus), False))
    for name, data, labels, pack in jobs:
        out = work / model.name / name
        clips = load_dataset(data, "csv").clips
        report = extract_features(model, clips, out, labels, True, pack=pack, bf16=bf16, progress=sys.stderr.isatty())
        print(f"{model.name} {name}: {report.n_done} clips extracted ({report.n_cached} cached, {report.n_skipped} "
              f"skipped), {report.audio_seconds / 60:.1f} min in {report.wall_seconds:.0f} s", flush=True)
        # a pool rebuilt with other settings leaves pieces it no longer has in the cache: never used
        caches[name] = FeatureCache.open(out).only(clip.clip_id for clip in clips)
    return caches


def in_audioset(cache: FeatureCache) -> ArrayFeatures:
    """A cache of another label set seen as AudioSet's 527 classes (its labels matched by mid)."""
    targets = np.zeros((len(cache), len(audioset())), np.float32)
    data_cols, audioset_cols = label_mapping(audioset(), cache.labels)
    targets[:, audioset_cols] = cache.targets()[:, data_cols]
    return ArrayFeatures([cache.features(i) for i in range(len(cache))], targets, audioset(), True, cache.backbone,
                         cache.backbone_sha256, None, str(cache.path), cache.clip_ids)


def training_set(caches: dict[str, FeatureCache]) -> FeatureCache | ArrayFeatures:
    """The pool's train split, and the corpus' train and dev splits when they were extracted."""
    parts = [caches["pool-train"]] + [in_audioset(caches[k]) for k in ("corpus-train", "corpus-dev") if k in caches]
    if len(parts) == 1:
        return parts[0]
    features = [part.features(i) for part in parts for i in range(len(part))]
    return ArrayFeatures(features, np.concatenate([part.targets() for part in parts]), audioset(), True,
                         parts[0].backbone, parts[0].backbone_sha256, None, " + ".join(str(p.path) for p in parts),
                         [clip_id for part in parts for clip_id in part.clip_ids])


def note_unlabelled(name: str, data: TeacherTargets) -> None:
    """Say so when some of a split's clips have no teacher labels (``TeacherTargets`` leaves them out)."""
    if data.missing:
        print(f"{name}: {data.missing} clips have no teacher labels and are left out (the label stores' "
              "skipped.jsonl says why; the next run tries them again)", flush=True)


CALIBRATION_POSITIVES = 5  # fewer dev positives: the class keeps the default threshold
LOWEST_THRESHOLD = 0.1  # a calibrated threshold is never lower


def best_f1_thresholds(scores: np.ndarray, positive: np.ndarray, default: float,
                       min_positives: int = CALIBRATION_POSITIVES, lowest: float = LOWEST_THRESHOLD) -> np.ndarray:
    """Per class, the score threshold with the highest F1 against ``positive`` (``default`` for a
    class with fewer than ``min_positives`` positives: one or two positives put the threshold
    just under their scores, 0.01 for one class of the first distilled head, and every clip that
    scores above it would start an event), and at least ``lowest``: base's head on the rebuilt
    pool scored Timpani's 7 dev positives so low that the best F1 was at 0.017, where 10 of the
    1,126 test pieces, none of them Timpani to the teacher, would have started an event."""
    thresholds = np.full(scores.shape[1], default, dtype=np.float64)
    for c in range(scores.shape[1]):
        truth = positive[:, c]
        if truth.sum() < max(1, min_positives):
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        hits = np.cumsum(truth[order])
        f1 = 2 * hits / (np.arange(1, len(order) + 1) + truth.sum())
        best = int(np.argmax(f1))
        below = scores[order[best + 1], c] if best + 1 < len(order) else 0.0
        thresholds[c] = max(lowest, float((scores[order[best], c] + below) / 2))
    return thresholds


def measure(head_path: Path, caches: dict[str, FeatureCache], stores: dict[str, Path], threshold: float
            ) -> dict:
    head = load_head(head_path)
    out: dict = {}
    pool_labels = TeacherLabels.open(*(stores[f"pool-{s}"] for s in SPLITS))
    test = TeacherTargets(caches["pool-test"], pool_labels, 0.0, threshold)
    note_unlabelled("pool-test", test)
    evaluation = evaluate_head(head, test)
    overall, per_class_r = correlations(evaluation.scores, test.soft_targets())
    out["pool_test"] = {**evaluation.metrics.summary(), "correlation": overall,
                        "mAP_se": map_standard_error(evaluation.targets, evaluation.scores)}
    dev = TeacherTargets(caches["pool-dev"], pool_labels, 0.0, threshold)
    dev_scores = score_clips(head.module, [dev.features(i) for i in range(len(dev))], 25, True)
    thresholds = best_f1_thresholds(dev_scores, dev.targets() > 0.5, threshold)
    out["thresholds"] = [round(float(t), 4) for t in thresholds]
    m = evaluation.metrics
    out["per_class"] = [{"mid": label.mid, "name": label.name, "test_positives": int(pos),
                         "ap": None if not math.isfinite(ap) else round(float(ap), 4),
                         "correlation": None if not math.isfinite(r) else round(float(r), 4),
                         "threshold": out["thresholds"][label.index]}
                        for label, ap, r, pos in zip(audioset(), m.per_class_ap, per_class_r, m.positives)]
    corpus = evaluate_head(head, caches["corpus-test"])
    out["corpus_test"] = corpus.metrics.summary()
    teacher_corpus = TeacherLabels.open(stores["corpus-test"])
    cache = caches["corpus-test"]
    teacher_scores = np.stack([teacher_corpus.clip(clip_id) for clip_id in cache.clip_ids])
    data_cols, teacher_cols = label_mapping(audioset(), cache.labels)
    out["teacher_corpus_test"] = compute_metrics(cache.targets()[:, data_cols], teacher_scores[:, teacher_cols]).summary()
    return out


def write_report(results: list[DistilResult], work: Path) -> None:
    rows = [{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(r).items() if k not in ("per_class", "thresholds")}
            for r in results]
    (work / "distillation.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [("| model | head | pool test mAP vs teacher (± standard error) | correlation | corpus test mAP (teacher) | dev mAP | "
             "train s | head ms / 30 s window (int8, CPU) | parameters |"), "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        dev = f"{r.dev_mAP:.3f}" if r.dev_mAP is not None else ""
        error = f" ± {r.pool_test_mAP_se:.3f}" if r.pool_test_mAP_se is not None else ""
        lines.append(f"| {r.model} | {r.head_type} | {r.pool_test_mAP:.3f}{error} | {r.pool_test_correlation:.3f} | "
                     f"{r.corpus_test_mAP:.3f} ({r.teacher_corpus_test_mAP:.3f}) | {dev} | {r.train_seconds:.0f} | "
                     f"{r.ms_per_window:.1f} | {r.parameters / 1e6:.2f}M |")
    (work / "distillation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def install(result: DistilResult, measures: dict, target_dir: Path = INSTALL_DIR) -> Path:
    head = load_head(result.path)
    target = target_dir / f"{result.model}.safetensors"
    card = head.card
    card.source = f"earmark-default-{result.model}"
    card.extra = dict(card.extra, thresholds=measures["thresholds"], test_metrics={
        "pool_test_vs_teacher": measures["pool_test"], "corpus_test": measures["corpus_test"],
        "teacher_corpus_test": measures["teacher_corpus_test"]})
    save_head(head.module, card, target, dtype=torch.float16)
    return target


def finished(out: Path) -> bool:
    """A training run that ended: its weights are there and no state of a run cut off."""
    return out.is_file() and not state_dir(out).exists()


CORPUS_FIRST_LR = 5e-4  # the corpus-trained heads' learning rate (MODEL_CARD.md, "The corpus-trained heads")


def trained_with(head) -> tuple[float | None, float]:
    """``(dev mAP, training seconds)`` from a trained head's card: a head measured again, not
    trained again, keeps its numbers in the report."""
    extra = head.card.extra if isinstance(head.card.extra, dict) else {}
    dev = (extra.get("metrics") or {}).get("dev") or {}
    return dev.get("mAP"), round(float(extra.get("seconds") or 0.0), 1)


def corpus_head(caches: dict[str, FeatureCache], work: Path, config: TrainConfig) -> Path:
    """A head trained on the labelled corpus' own labels alone (its 166 classes), a final fit on
    the corpus' train and dev features that ``extract_all`` packed (no selection: the averaged
    weights, as the corpus-trained heads): the start a student needs to keep the corpus' own mAP
    (from fresh weights base's student reached 0.559 there, from the corpus-trained head 0.612;
    60 epochs here: the start 0.570, base's student from it 0.582, MODEL_CARD.md). Cached:
    trained once, resumed if cut off."""
    out = work / "heads" / f"{caches['corpus-train'].backbone}-{config.head_type}-corpus.safetensors"
    if finished(out):
        return out
    started = time.perf_counter()
    train_head(join_caches([caches["corpus-train"], caches["corpus-dev"]]), None, config, out, resume=True)
    print(f"{out.name}: trained on the corpus' own labels in {time.perf_counter() - started:.0f} s", flush=True)
    return out


def distil_defaults(pool: Path, corpus: Path, work: Path, teacher_path: Path, models: list[str],
                    head_types: list[str], config: TrainConfig, install_type: str | None = None,
                    extract_bf16: bool = False, install_dir: Path = INSTALL_DIR,
                    with_corpus: bool = False, init_heads: Path | None = None,
                    corpus_first: int | None = None) -> list[DistilResult]:
    """See the module docstring. ``with_corpus``: the labelled corpus' train and dev clips train
    too (their own labels mixed with the teacher's by ``config.hard_weight``). ``init_heads``: a
    folder of ``MODEL.safetensors`` heads (the corpus-trained ones) that each student of the same
    type starts from (``trainer.start_from``). ``corpus_first`` (with ``with_corpus``, without
    ``init_heads``): each student starts from a ``corpus_head`` trained that many epochs."""
    if corpus_first and not with_corpus:
        raise ValueError("corpus_first trains on the corpus' train and dev features: it needs with_corpus")
    work.mkdir(parents=True, exist_ok=True)
    stores = label_all(pool, corpus, work, teacher_path, with_corpus=with_corpus)
    pool_labels = TeacherLabels.open(*(stores[f"pool-{s}"] for s in SPLITS))
    train_labels = TeacherLabels.open(*stores.values())
    results: list[DistilResult] = []
    for model_name in models:
        caches = extract_all(model_name, pool, corpus, work, extract_bf16, with_corpus)
        train = TeacherTargets(training_set(caches), train_labels, config.hard_weight, config.teacher_threshold)
        dev = TeacherTargets(caches["pool-dev"], pool_labels, 0.0, config.teacher_threshold)
        note_unlabelled("training set", train)
        note_unlabelled("pool-dev", dev)
        for head_type in head_types:
            config.head_type = head_type
            start = init_heads / f"{caches['pool-train'].backbone}.safetensors" if init_heads else None
            if start is None and corpus_first:
                start = corpus_head(caches, work, corpus_config(
                    corpus_first, head_type=head_type, lr=CORPUS_FIRST_LR, window=config.window, bf16=config.bf16,
                    by_length=config.by_length))
            config.init_head = str(start) if start and start.is_file() and load_head(start).card.head_type == head_type \
                else None
            out = work / "heads" / f"{caches['pool-train'].backbone}-{head_type}.safetensors"
            if finished(out):
                print(f"{out} exists: measured again, not trained again", flush=True)
            else:
                train_head(train, dev, config, out, resume=True)
            measures = measure(out, caches, stores, config.teacher_threshold)
            (out.with_suffix(".measures.json")).write_text(json.dumps(measures, indent=1) + "\n")
            head = load_head(out)
            dev_mAP, seconds = trained_with(head)
            results.append(DistilResult(
                model=caches["pool-train"].backbone, head_type=head_type, path=out,
                pool_test_mAP=measures["pool_test"]["mAP"], pool_test_correlation=measures["pool_test"]["correlation"],
                pool_test_mAP_se=measures["pool_test"].get("mAP_se"),
                corpus_test_mAP=measures["corpus_test"]["mAP"],
                teacher_corpus_test_mAP=measures["teacher_corpus_test"]["mAP"], dev_mAP=dev_mAP,
                train_seconds=seconds, ms_per_window=round(head_cost_ms(head), 2),
                parameters=sum(p.numel() for p in head.module.parameters()),
                per_class=measures["per_class"], thresholds=measures["thresholds"]))
            write_report(results, work)
            if head_type == install_type:
                target = install(results[-1], measures, install_dir)
                shutil.copyfile(out.with_suffix(".measures.json"), work / f"{results[-1].model}-default.measures.json")
                print(f"installed {target}", flush=True)
    return results
