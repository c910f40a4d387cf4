"""Labeled real sounds shipped in tests/fixtures/sounds (sources and licences: its README.md).

A plain module that the tests import (not a conftest):

- ``drum_clips()``: kick / snare / hihat / cymbal one-shots from 12 Hydrogen drum kits, each kit
  in exactly one of 4 folds, so a held-out fold holds only recordings of other kits;
- ``percussion_clips()``: a smaller set, Clapping / Cowbell / Tambourine (AudioSet names);
- ``write_csv(...)``, ``write_tree(...)``: a generic ``path,labels,fold`` CSV or a
  folder-per-class tree of those clips in a temporary directory;
- ``long_sound(...)``: distinct clips joined into one long recording (for multi-window tests).
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from tagger.audio import SAMPLE_RATE, load_audio

SOUNDS = Path(__file__).resolve().parent / "fixtures" / "sounds"
DRUM_CLASSES = ("cymbal", "hihat", "kick", "snare")  # the sorted order a custom label set gets
PERCUSSION_CLASSES = ("Clapping", "Cowbell", "Tambourine")


@dataclass(frozen=True)
class SoundClip:
    path: Path
    label: str  # the short class name (drums: kick, snare, hihat, cymbal)
    audioset: str  # the AudioSet display name of the class
    kit: str
    fold: int
    seconds: float


def _read(name: str) -> list[SoundClip]:
    with open(SOUNDS / f"{name}.csv", newline="", encoding="utf-8") as f:
        return [SoundClip(path=SOUNDS / row["file"], label=row["label"], audioset=row["audioset"], kit=row["kit"],
                          fold=int(row["fold"]), seconds=float(row["seconds"])) for row in csv.DictReader(f)]


@cache
def drum_clips() -> tuple[SoundClip, ...]:
    """Every drum clip, sorted by file name."""
    return tuple(_read("drums"))


@cache
def percussion_clips() -> tuple[SoundClip, ...]:
    return tuple(_read("percussion"))


def pick(clips, per_class: int | None = None, classes: tuple[str, ...] | None = None) -> list[SoundClip]:
    """A deterministic subset: at most ``per_class`` clips of each class, spread over kits."""
    chosen = []
    for label in sorted({c.label for c in clips}):
        if classes is not None and label not in classes:
            continue
        of_class = [c for c in clips if c.label == label]
        # round-robin over kits so a small subset still holds several recordings of several kits
        by_kit: dict[str, list[SoundClip]] = {}
        for clip in of_class:
            by_kit.setdefault(clip.kit, []).append(clip)
        ordered = []
        while any(by_kit.values()):
            for kit in sorted(by_kit):
                if by_kit[kit]:
                    ordered.append(by_kit[kit].pop(0))
        chosen.extend(ordered[:per_class] if per_class else ordered)
    return chosen


def write_csv(directory: str | os.PathLike, clips=None, *, names: str = "short", name: str = "data.csv",
              relative: bool = True, header: bool = True, extra_rows: list[list[str]] | None = None) -> Path:
    """Write a generic ``path,labels,fold`` CSV of ``clips`` (default: all drum clips) into
    ``directory`` and return its path. ``names``: "short" (kick, ...) or "audioset" (Bass drum, ...).
    Paths are relative to the CSV when ``relative`` (else absolute). ``extra_rows`` are appended as is."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    clips = drum_clips() if clips is None else clips
    target = directory / name
    with open(target, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(["path", "labels", "fold"])
        for clip in clips:
            path = os.path.relpath(clip.path, directory) if relative else str(clip.path)
            writer.writerow([path, clip.audioset if names == "audioset" else clip.label, clip.fold])
        for row in extra_rows or []:
            writer.writerow(row)
    return target


def write_tree(directory: str | os.PathLike, clips=None) -> Path:
    """Write a folder-per-class tree (``directory/tree/CLASS/FILE``, symlinks where possible) and return its root."""
    root = Path(directory) / "tree"
    clips = drum_clips() if clips is None else clips
    for clip in clips:
        folder = root / clip.label
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / clip.path.name
        try:
            target.symlink_to(clip.path)
        except OSError:
            shutil.copyfile(clip.path, target)
    return root


@cache
def _decoded(path: Path) -> np.ndarray:
    samples = load_audio(path)
    samples.flags.writeable = False
    return samples


def decoded(clip: SoundClip) -> np.ndarray:
    return _decoded(clip.path)


def long_sound(min_seconds: float, gap: float = 0.25) -> np.ndarray:
    """At least ``min_seconds`` of 16 kHz audio: distinct drum clips (none repeated) with ``gap``
    seconds of silence between them, kits and classes interleaved."""
    gap_samples = np.zeros(round(gap * SAMPLE_RATE), dtype=np.float32)
    pieces: list[np.ndarray] = []
    length = 0
    per_class = [pick(drum_clips(), classes=(label,)) for label in DRUM_CLASSES]
    interleaved = [clip for row in zip(*per_class) for clip in row]
    for clip in interleaved:
        if length >= min_seconds * SAMPLE_RATE:
            break
        samples = decoded(clip)
        pieces.extend([samples, gap_samples])
        length += samples.size + gap_samples.size
    if length < min_seconds * SAMPLE_RATE:
        raise ValueError(f"the drum fixtures hold only {length / SAMPLE_RATE:.1f} s, fewer than {min_seconds} s")
    return np.concatenate(pieces)
