"""PNG charts for training and evaluation (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAX_BARS = 60  # above this many classes the AP chart shows the best and the worst half of this


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_training(history: Sequence[Any], path: str | Path, *, title: str = "", selected: str | None = None) -> Path:
    """Training loss and learning rate (left), dev mAP/accuracy (right), per epoch."""
    plt = _pyplot()
    path = Path(path)
    epochs = [row.epoch for row in history]
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    ax_loss.plot(epochs, [row.train_loss for row in history], marker="o", ms=3, label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.grid(alpha=0.3)
    ax_lr = ax_loss.twinx()
    ax_lr.plot(epochs, [row.lr for row in history], color="tab:gray", ls="--", label="lr")
    ax_lr.set_ylabel("learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    lines = ax_loss.get_lines() + ax_lr.get_lines()
    ax_loss.legend(lines, [line.get_label() for line in lines], loc="upper right")
    plotted = False
    for key, label in (("dev_mAP", "dev mAP"), ("dev_mAUC", "dev mAUC"), ("dev_accuracy", "dev accuracy")):
        points = [(row.epoch, getattr(row, key)) for row in history if getattr(row, key) is not None]
        if points:
            ax_dev.plot(*zip(*points), marker="o", ms=3, label=label)
            plotted = True
    if plotted:
        ax_dev.set_ylim(0, 1.02)
        ax_dev.legend(loc="lower right")
    else:
        ax_dev.text(0.5, 0.5, "no dev set", ha="center", va="center", transform=ax_dev.transAxes)
    ax_dev.set_xlabel("epoch")
    ax_dev.set_title("dev" + (f" (saved: {selected})" if selected else ""))
    ax_dev.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_per_class_ap(names: Sequence[str], ap: Sequence[float], path: str | Path, *, title: str = "") -> Path:
    """Horizontal bars of per-class AP, best first; classes without positives are left out. With
    more than 60 classes, the 30 best and the 30 worst."""
    plt = _pyplot()
    path = Path(path)
    scored = sorted(((float(a), n) for n, a in zip(names, ap) if a is not None and math.isfinite(a)), reverse=True)
    shown = scored if len(scored) <= MAX_BARS else scored[: MAX_BARS // 2] + scored[-MAX_BARS // 2 :]
    height = max(2.5, 0.25 * len(shown) + 1.2)
    fig, ax = plt.subplots(figsize=(8, height), constrained_layout=True)
    if shown:
        values, labels = zip(*shown)
        y = list(range(len(shown)))
        ax.barh(y, values, color="tab:blue")
        ax.set_yticks(y, labels=labels, fontsize=8)
        ax.invert_yaxis()
        mean = sum(a for a, _ in scored) / len(scored)
        ax.axvline(mean, color="tab:red", ls="--", label=f"mAP {mean:.3f}")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "no class has a positive clip", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision")
    part = f" ({len(shown)} of {len(scored)} classes: best and worst)" if len(shown) < len(scored) else ""
    ax.set_title((title + part) if title or part else "per-class AP")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(names: Sequence[str], matrix: Any, path: str | Path, *, title: str = "") -> Path:
    """A confusion matrix: true class per row, predicted class per column, each row shaded by its
    share of the row's clips, the counts written in the cells (up to 30 classes)."""
    import numpy as np

    plt = _pyplot()
    path = Path(path)
    matrix = np.asarray(matrix, dtype=np.int64)
    n = len(names)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = min(24.0, max(4.0, 0.45 * n + 2.5))
    fig, ax = plt.subplots(figsize=(size, size * 0.9), constrained_layout=True)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = list(range(n))
    ax.set_xticks(ticks, labels=names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, labels=names, fontsize=8)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted (highest score)")
    ax.set_ylabel("true")
    correct = int(np.trace(matrix))
    total = int(matrix.sum())
    ax.set_title((title + "\n" if title else "") + f"{correct} of {total} correct")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's clips")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
