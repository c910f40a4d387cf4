"""The AudioSet teacher: EfficientAT's MobileNetV3 "mn04" and its mel front end, for soft labels.

The teacher gives 527 AudioSet probabilities for any audio; the training pipeline distils them
into Earmark's heads. It is used for training only, never when serving.

Weights: ``mn04_as_mAP_432.pt`` (width 0.4, 0.98 M parameters, published AudioSet mAP 0.432, MIT
licence), from Florian Schmid et al., "Efficient Large-Scale Audio Tagging via Transformer-to-CNN
Knowledge Distillation" (ICASSP 2023). This checkout looks for it in
``../shared/teachers/mn04_as_mAP_432.pt`` beside the repository (``DEFAULT_TEACHER``; the
environment variable ``EARMARK_TEACHER`` names another path). Elsewhere, download it from the
EfficientAT project's release v0.0.1:

    https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/mn04_as_mAP_432.pt

The weights are never copied into this repository.

The definitions here are Earmark's own, written from the public description of the model
(repository fschmid56/EfficientAT, ``models/mn/`` and ``models/preprocess.py``); module names
follow the checkpoint's keys so that it loads with a strict key match:

- front end (AugmentMelSTFT as evaluated, no augmentation): 32 kHz waveform, pre-emphasis
  ``y[n] = x[n + 1] - 0.97 x[n]``, STFT (n_fft 1024, symmetric Hann window of 800 samples centred
  in the frame, hop 320, centred frames with reflect padding), power spectrum, 128 Kaldi-style mel
  banks from 0 Hz to 15 kHz (``16000 - 2000 // 2``: the upper edge EfficientAT uses when fmax is
  not given), ``log(x + 1e-5)``, then ``(x + 4.5) / 5``;
- network: MobileNetV3-Large, channels scaled by 0.4 and rounded to multiples of 8, one input
  channel, batch norm with eps 0.001, squeeze-and-excitation over channels (bottleneck a quarter
  of the channels, rounded to 8) in the blocks the MobileNetV3 table marks, global average pooling
  over frequency and time, and an MLP head (384 -> 512, hard swish, dropout, 512 -> 527).

Labels: the 527 classes in the standard AudioSet order (``tagger/data/audioset_labels.csv``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CLIP_SECONDS",
    "DEFAULT_TEACHER",
    "MAX_CLIP_SECONDS",
    "TEACHER_SAMPLE_RATE",
    "TEACHER_URL",
    "Teacher",
    "load_teacher",
    "mel_banks",
    "resample_to_teacher",
    "teacher_probs",
    "teacher_probs_many",
    "window_bounds",
]

TEACHER_SAMPLE_RATE = 32000
INPUT_SAMPLE_RATE = 16000  # Earmark's decoded audio
N_CLASSES = 527
TEACHER_URL = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/mn04_as_mAP_432.pt"
_REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT_TEACHER = Path(
    os.environ.get("EARMARK_TEACHER") or _REPOSITORY.parent / "shared" / "teachers" / "mn04_as_mAP_432.pt"
)

# teacher_probs: clips up to this long are scored whole; longer ones take the max over windows.
MAX_CLIP_SECONDS = 30.0
# teacher_probs: a shorter clip is repeated to this length (AudioSet's) for clip_probs.
CLIP_SECONDS = 10.0

# Front end (EfficientAT's defaults at 32 kHz).
N_MELS = 128
N_FFT = 1024
WIN_LENGTH = 800
HOP_LENGTH = 320
PREEMPHASIS = 0.97
FMIN = 0.0
FMAX = TEACHER_SAMPLE_RATE // 2 - 2000 // 2  # 15000 Hz
LOG_OFFSET = 1e-5

# Network: MobileNetV3-Large at width 0.4.
WIDTH = 0.4
BN_EPS = 0.001
# (input channels, kernel, expanded channels, output channels, squeeze-excite, hard swish, stride),
# before scaling by WIDTH: Table 1 of the MobileNetV3 paper.
BLOCKS = [
    (16, 3, 16, 16, False, False, 1),
    (16, 3, 64, 24, False, False, 2),
    (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2),
    (40, 5, 120, 40, True, False, 1),
    (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2),
    (80, 3, 200, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 480, 112, True, True, 1),
    (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2),
    (160, 5, 960, 160, True, True, 1),
    (160, 5, 960, 160, True, True, 1),
]
LAST_CHANNEL = 1280  # width of the head's hidden layer, before scaling


def round_channels(channels: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor`` (at least ``divisor``), never more than 10 % down."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def mel_scale(hz):
    """Kaldi's mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_banks(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = TEACHER_SAMPLE_RATE,
              fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """Kaldi-style triangular mel filters, [n_mels, n_fft // 2 + 1] float32.

    Filter i rises linearly in mel from edge i to its centre i + 1 and falls to edge i + 2, where
    the n_mels + 2 edges are evenly spaced in mel from fmin to fmax. Filters are not area-normalised
    (peak 1 at most). Kaldi uses the FFT bins below Nyquist only; the Nyquist column is 0.
    """
    mel_low, mel_high = mel_scale(fmin), mel_scale(fmax)
    delta = (mel_high - mel_low) / (n_mels + 1)
    left = mel_low + np.arange(n_mels)[:, None] * delta
    centre, right = left + delta, left + 2 * delta
    mel = mel_scale(np.arange(n_fft // 2) * sample_rate / n_fft)[None, :]
    rising = (mel - left) / (centre - left)
    falling = (right - mel) / (right - centre)
    banks = np.maximum(0.0, np.minimum(rising, falling))
    return np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)


class MelFrontEnd(nn.Module):
    """32 kHz waveform [B, T] -> normalised log mel spectrogram [B, 128, 1 + (T - 1) // 320].

    Its buffers are derived, not learned, and stay out of the state dict."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(WIN_LENGTH, periodic=False), persistent=False)
        self.register_buffer("banks", torch.from_numpy(mel_banks()), persistent=False)

    def forward(self, waveform: Tensor) -> Tensor:
        x = waveform[:, 1:] - PREEMPHASIS * waveform[:, :-1]
        spectrum = torch.stft(x, N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, window=self.window,
                              center=True, pad_mode="reflect", normalized=False, onesided=True,
                              return_complex=True)
        power = spectrum.real**2 + spectrum.imag**2
        mel = torch.matmul(self.banks, power)
        return (torch.log(mel + LOG_OFFSET) + 4.5) / 5.0


class ConvNorm(nn.Sequential):
    """Convolution (no bias), batch norm, optional activation: keys ``0.weight``, ``1.*``."""

    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int = 1, groups: int = 1,
                 activation: type[nn.Module] | None = None) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(n_in, n_out, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(n_out, eps=BN_EPS, momentum=0.01),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class ChannelGate(nn.Module):
    """Squeeze-and-excitation over channels: scale each channel by a gate from the channel means."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, squeeze)
        self.fc2 = nn.Linear(squeeze, channels)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * gate[:, :, None, None]


class SqueezeExcite(nn.Module):
    """EfficientAT can run gates over channels, frequency and time side by side and merge them
    with a max; the AudioSet models use the channel gate alone, so this holds just that one (the
    list keeps the checkpoint's key names, ``conc_se_layers.0.*``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conc_se_layers = nn.ModuleList([ChannelGate(channels, round_channels(channels // 4))])

    def forward(self, x: Tensor) -> Tensor:
        return self.conc_se_layers[0](x)


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expansion (if wider), depthwise conv, optional squeeze-excite, 1x1
    projection; the input is added back when the shape is unchanged."""

    def __init__(self, n_in: int, kernel: int, n_expanded: int, n_out: int, squeeze_excite: bool,
                 hard_swish: bool, stride: int) -> None:
        super().__init__()
        activation = nn.Hardswish if hard_swish else nn.ReLU
        layers: list[nn.Module] = []
        if n_expanded != n_in:
            layers.append(ConvNorm(n_in, n_expanded, 1, activation=activation))
        layers.append(ConvNorm(n_expanded, n_expanded, kernel, stride, groups=n_expanded, activation=activation))
        if squeeze_excite:
            layers.append(SqueezeExcite(n_expanded))
        layers.append(ConvNorm(n_expanded, n_out, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and n_in == n_out

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class Teacher(nn.Module):
    """Mel front end + MobileNetV3 (mn04): 32 kHz waveform [B, T] -> 527 AudioSet logits [B, 527].

    The network is fully convolutional up to a global average pool, so any length works; the
    teacher was trained on 10 s AudioSet clips."""

    def __init__(self, width: float = WIDTH, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.mel = MelFrontEnd()

        def scaled(channels: int) -> int:
            return round_channels(channels * width)

        first = scaled(BLOCKS[0][0])
        layers: list[nn.Module] = [ConvNorm(1, first, 3, stride=2, activation=nn.Hardswish)]
        for n_in, kernel, n_expanded, n_out, se, hs, stride in BLOCKS:
            layers.append(InvertedResidual(scaled(n_in), kernel, scaled(n_expanded), scaled(n_out), se, hs, stride))
        last_in = scaled(BLOCKS[-1][3])
        layers.append(ConvNorm(last_in, 6 * last_in, 1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(6 * last_in, scaled(LAST_CHANNEL)),
            nn.Hardswish(),
            nn.Dropout(0.2),
            nn.Linear(scaled(LAST_CHANNEL), n_classes),
        )

    def forward(self, waveform: Tensor) -> Tensor:
        if waveform.shape[-1] <= N_FFT:  # reflect padding needs a little audio; pad a tiny input with silence
            waveform = F.pad(waveform, (0, N_FFT + 1 - waveform.shape[-1]))
        mel = self.mel(waveform)
        return self.classifier(self.features(mel[:, None]))


def load_teacher(path: str | Path = DEFAULT_TEACHER, device: str = "cpu") -> Teacher:
    """The teacher with the weights at ``path``, every key matched, in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"teacher weights not found at {path}: download {TEACHER_URL} (EfficientAT release v0.0.1, "
            "MIT licence) and pass its path, or set EARMARK_TEACHER to it"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    teacher = Teacher()
    if not isinstance(state, dict):
        raise TypeError(f"{path} is not a state dict (got {type(state).__name__}); expected {TEACHER_URL}")
    expected = teacher.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        problems = [f"{what}: {some(keys)}" for what, keys in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise ValueError(
            f"{path} does not match the mn04 teacher ({'; '.join(problems)}): it must be EfficientAT's "
            f"mn04_as_mAP_432.pt, {TEACHER_URL}"
        )
    teacher.load_state_dict(state, strict=True)
    return teacher.to(device).eval()


def resample_to_teacher(samples: np.ndarray, taps_per_side: int = 32, beta: float = 8.6) -> np.ndarray:
    """16 kHz float32 mono -> 32 kHz, twice as many samples: band-limited interpolation.

    Even output samples are the input samples; odd ones lie halfway between, interpolated with a
    Kaiser-windowed sinc (cut-off at the input's Nyquist, 8 kHz; ``taps_per_side`` input samples
    on each side; zeros beyond the ends).
    """
    x = torch.from_numpy(np.array(samples, dtype=np.float32).reshape(-1))  # a copy: input may be read-only
    k = taps_per_side
    offsets = np.arange(-(k - 1), k + 1) - 0.5  # input samples p - k + 1 .. p + k, seen from time p + 0.5
    window = np.i0(beta * np.sqrt(np.clip(1.0 - (offsets / k) ** 2, 0.0, None))) / np.i0(beta)
    taps = torch.from_numpy((np.sinc(offsets) * window).astype(np.float32))
    padded = F.pad(x[None, None], (k - 1, k))
    halfway = F.conv1d(padded, taps[None, None])[0, 0]
    return torch.stack([x, halfway], dim=1).reshape(-1).numpy()


def window_bounds(n_samples: int, window: float = 10.0, hop: float | None = None,
                  sample_rate: int = INPUT_SAMPLE_RATE) -> list[tuple[int, int]]:
    """(start, end) samples of the windows ``teacher_probs`` scores: ``window`` seconds every
    ``hop`` seconds (default: ``window``) from the start, as many as it takes to reach the end
    (at least one); the last one stops at the end of the audio, so it may be shorter."""
    hop = window if hop is None else hop
    if window <= 0 or hop <= 0:
        raise ValueError(f"window ({window}) and hop ({hop}) must be positive")
    size, step = round(window * sample_rate), round(hop * sample_rate)
    count = 1 + max(0, math.ceil((n_samples - size) / step))
    return [(i * step, min(i * step + size, n_samples)) for i in range(count)]


@torch.no_grad()
def _probs(teacher: Teacher, pieces: list[np.ndarray]) -> np.ndarray:
    """Sigmoid probabilities [len(pieces), 527] of equally long 32 kHz pieces, in one batch."""
    device = next(teacher.parameters()).device
    batch = torch.from_numpy(np.stack(pieces)).to(device)
    return torch.sigmoid(teacher(batch).float()).cpu().numpy()


def teacher_probs(teacher: Teacher, samples: np.ndarray, window: float = 10.0, hop: float | None = None,
                  batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's AudioSet probabilities for a clip of 16 kHz float32 mono samples.

    Returns ``(clip_probs [527], window_probs [n_windows, 527])``, float32 sigmoid probabilities.

    - Windows are those of :func:`window_bounds`: ``window`` seconds every ``hop`` seconds
      (default: ``window``) from the start, covering the clip; a clip shorter than one window
      gives one window. Each window is scored on its own audio only; a shorter one (the last, or
      the only one) is repeated to the full window length.
    - ``clip_probs``: the teacher run once on the whole clip (repeated to at least
      ``CLIP_SECONDS``, 10 s, AudioSet's clip length) when it is at most ``MAX_CLIP_SECONDS``
      (30 s) long; a longer clip gets the maximum over its windows' probabilities instead.

    Why repeat rather than score short audio bare or pad it with silence (measured on the
    fixtures of tests/test_teacher.py): on the 117 drum and percussion one-shots (0.1-2 s) the
    true class ranks 3rd (median; top 5 for 70) repeated to 10 s, against 25th (33) bare and
    10th (33) padded with silence; and silence padding makes the teacher hear "Silence" in short
    speech (up to 0.31 on a 3 s sentence) where repeating gives 0.00.

    The audio is resampled to 32 kHz once (:func:`resample_to_teacher`); windows go to the
    teacher ``batch_size`` at a time.
    """
    return teacher_probs_many(teacher, [samples], window, hop, batch_size)[0]


def teacher_probs_many(teacher: Teacher, clips: list[np.ndarray], window: float = 10.0, hop: float | None = None,
                       batch_size: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`teacher_probs` of several clips, their inputs of equal length batched together (many
    short clips then cost a few teacher calls, not one each)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    ratio = TEACHER_SAMPLE_RATE // INPUT_SAMPLE_RATE
    size = round(window * INPUT_SAMPLE_RATE) * ratio

    def repeated(x: np.ndarray, length: int) -> np.ndarray:
        return np.tile(x, -(-length // x.size))[:length] if x.size < length else x

    inputs: dict[int, list[tuple[np.ndarray, int, int]]] = {}  # length -> [(audio, clip, row; -1: the clip)]
    results = []
    for number, samples in enumerate(clips):
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size == 0:
            raise ValueError("teacher_probs got no audio (0 samples)")
        audio = resample_to_teacher(samples)
        bounds = window_bounds(samples.size, window, hop)
        for row, (start, end) in enumerate(bounds):
            inputs.setdefault(size, []).append((repeated(audio[start * ratio : end * ratio], size), number, row))
        clip = repeated(audio, round(CLIP_SECONDS * TEACHER_SAMPLE_RATE))
        same = len(bounds) == 1 and clip.size == size  # the one window is this very input
        whole = samples.size <= MAX_CLIP_SECONDS * INPUT_SAMPLE_RATE
        if whole and not same:
            inputs.setdefault(clip.size, []).append((clip, number, -1))
        results.append((np.zeros(N_CLASSES, np.float32), np.zeros((len(bounds), N_CLASSES), np.float32),
                        "window" if same else "whole" if whole else "max"))
    for items in inputs.values():
        for first in range(0, len(items), batch_size):
            chunk = items[first : first + batch_size]
            for (_, number, row), probs in zip(chunk, _probs(teacher, [x for x, _, _ in chunk])):
                clip_probs, window_probs, _ = results[number]
                if row < 0:
                    clip_probs[:] = probs
                else:
                    window_probs[row] = probs
    out = []
    for clip_probs, window_probs, how in results:
        if how == "window":
            clip_probs[:] = window_probs[0]
        elif how == "max":
            clip_probs[:] = window_probs.max(axis=0)
        out.append((clip_probs, window_probs))
    return out
