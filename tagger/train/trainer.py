"""Training a tagging head on cached features: the Whisper-AT recipe, resumable, under torchrun.

The recipe (defaults; every number is a flag of ``earmark train``):

- **Windows.** Each draw is a window of ``window`` seconds (10 s = 25 steps of 0.4 s). A longer
  clip is cropped at a random step; a shorter one is filled by repeating its own steps
  (``t mod T``). Repetition, not zero padding (the reference's flaw) and not bucketing: the heads
  have no positional embedding, so a clip repeated a whole number of times gives exactly the
  time means and the self-attention outputs of the clip itself, which is what the head sees at
  serving time on a short last window (``TagStream`` scores real steps only); batches stay one
  shape, and the crop of long clips still varies from epoch to epoch. ``--by-length`` buckets
  after all, for the cost: batches of clips of about one length, each as long as its longest
  clip (``plan_epoch``); on the distillation pool, whose pieces average 14 of 25 steps, base's
  TL-Tr then trains 1.7x faster (docs/benchmarks.md).
- **Balanced sampling.** Class weight ``1000 / (count + 0.01)`` over the training clips, clip
  weight = the sum over its labels (a clip without labels counts as one more class, "none");
  ``ceil(N / batch) * batch`` draws with replacement per epoch (one "epoch" ~ N draws).
  ``--no-balance``: a fresh permutation each epoch instead.
- **Mixup** (p = 0.5 per draw): a partner drawn uniformly from all training clips, its own window,
  ``lambda ~ Beta(10, 10)``; ``x = lambda x1 + (1 - lambda) x2``.
- **Label smoothing** (eps = 0.1), exactly the reference's multi-label targets, C classes:
  no mixup: positive ``1 - eps``, negative ``eps / C``;
  mixup: ``eps / C + (1 - eps) (lambda y1 + (1 - lambda) y2)`` (a class of both clips gets ``eps/C + 1 - eps``).
  Single-label sets (softmax + cross-entropy): ``(1 - eps) y + eps / C`` (sums to 1), mixed with lambda.
- **Time masking** (after mixup): ``m`` consecutive steps, ``m`` uniform in 0..10 per 25 steps
  (scaled to the window), at a uniform start, set to zero in every layer.
- **Distillation** (``--teacher-labels``, see ``labelling.TeacherTargets``): the targets are the
  teacher's 527 AudioSet probabilities of each clip, mixed with the data's own labels where it has
  them (``--hard-weight``); they are used as they are (no label smoothing), and mixup mixes them
  with the same lambda. Balanced sampling counts a class as present where its target reaches
  ``--teacher-threshold`` and is half balanced, half uniform (``sample_weights``). Dev metrics are
  against the teacher alone, binarised at that threshold.
- **Loss**: BCE with logits (multi-label) or cross-entropy on the soft targets (single-label).
- **Optimiser**: Adam, betas (0.95, 0.999), weight decay 5e-7, lr 1e-4, batch 48 (the global
  batch: each of W ranks takes batch/W); lr x0.75 after epochs 15, 20, 25, ... (MultiStepLR).
- **Schedule options** (off by default; ``earmark train``'s ``--recipe auto`` sets them for small
  data sets, see ``recipe.py``): ``epoch_steps`` makes an "epoch" (one dev evaluation, one
  averaging point) that many optimizer steps instead of one pass; ``warmup_steps`` ramps the lr
  up linearly over the first steps; ``schedule="cosine"`` decays it to zero over all steps
  instead of the steps above; ``early_stop`` ends the run when the dev metric has not improved
  for that many epochs (the best epoch is then kept, or the averaged model if it is better).
- **Checkpoint averaging**: the mean of the weights after each of the last K epochs
  (``--average-last``, default half the epochs: 15 of 30, the reference's epochs 16-30), kept as a
  running float64 sum. **Selection**: the averaged model and the best single epoch are compared on
  the dev set (mAP; accuracy for single-label sets); the better is saved (the averaged one on a
  tie or without a dev set), and the card records which.
- **Randomness**: every random number of an epoch (draws, crops, mixup partners and lambdas,
  masks) comes from ``numpy.random.default_rng([seed, epoch])`` and is drawn for the whole epoch
  at once, so a run is deterministic on CPU for a given seed, a resumed run repeats an
  uninterrupted one exactly, and W ranks see the same global batches as one process.

Outputs: ``OUT`` (.safetensors + .json card), ``OUT.train.csv`` (loss, dev metrics, lr, seconds,
clips/s per epoch), ``OUT.train.png`` (the curves), and while training ``OUT.state/`` (model,
optimiser, scheduler, scaler, epoch, RNG states, the averaging sum and the best epoch), removed
when the run finishes unless ``--keep-state``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..heads import HEAD_TYPES, WEIGHTS_SUFFIX, Head, HeadCard, LoadedHead, create_head, load_head, save_head
from ..labels import LabelSet
from ..tagging import steps_per_window
from .metrics import Metrics, compute_metrics
from .scoring import score_clips

log = logging.getLogger(__name__)

class TrainData(Protocol):
    """What the trainer reads: a ``FeatureCache``, ``ArrayFeatures`` or ``TeacherTargets``.
    ``targets()`` are 0/1 (scores and balanced sampling use them); data with a ``soft_targets()``
    method trains on those instead (distillation)."""

    labels: LabelSet
    multi_label: bool
    n_layers: int
    d_model: int

    def __len__(self) -> int: ...

    def features(self, i: int) -> np.ndarray: ...

    def targets(self) -> np.ndarray: ...


REFERENCE_STEPS = 25  # the reference's 10 s window; --time-mask is given per 25 steps
STATE_FILE = "state.pt"
STATE_VERSION = 1


@dataclass
class TrainConfig:
    """Everything that decides the trained weights (``RESULT_FIELDS``) and how the run goes."""

    head_type: str = "tl_tr"
    epochs: int = 30
    batch_size: int = 48
    lr: float = 1e-4
    lr_decay: float = 0.75
    lr_decay_every: int = 5
    lr_decay_start: int = 15
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 5e-7
    balanced: bool = True
    mixup: float = 0.5
    mixup_alpha: float = 10.0
    label_smoothing: float = 0.1
    time_mask: int = 10  # at most this many masked steps per 25
    window: float = 10.0  # seconds per training window
    average_last: int | None = None  # None: epochs // 2
    select_by: str = "auto"  # "auto" (mAP, or accuracy for single-label), "mAP", "accuracy"
    seed: int = 0
    # schedule options (the defaults are the reference recipe: one pass per epoch, step decay, no warm-up)
    epoch_steps: int | None = None  # optimizer steps per epoch; None: one pass over the training clips
    warmup_steps: int = 0  # linear lr warm-up over this many optimizer steps
    schedule: str = "step"  # "step": x lr_decay every lr_decay_every epochs from lr_decay_start; "cosine": to 0
    early_stop: int = 0  # stop after this many epochs without a better dev metric; 0: off
    prior_bias: bool = True  # start the output bias at the targets' prior (``init_output_bias``), not 0
    init_head: str | None = None  # start from this head's weights (``start_from``): a head of the same type and model
    # distillation (data with the teacher's probabilities, ``--teacher-labels``)
    hard_weight: float = 0.3  # weight of the data's own labels against the teacher's, where it has them
    teacher_threshold: float = 0.5  # teacher probability counted as present (dev metrics, balanced sampling)
    by_length: bool = False  # batches of clips of about one length, each as long as its longest clip (``plan_epoch``)
    # how the run goes (a resumed run may change these)
    amp: bool = True  # CUDA only: autocast float16 + GradScaler
    bf16: bool = False  # autocast bfloat16 instead (CPU or CUDA; fast on CPUs with AVX512-BF16/AMX)
    device: str | None = None
    threads: int | None = None
    eval_batch_size: int = 64
    preload: str = "auto"  # load the training features into RAM: auto (if they fit), yes, no
    fp16: bool = False  # save the weights as float16
    keep_state: bool = False
    progress: bool | None = None  # tqdm bars: None = when stderr is a terminal

    RESULT_FIELDS = ("head_type", "epochs", "batch_size", "lr", "lr_decay", "lr_decay_every", "lr_decay_start",
                     "betas", "weight_decay", "balanced", "mixup", "mixup_alpha", "label_smoothing", "time_mask",
                     "window", "average_last", "select_by", "seed", "bf16", "hard_weight", "teacher_threshold",
                     "by_length", "epoch_steps", "warmup_steps", "schedule", "early_stop", "prior_bias", "init_head")

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"unknown head type {self.head_type!r}; valid types: {', '.join(HEAD_TYPES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, batch size and learning rate must be positive")
        if not 0.0 <= self.mixup <= 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("mixup must be in [0, 1] and label smoothing in [0, 1)")
        if self.time_mask < 0 or self.mixup_alpha <= 0:
            raise ValueError("time mask must be >= 0 and mixup alpha > 0")
        if self.lr_decay_every < 1:
            raise ValueError("the lr decay period must be at least one epoch")
        if self.select_by not in ("auto", "mAP", "accuracy"):
            raise ValueError(f"select_by must be auto, mAP or accuracy, not {self.select_by!r}")
        if self.schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be step or cosine, not {self.schedule!r}")
        if (self.epoch_steps is not None and self.epoch_steps < 1) or self.warmup_steps < 0 or self.early_stop < 0:
            raise ValueError("epoch steps must be at least 1; warm-up steps and early stopping patience at least 0")
        if self.preload not in ("auto", "yes", "no"):
            raise ValueError(f"preload must be auto, yes or no, not {self.preload!r}")
        steps_per_window(self.window)  # a positive multiple of 0.4 s
        if self.average_last is None:
            self.average_last = max(1, self.epochs // 2)
        self.average_last = min(max(1, int(self.average_last)), self.epochs)

    @property
    def window_steps(self) -> int:
        return steps_per_window(self.window)

    @property
    def mask_steps(self) -> int:
        return round(self.time_mask * self.window_steps / REFERENCE_STEPS)

    def result_dict(self) -> dict:
        d = asdict(self)
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in self.RESULT_FIELDS}

    def to_json(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["window_steps"] = self.window_steps
        d["time_mask_steps"] = self.mask_steps
        return d


# ---------------------------------------------------------------------------------------------
# Sampling and batches


def class_counts(targets: np.ndarray) -> np.ndarray:
    return (np.asarray(targets) > 0.5).sum(axis=0).astype(np.int64)


def sample_weights(targets: np.ndarray, soft: bool = False) -> np.ndarray:
    """Whisper-AT's balanced-sampling weights: class weight 1000 / (count + 0.01), clip weight =
    sum over its labels. Clips without any label count as one more class.

    ``soft`` (teacher labels, where ``targets`` are the teacher's probabilities at or above a
    threshold): the balanced weights are averaged half and half with uniform ones. A rare class
    among teacher labels is often a false positive of the teacher, and fully balanced sampling
    would draw those few clips over and over; the uniform half keeps every clip in play."""
    positive = np.asarray(targets) > 0.5
    class_weight = 1000.0 / (positive.sum(axis=0) + 0.01)
    weights = positive.astype(np.float64) @ class_weight
    unlabeled = ~positive.any(axis=1)
    if unlabeled.any():
        weights[unlabeled] = 1000.0 / (unlabeled.sum() + 0.01)
    if soft:
        weights = 0.5 * weights / weights.sum() + 0.5 / len(weights)
    return weights


def init_output_bias(module: Head, targets: np.ndarray, multi_label: bool) -> None:
    """Start the output layer's bias at the training targets' prior: each class's log-odds of its
    mean target (multi-label), or its log frequency (single-label). A zero bias starts every class
    at probability 0.5; with hundreds of classes that are nearly always absent (AudioSet's 527, a
    teacher's soft labels) the first thousand steps then go to learning only that, and the
    reference recipe's step count on a small set ends before the features are used at all."""
    output = [m for m in module.modules() if isinstance(m, nn.Linear) and m.out_features == module.n_classes][-1]
    prior = np.clip(np.asarray(targets, np.float64).mean(axis=0), 1e-4, 1 - 1e-4)
    bias = np.log(prior / (1 - prior)) if multi_label else np.log(prior)
    with torch.no_grad():
        output.bias.copy_(torch.as_tensor(bias, dtype=output.bias.dtype))


def start_from(module: Head, source: LoadedHead, labels: LabelSet) -> int:
    """Copy a trained head's weights into a new one of the same type and backbone: every layer but
    the output layer as it is, and of the output layer the rows of the classes both heads have
    (matched by mid); the other classes keep their fresh rows. So a 527-class student can start
    from a head trained on fewer classes. Returns how many classes were carried over; ValueError
    when the heads differ in type, depth or width."""
    m = source.module
    if (m.head_type, m.n_layers, m.d_model) != (module.head_type, module.n_layers, module.d_model):
        raise ValueError(f"--init-head: a {m.head_type} head over {m.n_layers} blocks of width {m.d_model} cannot start "
                         f"a {module.head_type} head over {module.n_layers} blocks of width {module.d_model} (pass --head {m.head_type} "
                         "and the model that head was trained on)")
    output = [name for name, layer in module.named_modules()
              if isinstance(layer, nn.Linear) and layer.out_features == module.n_classes][-1]
    theirs = {label.mid: label.index for label in source.card.labels}
    pairs = [(label.index, theirs[label.mid]) for label in labels if label.mid in theirs]
    ours, rows = [p[0] for p in pairs], [p[1] for p in pairs]
    state, own = source.module.state_dict(), module.state_dict()
    with torch.no_grad():
        for name, value in state.items():
            if name.startswith(output + "."):
                own[name][ours] = value[rows].to(own[name].dtype)
            else:
                own[name].copy_(value)
    return len(pairs)


@dataclass
class EpochPlan:
    """Every random choice of one epoch, one entry per global draw."""

    clip: np.ndarray  # [S] training clip index
    crop: np.ndarray  # [S] uniform [0, 1): where the window starts in a longer clip
    mixed: np.ndarray  # [S] bool
    partner: np.ndarray  # [S] mixup partner clip index
    partner_crop: np.ndarray  # [S]
    lam: np.ndarray  # [S] mixup lambda
    mask_len: np.ndarray  # [S] masked steps
    mask_start: np.ndarray  # [S] uniform [0, 1)

    def __len__(self) -> int:
        return len(self.clip)


def steps_per_epoch(n_clips: int, batch_size: int) -> int:
    return max(1, math.ceil(n_clips / batch_size))


def epoch_length(config: TrainConfig, n_clips: int) -> int:
    """Optimizer steps per epoch: ``config.epoch_steps``, or one pass over the clips."""
    return config.epoch_steps or steps_per_epoch(n_clips, config.batch_size)


def lr_factor(config: TrainConfig, step: int, n_steps: int) -> float:
    """The lr multiplier for optimizer step ``step`` (0-based) with ``n_steps`` steps per epoch:
    linear warm-up, then the step decay (by completed epochs) or a cosine to zero."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.schedule == "cosine":
        total = config.epochs * n_steps
        progress = min(1.0, max(0.0, (step - config.warmup_steps) / max(1, total - config.warmup_steps)))
        return warm * 0.5 * (1.0 + math.cos(math.pi * progress))
    done = step // n_steps
    decays = sum(1 for m in range(config.lr_decay_start, config.epochs + 1, config.lr_decay_every) if m <= done)
    return warm * config.lr_decay ** decays


LENGTH_GROUP = 16  # batches sorted by clip length together (``plan_epoch``)


def plan_epoch(config: TrainConfig, epoch: int, n_clips: int, weights: np.ndarray | None,
               lengths: np.ndarray | None = None) -> EpochPlan:
    """The epoch's draws and augmentations, a pure function of (seed, epoch).

    ``lengths`` (each clip's steps) with ``config.by_length``: the draws of every ``LENGTH_GROUP``
    batches are sorted by length, cut into batches, and the batches shuffled, so a batch holds
    clips of about one length. ``BatchMaker`` then makes each batch only as long as its longest
    clip instead of repeating short clips to the whole window: the head sees each clip's own steps
    as it does when it scores them (``scoring``), and a batch of short pieces costs less."""
    rng = np.random.default_rng([config.seed, epoch])
    total = epoch_length(config, n_clips) * config.batch_size
    if weights is not None:
        clip = rng.choice(n_clips, size=total, replace=True, p=weights / weights.sum())
    else:
        rounds = math.ceil(total / n_clips)
        clip = np.concatenate([rng.permutation(n_clips) for _ in range(rounds)])[:total]
    crop = rng.random(total)
    mixed = rng.random(total) < config.mixup
    partner = rng.integers(0, n_clips, size=total)
    partner_crop = rng.random(total)
    lam = rng.beta(config.mixup_alpha, config.mixup_alpha, size=total)
    mask_len = np.floor(rng.random(total) * (config.mask_steps + 1)).astype(np.int64)
    mask_start = rng.random(total)
    if config.by_length and lengths is not None:
        clip = _sorted_in_groups(clip, np.minimum(lengths, config.window_steps), config.batch_size, rng)
    return EpochPlan(clip, crop, mixed, partner, partner_crop, lam, mask_len, mask_start)


def _sorted_in_groups(clip: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """``clip`` reordered: every ``LENGTH_GROUP`` batches of draws sorted by length (ties in draw
    order), and the batches of each group shuffled."""
    out = clip.copy()
    group = LENGTH_GROUP * batch_size
    for first in range(0, len(clip), group):
        part = clip[first : first + group]
        batches = part[np.argsort(lengths[part], kind="stable")].reshape(-1, batch_size)  # draws: whole batches
        out[first : first + len(part)] = batches[rng.permutation(len(batches))].reshape(-1)
    return out


def window_of(feat: Any, steps: int, u: float, out: np.ndarray) -> None:
    """Write a ``steps``-long window of ``feat`` [L, T, D] into ``out`` [L, steps, D]: a crop
    starting at ``floor(u * (T - steps + 1))`` if the clip is long enough, else its steps repeated."""
    n = feat.shape[1]
    if n >= steps:
        start = min(int(u * (n - steps + 1)), n - steps)
        out[...] = feat[:, start : start + steps]
    else:
        out[...] = feat[:, np.arange(steps) % n]


class BatchMaker:
    """Turns plan positions into (features, soft targets) tensors on the training device.

    The batch is assembled in numpy, float32, row by row, in place (the float16 -> float32 cast
    happens in the copy out of the cache; mixup and masking touch only their rows): no tensor
    temporaries the size of the batch."""

    def __init__(self, features: list, targets: np.ndarray, config: TrainConfig, multi_label: bool,
                 device: torch.device, soft: bool = False):
        self.features = features
        self.soft = soft  # targets are probabilities (a teacher's): used as they are, never smoothed
        self.targets = np.asarray(targets, np.float32) if soft else (np.asarray(targets) > 0.5).astype(np.float32)
        self.config = config
        self.multi_label = multi_label
        self.device = device
        self.steps = config.window_steps
        self.lengths = np.array([int(f.shape[1]) for f in features], dtype=np.int64)  # steps of each clip
        first = features[0]
        self.layers, self.width = int(first.shape[0]), int(first.shape[2])
        self._partner = np.empty((self.layers, self.steps, self.width), dtype=np.float32)

    def make(self, plan: EpochPlan, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        steps = self.steps
        if cfg.by_length:  # as long as the batch's longest clip
            steps = int(min(steps, self.lengths[plan.clip[positions]].max()))
        n_classes = self.targets.shape[1]
        eps = cfg.label_smoothing
        x = np.empty((len(positions), self.layers, steps, self.width), dtype=np.float32)
        y = np.empty((len(positions), n_classes), dtype=np.float32)
        partner = self._partner[:, :steps]
        for row, p in enumerate(positions):
            clip = plan.clip[p]
            window_of(self.features[clip], steps, float(plan.crop[p]), x[row])
            labels = self.targets[clip]
            if plan.mixed[p]:
                lam = float(plan.lam[p])
                other = plan.partner[p]
                window_of(self.features[other], steps, float(plan.partner_crop[p]), partner)
                x[row] *= lam
                partner *= 1.0 - lam
                x[row] += partner
                mix = lam * labels + (1.0 - lam) * self.targets[other]
                if self.soft:
                    y[row] = mix
                else:
                    y[row] = (eps / n_classes + (1.0 - eps) * mix) if self.multi_label else (1.0 - eps) * mix + eps / n_classes
            elif self.soft:
                y[row] = labels
            elif self.multi_label:
                y[row] = np.where(labels > 0.5, 1.0 - eps, eps / n_classes)
            else:
                y[row] = (1.0 - eps) * labels + eps / n_classes
            length = int(plan.mask_len[p]) * steps // self.steps  # the mask keeps its share of the window
            if length:
                start = min(int(plan.mask_start[p] * (steps - length + 1)), steps - length)
                x[row, :, start : start + length] = 0.0
        dev = self.device
        if dev.type == "cpu":
            return torch.from_numpy(x), torch.from_numpy(y)
        return torch.from_numpy(x).pin_memory().to(dev, non_blocking=True), torch.from_numpy(y).to(dev)


# ---------------------------------------------------------------------------------------------
# Distributed helpers (torchrun); the process group is set up by the caller


def dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    if dist_info()[1] > 1:
        torch.distributed.barrier()


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    if dist_info()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def setup_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


def choose_device(requested: str | None) -> torch.device:
    rank, world = dist_info()
    if requested:
        device = torch.device(requested)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return device


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class EpochRow:
    epoch: int
    lr: float
    train_loss: float
    dev_mAP: float | None
    dev_mAUC: float | None
    dev_d_prime: float | None
    dev_accuracy: float | None
    seconds: float
    clips_per_s: float

    FIELDS = ("epoch", "lr", "train_loss", "dev_mAP", "dev_mAUC", "dev_d_prime", "dev_accuracy", "seconds", "clips_per_s")


@dataclass
class TrainResult:
    path: Path  # the saved head (only rank 0 writes it)
    selected: str  # "averaged" or "epoch N"
    history: list[EpochRow]
    dev_metrics: Metrics | None  # of the saved head
    device: torch.device
    card: HeadCard | None = None
    log_path: Path | None = None
    plot_path: Path | None = None
    extra: dict = field(default_factory=dict)


def normalise_out(out: str | Path) -> Path:
    out = Path(out)
    return out if out.suffix == WEIGHTS_SUFFIX else out.with_name(out.name + WEIGHTS_SUFFIX)


def state_dir(out: str | Path) -> Path:
    out = normalise_out(out)
    return out.with_name(out.name + ".state")


def log_path_for(out: Path) -> Path:
    return out.with_name(out.name[: -len(WEIGHTS_SUFFIX)] + ".train.csv")


def plot_path_for(out: Path) -> Path:
    return out.with_name(out.name[: -len(WEIGHTS_SUFFIX)] + ".train.png")


def _metric(metrics: Metrics, select_by: str) -> float:
    value = metrics.main if select_by == "auto" else getattr(metrics, select_by)
    return value if math.isfinite(value) else -math.inf


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _load_features(data: TrainData, preload: str) -> list:
    views = [data.features(i) for i in range(len(data))]
    if preload == "no":
        return views
    total = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in views)
    if preload == "auto":
        budget = min(8 << 30, _available_memory() // 4)
        if total > budget:
            log.info("training features (%.1f GB) stay memory-mapped", total / 1e9)
            return views
    return [np.ascontiguousarray(v) for v in views]


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def _data_summary(data: TrainData) -> dict:
    counts = class_counts(data.targets())
    return {
        "path": str(getattr(data, "path", "")),
        "clips": len(data),
        "class_counts": {label.mid: int(c) for label, c in zip(data.labels, counts)},
        "steps": int(sum(int(data.features(i).shape[1]) for i in range(len(data)))),
    }


def _evaluate_module(module: Head, data: TrainData, config: TrainConfig, multi_label: bool, device: torch.device,
                     features: list | None = None) -> Metrics:
    was_training = module.training
    module.eval()
    try:
        feats = features if features is not None else [data.features(i) for i in range(len(data))]
        scores = score_clips(module, feats, config.window_steps, multi_label, batch_size=config.eval_batch_size,
                             device=device, amp=config.amp)
    finally:
        module.train(was_training)
    return compute_metrics(data.targets(), scores, multi_label=multi_label)


def _save_state(path: Path, state: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path / STATE_FILE)


def _rng_states() -> dict:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def write_log(rows: list[EpochRow], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(EpochRow.FIELDS)
        for row in rows:
            writer.writerow(["" if getattr(row, k) is None else (f"{getattr(row, k):.6g}" if isinstance(getattr(row, k), float)
                             else getattr(row, k)) for k in EpochRow.FIELDS])
    return path


def train_head(
    train: TrainData,
    dev: TrainData | None,
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    command_line: str | None = None,
    on_epoch_end: Callable[[int, EpochRow], None] | None = None,
    write_plot: bool = True,
    recipe: dict | None = None,
) -> TrainResult:
    """Train a ``config.head_type`` head on ``train`` (a FeatureCache), select on ``dev`` (or None),
    and save it to ``out`` (+ card, CSV log, PNG curves). Runs on every rank of an initialised
    torch.distributed group (each rank takes its part of every global batch; rank 0 evaluates and
    writes); with none, in one process. ``resume`` continues from ``out.state/`` if it exists.
    ``recipe`` (what was chosen for this data and why) goes into the head card."""
    started = time.perf_counter()
    rank, world = dist_info()
    main = rank == 0
    out = normalise_out(out)
    states = state_dir(out)
    setup_threads(config.threads)
    device = choose_device(config.device)
    if config.batch_size % world:
        raise ValueError(f"the batch size {config.batch_size} must be divisible by the {world} processes")
    if len(train) == 0:
        raise ValueError("the training set has no clips")
    if (train.n_layers, train.d_model) != (getattr(dev, "n_layers", train.n_layers), getattr(dev, "d_model", train.d_model)):
        raise ValueError("the train and dev features come from different Whisper models (L, D differ)")
    if dev is not None and tuple(dev.labels.mids) != tuple(train.labels.mids):
        raise ValueError("the train and dev sets have different label sets; extract both with the same labels")
    multi_label = bool(train.multi_label)
    select_by = config.select_by
    use_amp = config.amp and device.type == "cuda" and not config.bf16  # float16 autocast + loss scaling
    autocast_dtype = torch.bfloat16 if config.bf16 else torch.float16
    use_autocast = use_amp or config.bf16

    torch.manual_seed(config.seed)
    module = create_head(config.head_type, train.n_layers, train.d_model, len(train.labels)).to(device)
    module.train()
    model: nn.Module = module
    if world > 1:
        model = nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    # fused: one kernel for all parameters (the unfused CPU Adam costs ~15% of a TL-Tr step)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                                 fused=device.type in ("cpu", "cuda"))
    n_steps = epoch_length(config, len(train))
    per_step = config.warmup_steps > 0 or config.schedule != "step"  # else the reference's MultiStepLR, per epoch
    if per_step:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, n_steps))
    else:
        milestones = list(range(config.lr_decay_start, config.epochs + 1, config.lr_decay_every))
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=config.lr_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    average_from = config.epochs - config.average_last + 1
    avg_sum: dict[str, torch.Tensor] | None = None
    avg_count = 0
    best: dict | None = None  # {"epoch", "metric", "state"}
    history: list[EpochRow] = []
    first_epoch = 1
    seconds_before = 0.0

    state_file = states / STATE_FILE
    if state_file.is_file() and not resume:
        raise FileExistsError(f"{states} holds the state of an interrupted run; pass --resume to continue it, "
                              f"or delete it to start over")
    if resume:
        if state_file.is_file():
            state = torch.load(state_file, map_location="cpu", weights_only=True)
            saved, now = state["config"], config.result_dict()
            changed = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in now if saved.get(k) != now[k]]
            if changed:
                raise ValueError(f"cannot resume {states} with different training options: {'; '.join(changed)}")
            module.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            _set_rng_states(state["rng"])
            avg_sum, avg_count = state["avg_sum"], state["avg_count"]
            best = state["best"]
            history = [EpochRow(**row) for row in state["history"]]
            first_epoch = state["epoch"] + 1
            seconds_before = state["seconds"]
            if main:
                log.info("resuming %s after epoch %d of %d", out.name, state["epoch"], config.epochs)
        elif main:
            log.warning("--resume: no training state at %s; starting from scratch", states)

    features = _load_features(train, config.preload)
    soft_targets = getattr(train, "soft_targets", None)
    soft = soft_targets is not None
    weights = sample_weights(train.targets(), soft) if config.balanced else None
    maker = BatchMaker(features, soft_targets() if soft else train.targets(), config, multi_label, device, soft)
    if config.prior_bias and first_epoch == 1:
        init_output_bias(module, maker.targets, multi_label)
    if config.init_head and first_epoch == 1:
        carried = start_from(module, load_head(config.init_head), train.labels)
        if main:
            log.info("started from %s: every layer, and the output rows of %d of %d classes", config.init_head,
                     carried, len(train.labels))
    dev_features = [dev.features(i) for i in range(len(dev))] if dev is not None and main else None
    per_rank = config.batch_size // world
    progress = config.progress
    from tqdm import tqdm

    for epoch in range(first_epoch, config.epochs + 1):
        epoch_start = time.perf_counter()
        plan = plan_epoch(config, epoch, len(train), weights, maker.lengths)
        lr = optimizer.param_groups[0]["lr"]
        loss_total = torch.zeros((), dtype=torch.float64, device=device)  # read back every 10 steps, not every step
        loss_n = 0
        bar = tqdm(range(n_steps), desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
                   disable=True if not main else (None if progress is None else not progress))
        for step in bar:
            positions = np.arange(step * config.batch_size + rank * per_rank,
                                  step * config.batch_size + (rank + 1) * per_rank)
            x, target = maker.make(plan, positions)
            with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=use_autocast):
                logits = model(x)
            logits = logits.float()
            if multi_label:
                loss = F.binary_cross_entropy_with_logits(logits, target)
            else:
                loss = F.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if per_step:
                scheduler.step()
            loss_total += loss.detach().double() * len(positions)
            loss_n += len(positions)
            if step % 10 == 9 or step == n_steps - 1:
                mean_loss = float(loss_total) / loss_n
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(f"the training loss became {mean_loss} in epoch {epoch} (by step "
                                             f"{step + 1}); lower --lr")
                if main:
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
        bar.close()
        if not per_step:
            scheduler.step()
        loss_sum, loss_n = _all_sum([float(loss_total), float(loss_n)], device)
        train_seconds = time.perf_counter() - epoch_start

        if main:
            dev_metrics = _evaluate_module(module, dev, config, multi_label, device, dev_features) if dev is not None else None
            if epoch >= average_from:
                current = module.state_dict()
                if avg_sum is None:
                    avg_sum = {k: v.detach().to("cpu", torch.float64, copy=True) for k, v in current.items()}
                else:
                    for k, v in current.items():
                        avg_sum[k] += v.detach().to("cpu", torch.float64)
                avg_count += 1
            if dev_metrics is not None:
                score = _metric(dev_metrics, select_by)
                if best is None or score > best["metric"]:
                    best = {"epoch": epoch, "metric": score, "state": _cpu_state(module)}
            row = EpochRow(
                epoch=epoch, lr=lr, train_loss=loss_sum / max(loss_n, 1),
                dev_mAP=_finite(dev_metrics.mAP) if dev_metrics else None,
                dev_mAUC=_finite(dev_metrics.mAUC) if dev_metrics else None,
                dev_d_prime=_finite(dev_metrics.d_prime) if dev_metrics else None,
                dev_accuracy=_finite(dev_metrics.accuracy) if dev_metrics else None,
                seconds=round(train_seconds, 3), clips_per_s=round(n_steps * config.batch_size / train_seconds, 1),
            )
            history.append(row)
            log.info("epoch %d/%d: loss %.4f%s, lr %.3g, %.1f s, %.0f clips/s", epoch, config.epochs, row.train_loss,
                     f", dev mAP {row.dev_mAP:.4f}" if row.dev_mAP is not None else "", lr, train_seconds, row.clips_per_s)
            out.parent.mkdir(parents=True, exist_ok=True)
            write_log(history, log_path_for(out))
            _save_state(states, {
                "version": STATE_VERSION, "epoch": epoch, "config": config.result_dict(),
                "model": _cpu_state(module), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": _rng_states(), "avg_sum": avg_sum, "avg_count": avg_count,
                "best": best, "history": [asdict(r) for r in history],
                "seconds": seconds_before + time.perf_counter() - started,
            })
        _barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch, history[-1] if main and history else None)
        if config.early_stop and dev is not None:
            stale = main and best is not None and epoch - best["epoch"] >= config.early_stop
            if _all_sum([1.0 if stale else 0.0], device)[0] > 0:
                if main:
                    log.info("early stop after epoch %d: the dev %s has not improved since epoch %d", epoch,
                             select_by_name(config, multi_label), best["epoch"])
                break

    result = TrainResult(path=out, selected="", history=history, dev_metrics=None, device=device)
    if main:
        result = _finish(module, train, dev, dev_features, config, out, avg_sum, avg_count, best, history, device,
                         multi_label, seconds_before + time.perf_counter() - started, command_line, world, write_plot,
                         recipe)
        if not config.keep_state:
            shutil.rmtree(states, ignore_errors=True)
    _barrier()
    return result


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _finish(module: Head, train: TrainData, dev: TrainData | None, dev_features: list | None, config: TrainConfig, out: Path,
            avg_sum: dict | None, avg_count: int, best: dict | None, history: list[EpochRow], device: torch.device,
            multi_label: bool, seconds: float, command_line: str | None, world: int, write_plot: bool,
            recipe: dict | None = None) -> TrainResult:
    last = history[-1].epoch if history else config.epochs
    choice: dict[str, Any] = {}
    if last < config.epochs:
        choice["stopped_early_after_epoch"] = last
    dev_metrics = None
    if avg_count == 0:  # stopped early, before the averaging began: the best epoch
        assert best is not None and dev is not None
        module.load_state_dict(best["state"])
        selected = f"epoch {best['epoch']}"
        dev_metrics = _evaluate_module(module, dev, config, multi_label, device, dev_features)
        choice["best_epoch"] = best["epoch"]
    else:
        assert avg_sum is not None
        current = module.state_dict()
        module.load_state_dict({k: (avg_sum[k] / avg_count).to(current[k].dtype) for k in current})
        average_from = config.epochs - config.average_last + 1
        selected = f"averaged (epochs {average_from}-{last})" if avg_count > 1 else f"epoch {last}"
        choice["averaged_epochs"] = [average_from, last]
        if dev is not None:
            avg_metrics = _evaluate_module(module, dev, config, multi_label, device, dev_features)
            choice["averaged_dev"] = avg_metrics.summary()
            dev_metrics = avg_metrics
            if best is not None:
                choice["best_epoch"] = best["epoch"]
                choice["best_epoch_dev_" + ("mAP" if select_by_name(config, multi_label) == "mAP" else "accuracy")] = _finite(best["metric"])
                if best["metric"] > _metric(avg_metrics, config.select_by):
                    module.load_state_dict(best["state"])
                    dev_metrics = _evaluate_module(module, dev, config, multi_label, device, dev_features)
                    selected = f"epoch {best['epoch']}"
    choice["selected"] = selected
    choice["selected_by"] = select_by_name(config, multi_label) if dev is not None else "no dev set: averaged model"
    extra = {
        "trainer": "earmark train",
        "training_data": {"train": _data_summary(train), "dev": _data_summary(dev) if dev is not None else None},
        "metrics": {"dev": dev_metrics.summary() if dev_metrics else None, **choice},
        "hyperparameters": config.to_json(),
        "recipe": recipe,  # what `earmark train --recipe` chose and why (None: a TrainConfig as given)
        "command_line": command_line if command_line is not None else " ".join(shlex.quote(a) for a in sys.argv),
        "seconds": round(seconds, 2),
        "world_size": world,
        "device": str(device),
        "torch": torch.__version__,
        "history": [asdict(r) for r in history],
    }
    card = HeadCard(head_type=config.head_type, n_layers=train.n_layers, d_model=train.d_model, labels=train.labels,
                    multi_label=multi_label, backbone=getattr(train, "backbone", None),
                    backbone_sha256=getattr(train, "backbone_sha256", None),
                    source=out.name[: -len(WEIGHTS_SUFFIX)], extra=extra)
    module.eval()
    path = save_head(module, card, out, dtype=torch.float16 if config.fp16 else None)
    log_path = write_log(history, log_path_for(out))
    plot_path = None
    if write_plot:
        from .plots import plot_training

        plot_path = plot_training(history, plot_path_for(out), title=f"{config.head_type} - {out.name}",
                                  selected=selected)
    log.info("saved %s (%s%s)", path, selected,
             f", dev mAP {dev_metrics.mAP:.4f}" if dev_metrics is not None else "")
    return TrainResult(path=path, selected=selected, history=history, dev_metrics=dev_metrics, device=device,
                       card=card, log_path=log_path, plot_path=plot_path, extra=extra)


def select_by_name(config: TrainConfig, multi_label: bool) -> str:
    if config.select_by != "auto":
        return config.select_by
    return "mAP" if multi_label else "accuracy"


# ---------------------------------------------------------------------------------------------
# CLI


def add_training_options(parser: argparse.ArgumentParser, include_head: bool = True) -> None:
    """The options shared by ``earmark train`` and ``earmark evaluate --folds``."""
    d = TrainConfig()
    g = parser.add_argument_group("training")
    if include_head:
        g.add_argument("--head", "--head-type", dest="head_type", default=None, choices=sorted(HEAD_TYPES),
                       help=f"head type (--recipe reference: {d.head_type}; auto: wa_mlp below 5,000 training clips, "
                            f"else {d.head_type})")
    g.add_argument("--epochs", type=int, default=None,
                   help=f"epochs of one pass over the clips each (--recipe reference: {d.epochs}; auto: see --steps)")
    g.add_argument("--steps", type=int, default=None,
                   help="--recipe auto: optimizer steps in all (default: 30 passes, at least 1500, below 50,000 clips)")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"global batch size, split over torchrun processes (default: {d.batch_size})")
    g.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (--recipe reference: {d.lr:g}; auto: chosen for the number of clips)")
    g.add_argument("--warmup-steps", type=int, default=None,
                   help="linear lr warm-up over this many optimizer steps (reference: 0; auto: a tenth of the steps)")
    g.add_argument("--schedule", choices=("step", "cosine"), default=None,
                   help="lr decay: step (x --lr-decay every --lr-decay-every epochs, the reference) or cosine (auto)")
    g.add_argument("--early-stop", type=int, default=None, metavar="EVALUATIONS",
                   help="stop when the dev metric has not improved for this many epochs (0: off, the reference; "
                        "auto with --dev: a quarter of the evaluations, at least 5)")
    g.add_argument("--zero-bias", action="store_true",
                   help="start the output bias at 0 as the reference does (default: at the targets' prior)")
    g.add_argument("--init-head", default=None, metavar="HEAD",
                   help="start from a trained head of the same type and model (.safetensors or .pth): its layers, "
                        "and its output rows for the classes both heads have (fine-tuning the default head: "
                        "tagger/data/heads/MODEL.safetensors)")
    g.add_argument("--lr-decay", type=float, default=d.lr_decay, help=f"lr factor (default: {d.lr_decay})")
    g.add_argument("--lr-decay-every", type=int, default=d.lr_decay_every,
                   help=f"epochs between lr decays (default: {d.lr_decay_every})")
    g.add_argument("--lr-decay-start", type=int, default=d.lr_decay_start,
                   help=f"first decay after this epoch (default: {d.lr_decay_start})")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"Adam weight decay (default: {d.weight_decay:g})")
    g.add_argument("--adam-betas", type=float, nargs=2, default=list(d.betas), metavar=("B1", "B2"),
                   help="Adam betas (default: 0.95 0.999)")
    g.add_argument("--no-balance", action="store_true", help="uniform shuffling instead of balanced sampling")
    g.add_argument("--mixup", type=float, default=None,
                   help=f"mixup probability per draw (default: {d.mixup}; 0 when distilling under the auto recipe)")
    g.add_argument("--mixup-alpha", type=float, default=d.mixup_alpha, help=f"lambda ~ Beta(a, a) (default: {d.mixup_alpha:g})")
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing,
                   help=f"epsilon (default: {d.label_smoothing})")
    g.add_argument("--time-mask", type=int, default=None,
                   help=f"mask up to this many steps per 25, scaled to the window; 0: off (default: {d.time_mask}; "
                        "0 when distilling under the auto recipe)")
    g.add_argument("--window", type=float, default=d.window,
                   help=f"training window in seconds, a multiple of 0.4 (default: {d.window:g})")
    g.add_argument("--average-last", type=int, default=None,
                   help="average the weights of the last K epochs (default: half the epochs)")
    g.add_argument("--select-by", choices=("auto", "mAP", "accuracy"), default=d.select_by,
                   help="dev metric choosing between the best epoch and the averaged model "
                        "(default: mAP; accuracy for single-label sets)")
    g.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default: {d.seed})")
    g.add_argument("--hard-weight", type=float, default=d.hard_weight,
                   help=f"with --teacher-labels: weight of the data's own labels against the teacher's, where it "
                        f"has them (0: the teacher only; default: {d.hard_weight})")
    g.add_argument("--teacher-threshold", type=float, default=d.teacher_threshold,
                   help=f"with --teacher-labels: a teacher probability counted as present, for dev mAP and "
                        f"balanced sampling (default: {d.teacher_threshold})")
    g.add_argument("--by-length", action="store_true",
                   help="batches of clips of about one length, each only as long as its longest clip (not "
                        "short clips repeated to the window): what the head sees when it scores them, and cheaper "
                        "where most clips are shorter than the window")
    g.add_argument("--no-amp", action="store_true", help="no float16 autocast + loss scaling on CUDA")
    g.add_argument("--bf16", action="store_true",
                   help="autocast bfloat16 (CPU or CUDA): about 2x faster TL-Tr training on CPUs with AVX512-BF16/AMX")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available; cuda:LOCAL_RANK under torchrun)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    g.add_argument("--preload", choices=("auto", "yes", "no"), default=d.preload,
                   help="copy the training features into RAM (auto: if they take under a quarter of the free memory)")
    g.add_argument("--fp16", action="store_true", help="save the weights as float16")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, action="append",
                        help="training feature cache (from `earmark extract`); give it more than once to train on several caches of one model and label set (e.g. train and dev for a final fit)")
    parser.add_argument("--dev", default=None, help="dev feature cache for per-epoch mAP and model selection")
    parser.add_argument("--teacher-labels", action="append", default=None, metavar="DIR",
                        help="distil: train on a teacher's probabilities for the same clips (`earmark label` stores; "
                             "give it once per store); the head then has the 527 AudioSet classes")
    parser.add_argument("--out", required=True,
                        help="the head to write (.safetensors; the .json card, OUT.train.csv and OUT.train.png go next to it)")
    add_training_options(parser)
    from .recipe import add_recipe_options

    add_recipe_options(parser)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.state/")
    parser.add_argument("--keep-state", action="store_true", help="keep OUT.state/ after the run")
    parser.add_argument("--no-plot", action="store_true", help="do not draw OUT.train.png")


def _given(args: argparse.Namespace, name: str, default: Any) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The options as given; those left out (``None``) take ``TrainConfig``'s defaults (the reference
    recipe). ``recipe.choose_recipe`` fills them for the data instead."""
    d = TrainConfig()
    return TrainConfig(
        head_type=_given(args, "head_type", d.head_type), epochs=_given(args, "epochs", d.epochs), batch_size=args.batch_size,
        lr=_given(args, "lr", d.lr), lr_decay=args.lr_decay,
        warmup_steps=_given(args, "warmup_steps", d.warmup_steps), schedule=_given(args, "schedule", d.schedule),
        early_stop=_given(args, "early_stop", d.early_stop), prior_bias=not getattr(args, "zero_bias", False),
        init_head=getattr(args, "init_head", None),
        lr_decay_every=args.lr_decay_every, lr_decay_start=args.lr_decay_start, betas=tuple(args.adam_betas),
        weight_decay=args.weight_decay, balanced=not args.no_balance, mixup=_given(args, "mixup", d.mixup),
        mixup_alpha=args.mixup_alpha, label_smoothing=args.label_smoothing,
        time_mask=_given(args, "time_mask", d.time_mask), window=args.window, bf16=args.bf16,
        average_last=args.average_last, select_by=args.select_by, seed=args.seed, amp=not args.no_amp,
        hard_weight=args.hard_weight, teacher_threshold=args.teacher_threshold, by_length=args.by_length,
        device=args.device, threads=args.threads, preload=args.preload, fp16=args.fp16,
        keep_state=getattr(args, "keep_state", False),
        eval_batch_size=getattr(args, "eval_batch_size", TrainConfig.eval_batch_size),
    )


def _print_epoch(config: TrainConfig) -> Callable[[int, EpochRow | None], None]:
    """One line per epoch on stderr (rank 0), whatever the logging level."""

    def report(epoch: int, row: EpochRow | None) -> None:
        if row is None:
            return
        dev = "".join(f", dev {name} {value:.4f}" for name, value in (("mAP", row.dev_mAP), ("accuracy", row.dev_accuracy))
                      if value is not None)
        print(f"epoch {epoch}/{config.epochs}: loss {row.train_loss:.4f}{dev}, lr {row.lr:.3g}, {row.seconds:.1f} s, "
              f"{row.clips_per_s:.0f} clips/s", file=sys.stderr, flush=True)

    return report


def with_teacher(train: TrainData, dev: TrainData | None, stores: list[str], config: TrainConfig
                 ) -> tuple[TrainData, TrainData | None]:
    """Train and dev sets with the teacher's probabilities as targets (dev: the teacher's alone)."""
    from .labelling import TeacherLabels, TeacherTargets

    teacher = TeacherLabels.open(*stores)
    train = TeacherTargets(train, teacher, config.hard_weight, config.teacher_threshold)
    if dev is not None:
        dev = TeacherTargets(dev, teacher, 0.0, config.teacher_threshold)
    for name, data in (("train", train), ("dev", dev)):
        if data is not None and data.missing:
            log.warning("%d %s clips have no teacher labels and are left out", data.missing, name)
    return train, dev


def run_train(args: argparse.Namespace) -> int:
    from .features import FeatureCache, join_caches

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        from .distributed import cleanup, init_distributed

        rank, _ = init_distributed()
    try:
        from .recipe import choose_recipe

        train = join_caches([FeatureCache.open(path) for path in args.train])
        dev = FeatureCache.open(args.dev) if args.dev else None
        recipe = choose_recipe(args, train, teacher=bool(args.teacher_labels), n_dev=len(dev) if dev is not None else None)
        config = recipe.config
        if rank == 0:
            print(f"earmark train: recipe {recipe.name}, {len(train)} training clips:", file=sys.stderr)
            for note in recipe.notes:
                print(f"  {note}", file=sys.stderr)
        if args.teacher_labels:
            train, dev = with_teacher(train, dev, args.teacher_labels, config)
        else:
            train, dev = recipe.apply(train), (recipe.apply(dev) if dev is not None else None)
        result = train_head(train, dev, config, args.out, resume=args.resume, on_epoch_end=_print_epoch(config),
                            command_line=" ".join(shlex.quote(a) for a in sys.argv), write_plot=not args.no_plot,
                            recipe=recipe.to_json())
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"earmark train: {error}", file=sys.stderr)
        return 2
    finally:
        if distributed:
            cleanup()
    if rank == 0 and result.card is not None:
        dev = result.dev_metrics
        scores = ""
        if dev is not None:
            scores = f", dev mAP {dev.mAP:.4f}" + (f", accuracy {dev.accuracy:.4f}" if math.isfinite(dev.accuracy) else "")
        print(f"saved {result.path} ({result.selected}{scores})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m tagger.train.trainer ...`` = ``earmark train ...`` (handy under torchrun)."""
    parser = argparse.ArgumentParser(prog="earmark train", description="Train a tagging head on cached features.")
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_train(args)


if __name__ == "__main__":
    sys.exit(main())
