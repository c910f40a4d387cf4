"""The AudioSet teacher (tagger/train/teacher.py): strict load of the shared mn04 weights, its front
end checked against independent formulas, the resampler, windowing, and clear tags on real audio.

Tests that need the weights skip, with the reason, where ../shared/teachers/mn04_as_mAP_432.pt (or
EARMARK_TEACHER) is absent; the front end, resampler and error checks run everywhere.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sound_fixtures import drum_clips, percussion_clips, pick

from tagger.audio import SAMPLE_RATE, load_audio
from tagger.labels import audioset
from tagger.train.teacher import (
    DEFAULT_TEACHER,
    TEACHER_SAMPLE_RATE,
    TEACHER_URL,
    Teacher,
    load_teacher,
    mel_banks,
    resample_to_teacher,
    teacher_probs,
    window_bounds,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SPEECH = sorted((FIXTURES / "speech").glob("*.flac"))  # all 20: 19 English, 1 Italian
MUSIC = sorted((FIXTURES / "scenes").glob("music-*.flac"))  # the music fixtures live in scenes/
SILENCE = FIXTURES / "scenes" / "silence-asterisk-10s.flac"
NAMES = audioset().names

needs_weights = pytest.mark.skipif(
    not DEFAULT_TEACHER.is_file(),
    reason=f"teacher weights not at {DEFAULT_TEACHER}: download {TEACHER_URL} and set EARMARK_TEACHER to it",
)


@pytest.fixture(scope="module")
def teacher():
    if not DEFAULT_TEACHER.is_file():
        pytest.skip(f"teacher weights not at {DEFAULT_TEACHER}: download {TEACHER_URL} and set EARMARK_TEACHER")
    return load_teacher(DEFAULT_TEACHER)


def top(probs: np.ndarray, k: int = 3) -> list[str]:
    return [NAMES[i] for i in np.argsort(probs)[::-1][:k]]


def rank(probs: np.ndarray, name: str) -> int:
    return int(np.sum(probs > probs[NAMES.index(name)]))


# --- independent references for the front end ------------------------------------------------


def kaldi_banks(n_mels: int, n_fft: int, sample_rate: int, fmin: float, fmax: float) -> np.ndarray:
    """Kaldi's MelBanks written out filter by filter, in Hz: n_mels triangles whose n_mels + 2
    edges are evenly spaced on the mel scale 1127 ln(1 + f / 700); FFT bins below Nyquist."""
    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    step = (mel(fmax) - mel(fmin)) / (n_mels + 1)
    banks = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lo, mid, hi = (mel(fmin) + (m + j) * step for j in range(3))
        for k in range(n_fft // 2):
            x = mel(k * sample_rate / n_fft)
            if lo < x <= mid:
                banks[m, k] = (x - lo) / (mid - lo)
            elif mid < x < hi:
                banks[m, k] = (hi - x) / (hi - mid)
    return banks


def numpy_log_mel(waveform: np.ndarray) -> np.ndarray:
    """EfficientAT's evaluation front end in float64 numpy: pre-emphasis, centred frames with
    reflect padding, a symmetric 800-sample Hann window centred in 1024, power, Kaldi banks from
    0 to 15 kHz, log(x + 1e-5), (x + 4.5) / 5."""
    x = waveform[1:].astype(np.float64) - 0.97 * waveform[:-1]
    x = np.pad(x, 512, mode="reflect")
    n_frames = 1 + (x.size - 1024) // 320
    window = np.zeros(1024)
    window[112:912] = np.hanning(800)
    frames = np.stack([x[i * 320 : i * 320 + 1024] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = kaldi_banks(128, 1024, 32000, 0.0, 15000.0) @ power.T
    return (np.log(mel + 1e-5) + 4.5) / 5.0


def test_mel_banks_match_kaldi_formula():
    banks = mel_banks()
    assert banks.shape == (128, 513) and banks.dtype == np.float32
    np.testing.assert_allclose(banks, kaldi_banks(128, 1024, 32000, 0.0, 15000.0), atol=1e-5)
    assert banks.min() >= 0 and banks.max() <= 1
    assert np.all(banks[:, -1] == 0)  # Kaldi leaves the Nyquist bin out
    assert np.all(banks[:, 480:] < 1e-6)  # nothing at or above fmax = 15 kHz (bin 480)
    assert np.all(np.diff(banks.argmax(axis=1)) >= 0) and np.all(banks.max(axis=1) > 0.1)


def test_front_end_matches_numpy_reference():
    samples = load_audio(SPEECH[0])
    waveform = resample_to_teacher(samples)
    with torch.no_grad():
        ours = Teacher().mel(torch.from_numpy(waveform)[None])[0].numpy()
    reference = numpy_log_mel(waveform)
    assert ours.shape == reference.shape == (128, 1 + (waveform.size - 1) // 320)
    np.testing.assert_allclose(ours, reference, atol=2e-3)
    assert 0.5 < np.ptp(reference)  # not a flat spectrogram: the comparison sees real structure
    with torch.no_grad():  # 10 s at 32 kHz gives the 1000 frames EfficientAT was trained on
        assert Teacher().mel(torch.zeros(2, 320000)).shape == (2, 128, 1000)


def test_resampler_interpolates_band_limited_audio():
    n = np.arange(2 * SAMPLE_RATE)
    for hz in (440.0, 3000.0, 7000.0):
        x = np.sin(2 * np.pi * hz * n / SAMPLE_RATE + 0.3).astype(np.float32)
        y = resample_to_teacher(x)
        assert y.dtype == np.float32 and y.size == 2 * x.size
        assert np.array_equal(y[::2], x)  # the input samples are kept as they are
        truth = np.sin(2 * np.pi * hz * np.arange(y.size) / TEACHER_SAMPLE_RATE + 0.3)
        assert np.abs(y - truth)[200:-200].max() < 2e-4, hz
        # no image of the tone mirrored about 8 kHz: at least 80 dB down
        spectrum = np.abs(np.fft.rfft(y[16000:48000] * np.hanning(32000)))  # 1 Hz bins
        image = int(SAMPLE_RATE - hz)
        assert spectrum[image - 50 : image + 50].max() < 1e-4 * spectrum.max(), hz


def test_window_bounds_cover_the_clip():
    n = 23 * SAMPLE_RATE + 123
    bounds = window_bounds(n, window=5.0, hop=2.5)
    assert len(bounds) == 1 + math.ceil((n - 5 * SAMPLE_RATE) / (2.5 * SAMPLE_RATE)) == 9
    assert [s for s, _ in bounds] == [i * 40000 for i in range(9)]
    assert all(e - s == 80000 for s, e in bounds[:-1]) and bounds[-1][1] == n
    assert window_bounds(n, 10.0) == [(0, 160000), (160000, 320000), (320000, n)]
    assert window_bounds(100, 10.0) == [(0, 100)]
    assert window_bounds(160000, 10.0) == [(0, 160000)]  # exactly one window: no empty second one
    with pytest.raises(ValueError):
        window_bounds(n, 10.0, 0.0)


def test_default_path_and_override():
    code = "from tagger.train.teacher import DEFAULT_TEACHER; print(DEFAULT_TEACHER)"
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "EARMARK_TEACHER"}
    plain = subprocess.run([sys.executable, "-c", code], env=env, cwd=repo, capture_output=True, text=True, check=True)
    assert Path(plain.stdout.strip()) == repo.parent / "shared" / "teachers" / "mn04_as_mAP_432.pt"
    env["EARMARK_TEACHER"] = "/elsewhere/mn04.pt"
    other = subprocess.run([sys.executable, "-c", code], env=env, cwd=repo, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == "/elsewhere/mn04.pt"


def test_missing_or_wrong_weights_say_what_to_do(tmp_path):
    missing = tmp_path / "nowhere" / "mn04_as_mAP_432.pt"
    with pytest.raises(FileNotFoundError) as error:
        load_teacher(missing)
    assert str(missing) in str(error.value) and TEACHER_URL in str(error.value)
    assert "EARMARK_TEACHER" in str(error.value)

    state = Teacher().state_dict()
    state["classifier.6.weight"] = state.pop("classifier.5.weight")
    renamed = tmp_path / "renamed.pt"
    torch.save(state, renamed)
    with pytest.raises(ValueError, match=r"missing: classifier\.5\.weight.*unexpected: classifier\.6\.weight") as error:
        load_teacher(renamed)
    assert str(renamed) in str(error.value)

    narrow = tmp_path / "narrow.pt"
    torch.save(Teacher(width=0.5).state_dict(), narrow)  # an mn05 has the same keys, other shapes
    with pytest.raises(ValueError, match="wrong shape"):
        load_teacher(narrow)


def test_label_table_is_the_standard_audioset_order():
    labels = audioset()
    assert len(labels) == 527 and [label.index for label in labels] == list(range(527))
    assert (labels[0].mid, labels[0].name) == ("/m/09x0r", "Speech")
    assert (labels[137].mid, labels[137].name) == ("/m/04rlf", "Music")
    assert (labels[526].mid, labels[526].name) == ("/m/07hvw1", "Field recording")


# --- with the weights --------------------------------------------------------------------------


@needs_weights
def test_strict_load(teacher):
    state = torch.load(DEFAULT_TEACHER, map_location="cpu", weights_only=True)
    ours = teacher.state_dict()
    assert list(ours) == list(state)  # every key, in the checkpoint's own order
    assert all(torch.equal(ours[k], state[k]) for k in state)
    n_params = sum(p.numel() for p in teacher.parameters())
    assert n_params == sum(v.numel() for k, v in state.items() if v.is_floating_point() and "running_" not in k)
    assert 0.97e6 < n_params < 0.99e6  # "0.98 M parameters"
    assert not teacher.training
    norms = [m for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 46 and all(m.eps == 1e-3 for m in norms)  # EfficientAT's eps, not torch's 1e-5
    with torch.no_grad():
        assert teacher(torch.zeros(3, 48000)).shape == (3, 527)
        assert teacher(torch.zeros(1, 100)).shape == (1, 527)  # tiny input: padded, not an error


@needs_weights
@pytest.mark.parametrize("path", SPEECH, ids=[p.stem for p in SPEECH])
def test_speech_is_tagged_speech(teacher, path):
    samples = load_audio(path)
    clip, windows = teacher_probs(teacher, samples)
    assert "Speech" in top(clip), top(clip, 5)
    assert clip[NAMES.index("Speech")] > 0.6
    # every window with 3 s or more of the recording (demo-nogo ends in a 0.5 s window of its tail)
    spans = [end - start for start, end in window_bounds(samples.size)]
    assert all("Speech" in top(w) for w, span in zip(windows, spans, strict=True) if span >= 3 * SAMPLE_RATE)


@needs_weights
@pytest.mark.parametrize("path", MUSIC, ids=[p.stem for p in MUSIC])
def test_music_is_tagged_music(teacher, path):
    clip, _ = teacher_probs(teacher, load_audio(path))
    assert "Music" in top(clip), top(clip, 5)
    assert clip[NAMES.index("Music")] > 0.6
    assert clip[NAMES.index("Speech")] < 0.2


@needs_weights
def test_silence_is_neither_speech_nor_music(teacher):
    assert len(MUSIC) == 3 and len(SPEECH) == 20
    clip, _ = teacher_probs(teacher, load_audio(SILENCE))
    assert top(clip, 1) == ["Silence"]
    assert clip[NAMES.index("Speech")] < 0.1 and clip[NAMES.index("Music")] < 0.4


@needs_weights
def test_one_shots_rank_their_class_high(teacher):
    """Drum and percussion one-shots (0.1-2 s): their classes sit all over the label table, so a
    wrong label order or a broken front end would rank them at random (median about 263)."""
    clips = pick(drum_clips(), per_class=4) + pick(percussion_clips(), per_class=3)
    ranks = [rank(teacher_probs(teacher, load_audio(c.path))[0], c.audioset) for c in clips]
    assert np.median(ranks) <= 10, ranks
    assert sum(r < 5 for r in ranks) >= len(ranks) // 3, ranks


@needs_weights
def test_windows_follow_the_audio(teacher):
    music = load_audio(MUSIC[0])  # 10 s
    speech = np.concatenate([load_audio(SPEECH[0]), load_audio(SPEECH[-1])])  # 5.5 s + 3.3 s
    samples = np.concatenate([music, speech])
    assert 18 * SAMPLE_RATE < samples.size < 20 * SAMPLE_RATE

    clip, windows = teacher_probs(teacher, samples)  # windows [0, 10), [10, 18.9)
    assert clip.shape == (527,) and windows.shape == (2, 527)
    assert clip.dtype == windows.dtype == np.float32 and 0 < windows.min() and windows.max() < 1
    assert top(windows[0], 1) == ["Music"] and top(windows[1], 1) == ["Speech"]
    assert rank(clip, "Music") < 5 and rank(clip, "Speech") < 5  # the whole clip holds both

    # each full window is exactly the teacher on its own stretch of the 32 kHz audio
    audio = resample_to_teacher(samples)
    with torch.no_grad():
        first = torch.sigmoid(teacher(torch.from_numpy(audio[: 10 * TEACHER_SAMPLE_RATE])[None]))[0].numpy()
    np.testing.assert_allclose(windows[0], first, atol=1e-5)

    # finer windows with a hop: the count, batch-size independence, the music / speech boundary
    _, fine = teacher_probs(teacher, samples, window=4.0, hop=2.0, batch_size=3)
    _, single = teacher_probs(teacher, samples, window=4.0, hop=2.0, batch_size=1)
    assert len(fine) == len(window_bounds(samples.size, 4.0, 2.0)) == 9
    np.testing.assert_allclose(fine, single, atol=1e-5)
    assert [top(w, 1)[0] for w in fine[:4]] == ["Music"] * 4  # windows inside 0-10 s
    assert all("Speech" in top(w) for w in fine[5:])  # windows starting at 10 s or later


@needs_weights
def test_short_and_long_clips(teacher):
    short = load_audio(SPEECH[-1])[: SAMPLE_RATE * 2]
    clip, windows = teacher_probs(teacher, short)
    assert windows.shape == (1, 527) and np.array_equal(clip, windows[0])
    assert "Speech" in top(clip)

    long = np.concatenate([load_audio(p) for p in SPEECH[:6]])  # 55 s: past the whole-clip limit
    assert long.size > 30 * SAMPLE_RATE
    clip, windows = teacher_probs(teacher, long, window=10.0)
    assert windows.shape == (6, 527)
    np.testing.assert_array_equal(clip, windows.max(axis=0))

    with pytest.raises(ValueError):
        teacher_probs(teacher, np.zeros(0, dtype=np.float32))
