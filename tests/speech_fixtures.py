"""Real speech recordings shipped in tests/fixtures/speech (sources and licences: tests/fixtures/README.md).

A plain module that the tests import (not a conftest):

- ``speech_clips()``: English clips with reference transcripts, for WER checks;
- ``long_speech()``: a long recording made of distinct clips joined by short silences;
- ``foreign_speech()``: one non-English clip, its language code and its words;
- ``is_speech_class(name)``: Speech or one of its AudioSet descendants (Female speech, ...).
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

import numpy as np

from tagger.audio import SAMPLE_RATE, load_audio
from tagger.corpus.synth import with_ancestors

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "speech"


def is_speech_class(name: str) -> bool:
    """A head may rank a kind of speech (a woman's voice) above Speech itself; both are right."""
    return "Speech" in with_ancestors([name])


def _rows(name: str) -> list[dict[str, str]]:
    with open(FIXTURES / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def speech_clips() -> list[tuple[Path, str]]:
    """(path, reference transcript) for every English clip, sorted by path."""
    return sorted((FIXTURES / row["file"], row["transcript"]) for row in _rows("transcripts.tsv"))


@cache
def _decoded(path: Path) -> np.ndarray:
    samples = load_audio(path)
    samples.flags.writeable = False
    return samples


def long_speech(min_seconds: float = 95.0, gap: float = 0.5) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """At least ``min_seconds`` of 16 kHz float32 speech: distinct clips (in ``speech_clips()``
    order, none repeated) with ``gap`` seconds of silence between them. Clips are added only
    until the length is reached, so the result is shorter than ``min_seconds`` plus one clip.

    Returns the samples and, per clip, (start seconds, end seconds, transcript).
    """
    gap_samples = np.zeros(round(gap * SAMPLE_RATE), dtype=np.float32)
    pieces: list[np.ndarray] = []
    spans: list[tuple[float, float, str]] = []
    length = 0
    for path, transcript in speech_clips():
        if length >= min_seconds * SAMPLE_RATE:
            break
        if pieces:
            pieces.append(gap_samples)
            length += gap_samples.size
        samples = _decoded(path)
        spans.append((length / SAMPLE_RATE, (length + samples.size) / SAMPLE_RATE, transcript))
        pieces.append(samples)
        length += samples.size
    if length < min_seconds * SAMPLE_RATE:
        raise ValueError(
            f"the speech fixtures hold only {length / SAMPLE_RATE:.1f} s of distinct clips, "
            f"fewer than the {min_seconds} s asked for"
        )
    return np.concatenate(pieces), spans


def foreign_speech() -> tuple[Path, str, str]:
    """(path, Whisper language code, expected words) of a real non-English recording."""
    row = _rows("foreign.tsv")[0]
    return FIXTURES / row["file"], row["language"], row["transcript"]
