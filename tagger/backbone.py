"""The frozen Whisper encoder, run once per 30 s window.

One call to ``Backbone.encode`` gives both what the decoder needs (the encoder's final
output, after ``ln_post``) and what the tagging heads need (every block's output before
``ln_post``, mean-pooled over 20 frames = 0.4 s).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from whisper.audio import HOP_LENGTH, N_FFT, N_FRAMES, SAMPLE_RATE, mel_filters
from whisper.model import Whisper

POOL_FRAMES = 20  # encoder frames per pooled step: 20 x 20 ms = 0.4 s
FRAMES_PER_STEP = POOL_FRAMES * 2  # mel frames per pooled step (the conv stem halves time)
STEPS_PER_WINDOW = N_FRAMES // FRAMES_PER_STEP  # 75 pooled steps per 30 s window
STEPS_PER_SECOND = SAMPLE_RATE / HOP_LENGTH / FRAMES_PER_STEP  # 2.5
WINDOW_SECONDS = N_FRAMES * HOP_LENGTH / SAMPLE_RATE  # 30.0
MEL_CHUNK_FRAMES = 60 * N_FRAMES  # bound the STFT's memory: 30 minutes of audio at a time


@dataclass
class MelWindows:
    """Log-mel input for the encoder: one [n_mels, 3000] window per 30 s of audio."""

    mel: torch.Tensor  # [n_mels, content_frames], normalised as openai-whisper does
    content_frames: int  # mel frames that hold real audio (10 ms each)

    @property
    def n_windows(self) -> int:
        return max(1, math.ceil(self.content_frames / N_FRAMES))

    def frames_in(self, index: int) -> int:
        """How many of window ``index``'s 3000 frames are real audio."""
        return max(0, min(N_FRAMES, self.content_frames - index * N_FRAMES))

    def windows(self, start: int, stop: int) -> torch.Tensor:
        """Windows ``start..stop-1`` as a batch [B, n_mels, 3000]; the tail is zero-padded like openai-whisper."""
        batch = []
        for index in range(start, stop):
            frames = self.mel[:, index * N_FRAMES : index * N_FRAMES + self.frames_in(index)]
            batch.append(F.pad(frames, (0, N_FRAMES - frames.shape[-1])))
        return torch.stack(batch)


def log_mel(audio: torch.Tensor, n_mels: int, device: torch.device | str = "cpu") -> MelWindows:
    """openai-whisper's log-mel spectrogram of the whole file, computed in chunks to bound memory.

    Values equal ``whisper.log_mel_spectrogram(audio, n_mels, padding=N_SAMPLES)`` on the
    real frames: the same STFT framing (reflect padding at the start, zeros after the end),
    the same global ``max - 8`` floor.
    """
    audio = audio.to(device=device, dtype=torch.float32)
    content_frames = audio.shape[-1] // HOP_LENGTH
    # Zeros after the end, as whisper pads 30 s of silence; enough for every frame that touches audio.
    padded = F.pad(audio, (0, 2 * N_FFT))
    padded = torch.cat([padded[1 : N_FFT // 2 + 1].flip(0), padded])  # center=True reflect padding, start only
    total_frames = (padded.shape[-1] - N_FFT) // HOP_LENGTH + 1
    window = torch.hann_window(N_FFT, device=device)
    filters = mel_filters(device, n_mels)
    chunks = []
    for first in range(0, total_frames, MEL_CHUNK_FRAMES):
        last = min(total_frames, first + MEL_CHUNK_FRAMES)
        samples = padded[first * HOP_LENGTH : (last - 1) * HOP_LENGTH + N_FFT]
        stft = torch.stft(samples, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
        chunks.append(torch.clamp(filters @ stft.abs() ** 2, min=1e-10).log10())
        del stft
    log_spec = torch.cat(chunks, dim=-1)
    floor = log_spec.max() - 8.0
    log_spec = log_spec[:, :content_frames]
    log_spec = (torch.maximum(log_spec, floor) + 4.0) / 4.0
    return MelWindows(mel=log_spec, content_frames=content_frames)


@dataclass
class Encoded:
    """The encoder's output for a batch of windows."""

    features: torch.Tensor  # [B, 1500, D] final output (after ln_post): the decoder's input
    pooled: torch.Tensor  # [B, L, 75, D] float32, every block's output before ln_post, 0.4 s mean-pooled


class Backbone:
    """Runs ``model.encoder`` once per window and captures every block's output on the way."""

    def __init__(self, model: Whisper):
        self.model = model
        # openai-whisper keeps float32 weights and computes in float16 on GPUs by casting its input
        self.dtype = torch.float16 if model.device.type == "cuda" else torch.float32
        self._captured: list[torch.Tensor] | None = None
        for block in model.encoder.blocks:
            block.register_forward_hook(self._capture)

    def _capture(self, _module: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if self._captured is not None:
            batch, frames, width = output.shape
            pooled = output.view(batch, frames // POOL_FRAMES, POOL_FRAMES, width).float().mean(dim=2)
            self._captured.append(pooled)

    @property
    def n_layers(self) -> int:
        return self.model.dims.n_audio_layer

    @property
    def d_model(self) -> int:
        return self.model.dims.n_audio_state

    @functools.cached_property
    def sha256(self) -> str:
        """sha256 of the encoder's weights (names and float32 values): what a tagging head depends
        on, the same whichever file or format the weights were loaded from."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.encoder.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()

    @torch.inference_mode()
    def encode(self, mel: torch.Tensor, bf16: bool = False) -> Encoded:
        """One encoder pass over a batch of mel windows [B, n_mels, 3000]. ``bf16``: under bfloat16
        autocast (feature extraction for training only: faster on CPUs with AVX512-BF16 or AMX)."""
        self._captured = []
        try:
            with torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=bf16):
                features = self.model.encoder(mel.to(self.model.device, self.dtype))
            pooled = torch.stack(self._captured, dim=1)
        finally:
            self._captured = None
        return Encoded(features=features, pooled=pooled)
