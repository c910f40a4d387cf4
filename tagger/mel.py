"""Log-mel input for the encoder, one window at a time.

Each window's spectrogram depends on that window's samples only, so a live stream that is cut the
same way gets the same encoder input as the whole file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from whisper.audio import HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, mel_filters


def log_mel(samples: torch.Tensor, n_mels: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """openai-whisper's log-mel spectrogram of one window of at most 30 s, as [n_mels, 3000].

    On the window's real frames the values equal ``whisper.log_mel_spectrogram(samples, n_mels,
    padding=N_SAMPLES)`` (reflect padding at the start, zeros after the end, the ``max - 8``
    floor over the window); frames past the audio are zero, as ``whisper.transcribe`` pads them.
    """
    if samples.shape[-1] > N_SAMPLES:
        raise ValueError(f"a window holds at most {N_SAMPLES} samples, not {samples.shape[-1]}")
    audio = samples.to(device=device, dtype=torch.float32)
    frames = audio.shape[-1] // HOP_LENGTH
    padded = F.pad(audio, (0, 2 * N_FFT))  # zeros after the end: every frame that touches audio
    padded = torch.cat([padded[1 : N_FFT // 2 + 1].flip(0), padded])  # center=True reflect padding, start only
    stft = torch.stft(padded, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT, device=device), center=False,
                      return_complex=True)
    log_spec = torch.clamp(mel_filters(device, n_mels) @ stft.abs() ** 2, min=1e-10).log10()
    floor = log_spec.max() - 8.0
    log_spec = (torch.maximum(log_spec[:, :frames], floor) + 4.0) / 4.0
    return F.pad(log_spec, (0, N_FRAMES - frames))
