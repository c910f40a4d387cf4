"""The training recipe fitted to the data: what ``earmark train`` and ``earmark evaluate --folds``
train with when the options are left out (``--recipe auto``, the default).

``--recipe reference`` trains with the Whisper-AT recipe as it is (``TrainConfig``'s defaults: 30
epochs of one pass each, lr 1e-4, x0.75 every 5 epochs from 15), tuned for AudioSet's two million
clips. On a few hundred clips it makes about 200 optimizer steps at a low learning rate, and the
head is still learning when it stops. ``--recipe auto`` keeps the reference for large data sets
(``LARGE_DATA`` clips or more) and otherwise chooses, for options not given on the command line:

- **Head type** (``--head``): ``stats`` below ``SMALL_HEAD_DATA`` training clips, else ``tl_tr``.
  Each block's mean and maximum over time and one linear layer: few parameters to fit from few
  clips, a training step costs about a tenth of TL-Tr's, so the schedule below stays within a
  minute on a CPU, and the maximum keeps a short event that the mean of a clip dilutes. On the
  own-sounds bench (10 classes, 256 training clips) it scored above the linear probe for every seed
  (tiny.en test mAP 0.902 against 0.885, base 0.913 against 0.897, three seeds) and above
  ``wa_mlp``; TL-Tr's 3.75M (tiny) to 40M parameters are for large sets.
- **Classes.** A cache with AudioSet's 527 classes whose training clips name fewer of them trains
  a head over those classes only (their AudioSet mids and names kept, so the head still reports
  AudioSet ids); ``--all-classes`` keeps all 527. Distillation always keeps 527.
- **Single-label.** When every training clip then has exactly one class: a softmax head trained
  with cross-entropy and scored by accuracy (a custom set of one label per clip is single-label
  already, from ``earmark extract``).
- **Schedule in optimizer steps**: ``SMALL_STEPS`` or 30 passes over the clips, whichever is more,
  evaluated (dev metrics, early stopping, weight averaging) every ``EVAL_STEPS`` steps or every pass
  when a pass is longer.
- **Learning rate** ``1e-4 * sqrt(LARGE_DATA / clips)``, at most ``MAX_LR``, with a linear warm-up
  over a tenth of the steps and a cosine decay to zero.
- **Early stopping** on ``--dev`` after a quarter of the evaluations without improvement (at least
  5), when the dev set has at least ``EARLY_STOP_DEV`` clips. A smaller one moves its metric by more
  between evaluations than training does: on the own-sounds bench's 36 dev clips every run stopped
  after about 450 of 1,500 steps, keeping an evaluation from the warm-up. Then the run goes to the
  end and keeps the average of its last half or its best evaluation, whichever scores better on dev.
- **Balanced sampling** as the reference (class weight 1000 / (count + 0.01)), over the head's own
  classes: with few classes every class is drawn about equally often. Distillation (``--teacher-labels``)
  samples uniformly: the teacher gives every clip a probability for every class; and without mixup
  or time masking, which slowed the fit to the teacher's probabilities.

Given options always win: ``--epochs`` keeps the schedule in epochs (no early stopping unless
``--early-stop``), ``--lr`` keeps the learning rate (no warm-up unless ``--warmup-steps``).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace

import numpy as np

from ..labels import Label, LabelSet, audioset
from .trainer import TrainConfig, TrainData, config_from_args

RECIPES = ("auto", "reference")
LARGE_DATA = 50_000  # clips: from here on the reference recipe
SMALL_HEAD_DATA = 5_000  # clips: below this the auto head type is stats
EARLY_STOP_DEV = 200  # dev clips: fewer, and the auto recipe does not stop early
SMALL_STEPS = 1500  # optimizer steps at least (auto)
EVAL_STEPS = 25  # optimizer steps per evaluation at least (auto)
MAX_LR = 1e-3
SUBSET_NAME = "audioset-subset"


class LabelView:
    """Training data over some of another data set's classes (``columns``), with its own label set
    and mode; features and everything else are the underlying data's."""

    def __init__(self, data: TrainData, columns: np.ndarray, labels: LabelSet, multi_label: bool):
        self.data = data
        self.columns = np.asarray(columns, dtype=np.int64)
        self.labels = labels
        self.multi_label = multi_label
        self.n_layers, self.d_model = data.n_layers, data.d_model
        self.backbone = getattr(data, "backbone", None)
        self.backbone_sha256 = getattr(data, "backbone_sha256", None)
        self.path = getattr(data, "path", "")
        self.meta = getattr(data, "meta", {})

    def __len__(self) -> int:
        return len(self.data)

    def features(self, i: int) -> np.ndarray:
        return self.data.features(i)

    def targets(self) -> np.ndarray:
        return np.asarray(self.data.targets())[:, self.columns]

    def folds(self):
        return self.data.folds()

    def subset(self, indices) -> LabelView:
        return LabelView(self.data.subset(indices), self.columns, self.labels, self.multi_label)


def narrow(data: TrainData, columns: np.ndarray, multi_label: bool) -> LabelView:
    """``data`` over the classes ``columns`` of its label set (mids and names kept)."""
    labels = LabelSet(name=SUBSET_NAME, labels=tuple(
        Label(position, data.labels[int(c)].mid, data.labels[int(c)].name) for position, c in enumerate(columns)))
    return LabelView(data, columns, labels, multi_label)


@dataclass(frozen=True)
class Recipe:
    """A resolved recipe: the config to train with, the classes, and why."""

    name: str  # auto | reference
    config: TrainConfig
    notes: tuple[str, ...]  # what was chosen and why, one line each
    columns: tuple[int, ...] | None = None  # classes of the data to train on (None: all)
    multi_label: bool | None = None  # None: as the data says

    def to_json(self) -> dict:
        return {"recipe": self.name, "chosen": list(self.notes)}

    def apply(self, data: TrainData) -> TrainData:
        """``data`` over the recipe's classes and in its mode (the data itself when unchanged)."""
        if self.columns is None and (self.multi_label is None or self.multi_label == data.multi_label):
            return data
        columns = np.array(self.columns if self.columns is not None else range(len(data.labels)))
        multi_label = data.multi_label if self.multi_label is None else self.multi_label
        if self.columns is None:
            return LabelView(data, columns, data.labels, multi_label)
        return narrow(data, columns, multi_label)


def _explicit(args: argparse.Namespace, name: str) -> bool:
    return getattr(args, name, None) is not None


def choose_recipe(args: argparse.Namespace, train: TrainData, *, teacher: bool = False,
                  n_clips: int | None = None, n_dev: int | None = None) -> Recipe:
    """The recipe for ``train`` from the command line (``--recipe``, the training options; options
    left out are ``None``) and the data's size (``n_clips`` if given: cross-validation trains on
    part of ``train``; ``n_dev``: the dev set's clips, when known), classes and labels."""
    config = config_from_args(args)
    name = getattr(args, "recipe", None) or "auto"
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    if name == "reference":
        return Recipe(name, config, ("--recipe reference: the Whisper-AT recipe as given by the training options",))
    notes: list[str] = []
    targets = np.asarray(train.targets()) > 0.5
    present = np.flatnonzero(targets.any(axis=0))
    columns = None
    multi_label = None
    if teacher:
        notes.append("classes: the teacher's 527 AudioSet classes (distillation)")
    elif train.labels == audioset() and 0 < len(present) < len(train.labels) and not getattr(args, "all_classes", False):
        columns = tuple(int(c) for c in present)
        names = ", ".join(train.labels[c].name for c in columns[:8]) + (" ..." if len(columns) > 8 else "")
        notes.append(f"classes: the {len(columns)} AudioSet classes the training clips name ({names}), not all "
                     f"{len(train.labels)}; AudioSet mids kept (--all-classes: all {len(train.labels)})")
        if (targets[:, present].sum(axis=1) == 1).all():
            multi_label = False
            notes.append("single-label: every training clip has exactly one class: softmax, cross-entropy, accuracy")
    if multi_label is None:
        notes.append(f"{'multi' if train.multi_label else 'single'}-label, as extracted")

    n_clips = len(train) if n_clips is None else n_clips
    batch = config.batch_size
    one_pass = math.ceil(n_clips / batch)
    if n_clips >= LARGE_DATA:
        notes.append(f"{n_clips} training clips (>= {LARGE_DATA}): the reference schedule, {config.epochs} epochs "
                     f"of one pass ({config.epochs * one_pass} steps), lr {config.lr:g}")
        return Recipe(name, config, tuple(notes), columns, multi_label)

    changes: dict = {}
    if not _explicit(args, "head_type"):
        head = "stats" if n_clips < SMALL_HEAD_DATA else "tl_tr"
        changes["head_type"] = head
        notes.append(f"head {head}: " + (f"{n_clips} training clips (< {SMALL_HEAD_DATA}): each block's mean and maximum "
                                         f"over time and one linear layer; TL-Tr's millions of parameters are for large sets"
                                         if head == "stats" else f"{n_clips} training clips"))
    else:
        notes.append(f"head {config.head_type}, as given")
    if _explicit(args, "epochs"):
        notes.append(f"schedule: {config.epochs} epochs of one pass ({config.epochs * one_pass} steps), as given")
    else:
        steps = max(SMALL_STEPS, 30 * one_pass)
        if _explicit(args, "steps"):
            steps = int(args.steps)
        epoch_steps = max(EVAL_STEPS, one_pass)
        epochs = max(1, math.ceil(steps / epoch_steps))
        changes.update(epochs=epochs, epoch_steps=epoch_steps, average_last=None if args.average_last is None
                       else args.average_last)
        why = "as given" if _explicit(args, "steps") else (
            f"{n_clips} clips make {one_pass} steps a pass: 30 passes would be {30 * one_pass} steps, "
            f"too few to converge; at least {SMALL_STEPS}" if 30 * one_pass < SMALL_STEPS else "30 passes")
        notes.append(f"schedule: {epochs * epoch_steps} optimizer steps ({why}), evaluated every {epoch_steps} steps")
        if not _explicit(args, "schedule"):
            changes["schedule"] = "cosine"
        if dev_given(args) and not _explicit(args, "early_stop"):
            if n_dev is not None and n_dev < EARLY_STOP_DEV:
                notes.append(f"no early stopping: {n_dev} dev clips (< {EARLY_STOP_DEV}) move the dev metric by more "
                             "than training does; the average of the last half or the best evaluation is kept")
            else:
                changes["early_stop"] = max(5, epochs // 4)
                notes.append(f"early stopping: after {changes['early_stop']} evaluations without a better dev metric")
    if _explicit(args, "lr"):
        notes.append(f"lr {config.lr:g}, as given")
    else:
        lr = min(MAX_LR, 1e-4 * math.sqrt(LARGE_DATA / n_clips))
        lr = float(f"{lr:.2g}")
        changes["lr"] = lr
        notes.append(f"lr {lr:g} = 1e-4 x sqrt({LARGE_DATA} / {n_clips} clips), at most {MAX_LR:g}")
        if not _explicit(args, "warmup_steps"):
            total = changes.get("epochs", config.epochs) * changes.get("epoch_steps", one_pass)
            changes["warmup_steps"] = max(1, total // 10)
            notes.append(f"warm-up: {changes['warmup_steps']} steps (a tenth), then a "
                         f"{changes.get('schedule', config.schedule)} decay")
    if teacher and config.balanced:
        changes["balanced"] = False
        notes.append("uniform sampling: the teacher gives every clip a probability for every class, so no class is "
                     "rare in the targets (balanced sampling lowered dev mAP here)")
    elif config.balanced:
        notes.append("balanced sampling: class weight 1000 / (count + 0.01) over the head's classes")
    off = {name: value for name, value in (("mixup", 0.0), ("time_mask", 0)) if not _explicit(args, name)} \
        if teacher else {}
    if off:
        changes.update(off)
        said = " and ".join(name.replace("_", " ") for name in off)
        notes.append(f"no {said}: the teacher's probabilities are the targets to fit, and these augmentations "
                     "slowed the fit (base's TL-Tr, 1,000 steps: pool test mAP against the teacher 0.373 with "
                     "them, 0.422 without)")
    return Recipe(name, replace(config, **changes), tuple(notes), columns, multi_label)


def dev_given(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "dev", None))


def add_recipe_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("recipe")
    g.add_argument("--recipe", choices=RECIPES, default="auto",
                   help="auto (default): options left out are chosen for the data's size, classes and labels "
                        "(printed, and kept in the head card); reference: the Whisper-AT recipe as the option defaults")
    g.add_argument("--all-classes", action="store_true",
                   help="train on all 527 AudioSet classes even when the data names fewer (auto trains on those named)")
