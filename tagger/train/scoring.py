"""Scoring clips with a head the way the tagger serves them.

A clip's real steps are cut into tag windows of ``window_steps`` steps (25 = 10 s), the last one
shorter, never padded; every window goes through the head; the clip's score per class is the
**max** over its windows of the sigmoid (multi-label heads: a sound present anywhere is present
in the clip) or the **mean** over its windows of the softmax (single-label heads). A clip of at
most one window is simply that window. The trainer (dev metrics) and ``earmark evaluate`` both
score this way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..heads import Head
from ..labels import LabelSet


def window_spans(n_steps: int, window_steps: int) -> list[tuple[int, int]]:
    """The tag windows ``[start, stop)`` of a clip of ``n_steps`` steps (the last may be shorter)."""
    n_steps = max(1, n_steps)
    return [(start, min(n_steps, start + window_steps)) for start in range(0, n_steps, window_steps)]


@torch.inference_mode()
def score_clips(
    module: Head,
    features: Sequence[Any],
    window_steps: int,
    multi_label: bool,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    amp: bool = False,
) -> np.ndarray:
    """Clip-level probabilities ``[N, C]`` of ``features`` (each ``[L, T_i, D]``, numpy or torch)
    under ``module`` (a head, in eval mode): windows of the same length are batched together."""
    device = torch.device(device)
    n_classes = module.n_classes
    dtype = module.dtype
    by_length: dict[int, list[tuple[int, int]]] = defaultdict(list)  # length -> [(clip, start)]
    n_windows = np.zeros(len(features), dtype=np.int64)
    for clip, feat in enumerate(features):
        for start, stop in window_spans(int(feat.shape[1]), window_steps):
            by_length[stop - start].append((clip, start))
            n_windows[clip] += 1
    out = np.full((len(features), n_classes), -np.inf if multi_label else 0.0, dtype=np.float64)
    use_amp = amp and device.type == "cuda"
    for length in sorted(by_length):
        items = by_length[length]
        for first in range(0, len(items), batch_size):
            chunk = items[first : first + batch_size]
            batch = np.stack([np.asarray(features[clip][:, start : start + length]) for clip, start in chunk])
            x = torch.from_numpy(batch).to(device=device, non_blocking=True).to(dtype)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                logits = module(x).float()
            probs = (torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)).cpu().numpy()
            clips = np.array([clip for clip, _ in chunk])
            if multi_label:
                np.maximum.at(out, clips, probs)
            else:
                np.add.at(out, clips, probs)
    if not multi_label:
        out /= np.maximum(n_windows, 1)[:, None]
    return out.astype(np.float32)


def label_mapping(head_labels: LabelSet, data_labels: LabelSet) -> tuple[np.ndarray, np.ndarray]:
    """``(data_columns, head_columns)``: the classes both label sets share, matched by mid.

    Identical sets map one to one. ValueError when they share no class."""
    if head_labels.mids == data_labels.mids:
        every = np.arange(len(data_labels))
        return every, every
    head_index = {mid.casefold(): i for i, mid in enumerate(head_labels.mids)}
    pairs = [(i, head_index[mid.casefold()]) for i, mid in enumerate(data_labels.mids) if mid.casefold() in head_index]
    if not pairs:
        raise ValueError(
            f"the head's labels ({head_labels.name!r}, {len(head_labels)} classes) and the data's labels "
            f"({data_labels.name!r}, {len(data_labels)} classes) share no class by mid; evaluate a head "
            f"trained for this label set"
        )
    data_cols, head_cols = zip(*pairs)
    return np.array(data_cols), np.array(head_cols)
