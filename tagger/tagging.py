"""From pooled block outputs to tags over time windows of any multiple of 0.4 s."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from .audio import SAMPLE_RATE
from .backbone import STEPS_PER_SECOND
from .heads import LoadedHead
from .labels import LabelSet
from .results import Segment, SoundEvent, TagLabel, TagResult, TagWindow

STEP_SECONDS = Fraction(2, 5)  # one pooled step is 0.4 s


def steps_per_window(tag_resolution: float) -> int:
    """Pooled steps in a tag window of ``tag_resolution`` seconds (exact: 4.4 s is 11 steps)."""
    try:
        steps = Fraction(str(tag_resolution)) / STEP_SECONDS
    except (ArithmeticError, ValueError):
        steps = Fraction(0)
    if steps.denominator != 1 or steps <= 0:
        raise ValueError(f"tag_resolution must be a positive multiple of 0.4 s (0.4, 0.8, ..., 4.4, 10.0); got {tag_resolution}")
    return int(steps)


@dataclass(frozen=True)
class TagOptions:
    """Which tags to report: windows of ``tag_resolution`` seconds (a multiple of 0.4 s), in each the
    ``top_k`` most probable classes (None: all) at or above ``threshold``, restricted to ``include``
    and never in ``exclude`` (mids or display names)."""

    tag_resolution: float = 10.0
    top_k: int | None = 5
    threshold: float | None = None
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value) or None)

    @property
    def steps(self) -> int:
        return steps_per_window(self.tag_resolution)

    def candidates(self, labels: LabelSet) -> np.ndarray:
        """Indices of the classes that may be reported; ValueError for a class the head does not know."""
        try:
            allowed = set(labels.indices(self.include)) if self.include else set(range(len(labels)))
            if self.exclude:
                allowed -= set(labels.indices(self.exclude))
        except KeyError as error:
            raise ValueError(error.args[0] if error.args else str(error)) from None
        return np.array(sorted(allowed), dtype=np.int64)

    def select(self, probabilities: np.ndarray, labels: LabelSet, candidates: np.ndarray) -> list[TagLabel]:
        order = candidates[np.argsort(-probabilities[candidates], kind="stable")]
        if self.threshold is not None:
            order = order[probabilities[order] >= self.threshold]
        if self.top_k is not None:
            order = order[: self.top_k]
        return [TagLabel(int(i), labels[int(i)].mid, labels[int(i)].name, float(probabilities[i])) for i in order]


class TagStream:
    """Collects pooled features window by window and scores every complete tag window.

    Features past the real audio (the padding of each window) never reach the head.
    A tag window may straddle two encoder windows: the leftover steps wait for the next batch.
    """

    def __init__(self, head: LoadedHead, tag_resolution: float, duration: float):
        self.head = head
        self.steps = steps_per_window(tag_resolution)
        self.duration = duration
        self.pending: torch.Tensor | None = None  # [L, t, D] steps not yet scored
        self.scores: list[np.ndarray] = []

    def add(self, pooled: torch.Tensor, steps: list[int]) -> None:
        """Add a batch of windows' pooled features [B, L, 75, D], in order; window b holds
        ``steps[b]`` steps of real audio (the rest is padding and never reaches the head)."""
        series = torch.cat([pooled[b, :, :n] for b, n in enumerate(steps)], dim=1)
        layers, width = series.shape[0], series.shape[-1]
        if self.pending is not None:
            series = torch.cat([self.pending, series], dim=1)
        complete = series.shape[1] // self.steps * self.steps
        if complete:
            windows = series[:, :complete].reshape(layers, -1, self.steps, width).transpose(0, 1)
            self.scores.append(self.head.probabilities(windows).float().cpu().numpy())
        self.pending = series[:, complete:] if complete < series.shape[1] else None

    def finish(self) -> np.ndarray:
        """Score the last, shorter window; return [windows, classes] probabilities."""
        if self.pending is not None and self.pending.shape[1]:
            self.scores.append(self.head.probabilities(self.pending[None]).float().cpu().numpy())
            self.pending = None
        return np.concatenate(self.scores) if self.scores else np.zeros((0, len(self.head.card.labels)), np.float32)

    def window_bounds(self, index: int) -> tuple[float, float]:
        start = index * self.steps / STEPS_PER_SECOND
        return round(start, 3), round(min(self.duration, (index + 1) * self.steps / STEPS_PER_SECOND), 3)


def tag_windows(scores: np.ndarray, bounds: list[tuple[float, float]], labels: LabelSet, chosen: TagOptions) -> list[TagWindow]:
    candidates = chosen.candidates(labels)
    return [TagWindow(start, end, chosen.select(row, labels, candidates)) for row, (start, end) in zip(scores, bounds)]


EVENT_THRESHOLD = 0.5  # for a head whose card has no calibrated per-class thresholds


def event_thresholds(head: LoadedHead, chosen: TagOptions) -> np.ndarray:
    """Per class, the probability a tag window needs to be part of an event: ``chosen.threshold``
    when given, else the thresholds calibrated into the head's card, else ``EVENT_THRESHOLD``."""
    n = len(head.card.labels)
    if chosen.threshold is not None:
        return np.full(n, chosen.threshold)
    calibrated = head.card.extra.get("thresholds") if isinstance(head.card.extra, dict) else None
    if calibrated is not None and len(calibrated) == n:
        return np.asarray(calibrated, dtype=np.float64)
    return np.full(n, EVENT_THRESHOLD)


def sound_events(scores: np.ndarray, bounds: list[tuple[float, float]], labels: LabelSet, chosen: TagOptions,
                 thresholds: np.ndarray) -> list[SoundEvent]:
    """Consecutive tag windows in which a class reaches its threshold, merged into one event per
    stretch (classes limited by ``chosen.include``/``exclude``); sorted by start, then probability."""
    events: list[SoundEvent] = []
    if not len(scores):
        return events
    for c in chosen.candidates(labels):
        above = scores[:, c] >= thresholds[c]
        i = 0
        while i < len(above):
            if not above[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(above) and above[j + 1]:
                j += 1
            label = labels[int(c)]
            events.append(SoundEvent(int(c), label.mid, label.name, bounds[i][0], bounds[j][1],
                                     float(scores[i : j + 1, c].max())))
            i = j + 1
    return sorted(events, key=lambda e: (e.start, -e.probability))


def tag_segments(segments: list[Segment], scores: np.ndarray, bounds: list[tuple[float, float]],
                 labels: LabelSet, chosen: TagOptions) -> None:
    """Give each segment the tags of the windows it overlaps, weighted by overlap."""
    if not len(scores):
        return
    candidates = chosen.candidates(labels)
    starts = np.array([b[0] for b in bounds])
    ends = np.array([b[1] for b in bounds])
    for segment in segments:
        overlap = np.clip(np.minimum(ends, segment.end) - np.maximum(starts, segment.start), 0, None)
        if overlap.sum() <= 0:
            overlap = (starts <= segment.start).astype(float) * (ends >= segment.start)
        if overlap.sum() <= 0:
            continue
        segment.tags = chosen.select(overlap @ scores / overlap.sum(), labels, candidates)


SPEECH_MIDS = ("/m/09x0r", "/m/05zppz", "/m/02zsn", "/m/0ytgt", "/m/01h8n0", "/m/02qldy", "/m/0261r1")  # Speech and kinds


def speech_probability(scores: np.ndarray, bounds: list[tuple[float, float]], labels: LabelSet,
                       start: float, end: float) -> float | None:
    """The head's highest probability of speech (Speech or one of its kinds) in the tag windows
    that overlap ``start``..``end``; None when the head knows no speech class."""
    columns = [i for i, label in enumerate(labels) if label.mid in SPEECH_MIDS]
    rows = [i for i, (a, b) in enumerate(bounds) if a < end and b > start] or [
        i for i, (a, b) in enumerate(bounds) if a <= start <= b]
    if not columns or not rows or not len(scores):
        return None
    return float(scores[np.ix_(rows, columns)].max())


# --- silence ---------------------------------------------------------------------------------

MIN_TAG_SECONDS = 0.1  # shorter audio gets no sound tags (a drum hit of 0.1-0.4 s is tagged; 10 ms of tone is not)
SILENT_LEVEL = 1e-3  # -60 dBFS: audio whose samples vary less than this around their mean is silent
LEVEL_STEP = 6400  # samples (0.4 s) per entry of ``Levels``: every tag window starts on one


class Levels:
    """The lowest and the highest sample of each 0.4 s step of audio, kept as the audio passes, so
    that silence can be judged for any tag window (they start on the 0.4 s grid) after its samples
    are gone: a stream, or a long upload held window by window."""

    def __init__(self):
        self.low = np.zeros(0, np.float32)
        self.high = np.zeros(0, np.float32)
        self.count = 0  # samples seen

    def add(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        start, end = self.count, self.count + len(samples)
        steps = -(-end // LEVEL_STEP)
        if steps > len(self.low):
            grow = steps - len(self.low)
            self.low = np.concatenate([self.low, np.full(grow, np.inf, np.float32)])
            self.high = np.concatenate([self.high, np.full(grow, -np.inf, np.float32)])
        cuts = np.arange((-start) % LEVEL_STEP, len(samples), LEVEL_STEP)
        cuts = cuts if len(cuts) and cuts[0] == 0 else np.concatenate([[0], cuts])
        ids = (start + cuts) // LEVEL_STEP
        self.low[ids] = np.minimum(self.low[ids], np.minimum.reduceat(samples, cuts))
        self.high[ids] = np.maximum(self.high[ids], np.maximum.reduceat(samples, cuts))
        self.count = end

    def silent(self, start: float = 0.0, end: float | None = None) -> bool:
        """Digital silence, a constant level (a DC offset) or samples that were all NaN from ``start``
        to ``end`` seconds (None: all): no level above -60 dBFS once a constant offset is removed."""
        first = round(start * SAMPLE_RATE) // LEVEL_STEP
        last = len(self.low) if end is None else -(-round(end * SAMPLE_RATE) // LEVEL_STEP)
        if last <= first:
            return True
        return float(self.high[first:last].max()) - float(self.low[first:last].min()) < 2 * SILENT_LEVEL


def untagged(levels: Levels, windows: list[TagWindow], duration: float) -> list[int]:
    """The tag windows that carry no labels: every one of audio shorter than ``MIN_TAG_SECONDS``,
    else the silent ones."""
    if duration < MIN_TAG_SECONDS:
        return list(range(len(windows)))
    return [i for i, w in enumerate(windows) if levels.silent(w.start, w.end)]


def honest_tags(levels: Levels, result: TagResult) -> None:
    """Degenerate audio gets a note, not confident tags. Audio shorter than ``MIN_TAG_SECONDS`` has
    no tags at all; a silent tag window has no labels, its scores are 0, and sound events and segment
    tags that lie only in silent windows go. Silent audio gets a note even when it has no tags."""
    windows = result.tags
    silent = untagged(levels, windows, result.duration)
    if windows and result.duration < MIN_TAG_SECONDS:
        result.notes.append(f"the audio is {result.duration:g} s long, too short for sound tags (they need at least "
                            f"{MIN_TAG_SECONDS:g} s), so there are none")
    elif windows and len(silent) == len(windows):
        result.notes.append("the audio is silent (no level above -60 dBFS once a constant offset is removed), "
                            "so there are no sound tags")
    elif silent:
        result.notes.append(f"{len(silent)} of {len(windows)} tag windows are silent (no level above -60 dBFS), "
                            "so they carry no tags")
    elif not windows and levels.silent():
        result.notes.append("the audio is silent (no level above -60 dBFS once a constant offset is removed)")
    if not silent:
        return
    for i in silent:
        windows[i].labels = []
        if i < len(result.scores):
            result.scores[i] = 0.0
    silent_set = set(silent)
    heard = [(w.start, w.end) for i, w in enumerate(windows) if i not in silent_set]

    def audible(start: float, end: float) -> bool:
        return any(a < end and start < b for a, b in heard)

    result.events = [event for event in result.events if audible(event.start, event.end)]
    for segment in getattr(result, "segments", []):
        if not audible(segment.start, segment.end):
            segment.tags = []
