"""The frozen Whisper encoder, run once per window of at most 30 s.

One call to ``Backbone.encode`` gives both what the decoder needs (the encoder's final
output, after ``ln_post``) and what the tagging heads need (every block's output before
``ln_post``, mean-pooled over 20 frames = 0.4 s).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import torch
from whisper.audio import HOP_LENGTH, N_FRAMES, SAMPLE_RATE
from whisper.model import Whisper

POOL_FRAMES = 20  # encoder frames per pooled step: 20 x 20 ms = 0.4 s
FRAMES_PER_STEP = POOL_FRAMES * 2  # mel frames per pooled step (the conv stem halves time)
STEPS_PER_WINDOW = N_FRAMES // FRAMES_PER_STEP  # 75 pooled steps per 30 s window
STEPS_PER_SECOND = SAMPLE_RATE / HOP_LENGTH / FRAMES_PER_STEP  # 2.5
WINDOW_SECONDS = N_FRAMES * HOP_LENGTH / SAMPLE_RATE  # 30.0


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
