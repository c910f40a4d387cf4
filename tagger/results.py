"""What a transcription or a tagging run returns: plain dataclasses, JSON-ready through ``to_dict``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np


class TagLabel(NamedTuple):
    """One sound class and its probability: ``(index, mid, name, probability)``."""

    index: int
    mid: str
    name: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "mid": self.mid, "name": self.name, "probability": round(self.probability, 6)}


@dataclass
class TagWindow:
    """Tags for one stretch of audio, ``start`` to ``end`` seconds."""

    start: float
    end: float
    labels: list[TagLabel]

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "labels": [label.to_dict() for label in self.labels]}


@dataclass
class SoundEvent:
    """A sound heard from ``start`` to ``end`` seconds: consecutive tag windows in which its class
    reached its threshold, merged; ``probability`` is the highest over them."""

    index: int
    mid: str
    name: str
    start: float
    end: float
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "mid": self.mid, "name": self.name, "start": self.start, "end": self.end,
                "probability": round(self.probability, 6)}


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class Segment:
    id: int
    seek: int  # first mel frame (10 ms) of the window the segment was decoded from
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] | None = None
    tags: list[TagLabel] = field(default_factory=list)
    language: str | None = None  # the language the segment was decoded in
    no_speech: bool = False  # speech is improbable here (the speech gate): left out of the text
    speech_prob: float | None = None  # what the speech gate saw: detector and head speech probability

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tags"] = [label.to_dict() for label in self.tags]
        return out


@dataclass
class TagResult:
    """Sound tags over time. ``scores[i]`` holds every class's probability for ``tags[i]``'s window."""

    duration: float
    tags: list[TagWindow]
    scores: np.ndarray  # [windows, classes] probabilities
    tag_resolution: float
    head: str | None  # which head produced the tags, None when no head is loaded
    labels: list[str]  # the mids of the classes the head scores, in column order of ``scores``
    notes: list[str] = field(default_factory=list)
    events: list[SoundEvent] = field(default_factory=list)  # sounds from start to end (``tagging.sound_events``)

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration": self.duration,
            "tag_resolution": self.tag_resolution,
            "head": self.head,
            "tags": [window.to_dict() for window in self.tags],
            "events": [event.to_dict() for event in self.events],
            "notes": list(self.notes),
        }


@dataclass
class TranscriptionResult(TagResult):
    """A transcript plus the sound tags that came from the same encoder pass."""

    text: str = ""
    language: str = ""
    task: str = "transcribe"
    segments: list[Segment] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "language": self.language,
            "task": self.task,
            "segments": [segment.to_dict() for segment in self.segments],
            **super().to_dict(),
        }
