"""Audio input: decode anything FFmpeg can read to 16 kHz mono float32, in-process with PyAV.

Sources may be a path, the encoded bytes, a binary file object (read from its current position),
or a numpy array of samples that are already 16 kHz mono. Audio or video containers both work:
video and other streams are skipped without being decoded. A file with several audio tracks (a
Matroska file with a commentary track, say) gives the track asked for (``audio_track``, counted
from 1), or else the first track with sound in its first 30 s; ``decode_audio`` also returns a
note that says which track was used.

Decoding is streamed: each decoded frame is converted to 16 kHz mono at once, so memory holds the
16 kHz output plus a few small buffers, never the source at its own rate and channel count. With
``max_duration`` a file whose header declares a longer duration is refused before any decoding,
and otherwise the decoding stops as soon as the output passes the limit.

Every failure is an :class:`AudioError` with a short machine-readable ``code``; PyAV's own
exceptions never escape. A path that does not exist raises the built-in ``FileNotFoundError``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

import av
import av.error
import av.logging
import numpy as np

__all__ = [
    "SAMPLE_RATE",
    "AudioError",
    "AudioReader",
    "AudioSource",
    "AudioTooLongError",
    "AudioTrackError",
    "DecodedAudio",
    "EmptyAudioError",
    "UndecodableAudioError",
    "audio_duration",
    "decode_audio",
    "load_audio",
]

SAMPLE_RATE = 16000

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | np.ndarray

# Output this much past max_duration is tolerated (resampler rounding), in samples: 1 ms.
_DURATION_SLACK = SAMPLE_RATE // 1000
# A header's declared length may pass max_duration by this factor (plus 1 s) before the file is
# refused without decoding: declared lengths are rounded, and some are estimates.
_DECLARED_SLACK = 1.01
# Most channels a 2-D numpy array may have on its channel axis.
_MAX_ARRAY_CHANNELS = 64
# Output array: reserved for at least this many samples, and at most this many up front.
_MIN_CAPACITY = 1 << 16
_MAX_RESERVATION = 4 * 3600 * SAMPLE_RATE
# Consecutive packets that fail to decode before the rest of a stream is given up as corrupt.
_MAX_CONSECUTIVE_ERRORS = 50
# A file with several audio tracks: the first _MAX_TRACKS are decoded for their first _PROBE_SAMPLES,
# and the first that is not silent (its RMS, DC removed, at least _SILENT_RMS: -60 dBFS) and within
# _QUIETER_DB of the loudest is the one used.
_MAX_TRACKS = 8
_PROBE_SAMPLES = 30 * SAMPLE_RATE
_SILENT_RMS = 1e-3
_QUIETER_DB = 20.0

# FFmpeg's messages go nowhere unless the application asked for them: PyAV installs a silent log
# callback by default; make sure of it in case something restored FFmpeg's stderr printer, but
# leave a level that the application chose alone.
if av.logging.get_level() is None:
    av.logging.set_level(None)


class AudioError(ValueError):
    """The audio could not be used. ``code`` is short and machine-readable."""

    code = "audio_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class EmptyAudioError(AudioError):
    """Zero bytes, or a container that holds no audio samples."""

    code = "empty_audio"


class UndecodableAudioError(AudioError):
    """Not audio, no audio stream, or corrupt or truncated beyond use."""

    code = "undecodable_audio"


class AudioTrackError(AudioError):
    """``audio_track`` names a track the source does not have."""

    code = "invalid_audio_track"


class AudioTooLongError(AudioError):
    """Longer than the ``max_duration`` asked for; raised while decoding, as soon as it is known."""

    code = "audio_too_long"

    def __init__(self, message: str, *, max_duration: float):
        super().__init__(message)
        self.max_duration = max_duration


def audio_duration(samples: np.ndarray) -> float:
    """Seconds of 16 kHz audio in ``samples`` (the last axis)."""
    return samples.shape[-1] / SAMPLE_RATE if samples.ndim else 0.0


def write_flac(path: str | os.PathLike, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write mono audio (float in [-1, 1] or int16) as 16-bit FLAC, compressed as far as it goes."""
    pcm = samples if samples.dtype == np.int16 else np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)
    with av.open(os.fspath(path), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout="mono")
        stream.codec_context.options = {"compression_level": "12"}
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


class DecodedAudio(NamedTuple):
    """What ``decode_audio`` returns: the samples, and a note that says which audio track was used
    when the source has several (None otherwise)."""

    samples: np.ndarray
    note: str | None = None


def load_audio(source: AudioSource, *, max_duration: float | None = None, audio_track: int | None = None
               ) -> np.ndarray:
    """Decode ``source`` to 1-D float32 samples at 16 kHz, mono, finite, in [-1, 1].

    ``source``: a path (str or os.PathLike), encoded bytes (bytes, bytearray, memoryview), a
    binary file object (read from its current position and left open), or a numpy array taken
    as 16 kHz mono samples already (a 2-D array with a small channel axis is averaged to mono,
    integer samples are scaled to [-1, 1]).

    ``max_duration``: seconds; longer audio raises :class:`AudioTooLongError` while decoding.

    ``audio_track``: which audio track of a file with several to decode, counted from 1; None: the
    first with sound in its first 30 s (``decode_audio`` says which one that was).

    Raises :class:`EmptyAudioError`, :class:`UndecodableAudioError`, :class:`AudioTooLongError` or
    :class:`AudioTrackError` (all :class:`AudioError`, a ``ValueError``), ``FileNotFoundError``
    for a path that does not exist, and ``TypeError`` for a source of another type.
    """
    return decode_audio(source, max_duration=max_duration, audio_track=audio_track).samples


def decode_audio(source: AudioSource, *, max_duration: float | None = None, audio_track: int | None = None
                 ) -> DecodedAudio:
    """``load_audio``, and a note that says which audio track was used when the source has several."""
    reader = AudioReader(source, max_duration=max_duration, audio_track=audio_track)
    if reader.array is not None:
        return DecodedAudio(reader.array)
    output = _Output(reader.expected, reader.limit)
    try:
        for chunk in reader:
            output.add(chunk)
    except BaseException:
        output = None  # the traceback keeps this frame: not the samples decoded so far
        raise
    return DecodedAudio(output.result(), reader.note)


class AudioReader:
    """A source decoded piece by piece, so that long audio need not be held whole.

    Iterate for 16 kHz mono float32 chunks in order (a decoded frame or a few: milliseconds to a
    second), or ``read(seconds)`` for pieces of a chosen length. The sources, checks and errors are
    ``load_audio``'s: what the container shows up front (not audio, no audio track, a declared
    length over ``max_duration``) raises here, what only decoding shows (the limit passed by a file
    that declares no length, nothing decodable at all) raises during the iteration. ``note`` says
    which audio track was used once the first chunk came (None for a file with one track);
    ``declared`` is the length in seconds the header announces, if it announces one. The file is
    closed at the end of the iteration, or by ``close``.
    """

    def __init__(self, source: AudioSource, *, max_duration: float | None = None, audio_track: int | None = None):
        if audio_track is not None:
            if isinstance(audio_track, bool) or not isinstance(audio_track, (int, np.integer)) or audio_track < 1:
                raise AudioTrackError(f"audio_track counts a file's audio tracks from 1; {audio_track!r} is not one")
            audio_track = int(audio_track)
        if max_duration is not None:
            max_duration = float(max_duration)
            if not max_duration > 0:  # also NaN
                raise ValueError(f"max_duration must be a positive number of seconds, got {max_duration!r}")
            if math.isinf(max_duration):
                max_duration = None
        self.max_duration = max_duration
        self.limit = None if max_duration is None else int(max_duration * SAMPLE_RATE) + _DURATION_SLACK
        self.note: str | None = None
        self.declared: float | None = None
        self.expected: int | None = None  # samples the header announces
        self.array: np.ndarray | None = None  # a numpy source, checked and converted whole
        self._container = None
        self._tracks: list[_Track] = []
        self._streams = 0
        self._iterator: Iterator[np.ndarray] | None = None
        self._closed = False

        if isinstance(source, np.ndarray):
            if audio_track not in (None, 1):
                raise AudioTrackError(f"audio_track={audio_track} was asked for, and a numpy array holds one track")
            self.array = _from_array(source, max_duration)
            self.declared = len(self.array) / SAMPLE_RATE
            return
        if isinstance(source, (bytes, bytearray, memoryview)):
            if isinstance(source, memoryview) and not source.contiguous:
                source = source.tobytes()
            if memoryview(source).nbytes == 0:
                raise EmptyAudioError("The audio is empty: zero bytes were given.")
            file, self.what = io.BytesIO(source), "the audio bytes"
        elif isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            file, self.what = _checked_path(path), f"the file {os.path.basename(path)!r}"
        elif hasattr(source, "read"):
            file, self.what = _checked_file_object(source), "the audio file object"
        else:
            raise TypeError("load_audio() takes a path, bytes, a binary file object or a numpy array of samples, "
                            f"not {type(source).__name__}")
        self._container = _open(file, self.what)
        try:
            self._open_tracks(audio_track)
        except AudioError:
            self.close()
            raise
        except (av.error.FFmpegError, ValueError, RuntimeError) as error:
            self.close()
            raise UndecodableAudioError(f"Could not decode {self.what}: {_describe(error)}.") from None

    def _open_tracks(self, audio_track: int | None) -> None:
        """The audio track asked for, or when there are several, the first ``_MAX_TRACKS``; a
        declared length over the limit is refused here."""
        container, what = self._container, self.what
        audio_streams = list(container.streams.audio)
        if not audio_streams:
            kinds = sorted({s.type for s in container.streams if s.type})
            found = f" (it has only {', '.join(kinds)} streams)" if kinds else ""
            raise UndecodableAudioError(f"Could not use {what}: there is no audio stream in it{found}.")
        if audio_track is not None and audio_track > len(audio_streams):
            count = f"{len(audio_streams)} audio tracks" if len(audio_streams) > 1 else "one audio track"
            raise AudioTrackError(f"Could not use {what}: audio_track={audio_track} was asked for, and it has "
                                  f"only {count}.")
        numbers = [audio_track] if audio_track is not None else range(1, min(len(audio_streams), _MAX_TRACKS) + 1)
        usable = [(n, audio_streams[n - 1]) for n in numbers
                  if audio_streams[n - 1].codec_context is not None and audio_streams[n - 1].codec_context.name]
        if not usable:
            raise UndecodableAudioError(f"Could not use {what}: its audio codec is not supported.")
        declared = []
        for _, stream in usable:
            _check_pcm_header(container, stream, what)
            declared.append(_expected_samples(container, stream))
        if None not in declared:
            self.expected = min(declared)
            self.declared = self.expected / SAMPLE_RATE
            if self.limit is not None and self.expected > self.limit * _DECLARED_SLACK + SAMPLE_RATE:
                raise _too_long(self.max_duration, what, exact=self.declared, declared=True)
        self._tracks = [_Track(n, stream, expected, self.limit) for (n, stream), expected in zip(usable, declared)]
        self._streams = len(audio_streams)
        if audio_track is not None and len(audio_streams) > 1:
            self.note = f"audio track {audio_track} of the file's {len(audio_streams)} was used, as asked"

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._iterator is None:
            self._iterator = self._chunks()
        return self._iterator

    def read(self, seconds: float) -> np.ndarray:
        """The next ``seconds`` of audio, or a little more (whole chunks); less at the end, and an
        empty array once all is read."""
        want = max(1, round(seconds * SAMPLE_RATE))
        parts, size = [], 0
        if self._closed:
            return np.zeros(0, np.float32)
        for chunk in self:
            parts.append(chunk)
            size += len(chunk)
            if size >= want:
                break
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def close(self) -> None:
        self._closed = True
        container, self._container, self._tracks = self._container, None, []
        if container is not None:
            with contextlib.suppress(Exception):  # closing must not hide the real outcome
                container.close()

    def _chunks(self) -> Iterator[np.ndarray]:
        if self._closed:
            return
        if self.array is not None:
            yield self.array
            return
        try:
            yield from self._decode()
        except AudioError:
            raise
        except (av.error.FFmpegError, ValueError, RuntimeError) as error:
            # Anything FFmpeg says about the data; an OSError from the caller's own file object
            # (not FFmpeg's) is an I/O failure, not bad audio, and goes up as it is.
            raise UndecodableAudioError(f"Could not decode {self.what}: {_describe(error)}.") from None
        finally:
            self.close()

    def _decode(self) -> Iterator[np.ndarray]:
        """Decode every track until each has ``_PROBE_SAMPLES`` (when there are several), then only
        the one chosen (``_choose``), whose samples go out as they come."""
        what, limit, tracks = self.what, self.limit, self._tracks
        live = list(tracks)  # the tracks still decoded: all of them until one is chosen
        chosen = tracks[0] if len(tracks) == 1 else None
        produced = 0

        def out(chunks: list[np.ndarray]) -> Iterator[np.ndarray]:
            nonlocal produced
            for chunk in chunks:
                produced += len(chunk)
                if limit is not None and produced > limit:
                    raise _too_long(self.max_duration, what)
                yield chunk

        def choose() -> Iterator[np.ndarray]:
            nonlocal chosen, live
            chosen, self.note = _choose(tracks, self._streams)
            live = [chosen]
            probe, chosen.output = chosen.output.result(), None
            if len(probe):
                yield from out([probe])

        try:
            for packet in self._container.demux([track.stream for track in tracks]):
                if self._closed:
                    return
                track = next((t for t in live if t.stream.index == packet.stream.index), None)
                if track is None or track.ended:
                    continue
                chunks = track.decode(packet)
                if track is chosen:
                    yield from out(chunks)
                else:
                    track.keep(chunks)
                    if limit is not None and track.output.size > limit:
                        raise _too_long(self.max_duration, what)
                    if all(t.ended or t.output.size >= _PROBE_SAMPLES for t in live):
                        yield from choose()
                if all(t.ended for t in live):
                    break
        except AudioError:
            raise
        except (av.error.FFmpegError, ValueError) as error:  # a truncated or corrupt container
            for track in live:
                track.first_error = track.first_error or error
        for track in live:
            chunks = track.finish()
            if track is chosen:
                yield from out(chunks)
            else:
                track.keep(chunks)
        if chosen is None:
            yield from choose()
        if produced == 0:
            first_error = chosen.first_error
            if first_error is not None:
                raise UndecodableAudioError(
                    f"Could not decode {what}: no audio could be decoded ({_describe(first_error)}). "
                    "It is corrupt or truncated."
                )
            raise EmptyAudioError(f"The audio is empty: no audio samples were found in {what}.")


# --- sources -----------------------------------------------------------------------------------


def _checked_path(path: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such audio file: {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"Expected an audio file, got a directory: {path!r}")
    try:
        size = os.path.getsize(path)
    except OSError:
        size = None  # a pipe or device: let FFmpeg try
    if size == 0 and os.path.isfile(path):
        raise EmptyAudioError(f"The audio file {os.path.basename(path)!r} is empty (zero bytes).")
    return path


def _checked_file_object(file: BinaryIO) -> _FileReader:
    probe = file.read(0)
    if not isinstance(probe, (bytes, bytearray)):
        raise TypeError("load_audio() needs a binary file object (opened with 'rb'), not a text one")
    reader = _FileReader(file)
    if reader.empty:
        raise EmptyAudioError("The audio is empty: the file object has no bytes left to read.")
    return reader


class _FileReader(io.RawIOBase):
    """A caller's file object seen from its current position, which becomes offset 0.

    Seekable objects are seeked relative to that position; others are read as a stream, with
    the first chunk read ahead (to tell an empty stream apart) and served first. The caller's
    object is never closed.
    """

    def __init__(self, file: BinaryIO):
        super().__init__()
        self._file = file
        self._head = b""
        try:
            self._seekable = bool(file.seekable()) if hasattr(file, "seekable") else False
            self._base = file.tell() if self._seekable else 0
        except (OSError, ValueError, AttributeError):
            self._seekable = False
            self._base = 0
        if self._seekable:
            end = file.seek(0, io.SEEK_END)
            file.seek(self._base)
            self.empty = end <= self._base
        else:
            self._head = bytes(file.read(1 << 16) or b"")
            self.empty = not self._head

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._file.read(len(view))
        if not data:
            return 0
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("seek")
        if whence == io.SEEK_SET:
            offset += self._base
        return self._file.seek(offset, whence) - self._base

    def tell(self) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("tell")
        return self._file.tell() - self._base

    def close(self) -> None:  # the caller owns the file object
        pass


def _from_array(samples: np.ndarray, max_duration: float | None) -> np.ndarray:
    array = np.asarray(samples)
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.number)):
        raise UndecodableAudioError(f"A numpy array of audio samples must hold numbers, not {array.dtype}.")
    if np.iscomplexobj(array):
        raise UndecodableAudioError("A numpy array of audio samples must be real, not complex.")
    if array.ndim == 2:
        rows, cols = array.shape
        if rows <= _MAX_ARRAY_CHANNELS and rows < cols:
            channel_axis = 0
        elif cols <= _MAX_ARRAY_CHANNELS and cols <= rows:
            channel_axis = 1
        else:
            raise UndecodableAudioError(
                f"A 2-D numpy array of audio must have a channel axis of at most {_MAX_ARRAY_CHANNELS}; "
                f"got shape {array.shape}."
            )
        array = _scale_to_float(array).mean(axis=channel_axis, dtype=np.float32)
    elif array.ndim == 1:
        array = _scale_to_float(array)
    elif array.ndim == 0:
        raise UndecodableAudioError("A numpy array of audio samples must be 1-D, not a scalar.")
    else:
        raise UndecodableAudioError(
            f"A numpy array of audio samples must be 1-D (or 2-D with a channel axis); got shape {array.shape}."
        )
    if array.size == 0:
        raise EmptyAudioError("The audio is empty: the numpy array has no samples.")
    if max_duration is not None and array.shape[0] > max_duration * SAMPLE_RATE + _DURATION_SLACK:
        raise _too_long(max_duration, "the audio array", exact=array.shape[0] / SAMPLE_RATE)
    if np.shares_memory(array, samples):
        array = array.copy()  # never change the caller's array
    return _sanitise(np.ascontiguousarray(array, dtype=np.float32))


def _scale_to_float(array: np.ndarray) -> np.ndarray:
    """Integer PCM to float32 in [-1, 1]; float arrays as float32."""
    if np.issubdtype(array.dtype, np.signedinteger):
        scale = float(2 ** (8 * array.dtype.itemsize - 1))
        return (array.astype(np.float64 if array.dtype.itemsize > 2 else np.float32) / scale).astype(np.float32)
    if np.issubdtype(array.dtype, np.unsignedinteger):
        half = float(2 ** (8 * array.dtype.itemsize - 1))
        return ((array.astype(np.float64) - half) / half).astype(np.float32)
    return array.astype(np.float32, copy=False)


def _sanitise(samples: np.ndarray) -> np.ndarray:
    """NaN and infinities become 0, everything is clipped to [-1, 1], in place."""
    if not samples.flags.writeable:
        samples = samples.copy()
    if not np.isfinite(samples).all():
        np.nan_to_num(samples, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(samples, -1.0, 1.0, out=samples)
    return samples


# --- decoding ----------------------------------------------------------------------------------


def _too_long(max_duration: float, what: str, exact: float | None = None, declared: bool = False) -> AudioTooLongError:
    if exact is not None and declared:
        found = (f"{what} declares {exact:.1f} s of audio in its header, over the limit of "
                 f"max_duration={max_duration:g} s (refused before decoding)")
    elif exact is not None:
        found = f"{what} is {exact:.1f} s long, over the limit of max_duration={max_duration:g} s"
    else:
        found = f"{what} goes on past the limit of max_duration={max_duration:g} s (decoding stopped there)"
    return AudioTooLongError(
        f"The audio is too long: {found}. Raise max_duration (or pass None) to accept longer audio.",
        max_duration=max_duration,
    )


def _describe(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text.rstrip(".")


class _Mono16k:
    """Frames in any format, layout and rate to 16 kHz mono float32 chunks.

    A new resampler is set up whenever the input's parameters change mid-stream (chained Ogg,
    a change of rate or channels), after flushing the previous one.
    """

    def __init__(self):
        self._resampler: av.AudioResampler | None = None
        self._key = None

    def push(self, frame: av.AudioFrame) -> list[np.ndarray]:
        key = (frame.format.name, frame.layout.name, len(frame.layout.channels), frame.sample_rate)
        out: list[np.ndarray] = []
        if key != self._key:
            out.extend(self.flush())
            self._resampler = _resampler()
            self._key = key
        for converted in self._resampler.resample(frame):
            out.append(_frame_samples(converted))
        return out

    def flush(self) -> list[np.ndarray]:
        if self._resampler is None:
            return []
        resampler, self._resampler, self._key = self._resampler, None, None
        return [_frame_samples(frame) for frame in resampler.resample(None)]


def _resampler() -> av.AudioResampler:
    # rematrix_maxval=1: mix channels down with weights that sum to at most 1 (stereo becomes
    # (L + R) / 2), as FFmpeg does for integer output and so as whisper's ffmpeg loader does;
    # with float output FFmpeg would otherwise use 0.707 (L + R), 3 dB louder and able to clip.
    try:
        return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE, options={"rematrix_maxval": "1.0"})
    except TypeError:  # older PyAV: no resampler options
        return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)


def _frame_samples(frame: av.AudioFrame) -> np.ndarray:
    # One plane of packed mono float32, copied out of the frame's buffer, which FFmpeg may reuse.
    return frame.to_ndarray().reshape(-1).copy()


def _open(file, what: str):
    try:
        return av.open(file, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as error:
        if isinstance(error, av.error.FileNotFoundError):
            raise FileNotFoundError(f"No such audio file: {what}") from None
        if isinstance(error, av.error.PermissionError):
            raise PermissionError(f"Permission denied reading {what}") from None
        raise UndecodableAudioError(
            f"Could not read {what} as audio: {_describe(error)}. It is not a known audio or video format, "
            "or it is corrupt."
        ) from None
    except (ValueError, EOFError) as error:
        raise UndecodableAudioError(f"Could not read {what} as audio: {_describe(error)}.") from None


class _Track:
    """One audio stream decoded to 16 kHz mono; ``number`` counts the file's audio streams from 1.
    ``output`` keeps its samples until a track is chosen among several (``_choose``)."""

    def __init__(self, number: int, stream, expected: int | None, limit: int | None):
        self.number = number
        self.stream = stream
        self.converter = _Mono16k()
        self.output: _Output | None = _Output(min(expected or _PROBE_SAMPLES, _PROBE_SAMPLES), limit)
        self.errors = 0
        self.first_error: BaseException | None = None
        self.ended = False  # its end was seen, or it was given up as corrupt

    def decode(self, packet) -> list[np.ndarray]:
        """Decode one packet (None: flush the decoder): its samples, sanitised."""
        if packet is not None and packet.size == 0 and packet.dts is None:
            self.ended = True  # the demuxer's end-of-stream packet: decoding it flushes the decoder
        try:
            frames = packet.decode() if packet is not None else self.stream.codec_context.decode(None)
            self.errors = 0
        except (av.error.FFmpegError, ValueError) as error:
            if isinstance(error, EOFError):
                return []
            self.errors += 1
            self.first_error = self.first_error or error
            if self.errors >= _MAX_CONSECUTIVE_ERRORS:
                self.ended = True  # the decoder is in no state to flush: the rest is given up as corrupt
            return []
        return [_sanitise(chunk) for frame in frames for chunk in self.converter.push(frame)]

    def finish(self) -> list[np.ndarray]:
        """Flush the decoder (unless the stream's end did already) and the resampler."""
        chunks = []
        if not self.ended:
            self.ended = True
            chunks = self.decode(None)
        return chunks + [_sanitise(chunk) for chunk in self.converter.flush()]

    def keep(self, chunks: list[np.ndarray]) -> None:
        for chunk in chunks:
            self.output.add(chunk)

    def level(self) -> float:
        """RMS of the first ``_PROBE_SAMPLES``, their mean (a DC offset) removed."""
        head = self.output.head(_PROBE_SAMPLES).astype(np.float64)
        return float(np.sqrt(np.mean(np.square(head - head.mean())))) if head.size else 0.0


def _choose(tracks: list[_Track], count: int) -> tuple[_Track, str]:
    """The first track with sound: not silent, and within ``_QUIETER_DB`` dB of the loudest over the
    first ``_PROBE_SAMPLES``. The others' samples are let go at once."""
    levels = [track.level() for track in tracks]
    loudest = max(levels)
    if loudest < _SILENT_RMS:
        chosen, why = tracks[0], "every track is silent"
    else:
        chosen = next(t for t, level in zip(tracks, levels) if level >= loudest * 10 ** (-_QUIETER_DB / 20))
        silent = [t.number for t, level in zip(tracks, levels) if level < _SILENT_RMS]
        why = "the first with sound"
        if len(silent) == 1:
            why += f"; track {silent[0]} is silent"
        elif silent:
            why += f"; tracks {', '.join(str(n) for n in silent)} are silent"
    for track in tracks:
        if track is not chosen:
            track.output = _Output(0, 0)  # its samples go now
    seconds = _PROBE_SAMPLES // SAMPLE_RATE
    return chosen, (f"the file has {count} audio tracks; track {chosen.number} was used ({why} in its first "
                    f"{seconds} s); audio_track chooses another")


_PCM_BYTES = {"u8": 1, "s8": 1, "s16": 2, "u16": 2, "s24": 3, "u24": 3, "s32": 4, "u32": 4, "f32": 4, "f64": 8}


def _check_pcm_header(container, stream, what: str) -> None:
    """A WAV header whose bits per sample contradict its byte rate (7 bits, say, over 16-bit data)
    would decode as noise: refuse it."""
    codec = stream.codec_context
    if container.format is None or container.format.name != "wav" or not codec.name.startswith("pcm_"):
        return
    size = _PCM_BYTES.get(codec.name.removeprefix("pcm_")[:3].rstrip("lbe"))
    channels = len(codec.layout.channels) if codec.layout is not None else 0
    if not size or not channels or not codec.sample_rate or not codec.bit_rate:
        return
    expected = codec.sample_rate * channels * size * 8
    if abs(codec.bit_rate - expected) > expected // 100:
        raise UndecodableAudioError(
            f"Could not use {what}: its WAV header contradicts itself (its bits per sample make {size}-byte "
            f"samples, {expected // 8} bytes a second, but it declares {codec.bit_rate // 8} bytes a second). "
            "It is corrupt; write it again as 16-bit PCM WAV, FLAC or another common format."
        )


def _expected_samples(container, stream) -> int | None:
    """The output length the header announces, if any (a hint only: headers can be wrong)."""
    try:
        if stream.duration and stream.time_base:
            return int(stream.duration * stream.time_base * SAMPLE_RATE)
        if container.duration:
            return int(container.duration / 1_000_000 * SAMPLE_RATE)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        pass
    return None


class _Output:
    """The 16 kHz samples, written straight into one growing array.

    The array is reserved at the length the header announces (capped; untouched pages of
    ``np.empty`` cost no memory) and, when that is short, grown by a quarter at a time with
    ``realloc`` (``ndarray.resize``), which for large arrays remaps pages rather than copying. So
    memory holds the output plus at most a quarter of it, and no list of small arrays that would
    need a second, full-size copy to join and leave the heap fragmented afterwards.
    """

    def __init__(self, expected: int | None, limit: int | None):
        capacity = _MIN_CAPACITY
        if expected and expected > 0:
            capacity = max(capacity, expected + expected // 100 + SAMPLE_RATE)
        if limit is not None:
            capacity = min(capacity, limit + SAMPLE_RATE)
        self._buffer = np.empty(min(capacity, _MAX_RESERVATION), dtype=np.float32)
        self.size = 0

    def add(self, samples: np.ndarray) -> None:
        end = self.size + samples.size
        if end > self._buffer.size:
            grown = max(end, self._buffer.size + self._buffer.size // 4, _MIN_CAPACITY)
            self._buffer.resize(grown, refcheck=False)  # no views of it exist between calls
        self._buffer[self.size:end] = samples
        self.size = end

    def head(self, count: int) -> np.ndarray:
        """A view of the first ``count`` samples (fewer when there are fewer)."""
        return self._buffer[: min(count, self.size)]

    def result(self) -> np.ndarray:
        if self._buffer.size != self.size:
            self._buffer.resize(self.size, refcheck=False)
        return self._buffer

