"""Live audio: a job fed as the audio arrives, whose final result equals the whole file's.

``StreamJob`` is an ``AudioJob`` that starts with no audio. ``feed`` appends samples and plans every
window whose cut can be placed (``windows.plan_next`` looks only inside the window it cuts, so the
windows are the whole file's); ``end`` plans the rest. Windows are encoded once, tagged and decoded
as for a file, by whoever drives the job (``stream_transcribe`` here, the service's batcher there),
and a window's samples are dropped once it is encoded: the job holds at most the window being filled
and the planned windows that wait for the encoder, however long the stream runs.

What a stream reports as it goes:

- ``Partial``: the text of the window still filling, from an extra encoder run over it (the
  ARCHITECTURE allows partials to cost extra runs; finals never do);
- ``TagWindow``: each finished tag window, as the whole file's;
- ``Segment``: each final segment, with its tags and speech gate, once every tag window it overlaps
  is scored; equal to the whole file's segment;
- the result (``TranscriptionResult`` or ``TagResult``) once the stream ended and all is decoded.

``PcmDecoder`` and ``ContainerDecoder`` turn the bytes a client sends (raw PCM, or a container PyAV
reads as it arrives) into 16 kHz mono float32.
"""

from __future__ import annotations

import dataclasses
import io
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import av
import numpy as np
import torch

from .audio import (
    SAMPLE_RATE,
    AudioError,
    AudioReader,
    AudioTooLongError,
    EmptyAudioError,
    UndecodableAudioError,
    _describe,
    _Mono16k,
    _sanitise,
)
from .decoding import DecodeOptions
from .mel import log_mel
from .onepass import HOP_LENGTH, AudioJob, Slice, encode_step, run_job
from .results import Segment, TagResult, TagWindow, TranscriptionResult
from .tagging import TagOptions, speech_probability, tag_segments, tag_windows, untagged
from .windows import Window, WindowOptions, plan_next

ENCODINGS = ("pcm_s16le", "pcm_f32le", "container")
PARTIAL_EVERY = 1.0  # seconds of new audio between two partials of a stream
MAX_BAD_PACKETS = 50  # consecutive packets that fail to decode before the stream is given up as corrupt
PARTIAL_MIN = 0.5  # seconds of audio the window being filled needs before its partial is worth a run


@dataclass(frozen=True)
class AudioFormat:
    """How a stream's bytes are audio: raw little-endian PCM (``pcm_s16le``, ``pcm_f32le``) at
    ``sample_rate`` with ``channels`` interleaved, or a ``container`` PyAV reads as it arrives
    (Ogg/Opus, WebM, MP3, FLAC, WAV, ...; its own header says rate and channels)."""

    encoding: str = "pcm_s16le"
    sample_rate: int = SAMPLE_RATE
    channels: int = 1

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}; not {self.encoding!r}")
        if not isinstance(self.sample_rate, int) or not 1000 <= self.sample_rate <= 384_000:
            raise ValueError(f"sample_rate must be a whole number of Hz from 1000 to 384000; not {self.sample_rate!r}")
        if not isinstance(self.channels, int) or not 1 <= self.channels <= 8:
            raise ValueError(f"channels must be from 1 to 8; not {self.channels!r}")

    @property
    def bytes_per_second(self) -> int:
        """Bytes of one second of raw PCM (0 for a container)."""
        width = {"pcm_s16le": 2, "pcm_f32le": 4}.get(self.encoding, 0)
        return width * self.channels * self.sample_rate


class PcmDecoder:
    """Raw PCM bytes, in frames of any size (a sample may straddle two frames), to 16 kHz mono float32.
    16 kHz mono is taken as it is; other rates and layouts go through PyAV's resampler, chunk by
    chunk (the resampler keeps its state between chunks)."""

    def __init__(self, audio_format: AudioFormat):
        if audio_format.encoding == "container":
            raise ValueError("PcmDecoder reads raw PCM; a container goes to ContainerDecoder")
        self.format = audio_format
        self.dtype = np.dtype("<i2") if audio_format.encoding == "pcm_s16le" else np.dtype("<f4")
        self.frame_bytes = self.dtype.itemsize * audio_format.channels
        self._rest = b""
        self._direct = audio_format.sample_rate == SAMPLE_RATE and audio_format.channels == 1
        self._converter = None if self._direct else _Mono16k()
        self._pts = 0

    def push(self, data: bytes) -> np.ndarray:
        data = self._rest + bytes(data)
        whole = len(data) // self.frame_bytes * self.frame_bytes
        data, self._rest = data[:whole], data[whole:]
        return self._convert(np.frombuffer(data, self.dtype))

    def flush(self) -> np.ndarray:
        """The samples still inside the resampler (a trailing partial sample is dropped)."""
        self._rest = b""
        if self._converter is None:
            return np.zeros(0, np.float32)
        return _sanitise(_joined(self._converter.flush()))

    def _convert(self, values: np.ndarray) -> np.ndarray:
        if self.dtype.kind == "i":
            samples = values.astype(np.float32) / 32768.0
        else:
            samples = _sanitise(values.astype(np.float32))  # as a decoded file: NaN to 0, clipped to [-1, 1]
        if self._direct or not len(samples):
            return samples
        channels = self.format.channels
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt",
                                           layout=av.AudioLayout(channels) if channels > 2 else
                                           ("mono" if channels == 1 else "stereo"))
        frame.sample_rate = self.format.sample_rate
        frame.pts = self._pts
        self._pts += len(samples) // channels
        return _sanitise(_joined(self._converter.push(frame)))


def _joined(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)


class _Pipe(io.RawIOBase):
    """Bytes written by one thread, read (blocking) by PyAV on another; not seekable."""

    def __init__(self):
        self._chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._current = b""
        self._ended = False

    def readable(self) -> bool:
        return True

    def feed(self, data: bytes | None) -> None:
        """Bytes for the reader; None: no more will come."""
        self._chunks.put(data)

    def readinto(self, buffer) -> int:
        while not self._current and not self._ended:
            chunk = self._chunks.get()
            if chunk is None:
                self._ended = True
            else:
                self._current = chunk
        count = min(len(buffer), len(self._current))
        buffer[:count] = self._current[:count]
        self._current = self._current[count:]
        return count


class ContainerDecoder:
    """A container that PyAV reads as its bytes arrive, on a thread of its own: ``push`` bytes,
    ``close`` at the end; ``on_samples`` gets 16 kHz mono float32 chunks in order (on that thread),
    ``on_end`` is called once when all is decoded, with the error when it could not be."""

    def __init__(self, on_samples: Callable[[np.ndarray], None], on_end: Callable[[Exception | None], None]):
        self._pipe = _Pipe()
        self._on_samples = on_samples
        self._on_end = on_end
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="earmark-stream-decode", daemon=True)
        self._thread.start()

    def push(self, data: bytes) -> None:
        self._pipe.feed(bytes(data))

    def close(self) -> None:
        self._pipe.feed(None)

    def stop(self) -> None:
        """Give up: nobody wants the rest (the thread ends at its next chunk)."""
        self._stopped = True
        self._pipe.feed(None)

    def _run(self) -> None:
        error: Exception | None = None
        try:
            container = av.open(self._pipe, mode="r", metadata_errors="ignore")
        except (av.error.FFmpegError, ValueError, EOFError, OSError) as failure:
            self._on_end(None if self._stopped else UndecodableAudioError(
                f"Could not read the stream as audio: {_describe(failure)}. It is not a known audio format, "
                "or it is corrupt."))
            return
        try:
            self._decode(container)
        except AudioError as failure:  # reported to the stream, never raised on this thread
            error = failure
        except (av.error.FFmpegError, ValueError, EOFError, OSError) as failure:
            error = UndecodableAudioError(f"Could not decode the stream: {_describe(failure)}.")
        except Exception as failure:  # noqa: BLE001 - a bug: still the stream's error, not a dead thread
            error = failure
        finally:
            container.close()
        if not self._stopped:
            self._on_end(error)

    def _decode(self, container) -> None:
        streams = container.streams.audio
        if not streams:
            raise UndecodableAudioError("Could not use the stream: there is no audio in it.")
        converter, decoded, errors = _Mono16k(), 0, 0
        for packet in container.demux(streams[0]):
            if self._stopped:
                return
            try:
                frames = packet.decode()
                errors = 0
            except (av.error.FFmpegError, ValueError) as failure:  # a corrupt packet: skipped, as for a file
                if isinstance(failure, EOFError):
                    continue
                errors += 1
                if errors >= MAX_BAD_PACKETS:
                    raise
                continue
            for frame in frames:
                for chunk in converter.push(frame):
                    decoded += len(chunk)
                    self._on_samples(_sanitise(chunk.copy()))
        for chunk in converter.flush():
            decoded += len(chunk)
            self._on_samples(_sanitise(chunk.copy()))
        if not decoded:
            raise EmptyAudioError("The stream holds no audio samples.")


@dataclass(frozen=True)
class Partial:
    """The not-yet-final text of the audio from ``start`` to ``end`` seconds (the window being filled)."""

    start: float
    end: float
    text: str


class StreamJob(AudioJob):
    """An ``AudioJob`` fed audio as it arrives (``feed``, then ``end``). Thread-safe between one
    feeding thread and the thread that encodes and decodes it."""

    def __init__(self, model, options: DecodeOptions | None, tags: TagOptions | None,
                 window_options: WindowOptions | None = None, max_duration: float | None = None):
        self.window_options = window_options or model.window_options
        self._setup(model, options, tags, self.window_options, math.inf)
        self.max_duration = max_duration
        self.ended = False
        self.received = 0  # samples fed so far
        self._audio_lock = threading.Lock()
        self._tag_lock = threading.Lock()  # the tag stream, between the encoding thread and readers
        self._data = np.zeros(SAMPLE_RATE * 64, np.float32)  # samples from sample ``_base`` on
        self._size = 0
        self._base = 0
        self._planned = 0  # the end of the last planned window (absolute sample)
        self._emitted_tags = 0
        self._decoded = self.decoder.segments if self.decoder is not None else []  # the decoder appends here
        self._emitted_segments = 0

    # --- audio in ----------------------------------------------------------------------------

    @property
    def samples(self) -> np.ndarray:
        """The audio the job still holds (from the first window not yet encoded)."""
        return self._data[: self._size]

    @property
    def seconds(self) -> float:
        return self.received / SAMPLE_RATE

    @property
    def planned_seconds(self) -> float:
        return self._planned / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> int:
        """Append 16 kHz mono float32 samples; plan the windows whose cut is now known. The number
        of windows planned. AudioTooLongError past ``max_duration``."""
        if self.ended:
            raise ValueError("the stream has ended; no audio may follow")
        samples = np.asarray(samples, np.float32).reshape(-1)
        if self.max_duration is not None and (self.received + len(samples)) / SAMPLE_RATE > self.max_duration:
            raise AudioTooLongError(f"the stream passed its limit of {self.max_duration:g} s of audio",
                                    max_duration=self.max_duration)
        with self._audio_lock:
            if self._size + len(samples) > len(self._data):
                grown = np.zeros(max(2 * len(self._data), self._size + len(samples)), np.float32)
                grown[: self._size] = self._data[: self._size]
                self._data = grown
            self._data[self._size : self._size + len(samples)] = samples
            self._size += len(samples)
            self.received += len(samples)
        self.levels.add(samples)
        return self._plan(final=False)

    def feed_from(self, reader: AudioReader, seconds: float) -> bool:
        """Feed the next ``seconds`` of ``reader``'s audio (an upload held window by window); at its
        end, ``end``. False once the job has ended."""
        samples = reader.read(seconds)
        self.audio_note = reader.note
        if len(samples):
            self.feed(samples)
            return True
        self.end()
        return False

    def end(self) -> int:
        """No more audio: plan the last windows. EmptyAudioError when less than 10 ms came."""
        if self.ended:
            return 0
        if self.received < HOP_LENGTH:
            raise EmptyAudioError(f"the stream holds {self.received / SAMPLE_RATE * 1000:.1f} ms of audio, "
                                  "shorter than one 10 ms frame")
        count = self._plan(final=True)
        self.duration = round(self.received / SAMPLE_RATE, 3)
        if self.stream is not None:
            self.stream.duration = self.duration
        self.ended = True  # last: the windows are all there once ``encoded_all`` can be true
        return count

    def plan_ahead(self, count: int | None = None) -> int:
        """Nothing: a stream's windows are planned as its audio comes (``feed``, ``end``)."""
        return 0

    def _plan(self, final: bool) -> int:
        count = 0
        need_speech = self.options is not None
        while True:
            with self._audio_lock:
                view, base = self._data[: self._size], self._base
            window = plan_next(view, self._planned - base, final, self.window_options, need_speech)
            if window is None or window.end + base <= self._planned:
                return count
            self.window_list.append(Window(window.start + base, window.end + base, window.speech_probs))
            self._planned = window.end + base
            count += 1

    # --- the encoder side --------------------------------------------------------------------

    @property
    def encoded_all(self) -> bool:
        return self.ended and self.next_window >= self.n_windows

    def windows(self, first: int, last: int):
        with self._audio_lock:
            pieces = [self._data[w.start - self._base : w.end - self._base].copy() for w in self.window_list[first:last]]
        n_mels, device = self.model.whisper.dims.n_mels, self.model.device
        return torch.stack([log_mel(torch.from_numpy(p), n_mels, device) for p in pieces])

    def take(self, first, encoded) -> None:
        with self._tag_lock:
            super().take(first, encoded)
        self._drop(self.window_list[self.next_window - 1].end)

    def _drop(self, upto: int) -> None:
        """Forget the samples before ``upto``: they are encoded."""
        with self._audio_lock:
            cut = upto - self._base
            if cut <= 0:
                return
            rest = self._size - cut
            self._data[:rest] = self._data[cut : self._size]
            self._size, self._base = rest, upto

    # --- what is final so far ----------------------------------------------------------------

    def _scored(self) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """The tag windows scored so far and their bounds (the last, shorter one only once all is done)."""
        stream = self.stream
        if stream is None:
            return np.zeros((0, 0), np.float32), []
        with self._tag_lock:
            if self.encoded_all:
                scores = stream.finish()
                stream.scores = [scores] if len(scores) else []
            else:
                scores = np.concatenate(stream.scores) if stream.scores else np.zeros((0, 0), np.float32)
        return scores, [stream.window_bounds(i) for i in range(len(scores))]

    def new_tag_windows(self) -> list[TagWindow]:
        """Tag windows finished since the last call."""
        if self.stream is None or self.model.head is None:
            return []
        scores, bounds = self._scored()
        fresh = range(self._emitted_tags, len(scores))
        self._emitted_tags = len(scores)
        windows = tag_windows(scores[fresh.start :], bounds[fresh.start :], self.model.head.card.labels, self.tag_options)
        for i in untagged(self.levels, windows, self.duration):  # as the result will have them (``honest_tags``)
            windows[i].labels = []
        return windows

    def new_segments(self) -> list[Segment]:
        """Segments final since the last call: decoded, and every tag window they overlap scored. Each
        is a copy with its tags and speech gate, as the whole file's result has them."""
        if self.decoder is None:
            return []
        segments = self._decoded[self._emitted_segments :]
        if not segments:
            return []
        labels = self.model.head.card.labels if self.model.head is not None else None
        done = self.decoded_all  # before the scores: once done, they are all there
        scores, bounds = self._scored()
        tagged_until = bounds[-1][1] if bounds else 0.0
        out = []
        for segment in segments:
            if self.stream is not None and labels is not None and not done and segment.end > tagged_until:
                break
            out.append(self._final(segment, scores, bounds, labels))
        self._emitted_segments += len(out)
        return out

    def _final(self, segment: Segment, scores: np.ndarray, bounds, labels) -> Segment:
        """What ``AudioJob.result`` makes of one segment: its tags and the speech gate (``Decoder.gate``)."""
        segment = dataclasses.replace(segment, tags=list(segment.tags))
        head_speech = None
        if labels is not None and self.stream is not None and len(scores):
            tag_segments([segment], scores, bounds, labels, self.tag_options)
            head_speech = speech_probability(scores, bounds, labels, segment.start, segment.end)
        threshold = self.options.speech_gate
        if threshold is not None:
            probability = segment.speech_prob
            if head_speech is not None and probability is not None:
                probability = math.sqrt(probability * head_speech)
            segment.speech_prob = probability
            segment.no_speech = probability is not None and probability < threshold
        return segment

    def result(self) -> TranscriptionResult | TagResult:
        """The whole result, made on copies of the segments: ``new_segments`` keeps reading the decoder's own."""
        if self.stream is not None:
            self._scored()  # the last tag window scored once, kept with the others
        if self.decoder is None:
            return super().result()
        self.decoder.segments = [dataclasses.replace(s, tags=list(s.tags)) for s in self._decoded]
        try:
            return super().result()
        finally:
            self.decoder.segments = self._decoded

    # --- partial text --------------------------------------------------------------------------

    def filling(self) -> tuple[int, np.ndarray]:
        """The window being filled: its first sample and a copy of its audio so far."""
        with self._audio_lock:
            start = self._planned
            return start, self._data[start - self._base : self._size].copy()

    def partial_options(self) -> DecodeOptions | None:
        """Quick settings for partial text: greedy, no fallback, no word times, in the stream's language."""
        if self.options is None:
            return None
        language = self.options.language or (self.decoder.language if self.decoder is not None else None)
        return dataclasses.replace(self.options, temperature=0.0, language=language, word_timestamps=False,
                                   compression_ratio_threshold=None, logprob_threshold=None, initial_prompt=None,
                                   condition_on_previous_text=False)

    def partial_job(self) -> tuple[float, AudioJob] | None:
        """A job over the window being filled (tags off), and its start in seconds; None when too
        little of it has come, or the stream has no transcript."""
        options = self.partial_options()
        if options is None or self.ended:
            return None
        start, samples = self.filling()
        if len(samples) < PARTIAL_MIN * SAMPLE_RATE:
            return None
        return start / SAMPLE_RATE, AudioJob(self.model, samples, options, None, self.window_options)


def partial_of(start: float, job: AudioJob) -> Partial:
    """The partial a finished partial job gives."""
    decoder = job.decoder
    text = decoder.text if decoder is not None else ""
    return Partial(round(start, 3), round(start + job.duration, 3), text)


def stream_transcribe(model, chunks: Iterable[np.ndarray], options: DecodeOptions | None,
                      tags: TagOptions | None, *, partials: bool = True, max_duration: float | None = None,
                      partial_every: float = PARTIAL_EVERY
                      ) -> Iterator[Partial | TagWindow | Segment | TranscriptionResult | TagResult]:
    """Run a stream on this thread: ``chunks`` of 16 kHz mono float32 as they come (an iterator that
    blocks while it waits for audio is fine); yields partials, finished tag windows and final
    segments as they come, and the whole result last."""
    job = StreamJob(model, options, tags, max_duration=max_duration)
    backbone, batch = model.backbone, model.encode_batch_size
    last_partial = 0.0

    def settle() -> Iterator:
        while job.next_window < job.n_windows:
            piece = Slice(job, job.next_window, min(batch, job.n_windows - job.next_window))
            job.take(piece.first, encode_step(backbone, [piece])[0])
            yield from job.new_tag_windows()
            job.decode()
            yield from job.new_segments()

    for chunk in chunks:
        job.feed(chunk)
        yield from settle()
        if partials and job.seconds - last_partial >= partial_every and (made := job.partial_job()) is not None:
            last_partial = job.seconds
            start, partial = made
            run_job(backbone, partial, batch)
            yield partial_of(start, partial)
    job.end()
    yield from settle()
    job.decode()
    yield from job.new_tag_windows()
    yield from job.new_segments()
    yield job.result()


def paced(chunks: Iterable[np.ndarray], speed: float = 1.0) -> Iterator[np.ndarray]:
    """Chunks of 16 kHz samples no faster than ``speed`` times real time."""
    started, sent = time.monotonic(), 0
    for chunk in chunks:
        wait = started + sent / SAMPLE_RATE / speed - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        sent += len(chunk)
        yield chunk


__all__ = ["AudioFormat", "ContainerDecoder", "Partial", "PcmDecoder", "StreamJob", "paced", "partial_of",
           "stream_transcribe"]
