"""Where the audio is cut into encoder windows: at most 30 s each, cut in a pause.

The windows tile the audio with no gap and no overlap, so every sample is encoded exactly once.
A cut goes into the most pause-like stretch near the end of the window it closes, as a voice
activity detector (Silero VAD, run with ONNX Runtime) sees it, and always on the 0.4 s grid of the
tag stream. The planner looks only inside the window it is cutting, its detector starting afresh
there, so a live stream cut the same way gets the same windows as the whole file.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field

import numpy as np
import torch

SAMPLE_RATE = 16000
GRID = 6400  # samples per 0.4 s, one pooled step of the tag stream: every cut is a multiple of it
SPEECH_COVERAGE = 0.25  # share of a segment's detector frames at 0.5 or more that counts as fully speech
VAD_FRAME = 512  # samples per detector frame (32 ms)


@dataclass(frozen=True)
class WindowOptions:
    """How windows are cut. ``search_seconds``: how far before a full window's end a cut may go;
    ``late_bonus``: how much a later cut is preferred (speech probability per whole search span);
    ``pause_seconds``: the stretch around a cut whose loudest speech probability scores it;
    ``speech_threshold``: the detector probability that counts as speech (a window with no frame
    at or above it is encoded for its tags but not decoded)."""

    max_seconds: float = 30.0
    search_seconds: float = 12.0
    late_bonus: float = 0.1
    pause_seconds: float = 0.16
    speech_threshold: float = 0.5

    @property
    def max_samples(self) -> int:
        return int(self.max_seconds * SAMPLE_RATE) // GRID * GRID


@dataclass(frozen=True, eq=False)
class Window:
    """Samples ``start`` to ``end`` of the audio and the detector's speech probability of each of
    its 32 ms frames (frame i covers samples ``start + 512 i`` onward)."""

    start: int
    end: int
    speech_probs: np.ndarray = field(repr=False)

    @property
    def samples(self) -> int:
        return self.end - self.start

    @property
    def offset(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    def speech(self, start: float | None = None, end: float | None = None) -> float:
        """The highest speech probability between ``start`` and ``end`` seconds (absolute times;
        default: the whole window)."""
        probs = self.speech_probs
        first = 0 if start is None else max(0, int((start - self.offset) * SAMPLE_RATE) // VAD_FRAME)
        last = len(probs) if end is None else int(np.ceil((end - self.offset) * SAMPLE_RATE / VAD_FRAME))
        part = probs[first : max(first + 1, last)]
        return float(part.max()) if len(part) else 0.0

    def segment_speech(self, start: float, end: float) -> float:
        """How likely a transcript segment from ``start`` to ``end`` is speech, as the detector hears
        it: its highest probability there, scaled down where less than ``SPEECH_COVERAGE`` of the
        segment's frames are speech (a click or a beep that fools the detector for half a second
        does not make seven seconds of Whisper's text speech)."""
        first = max(0, int((start - self.offset) * SAMPLE_RATE) // VAD_FRAME)
        last = int(np.ceil((end - self.offset) * SAMPLE_RATE / VAD_FRAME))
        part = self.speech_probs[first : max(first + 1, last)]
        if not len(part):
            return 0.0
        coverage = float(np.mean(part >= 0.5))
        return float(part.max()) * min(1.0, coverage / SPEECH_COVERAGE)


_load_lock = threading.Lock()


@functools.cache
def _detector():
    with _load_lock:
        threads = torch.get_num_threads()
        from silero_vad import load_silero_vad  # importing it sets torch's thread count to 1

        torch.set_num_threads(threads)
        return load_silero_vad(sequence=True)


def speech_probabilities(samples: np.ndarray) -> np.ndarray:
    """Silero VAD's speech probability of every 32 ms frame, the detector starting afresh."""
    if not len(samples):
        return np.zeros(0, np.float32)
    return _detector().audio_forward(np.ascontiguousarray(samples, dtype=np.float32))


def best_cut(probs: np.ndarray, length: int, options: WindowOptions) -> int:
    """Where to end a full window of ``length`` samples whose detector frames are ``probs``: the
    grid point in the search span with the least speech around it, later ones preferred."""
    first = max(GRID, (length - int(options.search_seconds * SAMPLE_RATE)) // GRID * GRID)
    cuts = np.arange(first, length + 1, GRID)
    half = max(1, int(options.pause_seconds * SAMPLE_RATE / 2) // VAD_FRAME)
    frame = np.minimum(cuts // VAD_FRAME, len(probs))
    padded = np.concatenate([probs, np.zeros(half, probs.dtype)])  # past the span: not known, taken as pause
    around = np.stack([padded[np.clip(frame + d, 0, len(padded) - 1)] for d in range(-half, half)])
    score = around.max(axis=0) + options.late_bonus * (length - cuts) / max(1, length - first)
    return int(cuts[np.argmin(score)])


def plan_next(samples: np.ndarray, start: int, final: bool, options: WindowOptions = WindowOptions(),
              need_speech: bool = True) -> Window | None:
    """The window that starts at sample ``start`` of ``samples`` (the audio so far; ``final``: it
    is all of it), or None when more audio is needed to place its cut. Only
    ``samples[start : start + max_samples]`` is looked at. ``need_speech=False`` skips the
    detector where no cut has to be placed (tags only)."""
    limit = options.max_samples
    available = len(samples) - start
    if available <= 0 or (available < limit and not final):
        return None
    region = samples[start : start + limit]
    if final and available <= limit:
        probs = speech_probabilities(region) if need_speech else np.zeros(0, np.float32)
        return Window(start, len(samples), probs)
    probs = speech_probabilities(region)
    cut = best_cut(probs, limit, options)
    return Window(start, start + cut, probs[: -(-cut // VAD_FRAME)])


def plan_windows(samples: np.ndarray, options: WindowOptions = WindowOptions(), need_speech: bool = True
                 ) -> list[Window]:
    """Windows of at most 30 s that tile all of ``samples``, each cut in a pause."""
    windows: list[Window] = []
    start = 0
    while start < len(samples) or not windows:
        window = plan_next(samples, start, True, options, need_speech)
        if window is None:  # empty audio: one empty window
            return [Window(0, 0, np.zeros(0, np.float32))]
        windows.append(window)
        start = window.end
    return windows
