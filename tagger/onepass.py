"""The single pass: plan windows, log-mel, encode once, hand the features on.

Every caller goes through here: ``transcribe`` and ``tag``, the service's micro-batcher (windows
of several requests in one encoder call) and feature extraction for training. An ``AudioJob``
holds one recording's windows; ``encode_step`` runs one encoder call over windows of one or more
jobs and gives each job its slice: the pooled block outputs go to the tagging head, the final
output to the text decoder.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .audio import SAMPLE_RATE, EmptyAudioError
from .backbone import FRAMES_PER_STEP, Backbone, Encoded
from .decoding import DecodeOptions, Share, decode_together
from .mel import log_mel
from .results import TagResult, TranscriptionResult
from .tagging import (
    Levels,
    TagOptions,
    TagStream,
    event_thresholds,
    honest_tags,
    sound_events,
    speech_probability,
    tag_segments,
    tag_windows,
)
from .windows import Window, WindowOptions, plan_next

HOP_LENGTH = 160  # samples per mel frame
NO_HEAD_NOTE = "no tagging head is loaded, so there are no sound tags; load one with load_model(..., head=PATH)"


def window_steps(window: Window) -> int:
    """Pooled 0.4 s steps of real audio in a window (every window but the last is a whole number of them)."""
    return max(1, math.ceil(window.samples // HOP_LENGTH / FRAMES_PER_STEP))


class AudioJob:
    """One recording's way through the model: its windows are planned (``plan_ahead``; the first
    one at once), encoded in order (alone or batched with other jobs' windows, ``encode_step``);
    each encoded batch goes to the tag stream at once and to the decoder (``decode``, which may run
    on another thread)."""

    def __init__(self, model, samples: np.ndarray, options: DecodeOptions | None, tags: TagOptions | None,
                 window_options: WindowOptions | None = None):
        if len(samples) < HOP_LENGTH:
            raise EmptyAudioError(f"the audio is {len(samples) / SAMPLE_RATE * 1000:.1f} ms long, shorter than one 10 ms frame")
        self.samples = samples if samples.flags.writeable else samples.copy()  # torch wants writable arrays
        window_options = window_options or WindowOptions()
        self._setup(model, options, tags, window_options, round(len(samples) / SAMPLE_RATE, 3))
        self.levels.add(self.samples)
        self.window_options = window_options
        self.planned_all = False
        self._plan_lock = threading.Lock()
        self.plan_ahead(1)  # the encoder can start; the rest are planned beside it (``decode_beside``)

    def _setup(self, model, options: DecodeOptions | None, tags: TagOptions | None, window_options: WindowOptions,
               duration: float) -> None:
        """What every job starts with but its windows (``tagger.stream.StreamJob`` plans them as audio comes)."""
        self.model = model
        self.options = options
        self.tag_options = tags
        self.duration = duration
        self.window_list: list[Window] = []
        self.speech_threshold = window_options.speech_threshold
        head = model.head
        self.stream = TagStream(head, tags.tag_resolution, duration) if tags is not None and head else None
        self.decoder = None if options is None else model.decoder(options)
        self.next_window = 0
        self.levels = Levels()  # for the notes on silence (``honest_tags``)
        self.audio_note: str | None = None  # which audio track was used, when the file has several
        self._undecoded: list[tuple[int, torch.Tensor]] = []  # (window, features [1500, D]) waiting for the decoder
        self._lock = threading.Lock()

    def plan_ahead(self, count: int | None = None) -> int:
        """Plan up to ``count`` more windows (None: all the rest); how many were planned. Safe from
        two threads: the decoding thread plans while the encoder runs, and the encoder plans
        what it needs next if it gets there first."""
        planned = 0
        while count is None or planned < count:
            with self._plan_lock:  # one window at a time: the encoder never waits for more than one
                if self.planned_all:
                    break
                start = self.window_list[-1].end if self.window_list else 0
                window = plan_next(self.samples, start, True, self.window_options, self.options is not None)
                self.window_list.append(window)
                self.planned_all = window.end >= len(self.samples)
            planned += 1
        return planned

    @property
    def n_windows(self) -> int:
        """Windows planned so far (all of them once ``planned_all``)."""
        return len(self.window_list)

    @property
    def encoded_all(self) -> bool:
        return self.planned_all and self.next_window >= self.n_windows

    @property
    def decoded_all(self) -> bool:
        return self.encoded_all and not self._undecoded

    def windows(self, first: int, last: int) -> torch.Tensor:
        """Log-mel of windows ``first..last-1`` as a batch [B, n_mels, 3000]."""
        n_mels, device = self.model.whisper.dims.n_mels, self.model.device
        return torch.stack([log_mel(torch.from_numpy(self.samples[w.start : w.end]), n_mels, device)
                            for w in self.window_list[first:last]])

    def take(self, first: int, encoded: Encoded) -> None:
        """Take the encoder's output for windows ``first``, ``first + 1``, ... (in order): tags at
        once; windows with speech wait for ``decode``, the others are never decoded."""
        if first != self.next_window:
            raise ValueError(f"window {first} arrived, expected {self.next_window}")
        windows = self.window_list[first : first + len(encoded.features)]
        if self.stream is not None:
            self.stream.add(encoded.pooled, [window_steps(w) for w in windows])
        if self.decoder is not None:
            with self._lock:
                self._undecoded += [(first + i, encoded.features[i]) for i, w in enumerate(windows)
                                    if w.speech() >= self.speech_threshold]
        self.next_window = first + len(windows)

    @property
    def undecoded(self) -> int:
        return len(self._undecoded)

    def share(self, limit: int | None = None, stop: Callable[[], bool] | None = None) -> Share | None:
        """Up to ``limit`` of the windows waiting for the decoder (one when each window's text is the
        next one's prompt), ready for ``decode_together``; None when none waits."""
        if self.decoder is None:
            return None
        with self._lock:
            count = len(self._undecoded) if limit is None else limit
            if not self.options.batched:
                count = min(count, 1)
            pending, self._undecoded = self._undecoded[:count], self._undecoded[count:]
        if not pending:
            return None
        indices = [i for i, _ in pending]
        return self.decoder.prepare([self.window_list[i] for i in indices], indices,
                                    torch.stack([f for _, f in pending]), stop)

    def decode(self, stop: Callable[[], bool] | None = None, limit: int | None = None) -> None:
        """Decode the windows taken so far, at most ``limit`` (``stop``: checked between windows and attempts)."""
        while (share := self.share(limit, stop)) is not None:
            decode_together([share])
            if share.error is not None:
                raise share.error
            if limit is not None or (stop is not None and stop()):
                break

    def result(self) -> TranscriptionResult | TagResult:
        """The finished result, once every window was taken and decoded, with what is known about
        the input in its notes: which audio track was used, and notes rather than tags for silent or
        too short audio (``honest_tags``)."""
        if not self.decoded_all:
            raise RuntimeError("the job still has windows to encode or decode")
        result = self._result()
        if self.audio_note:
            result.notes.insert(0, self.audio_note)
        honest_tags(self.levels, result)
        return result

    def _result(self) -> TranscriptionResult | TagResult:
        notes: list[str] = []
        head = self.model.head
        labels = head.card.labels if head is not None else None
        bounds: list[tuple[float, float]] = []
        windows, events = [], []
        if self.stream is not None and labels is not None:
            scores = self.stream.finish()
            bounds = [self.stream.window_bounds(i) for i in range(len(scores))]
            windows = tag_windows(scores, bounds, labels, self.tag_options)
            events = sound_events(scores, bounds, labels, self.tag_options, event_thresholds(head, self.tag_options))
        else:
            scores = np.zeros((0, len(labels) if labels else 0), np.float32)
            notes.append(NO_HEAD_NOTE if head is None else "tags were not requested")
        common = {"duration": self.duration, "tags": windows, "scores": scores,
                      "tag_resolution": self.tag_options.tag_resolution if self.tag_options else 10.0,
                      "head": self.model.head_name if self.stream is not None else None,
                      "labels": list(labels.mids) if labels else [], "notes": notes, "events": events}
        if self.decoder is None:
            return TagResult(**common)
        decoder = self.decoder
        head_speech = None
        if labels is not None and self.stream is not None and len(scores):
            tag_segments(decoder.segments, scores, bounds, labels, self.tag_options)
            if speech_probability(scores, bounds, labels, 0.0, self.duration) is not None:
                def head_speech(start: float, end: float) -> float:
                    return speech_probability(scores, bounds, labels, start, end)
        decoder.gate(head_speech)
        language = decoder.language or next((s.language for s in decoder.segments if s.language), None) or "en"
        return TranscriptionResult(**common, text=decoder.text, language=language,
                                   task=self.options.task, segments=decoder.segments)


@dataclass
class Slice:
    """Windows ``first .. first + count - 1`` of ``job`` in one encoder call."""

    job: AudioJob
    first: int
    count: int


def encode_step(backbone: Backbone, slices: list[Slice], bf16: bool = False) -> list[Encoded]:
    """One encoder call over the windows of ``slices``; each slice's part of the output, in order."""
    mel = torch.cat([s.job.windows(s.first, s.first + s.count) for s in slices])
    encoded = backbone.encode(mel, bf16=bf16)
    parts, offset = [], 0
    for s in slices:
        parts.append(Encoded(features=encoded.features[offset : offset + s.count],
                             pooled=encoded.pooled[offset : offset + s.count]))
        offset += s.count
    return parts


def run_job(backbone: Backbone, job: AudioJob, batch_size: int, decode_batch: int = 8,
            progress: Callable[[int], None] | None = None) -> TranscriptionResult | TagResult:
    """Encode, tag and decode one job to the end: ``batch_size`` windows per encoder call. The
    text is decoded on a second thread beside the encoder (``decode_beside``), up to
    ``decode_batch`` windows per decoder call when the options allow batches."""
    if job.decoder is None:
        while not job.encoded_all:
            job.take(job.next_window, _encode_next(backbone, job, batch_size, progress))
    else:
        decode_beside(job, decode_batch if job.options.batched else 1,
                      lambda: _encode_next(backbone, job, batch_size, progress))
    return job.result()


def _encode_next(backbone: Backbone, job: AudioJob, batch_size: int,
                 progress: Callable[[float], None] | None) -> Encoded:
    """The encoder's output for the next ``batch_size`` windows of ``job`` (fewer at its end),
    planned here if the decoding thread has not planned them yet; ``progress`` gets their seconds."""
    job.plan_ahead(job.next_window + batch_size - job.n_windows)
    piece = Slice(job, job.next_window, min(batch_size, job.n_windows - job.next_window))
    encoded = encode_step(backbone, [piece])[0]
    if progress is not None:
        progress(sum(w.seconds for w in job.window_list[piece.first : piece.first + piece.count]))
    return encoded


def decode_beside(job: AudioJob, decode_batch: int, encode_next: Callable[[], Encoded]) -> None:
    """Encode all of ``job`` on this thread (``encode_next`` gives the next encoder output) while a
    second thread plans the rest of its windows, then decodes its text: it takes up to
    ``decode_batch`` waiting windows as soon as a quarter of that many wait, or whatever waits once
    all are encoded. The encoder keeps both cores busy and the detector and the decoder do not
    (small matrix products, a step at a time), so they overlap: on two cores a request takes about
    0.7-0.8 of encoding and decoding in turn (docs/benchmarks.md). A failure on either side stops
    both and is raised here."""
    ready = max(1, decode_batch // 4)
    arrived = threading.Condition()
    stopped = threading.Event()
    failures: list[BaseException] = []

    def decode() -> None:
        try:
            job.plan_ahead()
            while not stopped.is_set():
                with arrived:
                    arrived.wait_for(lambda: job.undecoded >= ready or job.encoded_all or stopped.is_set())
                if stopped.is_set() or not job.undecoded:
                    return
                job.decode(stop=stopped.is_set, limit=decode_batch)
        except BaseException as error:  # noqa: BLE001 - handed to the encoding thread, which raises it
            failures.append(error)
            stopped.set()

    decoder = threading.Thread(target=decode, name="earmark-decode", daemon=True)
    decoder.start()
    try:
        while not job.encoded_all and not stopped.is_set():
            encoded = encode_next()
            with arrived:
                job.take(job.next_window, encoded)
                arrived.notify()
    except BaseException:
        stopped.set()
        raise
    finally:
        with arrived:
            arrived.notify()
        decoder.join()
    if failures:
        raise failures[0]


def pooled_features(backbone: Backbone, jobs: list[AudioJob], batch_size: int, bf16: bool = False
                    ) -> list[torch.Tensor]:
    """Every block's pooled output over each job's real audio, ``[L, T, D]`` float32 on the CPU
    (what a tagging head sees: feature extraction for training), the windows of all jobs batched
    into encoder calls of at most ``batch_size`` windows."""
    for job in jobs:
        job.plan_ahead()
    pending = [Slice(job, i, 1) for job in jobs for i in range(job.n_windows)]
    parts: dict[int, list[torch.Tensor]] = {id(job): [] for job in jobs}
    for first in range(0, len(pending), batch_size):
        batch = pending[first : first + batch_size]
        for s, encoded in zip(batch, encode_step(backbone, batch, bf16)):
            steps = window_steps(s.job.window_list[s.first])
            parts[id(s.job)].append(encoded.pooled[0, :, :steps].cpu())
    return [torch.cat(parts[id(job)], dim=1) for job in jobs]
