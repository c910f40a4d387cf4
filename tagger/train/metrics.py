"""Tagging metrics: average precision (mAP), ROC AUC, d-prime, accuracy.

Definitions (the same numbers as scikit-learn and as Whisper-AT's ``calculate_stats``):

- **AP** of one class: ``sum_n (R_n - R_{n-1}) * P_n`` over the distinct score thresholds in
  decreasing order (no interpolation; tied scores form one threshold), as
  ``sklearn.metrics.average_precision_score``. Undefined for a class without positives.
- **mAP**: the mean AP over the classes that have at least one positive clip (the others are
  skipped and counted in ``Metrics.classes_without_positives``).
- **AUC** of one class: the area under the ROC curve with ties counted half (the Mann-Whitney
  statistic), as ``sklearn.metrics.roc_auc_score``. Undefined unless the class has both positive
  and negative clips. **mAUC** is the macro mean over the classes where it is defined.
- **d-prime**: ``sqrt(2) * Phi^-1(mAUC)`` (Phi^-1 the standard normal quantile). An AUC of exactly
  0 or 1 is clipped to [1e-6, 1 - 1e-6] first so d' stays finite (|d'| <= 6.72).
- **accuracy** (single-label sets): the fraction of clips whose highest-scoring class is their
  label. Reported for multi-label sets too (top-1 class among the clip's labels) but not used there.

Targets are binarised at 0.5 (soft targets from label smoothing never reach evaluation).

- **mAP standard error**: the standard deviation of the mAP over resamplings of the clips with
  replacement (a bootstrap, seeded), each resampling scored over the classes it has positives of.
  On a test split where many classes have one to three positive clips, the mAP moves by a few
  hundredths with the sampling of the clips alone: two heads closer than that are not told apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

AUC_CLIP = 1e-6


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """sklearn's ``average_precision_score`` for one class (``nan`` without positives)."""
    y_true = np.asarray(y_true).ravel() > 0.5
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true has {y_true.size} values, y_score {y_score.size}")
    n_pos = int(y_true.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-y_score, kind="mergesort")
    score, hit = y_score[order], y_true[order]
    tp = np.cumsum(hit)
    # the last position of every run of equal scores is one threshold
    last = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    tp = tp[last].astype(np.float64)
    predicted = (last + 1).astype(np.float64)
    precision = tp / predicted
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their mean rank (scipy's ``rankdata(method='average')``)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks start+1 .. end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """sklearn's ``roc_auc_score`` for one class (``nan`` unless both positives and negatives)."""
    y_true = np.asarray(y_true).ravel() > 0.5
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    n_pos = int(y_true.sum())
    n_neg = y_true.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(y_score)
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def d_prime(auc: float) -> float:
    """``sqrt(2) * Phi^-1(auc)``, the AUC clipped to [1e-6, 1 - 1e-6]."""
    if not math.isfinite(auc):
        return float("nan")
    return math.sqrt(2.0) * NormalDist().inv_cdf(min(max(auc, AUC_CLIP), 1.0 - AUC_CLIP))


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


@dataclass
class Metrics:
    """Clip-level metrics of one set of scores."""

    mAP: float
    mAUC: float
    d_prime: float
    accuracy: float
    n_clips: int
    n_classes: int
    classes_scored: int  # classes with at least one positive (the mAP's denominator)
    multi_label: bool
    per_class_ap: list[float] = field(default_factory=list)  # nan where a class has no positive
    per_class_auc: list[float] = field(default_factory=list)
    positives: list[int] = field(default_factory=list)

    @property
    def classes_without_positives(self) -> int:
        return self.n_classes - self.classes_scored

    @property
    def main(self) -> float:
        """The selection metric: mAP for multi-label sets, accuracy for single-label ones."""
        return self.mAP if self.multi_label else self.accuracy

    def summary(self) -> dict:
        """The scalar metrics as a JSON-safe dict (non-finite numbers become None)."""
        d = {k: v for k, v in asdict(self).items() if not k.startswith("per_class") and k != "positives"}
        d["classes_without_positives"] = self.classes_without_positives
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}

    def to_json(self) -> dict:
        def clean(values):
            return [None if not math.isfinite(v) else round(float(v), 6) for v in values]

        return {**self.summary(), "per_class_ap": clean(self.per_class_ap),
                "per_class_auc": clean(self.per_class_auc), "positives": list(self.positives)}


def map_standard_error(targets: np.ndarray, scores: np.ndarray, resamples: int = 200, seed: int = 0) -> float:
    """The bootstrap standard error of the mAP of ``scores`` against ``targets`` (both [clips,
    classes]): the standard deviation of the mAP over ``resamples`` resamplings of the clips."""
    positive = np.asarray(targets) > 0.5
    scores = np.asarray(scores, dtype=np.float64)
    if positive.shape != scores.shape or positive.ndim != 2:
        raise ValueError(f"targets {positive.shape} and scores {scores.shape} must both be [clips, classes]")
    if resamples < 2:
        raise ValueError(f"a standard error needs at least 2 resamples, not {resamples}")
    rng = np.random.default_rng(seed)
    columns = np.flatnonzero(positive.any(axis=0))  # a class without positives has none in any resampling
    values = []
    for _ in range(resamples):
        rows = rng.integers(0, len(scores), len(scores))
        values.append(_nanmean(np.array([average_precision(positive[rows, c], scores[rows, c]) for c in columns])))
    return float(np.nanstd(values))


def compute_metrics(targets: np.ndarray, scores: np.ndarray, multi_label: bool = True) -> Metrics:
    """Metrics of ``scores`` [N, C] (probabilities or logits: only their order matters, except for
    accuracy's argmax) against ``targets`` [N, C] (multi-hot or one-hot)."""
    targets = np.asarray(targets)
    scores = np.asarray(scores, dtype=np.float64)
    if targets.ndim != 2 or targets.shape != scores.shape:
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} must both be [clips, classes]")
    positive = targets > 0.5
    n_clips, n_classes = targets.shape
    ap = np.array([average_precision(positive[:, c], scores[:, c]) for c in range(n_classes)])
    auc = np.array([roc_auc(positive[:, c], scores[:, c]) for c in range(n_classes)])
    mean_auc = _nanmean(auc)
    labeled = positive.any(axis=1)
    if n_clips and labeled.any():
        top = scores.argmax(axis=1)
        accuracy = float(positive[np.arange(n_clips), top][labeled].mean())
    else:
        accuracy = float("nan")
    return Metrics(
        mAP=_nanmean(ap), mAUC=mean_auc, d_prime=d_prime(mean_auc), accuracy=accuracy,
        n_clips=n_clips, n_classes=n_classes, classes_scored=int(np.isfinite(ap).sum()), multi_label=multi_label,
        per_class_ap=ap.tolist(), per_class_auc=auc.tolist(), positives=positive.sum(axis=0).astype(int).tolist(),
    )
