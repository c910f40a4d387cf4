"""``earmark evaluate``: a head's scores on labelled clips (scored as ``scoring`` says).

``earmark evaluate`` reports mAP, mAUC, d-prime (and accuracy for single-label sets) of a head on
cached features (``--features``) or on labeled audio extracted on the fly (``--data``), with
per-class AP as CSV and a bar chart (``--report-dir``), or runs k-fold cross-validation over the
cache's ``fold`` column (``--folds``): train on the other folds with the ``train`` options, test
on the held-out fold, report mean and standard deviation of each metric, the per-fold numbers, and
(with ``--report-dir``) a confusion matrix of the held-out predictions as CSV and PNG.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..heads import HEAD_TYPES, LoadedHead, int8_head, load_head
from ..labels import LabelSet
from ..tagging import steps_per_window
from .features import ArrayFeatures
from .metrics import Metrics, compute_metrics, map_standard_error
from .recipe import add_recipe_options
from .scoring import label_mapping, score_clips
from .trainer import TrainConfig, TrainData, add_training_options, setup_threads, train_head

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 10.0


@dataclass
class Evaluation:
    """A head's metrics on a data set, with the scores behind them."""

    metrics: Metrics
    labels: LabelSet  # the data's classes that were scored (the shared ones if the sets differ)
    scores: np.ndarray  # [N, C'] clip probabilities in the order of ``labels``
    targets: np.ndarray  # [N, C']
    missing: list[str]  # mids of data classes the head does not score (left out of the metrics)


def evaluate_head(
    head: LoadedHead,
    data: Any,
    *,
    window: float = DEFAULT_WINDOW,
    batch_size: int = 64,
    amp: bool = True,
) -> Evaluation:
    """Score every clip of ``data`` (a FeatureCache or anything with ``features(i)``, ``targets()``,
    ``labels``, ``__len__``) with ``head``; the label sets are matched by mid."""
    if (data.n_layers, data.d_model) != (head.card.n_layers, head.card.d_model):
        raise ValueError(
            f"the head reads L={head.card.n_layers} blocks of width {head.card.d_model}, but the features "
            f"have L={data.n_layers}, D={data.d_model}: they come from a different Whisper model"
        )
    data_sha = getattr(data, "backbone_sha256", None)
    if head.card.backbone_sha256 and data_sha and head.card.backbone_sha256.lower() != str(data_sha).lower():
        log.warning("the head was trained on Whisper weights %s..., the features come from %s...",
                    head.card.backbone_sha256[:12], str(data_sha)[:12])
    data_cols, head_cols = label_mapping(head.card.labels, data.labels)
    features = [data.features(i) for i in range(len(data))]
    scores = score_clips(head.module, features, steps_per_window(window), head.card.multi_label,
                         batch_size=batch_size, device=head.device, amp=amp)
    targets = np.asarray(data.targets(), dtype=np.float32)
    data_labels: LabelSet = data.labels
    if len(data_cols) == len(data_labels) and np.array_equal(data_cols, head_cols):
        labels, missing = data_labels, []
    else:
        keep = set(data_cols.tolist())
        missing = [label.mid for label in data_labels if label.index not in keep]
        labels = LabelSet.from_json(data_labels.name, [
            {"index": new, "mid": data_labels[old].mid, "name": data_labels[old].name}
            for new, old in enumerate(data_cols.tolist())
        ])
        scores, targets = scores[:, head_cols], targets[:, data_cols]
        if missing:
            log.warning("the head does not score %d of the data's classes (%s); they are left out",
                        len(missing), ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    metrics = compute_metrics(targets, scores, multi_label=head.card.multi_label)
    return Evaluation(metrics=metrics, labels=labels, scores=scores, targets=targets, missing=missing)


def correlations(scores: np.ndarray, soft: np.ndarray) -> tuple[float, np.ndarray]:
    """Pearson correlation of a head's probabilities with a teacher's: over every (clip, class)
    pair, and per class (``nan`` for a class either side holds constant)."""
    def pearson(a: np.ndarray, b: np.ndarray, axis=None):
        a = a - a.mean(axis=axis, keepdims=axis is not None)
        b = b - b.mean(axis=axis, keepdims=axis is not None)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (a * b).sum(axis=axis) / np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))

    scores, soft = np.asarray(scores, np.float64), np.asarray(soft, np.float64)
    return float(pearson(scores.ravel(), soft.ravel())), pearson(scores, soft, axis=0)


# ---------------------------------------------------------------------------------------------
# Reports


def write_per_class_csv(evaluation: Evaluation, path: Path) -> Path:
    m = evaluation.metrics
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "mid", "name", "positives", "ap", "auc"])
        for label, ap, auc, pos in zip(evaluation.labels, m.per_class_ap, m.per_class_auc, m.positives):
            writer.writerow([label.index, label.mid, label.name, pos,
                             "" if not math.isfinite(ap) else f"{ap:.6f}", "" if not math.isfinite(auc) else f"{auc:.6f}"])
    return path


def write_report(evaluation: Evaluation, report_dir: Path, title: str = "") -> dict[str, Path]:
    """``per_class.csv``, ``per_class_ap.png`` and ``metrics.json`` in ``report_dir``."""
    from .plots import plot_per_class_ap

    report_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": write_per_class_csv(evaluation, report_dir / "per_class.csv")}
    paths["png"] = plot_per_class_ap(list(evaluation.labels.names), evaluation.metrics.per_class_ap,
                                     report_dir / "per_class_ap.png", title=title)
    paths["json"] = report_dir / "metrics.json"
    paths["json"].write_text(json.dumps(evaluation.metrics.to_json(), indent=2) + "\n", encoding="utf-8")
    return paths


# ---------------------------------------------------------------------------------------------
# Audio data (``--data``): features extracted on the fly


def features_from_audio(data_path: str | Path, model_name: str | None, head: LoadedHead | None, *,
                        data_format: str = "auto", device: str | None = None, labels: str = "auto",
                        max_duration: float | None = None, chunk: int = 64) -> ArrayFeatures:
    """Load a labeled audio data set (any ``earmark extract`` format) and extract its features on
    the fly with ``clip_features`` (the inference path) and the Whisper model named by the head
    card's backbone (or ``model_name``). With a head, the data's labels are looked up in the head's
    label set (by mid or display name) and clips with a label the head does not know are left out
    with a warning; without one (cross-validation) the label set is resolved as ``extract`` does."""
    from .. import load_model
    from ..audio import load_audio
    from .datasets import default_multi_label, label_indices, load_dataset, resolve_labels
    from .features import clip_features, prepare_audio

    name = model_name or (head.card.backbone if head is not None else None)
    if not name:
        raise ValueError("no Whisper model to extract features with: the head card names no backbone (or there is "
                         "no head); pass --model")
    dataset = load_dataset(data_path, format=data_format)
    if head is not None:
        label_set, multi_label = head.card.labels, head.card.multi_label
    else:
        label_set = resolve_labels(dataset.clips, labels)
        multi_label = default_multi_label(dataset.clips, label_set)
    model = load_model(name, head=None, device=device)
    if head is not None and head.card.backbone_sha256 and head.card.backbone_sha256.lower() != model.backbone.sha256.lower():
        raise ValueError(
            f"the head was trained on Whisper weights with sha256 {head.card.backbone_sha256[:12]}..., but "
            f"{name!r} resolves to weights with sha256 {model.backbone.sha256[:12]}...; pass the --model the head was trained on"
        )
    kept, indices, skipped = [], [], []
    for clip in dataset.clips:
        try:
            indices.append(label_indices(clip, label_set))
            kept.append(clip)
        except KeyError as unknown:
            skipped.append((clip.clip_id, str(unknown)))
    if skipped:
        log.warning("%d clips have labels the head does not score and are left out (first: %s)",
                    len(skipped), skipped[0][1])
    if not kept:
        raise ValueError(f"no clip of {data_path} has labels in the {label_set.name!r} label set")
    feats: list[np.ndarray] = []
    for first in range(0, len(kept), chunk):
        audios = [prepare_audio(clip, load_audio(clip.path), max_duration) for clip in kept[first : first + chunk]]
        feats.extend(clip_features(model, audios))
    targets = np.zeros((len(kept), len(label_set)), dtype=np.float32)
    for row, clip_labels in enumerate(indices):
        targets[row, clip_labels] = 1.0
    folds = [clip.fold for clip in kept]
    fold_array = np.array([-1 if f is None else f for f in folds]) if any(f is not None for f in folds) else None
    return ArrayFeatures(feats, targets, label_set, multi_label, backbone=model.name,
                         backbone_sha256=model.backbone.sha256, folds=fold_array, path=str(data_path))


# ---------------------------------------------------------------------------------------------
# Cross-validation


@dataclass
class FoldResult:
    fold: Any
    train_clips: int
    test_clips: int
    metrics: Metrics
    scores: np.ndarray | None = None  # [test clips, C] the held-out fold's probabilities
    targets: np.ndarray | None = None  # [test clips, C]
    seconds: float = 0.0  # training and testing the fold


def confusion_matrix(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``[C, C]`` counts: row = a true class of a clip, column = the clip's highest-scoring class
    (a clip with several classes counts once per class)."""
    targets, scores = np.asarray(targets) > 0.5, np.asarray(scores)
    matrix = np.zeros((targets.shape[1], targets.shape[1]), dtype=np.int64)
    predicted = scores.argmax(axis=1)
    for row, top in zip(targets, predicted):
        matrix[np.flatnonzero(row), top] += 1
    return matrix


def write_confusion(matrix: np.ndarray, labels: LabelSet, report_dir: Path, title: str = "") -> dict[str, Path]:
    """``confusion.csv`` (true class per row, predicted class per column, with mids) and
    ``confusion.png`` in ``report_dir``, over the classes that occur (true or predicted)."""
    from .plots import plot_confusion

    used = np.flatnonzero(matrix.sum(axis=0) + matrix.sum(axis=1))
    names = [labels[int(i)].name for i in used]
    shown = matrix[np.ix_(used, used)]
    report_dir.mkdir(parents=True, exist_ok=True)
    csv_path = report_dir / "confusion.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", "mid", *names])
        for i, name in zip(used, names):
            writer.writerow([name, labels[int(i)].mid, *matrix[int(i), used].tolist()])
    png_path = plot_confusion(names, shown, report_dir / "confusion.png", title=title)
    return {"csv": csv_path, "png": png_path}


def cross_validate(data: TrainData, config: TrainConfig, work_dir: Path, *, window: float = DEFAULT_WINDOW,
                   eval_batch_size: int = 64, command_line: str | None = None, recipe: dict | None = None
                   ) -> tuple[list[FoldResult], dict]:
    """k-fold cross-validation over ``data.folds()``: for each fold, train a head (``config``, a
    ``TrainConfig``) on the other folds with no dev set (the checkpoint-averaged model is kept, so
    the held-out fold never steers training), and evaluate it on the held-out fold.
    Returns the per-fold results and a summary: mean and sample standard deviation (ddof=1)."""
    folds = data.folds()
    if folds is None:
        raise ValueError(f"{getattr(data, 'path', 'the data')} has no fold column; cross-validation needs one")
    folds = np.asarray(folds)
    values = sorted(set(folds.tolist()) - {-1})  # -1: a clip without a fold, always trained on
    if len(values) < 2:
        raise ValueError(f"cross-validation needs at least 2 folds; the data has {len(values)}")
    results = []
    for value in values:
        started = time.perf_counter()
        test_idx = np.flatnonzero(folds == value)
        train_idx = np.flatnonzero(folds != value)
        train_part, test_part = data.subset(train_idx), data.subset(test_idx)
        log.info("fold %s: training on %d clips, testing on %d", value, len(train_idx), len(test_idx))
        result = train_head(train_part, None, config, work_dir / f"fold_{value}.safetensors",
                            command_line=command_line, write_plot=False, recipe=recipe)
        head = load_head(result.path, device=result.device)
        evaluation = evaluate_head(head, test_part, window=window, batch_size=eval_batch_size, amp=config.amp)
        results.append(FoldResult(value, len(train_idx), len(test_idx), evaluation.metrics, evaluation.scores,
                                  evaluation.targets, time.perf_counter() - started))
    summary = {}
    for key in ("mAP", "mAUC", "d_prime", "accuracy"):
        vals = np.array([getattr(r.metrics, key) for r in results], dtype=np.float64)
        finite = vals[np.isfinite(vals)]
        mean = float(finite.mean()) if finite.size else float("nan")
        std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0 if finite.size else float("nan")
        summary[key] = {"mean": _clean(mean), "std": _clean(std)}
    return results, summary


def _clean(value: float) -> float | None:
    return None if not math.isfinite(value) else value


# ---------------------------------------------------------------------------------------------
# CLI


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:

    parser.add_argument("--head", default=None, help="the head to evaluate (.safetensors + .json card, or a Whisper-AT .pth); "
                                                     "with --folds a head type such as linear is the type trained per fold")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--features", default=None, help="a feature cache (from `earmark extract`)")
    source.add_argument("--data", default=None,
                        help="labeled audio (CSV/JSON/folder, as `earmark extract` reads): features are extracted "
                             "on the fly with the head card's backbone (or --model)")
    parser.add_argument("--clips", default=None, metavar="CSV",
                        help="with --features: score only the clips this data set lists (a cache keeps the clips "
                             "of earlier builds of its data set; the pool's test split of an earlier build, say)")
    parser.add_argument("--data-format", default="auto", help="format of --data (default: auto)")
    parser.add_argument("--model", default=None, help="Whisper model for --data (default: the head card's backbone)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--report-dir", type=Path, default=None,
                        help="write per_class.csv, per_class_ap.png and metrics.json here")
    parser.add_argument("--eval-window", type=float, default=DEFAULT_WINDOW,
                        help="tag window in seconds for scoring clips, a multiple of 0.4 (default: 10)")
    parser.add_argument("--eval-batch-size", type=int, default=64, help="windows per forward pass (default: 64)")
    parser.add_argument("--int8", action="store_true",
                        help="score with the head's Linear layers in int8, as load_model serves it on a CPU by "
                             "default (default: float32, as trained)")
    parser.add_argument("--folds", action="store_true",
                        help="k-fold cross-validation over the data's fold column: train a head (--head-type and the "
                             "training options below) on k-1 folds, test on the held-out one; report mean ± std")
    parser.add_argument("--teacher-labels", action="append", default=None, metavar="DIR",
                        help="score against a teacher's labels of the same clips (`earmark label` stores) instead of "
                             "the data's: mAP against the teacher binarised at --teacher-threshold, and the "
                             "correlation of the probabilities")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="also report the mAP's standard error over N resamplings of the clips (200 is "
                             "plenty; default: 0, none)")
    parser.add_argument("--head-type", dest="head_type", default=None,
                        help="head type trained in each fold with --folds (--recipe reference: tl_tr; auto: wa_mlp "
                             "below 5,000 training clips, else tl_tr; linear: the linear-probe baseline)")
    add_training_options(parser, include_head=False)
    add_recipe_options(parser)


def only_listed(cache, clips_csv: str, data_format: str = "auto"):
    """``cache`` over the clips ``clips_csv`` lists; ValueError naming the listed clips it lacks."""
    from .datasets import load_dataset

    listed = [clip.clip_id for clip in load_dataset(clips_csv, data_format).clips]
    held = set(cache.clip_ids)
    missing = [clip_id for clip_id in listed if clip_id not in held]
    if missing:
        raise ValueError(f"{len(missing)} of the {len(listed)} clips {clips_csv} lists are not in the feature cache "
                         f"{cache.path} (the first: {', '.join(missing[:3])}): extract them into it first")
    return cache.only(listed)


def _print_metrics(metrics: dict, stream=None) -> None:
    stream = stream or sys.stdout  # looked up now: a caller may have replaced it
    for key in ("mAP", "mAUC", "d_prime", "accuracy"):
        value = metrics.get(key)
        if value is not None:
            error = f" ± {metrics['mAP_se']:.4f} (standard error, {metrics['bootstrap']} resamplings of the clips)" \
                if key == "mAP" and metrics.get("mAP_se") is not None else ""
            print(f"{key:>9}: {value:.4f}{error}", file=stream)
    print(f"    clips: {metrics['n_clips']}, classes: {metrics['n_classes']} "
          f"({metrics['classes_scored']} with positives)", file=stream)


def _run_folds(args: argparse.Namespace, data) -> int:
    """``earmark evaluate --folds``: the recipe for the data, cross-validation, the reports."""
    import tempfile

    from .recipe import choose_recipe

    folds = data.folds()
    if folds is None:
        raise ValueError(f"{getattr(data, 'path', 'the data')} has no fold column; cross-validation needs one")
    values = sorted(set(np.asarray(folds).tolist()) - {-1})
    typical_train = len(data) - round(len(data) / max(1, len(values)))  # the clips one fold trains on
    recipe = choose_recipe(args, data, n_clips=typical_train)
    print(f"earmark evaluate: recipe {recipe.name}, for about {typical_train} training clips per fold:", file=sys.stderr)
    for note in recipe.notes:
        print(f"  {note}", file=sys.stderr)
    data, config = recipe.apply(data), recipe.config
    with tempfile.TemporaryDirectory(prefix="earmark-cv-") as scratch:
        work_dir = args.report_dir or Path(scratch)  # the fold heads: kept with --report-dir
        work_dir.mkdir(parents=True, exist_ok=True)
        results, summary = cross_validate(data, config, work_dir, window=args.eval_window,
                                          eval_batch_size=args.eval_batch_size, command_line=" ".join(sys.argv),
                                          recipe=recipe.to_json())
    matrix = confusion_matrix(np.concatenate([r.targets for r in results]), np.concatenate([r.scores for r in results]))
    payload = {"folds": [{"fold": r.fold, "train_clips": r.train_clips, "test_clips": r.test_clips,
                          "seconds": round(r.seconds, 2), **r.metrics.summary()} for r in results],
               "summary": summary, "recipe": recipe.to_json(), "labels": [label.name for label in data.labels],
               "confusion": matrix.tolist(), "multi_label": bool(data.multi_label)}
    if args.report_dir:
        with open(args.report_dir / "folds.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["fold", "train_clips", "test_clips", "mAP", "mAUC", "d_prime", "accuracy"])
            for r in results:
                m = r.metrics.summary()
                writer.writerow([r.fold, r.train_clips, r.test_clips,
                                 *(m[k] if m[k] is not None else "" for k in ("mAP", "mAUC", "d_prime", "accuracy"))])
        (args.report_dir / "cv.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        write_confusion(matrix, data.labels, args.report_dir,
                        title=f"{config.head_type}, {len(results)}-fold cross-validation (held-out predictions)")
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    for r in results:
        accuracy = f", accuracy {r.metrics.accuracy:.4f}" if math.isfinite(r.metrics.accuracy) else ""
        print(f"fold {r.fold}: mAP {r.metrics.mAP:.4f}{accuracy} ({r.test_clips} clips, {r.seconds:.0f} s)")
    for key, stats in summary.items():
        if stats["mean"] is not None:
            print(f"{key:>9}: {stats['mean']:.4f} ± {stats['std']:.4f}")
    if args.report_dir:
        print(f"folds.csv, cv.json, confusion.csv and confusion.png in {args.report_dir}")
    else:
        print("(--report-dir DIR writes the per-fold numbers, the confusion matrix as CSV and PNG, and the fold heads)")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:

    setup_threads(getattr(args, "threads", None))
    if getattr(args, "clips", None) and not args.features:
        print("earmark evaluate: --clips narrows a feature cache: give it with --features", file=sys.stderr)
        return 2
    if args.bootstrap and args.bootstrap < 2:
        print(f"earmark evaluate: --bootstrap {args.bootstrap}: a standard error needs at least 2 resamplings "
              "(200 is plenty)", file=sys.stderr)
        return 2
    if args.folds and args.bootstrap:
        print("earmark evaluate: --bootstrap resamples one test set; --folds reports the spread over the folds "
              "instead: give one of them", file=sys.stderr)
        return 2
    if args.folds and args.head in HEAD_TYPES and not Path(args.head).exists():  # --folds --head linear
        if args.head_type not in (None, args.head):
            print(f"earmark evaluate: --head {args.head} and --head-type {args.head_type} disagree", file=sys.stderr)
            return 2
        args.head_type, args.head = args.head, None
    try:
        head = None
        if args.head is not None:
            head = load_head(args.head, device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
            if args.int8:
                head = int8_head(head)
        elif not args.folds:
            print("earmark evaluate: --head is required (or --folds to cross-validate)", file=sys.stderr)
            return 2
        if args.features:
            from .features import FeatureCache

            data = FeatureCache.open(args.features)
            if args.clips:
                data = only_listed(data, args.clips, args.data_format)
        else:
            data = features_from_audio(args.data, args.model, head, data_format=args.data_format, device=args.device)
        if args.folds:
            return _run_folds(args, data)
        if args.teacher_labels:
            from .labelling import TeacherLabels, TeacherTargets

            data = TeacherTargets(data, TeacherLabels.open(*args.teacher_labels), 0.0, args.teacher_threshold)
        evaluation = evaluate_head(head, data, window=args.eval_window, batch_size=args.eval_batch_size,
                                   amp=not args.no_amp)
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"earmark evaluate: {error}", file=sys.stderr)
        return 2
    summary = evaluation.metrics.summary()
    if args.teacher_labels:
        overall, _ = correlations(evaluation.scores, data.soft_targets())
        summary.update(against="teacher", teacher_threshold=args.teacher_threshold, correlation=overall)
    if args.bootstrap:
        summary.update(mAP_se=map_standard_error(evaluation.targets, evaluation.scores, args.bootstrap),
                       bootstrap=args.bootstrap)
    if evaluation.missing:
        summary["classes_not_in_head"] = evaluation.missing
    if args.report_dir:
        write_report(evaluation, args.report_dir, title=f"{Path(args.head).name} on {Path(str(data.path)).name}")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_metrics(summary)
    return 0
