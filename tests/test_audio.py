"""tagger.audio on real recordings, converted at test time with PyAV to each container and codec."""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import av
import numpy as np
import pytest
from speech_fixtures import FIXTURES

from tagger.audio import (
    SAMPLE_RATE,
    AudioError,
    AudioReader,
    AudioTooLongError,
    AudioTrackError,
    EmptyAudioError,
    UndecodableAudioError,
    audio_duration,
    decode_audio,
    load_audio,
)

SPEECH_16K = FIXTURES / "librivox-sense-and-sensibility-0870.flac"  # 7.1 s, read speech, 16 kHz
SPEECH_8K = FIXTURES / "asterisk-en-tt-allbusy.flac"  # 8.97 s, telephone prompt, 8 kHz


# --- helpers: independent of tagger.audio ------------------------------------------------------


def read_native(path: Path) -> tuple[np.ndarray, int]:
    """A mono s16 file's samples as float32 at its own rate, straight from PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        pcm = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(stream)])
        return pcm.astype(np.float32) / 32768.0, stream.rate


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return samples
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_out)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32)[None], format="flt", layout="mono")
    frame.sample_rate = rate_in
    out = resampler.resample(frame) + resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in out])


def encode(samples: np.ndarray, rate: int, fmt: str, codec: str, *, layout: str = "mono",
           sample_fmt: str | None = None, options: dict | None = None, video: str | None = None) -> bytes:
    """Encode mono ``samples`` (repeated on every channel of ``layout``) to a container in memory;
    with ``video``, a few 64x64 frames of that video codec go in a first stream."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        if video:
            vstream = container.add_stream(video, rate=10)
            vstream.width = vstream.height = 64
            vstream.pix_fmt = "yuv420p"
        stream = container.add_stream(codec, rate=rate, layout=layout)
        if sample_fmt:
            stream.format = sample_fmt
        if options:
            stream.codec_context.options = options
        if video:
            for i in range(int(len(samples) / rate * 10)):
                image = np.full((64, 64, 3), (i * 9) % 256, np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
                frame.pts = i
                for packet in vstream.encode(frame):
                    container.mux(packet)
            for packet in vstream.encode(None):
                container.mux(packet)
        channels = len(stream.codec_context.layout.channels)
        interleaved = np.repeat(np.asarray(samples, np.float32)[:, None], channels, axis=1)
        step = 4096
        for start in range(0, len(samples), step):
            chunk = np.ascontiguousarray(interleaved[start:start + step]).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """Highest correlation of ``a`` and ``b`` over shifts of up to ``max_lag`` samples."""
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[lag:], b) if lag >= 0 else (a, b[-lag:])
        n = min(len(x), len(y))
        best = max(best, float(np.corrcoef(x[:n], y[:n])[0, 1]))
    return best


def rms_envelope(samples: np.ndarray, hop: int = 160) -> np.ndarray:
    n = len(samples) // hop
    return np.sqrt(np.mean(samples[: n * hop].reshape(n, hop) ** 2, axis=1))


def check_output(out: np.ndarray) -> None:
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.ndim == 1
    assert np.isfinite(out).all()
    assert np.abs(out).max() <= 1.0


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    samples, rate = read_native(SPEECH_16K)
    assert rate == SAMPLE_RATE
    return samples


# --- formats -----------------------------------------------------------------------------------

# id: (container, codec, rate, layout, lossless, extra encode arguments)
FORMATS = {
    "wav-s16-16k": ("wav", "pcm_s16le", 16000, "mono", True, {}),
    "wav-s16-44k1-stereo": ("wav", "pcm_s16le", 44100, "stereo", True, {}),
    "wav-s16-48k": ("wav", "pcm_s16le", 48000, "mono", True, {}),
    "wav-s16-192k": ("wav", "pcm_s16le", 192000, "mono", True, {}),
    "wav-s16-48k-8ch": ("wav", "pcm_s16le", 48000, "7.1", True, {}),
    "wav-f32-22k": ("wav", "pcm_f32le", 22050, "mono", True, {}),
    "flac-16k": ("flac", "flac", 16000, "mono", True, {}),
    "flac-96k-stereo": ("flac", "flac", 96000, "stereo", True, {}),
    "flac-44k1-8ch": ("flac", "flac", 44100, "7.1", True, {}),
    "mp3-44k1-stereo": ("mp3", "libmp3lame", 44100, "stereo", False, {}),
    "mp3-16k": ("mp3", "libmp3lame", 16000, "mono", False, {}),
    "ogg-vorbis": ("ogg", "vorbis", 44100, "stereo", False, {"options": {"strict": "experimental"}}),
    "ogg-opus": ("ogg", "libopus", 48000, "mono", False, {}),
    "m4a-aac": ("ipod", "aac", 44100, "mono", False, {}),
    "webm-opus": ("webm", "libopus", 48000, "stereo", False, {}),
    "mkv-mpeg4-mp3": ("matroska", "libmp3lame", 44100, "stereo", False, {"video": "mpeg4"}),
    "mp4-mpeg4-aac": ("mp4", "aac", 48000, "stereo", False, {"video": "mpeg4"}),
    "webm-vp8-opus": ("webm", "libopus", 48000, "mono", False, {"video": "libvpx"}),
}


@pytest.mark.parametrize("case", list(FORMATS), ids=list(FORMATS))
def test_format_decodes_to_16k_mono_close_to_the_source(case, speech):
    container, codec, rate, layout, lossless, extra = FORMATS[case]
    source = resample(speech, SAMPLE_RATE, rate)
    data = encode(source, rate, container, codec, layout=layout, **extra)

    out = load_audio(data)

    check_output(out)
    assert abs(audio_duration(out) - len(source) / rate) < 0.05
    n = min(len(out), len(speech))
    # Channels carry the same signal: the mono mix-down keeps its level (weights sum to 1).
    level = np.sqrt(np.mean(out[:n] ** 2)) / np.sqrt(np.mean(speech[:n] ** 2))
    assert 0.8 < level < 1.25, level
    if lossless:
        assert best_correlation(out[:n], speech[:n], max_lag=16) > 0.9
    else:
        env_out, env_ref = rms_envelope(out), rms_envelope(speech)
        m = min(len(env_out), len(env_ref))
        assert best_correlation(env_out[:m], env_ref[:m], max_lag=10) > 0.9


def test_8khz_wav_matches_an_independent_upsampling():
    native, rate = read_native(SPEECH_8K)
    assert rate == 8000
    out = load_audio(encode(native, rate, "wav", "pcm_s16le"))
    check_output(out)
    assert abs(audio_duration(out) - len(native) / rate) < 0.01
    # Linear interpolation is a crude but independent 8 -> 16 kHz reference.
    times = np.arange(len(native) * 2) / SAMPLE_RATE
    reference = np.interp(times, np.arange(len(native)) / rate, native).astype(np.float32)
    n = min(len(out), len(reference))
    assert best_correlation(out[:n], reference[:n], max_lag=8) > 0.95


def plain_wav(pcm: np.ndarray, rate: int) -> bytes:
    """A WAVE_FORMAT_PCM file (no channel mask, so FFmpeg knows no layout) of (samples, channels) s16."""
    channels = pcm.shape[1]
    data = np.ascontiguousarray(pcm, np.int16).tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", len(data)) + data


@pytest.mark.parametrize("channels", [3, 8, 16])
def test_many_channels_without_a_layout(channels, speech):
    pcm = np.repeat((speech * 32767).astype(np.int16)[:, None], channels, axis=1)
    out = load_audio(plain_wav(pcm, 16000))
    check_output(out)
    assert len(out) == len(speech)
    np.testing.assert_allclose(out, speech, atol=1e-3)


# --- several audio tracks ----------------------------------------------------------------------


def matroska(tracks: list[np.ndarray], codec: str = "flac", rate: int = 16000, video: bool = False) -> bytes:
    """16 kHz mono signals as the audio tracks of one Matroska file, in that order, their packets
    interleaved in 0.1 s steps as a muxer writes them; with ``video``, a video track comes first."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        if video:
            picture = container.add_stream("mpeg4", rate=10)
            picture.width = picture.height = 64
            picture.pix_fmt = "yuv420p"
        streams = [container.add_stream(codec, rate=rate, layout="mono") for _ in tracks]
        signals = [(np.clip(resample(track, SAMPLE_RATE, rate), -1, 1) * 32767).astype(np.int16) for track in tracks]
        step = rate // 10
        for i, start in enumerate(range(0, max(len(s) for s in signals), step)):
            if video:
                image = np.full((64, 64, 3), (i * 9) % 256, np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
                frame.pts = i
                for packet in picture.encode(frame):
                    container.mux(packet)
            for stream, signal in zip(streams, signals):
                if start < len(signal):
                    frame = av.AudioFrame.from_ndarray(signal[None, start:start + step].copy(), format="s16", layout="mono")
                    frame.sample_rate = rate
                    frame.pts = start
                    for packet in stream.encode(frame):
                        container.mux(packet)
        for stream in ([picture] if video else []) + streams:
            for packet in stream.encode(None):
                container.mux(packet)
    return buffer.getvalue()


def quiet_noise(n: int, dbfs: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 10 ** (dbfs / 20)).astype(np.float32)


SILENT_TRACKS = {
    "digital silence": lambda n: np.zeros(n, np.float32),
    "DC offset": lambda n: np.full(n, 0.3, np.float32),
    "noise floor at -75 dBFS": lambda n: quiet_noise(n, -75.0),
}


@pytest.mark.parametrize("kind", list(SILENT_TRACKS))
def test_a_silent_first_track_gives_way_to_the_track_with_speech(kind, speech):
    data = matroska([SILENT_TRACKS[kind](len(speech)), speech])

    decoded = decode_audio(data)

    check_output(decoded.samples)
    n = min(len(decoded.samples), len(speech))
    assert best_correlation(decoded.samples[:n], speech[:n], max_lag=16) > 0.9
    assert "track 2 was used" in decoded.note and "track 1 is silent" in decoded.note, decoded.note
    np.testing.assert_array_equal(load_audio(data), decoded.samples)


@pytest.mark.parametrize("codec, rate", [("libopus", 48000), ("aac", 44100)])
def test_lossy_tracks_and_a_video_track_first(codec, rate, speech):
    data = matroska([np.zeros_like(speech), np.zeros_like(speech), speech], codec=codec, rate=rate, video=True)
    decoded = decode_audio(io.BytesIO(data))
    assert "the file has 3 audio tracks; track 3 was used" in decoded.note, decoded.note
    assert "tracks 1, 2 are silent" in decoded.note, decoded.note
    env_out, env_ref = rms_envelope(decoded.samples), rms_envelope(speech)
    m = min(len(env_out), len(env_ref))
    assert best_correlation(env_out[:m], env_ref[:m], max_lag=10) > 0.9


def test_the_first_track_with_sound_is_used_when_several_have_it(speech):
    other, _ = read_native(SPEECH_8K)
    other = resample(other, 8000, SAMPLE_RATE)
    quieter = speech * 0.3  # 10 dB below the second track: still the first one with sound
    decoded = decode_audio(matroska([quieter, other]))
    n = min(len(decoded.samples), len(speech))
    assert best_correlation(decoded.samples[:n], quieter[:n], max_lag=16) > 0.9
    assert "track 1 was used (the first with sound" in decoded.note, decoded.note
    # Faint noise, 40 dB below the speech on the second track, is not what anyone wants transcribed.
    faint = quiet_noise(len(speech), -50.0)
    decoded = decode_audio(matroska([faint, speech]))
    assert best_correlation(decoded.samples[:n], speech[:n], max_lag=16) > 0.9
    assert "track 2 was used" in decoded.note, decoded.note


def test_audio_track_picks_the_track_asked_for(speech, tmp_path):
    data = matroska([np.zeros_like(speech), speech])
    path = tmp_path / "two.mkv"
    path.write_bytes(data)
    for source in (data, path, io.BytesIO(data)):
        decoded = decode_audio(source, audio_track=1)
        assert np.abs(decoded.samples).max() < 1e-3, "the silent track, as asked"
        assert decoded.note == "audio track 1 of the file's 2 was used, as asked"
        second = load_audio(source if not isinstance(source, io.BytesIO) else io.BytesIO(data), audio_track=2)
        n = min(len(second), len(speech))
        assert best_correlation(second[:n], speech[:n], max_lag=16) > 0.9


def test_every_track_silent_uses_the_first_and_says_so(speech):
    decoded = decode_audio(matroska([np.zeros_like(speech), np.full_like(speech, -0.2)]))
    assert np.abs(decoded.samples).max() < 1e-3
    assert "track 1 was used (every track is silent" in decoded.note, decoded.note


def test_one_track_has_no_note(speech):
    assert decode_audio(matroska([speech])).note is None
    assert decode_audio(encode(speech, 16000, "flac", "flac"), audio_track=1).note is None
    assert decode_audio(speech).note is None


@pytest.mark.parametrize("track, words", [
    (3, ("audio_track=3", "only 2 audio tracks")),
    (0, ("counts", "from 1")),
    (-1, ("counts", "from 1")),
    (True, ("counts", "from 1")),
    (1.5, ("counts", "from 1")),
])
def test_a_track_that_is_not_there_is_a_clear_error(track, words, speech):
    data = matroska([np.zeros_like(speech), speech])
    with pytest.raises(AudioTrackError) as caught:
        load_audio(data, audio_track=track)
    assert caught.value.code == "invalid_audio_track"
    assert all(word in str(caught.value) for word in words), str(caught.value)
    with pytest.raises(AudioTrackError, match="only one audio track"):
        load_audio(encode(speech, 16000, "flac", "flac"), audio_track=2)
    with pytest.raises(AudioTrackError, match="numpy array holds one track"):
        load_audio(speech, audio_track=2)


def test_several_tracks_are_held_to_max_duration(speech):
    long_silence = np.zeros(SAMPLE_RATE * 40, np.float32)
    data = matroska([long_silence, np.concatenate([speech] * 6)])  # both over 30 s, the limit is 20 s
    with pytest.raises(AudioTooLongError):
        load_audio(data, max_duration=20)
    assert audio_duration(load_audio(data, max_duration=60)) > 40


# --- inputs ------------------------------------------------------------------------------------


def test_every_kind_of_source_gives_the_same_samples(tmp_path, speech):
    data = encode(speech, 16000, "flac", "flac")
    path = tmp_path / "speech.flac"
    path.write_bytes(data)
    expected = load_audio(path)
    np.testing.assert_allclose(expected, speech, atol=1e-4)

    for source in (str(path), data, bytearray(data), memoryview(data), io.BytesIO(data)):
        np.testing.assert_array_equal(load_audio(source), expected)
    with open(path, "rb") as file:
        np.testing.assert_array_equal(load_audio(file), expected)
        assert not file.closed
    np.testing.assert_array_equal(load_audio(expected), expected)


def test_file_object_is_read_from_its_current_position(speech):
    data = encode(speech, 16000, "wav", "pcm_s16le")
    file = io.BytesIO(b"not audio: a prefix that must be skipped" * 10 + data)
    file.seek(400)
    out = load_audio(file)
    assert not file.closed
    np.testing.assert_allclose(out, speech, atol=1e-4)


class Unseekable(io.RawIOBase):
    """A pipe-like stream: read only, no seek or tell. Counts the bytes handed out."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._pending = b""
        self.served = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self.served += n
        return n


def test_unseekable_stream(speech):
    data = encode(speech, 16000, "mp3", "libmp3lame")
    out = load_audio(Unseekable(data[i:i + 1000] for i in range(0, len(data), 1000)))
    assert abs(audio_duration(out) - len(speech) / SAMPLE_RATE) < 0.05


def test_numpy_arrays():
    rng = np.random.default_rng(0)
    mono = rng.uniform(-0.5, 0.5, 16000).astype(np.float32)
    np.testing.assert_array_equal(load_audio(mono), mono)
    np.testing.assert_allclose(load_audio(mono.astype(np.float64)), mono, atol=1e-7)
    pcm16 = (mono * 32768).astype(np.int16)
    np.testing.assert_allclose(load_audio(pcm16), pcm16 / 32768.0, atol=1e-7)
    pcm32 = pcm16.astype(np.int32) << 16
    np.testing.assert_allclose(load_audio(pcm32), pcm16 / 32768.0, atol=1e-7)
    np.testing.assert_allclose(load_audio((pcm16 // 256 + 128).astype(np.uint8)), (pcm16 // 256) / 128.0, atol=1e-7)
    stereo = np.stack([mono, np.zeros_like(mono)])
    np.testing.assert_allclose(load_audio(stereo), mono / 2, atol=1e-7)  # (channels, samples)
    np.testing.assert_allclose(load_audio(stereo.T.copy()), mono / 2, atol=1e-7)  # (samples, channels)
    loud = np.array([0.5, 3.0, -7.0, np.nan, np.inf, -np.inf], np.float32)
    np.testing.assert_array_equal(load_audio(loud), [0.5, 1.0, -1.0, 0.0, 0.0, 0.0])
    assert loud[1] == 3.0 and np.isnan(loud[3]) and np.isinf(loud[4])  # the caller's array is untouched
    assert load_audio(mono) is not mono
    with pytest.raises(EmptyAudioError):
        load_audio(np.zeros(0, np.float32))
    with pytest.raises(UndecodableAudioError):
        load_audio(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(AudioTooLongError, match="max_duration=0.5"):
        load_audio(mono, max_duration=0.5)
    assert len(load_audio(mono, max_duration=1.0)) == 16000


def test_float_wav_with_nan_and_inf_becomes_finite(speech):
    signal = speech.copy()
    signal[1000:1010] = np.nan
    signal[5000] = np.inf
    signal[9000] = -np.inf
    signal[20000:20100] = 4.0
    out = load_audio(encode(signal, 16000, "wav", "pcm_f32le"))
    check_output(out)
    assert out[1000:1010].tolist() == [0.0] * 10
    assert out[20050] == 1.0
    np.testing.assert_allclose(out[30000:], speech[30000:], atol=1e-6)


# --- errors ------------------------------------------------------------------------------------


def assert_audio_error(source, kind=AudioError, *words):
    with pytest.raises(AudioError) as caught:
        load_audio(source)
    error = caught.value
    assert isinstance(error, kind), (type(error), error)
    assert isinstance(error, ValueError)
    assert error.code in {"empty_audio", "undecodable_audio"}
    message = str(error)
    assert len(message) > 20 and "\n" not in message
    for word in words:
        assert word in message.lower(), message
    return error


def test_empty_inputs(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    for source in (b"", bytearray(), memoryview(b""), empty, str(empty), io.BytesIO(b""), Unseekable([])):
        error = assert_audio_error(source, EmptyAudioError, "empty")
        assert error.code == "empty_audio"
    with open(empty, "rb") as file:
        assert_audio_error(file, EmptyAudioError)
    at_end = io.BytesIO(b"RIFF")
    at_end.seek(4)
    assert_audio_error(at_end, EmptyAudioError)


def test_wav_header_without_samples_is_empty():
    header = b"".join(wav_stream(0))
    assert len(header) == 44
    assert_audio_error(header, EmptyAudioError, "no audio samples")


def test_not_audio(tmp_path):
    rng = np.random.default_rng(1)
    text = tmp_path / "notes.txt"
    text.write_text("These are meeting notes, not a recording.\n" * 50)
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02\x00\x00\x00" + bytes(200)
    for source in (rng.bytes(5000), bytes(5000), text, png):
        error = assert_audio_error(source, UndecodableAudioError)
        assert error.code == "undecodable_audio"


def test_truncated_headers(speech):
    for container, codec in (("flac", "flac"), ("mp3", "libmp3lame"), ("ogg", "libopus"), ("ipod", "aac")):
        data = encode(speech, 16000 if codec != "libopus" else 48000, container, codec)
        assert_audio_error(data[:100])  # undecodable, or a container with no samples: either way an AudioError


def test_truncated_file_decodes_what_is_there(speech):
    for container, codec in (("flac", "flac"), ("mp3", "libmp3lame"), ("wav", "pcm_s16le")):
        data = encode(speech, 16000, container, codec)
        out = load_audio(data[: len(data) // 2])
        check_output(out)
        assert 0.3 * len(speech) < len(out) < 0.7 * len(speech), (container, len(out))


def test_video_without_audio_has_no_audio_stream():
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 20, np.uint8), format="rgb24")
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    assert_audio_error(buffer.getvalue(), UndecodableAudioError, "no audio stream")


def test_missing_file_and_wrong_types(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(TypeError):
        load_audio(12345)
    (tmp_path / "t.txt").write_text("text")
    with open(tmp_path / "t.txt") as text_mode, pytest.raises(TypeError):
        load_audio(text_mode)


def test_corrupt_data_never_raises_pyav_errors(speech):
    """Random damage in the middle of real files: samples or an AudioError, nothing else."""
    rng = np.random.default_rng(2)
    for container, codec, rate in (("mp3", "libmp3lame", 16000), ("flac", "flac", 16000),
                                   ("ogg", "libopus", 48000), ("ipod", "aac", 16000), ("webm", "libopus", 48000)):
        data = bytearray(encode(resample(speech[:48000], 16000, rate), rate, container, codec))
        for _ in range(4):
            damaged = bytearray(data)
            start = int(rng.integers(len(damaged) // 8, len(damaged)))
            damaged[start:start + 64] = rng.bytes(min(64, len(damaged) - start))
            cut = bytes(damaged[: int(rng.integers(len(damaged) // 2, len(damaged) + 1))])
            try:
                check_output(load_audio(cut))
            except AudioError as error:
                assert error.code in {"empty_audio", "undecodable_audio"}


# --- max_duration ------------------------------------------------------------------------------


def test_too_long_is_refused_while_decoding(tmp_path):
    path = tmp_path / "ten-minutes-of-silence.flac"
    path.write_bytes(encode(np.zeros(600 * 8000, np.float32), 8000, "flac", "flac"))
    started = time.perf_counter()
    assert audio_duration(load_audio(path)) == pytest.approx(600, abs=0.01)
    full = time.perf_counter() - started

    started = time.perf_counter()
    with pytest.raises(AudioTooLongError) as caught:
        load_audio(path, max_duration=5)
    limited = time.perf_counter() - started
    assert limited < full / 4, (limited, full)  # it stopped after about 5 s of the 10 minutes
    error = caught.value
    assert error.code == "audio_too_long" and isinstance(error, AudioError)
    assert error.max_duration == 5
    assert "max_duration=5 s" in str(error) and "raise max_duration" in str(error).lower()


def wav_stream(seconds: int, rate: int = 16000):
    """A WAV of ``seconds`` of quiet noise, generated a block at a time (never held whole)."""
    size = seconds * rate * 2
    yield b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    yield b"data" + struct.pack("<I", size)
    block = (np.random.default_rng(3).normal(0, 300, rate).astype(np.int16)).tobytes()
    for _ in range(seconds):
        yield block


def test_an_hour_long_stream_stops_at_the_limit():
    stream = Unseekable(wav_stream(3600))
    with pytest.raises(AudioTooLongError, match="max_duration=5"):
        load_audio(stream, max_duration=5)
    assert stream.served < 20 * 32000  # about 5 s of the hour's 115 MB were read


def test_a_reader_gives_the_same_audio_piece_by_piece_without_holding_it_whole(speech):
    """An upload held window by window: pieces of the chosen length, equal to the whole decode,
    while memory holds about one piece (a 20 minute file: 77 MB of float32 whole)."""
    import tracemalloc

    burst = np.zeros(1200 * 8000, np.float32)
    burst[: len(speech) // 2] = speech[::2]  # speech at the start, a tone near the end, silence between
    burst[-8000:] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    data = encode(burst, 8000, "flac", "flac")
    whole = load_audio(data)

    reader = AudioReader(data)
    assert reader.declared == pytest.approx(1200, abs=0.1) and reader.note is None
    tracemalloc.start()
    try:
        pieces, checked = [], 0
        while len(piece := reader.read(30.0)):
            assert 30 * SAMPLE_RATE <= len(piece) < 31 * SAMPLE_RATE or checked + len(piece) == len(whole)
            np.testing.assert_array_equal(piece, whole[checked : checked + len(piece)])
            checked += len(piece)
            pieces.append(len(piece))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert checked == len(whole) and len(pieces) == 40, pieces
    assert peak < 15_000_000, peak  # a piece or two, not the 77 MB of the whole
    assert len(reader.read(30.0)) == 0  # read to the end, closed


def test_a_reader_refuses_up_front_what_the_header_shows_and_the_rest_midway(speech, tmp_path):
    ten_minutes = encode(np.zeros(600 * 8000, np.float32), 8000, "flac", "flac")
    with pytest.raises(AudioTooLongError, match="declares 600.0 s"):
        AudioReader(ten_minutes, max_duration=60)
    with pytest.raises(UndecodableAudioError):
        AudioReader(b"not audio at all" * 100)
    with pytest.raises(EmptyAudioError):
        AudioReader(b"")
    undeclared = bytearray(encode(np.full(600 * 8000, 0.1, np.float32), 8000, "flac", "flac"))
    assert undeclared[:4] == b"fLaC"
    fields = int.from_bytes(undeclared[18:26], "big")  # STREAMINFO's total samples: 0 is "unknown"
    undeclared[18:26] = (fields & ~((1 << 36) - 1)).to_bytes(8, "big")
    reader = AudioReader(bytes(undeclared), max_duration=40)
    assert reader.declared is None
    assert len(reader.read(30.0)) >= 30 * SAMPLE_RATE
    with pytest.raises(AudioTooLongError, match="decoding stopped there"):
        reader.read(30.0)
    two = matroska([np.zeros_like(speech), speech])
    reader = AudioReader(two)
    first = reader.read(1.0)
    assert len(first) >= SAMPLE_RATE and "track 2 was used" in reader.note, reader.note
    reader.close()
    assert len(reader.read(1.0)) == 0  # closed: nothing more


def test_audio_within_the_limit_is_accepted(speech):
    data = encode(speech, 16000, "wav", "pcm_s16le")
    seconds = len(speech) / SAMPLE_RATE
    assert len(load_audio(data, max_duration=seconds)) == pytest.approx(len(speech), abs=2)
    with pytest.raises(AudioTooLongError):
        load_audio(data, max_duration=seconds - 0.1)
    with pytest.raises(ValueError):
        load_audio(data, max_duration=0)


def test_error_codes():
    assert EmptyAudioError.code == "empty_audio"
    assert UndecodableAudioError.code == "undecodable_audio"
    assert AudioTooLongError.code == "audio_too_long"
    assert AudioTrackError.code == "invalid_audio_track"
    for cls in (EmptyAudioError, UndecodableAudioError, AudioTooLongError, AudioTrackError):
        assert issubclass(cls, AudioError) and issubclass(cls, ValueError)


# --- through the model: which track was used, and silent or too short audio, say so in notes ---


@pytest.fixture(scope="module")
def tiny_en_default():
    """tiny.en with its bundled head, as ``load_model`` gives it."""
    from tagger import load_model

    return load_model("tiny.en", device="cpu")


def test_the_model_transcribes_the_track_with_speech_and_says_which(tiny_en_default):
    native, rate = read_native(SPEECH_8K)
    speech = resample(native, rate, SAMPLE_RATE)
    data = matroska([np.zeros_like(speech), speech], codec="libopus", rate=48000)

    result = tiny_en_default.transcribe(data)

    assert "representatives" in result.text.lower() and "telemarketers" in result.text.lower(), result.text
    assert result.notes[0].startswith("the file has 2 audio tracks; track 2 was used"), result.notes
    assert result.to_dict()["notes"] == result.notes
    assert any(window.labels for window in result.tags)
    tags = tiny_en_default.tag(data, audio_track=1)
    assert tags.notes[0] == "audio track 1 of the file's 2 was used, as asked", tags.notes
    assert any("silent" in note for note in tags.notes) and all(not w.labels for w in tags.tags), tags.notes
    with pytest.raises(AudioTrackError, match="only 2 audio tracks"):
        tiny_en_default.transcribe(data, audio_track=3)


DEGENERATE = {
    "digital silence": np.zeros(3 * SAMPLE_RATE, np.float32),
    "DC offset": np.full(3 * SAMPLE_RATE, 0.5, np.float32),
    "all NaN": np.full(3 * SAMPLE_RATE, np.nan, np.float32),
    "10 ms of tone": (0.5 * np.sin(2 * np.pi * 440 * np.arange(160) / SAMPLE_RATE)).astype(np.float32),
}


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_degenerate_audio_gets_a_note_not_confident_tags(tiny_en_default, name):
    samples = DEGENERATE[name]
    expected = "too short" if len(samples) < SAMPLE_RATE else "the audio is silent"
    for source in (samples, encode(np.nan_to_num(samples), SAMPLE_RATE, "wav", "pcm_s16le")):
        tags = tiny_en_default.tag(source, tag_resolution=0.4, top_k=None)
        assert tags.tags and all(window.labels == [] for window in tags.tags), (name, tags.tags[:2])
        assert tags.events == [] and not tags.scores.any(), (name, tags.events)
        assert any(expected in note for note in tags.notes), (name, tags.notes)
        result = tiny_en_default.transcribe(source)
        assert result.text == "" and result.events == [], (name, result.text, result.events)
        assert all(window.labels == [] for window in result.tags), name
        assert any(expected in note for note in result.notes), (name, result.notes)
    no_tags = tiny_en_default.transcribe(samples, tags=False)
    if expected == "the audio is silent":
        assert any(note.startswith("the audio is silent") for note in no_tags.notes), no_tags.notes


def test_only_the_silent_windows_of_real_audio_lose_their_tags(tiny_en_default, speech):
    gap = np.zeros(4 * SAMPLE_RATE, np.float32)
    result = tiny_en_default.tag(np.concatenate([speech[: 4 * SAMPLE_RATE], gap]), tag_resolution=2.0)
    assert [bool(w.labels) for w in result.tags] == [True, True, False, False], result.tags
    assert result.notes == ["2 of 4 tag windows are silent (no level above -60 dBFS), so they carry no tags"]
    assert all(event.start < 4.0 for event in result.events), result.events
    assert not result.scores[2:].any() and result.scores[:2].any()
    loud = tiny_en_default.tag(speech)
    assert loud.notes == [] and all(w.labels for w in loud.tags)
