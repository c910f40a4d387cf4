"""Turning encoded 30 s windows into text, never running the encoder again.

openai-whisper's ``decode()`` and ``detect_language()`` skip the encoder when handed features
of shape (n_audio_ctx, n_audio_state); word alignment gets a stand-in model whose forward pass
is the decoder alone. Temperature fallback re-decodes the same features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor
from whisper.audio import HOP_LENGTH, N_FRAMES, SAMPLE_RATE
from whisper.decoding import (
    DecodingOptions,
    DecodingResult,
    DecodingTask,
    LogitFilter,
    detect_language,
)
from whisper.model import Whisper
from whisper.timing import add_word_timestamps
from whisper.tokenizer import Tokenizer, get_tokenizer

from .results import Segment, Word
from .textdecoder import run_task

TIME_PRECISION = 0.02  # seconds per timestamp token
WINDOW_SECONDS = N_FRAMES * HOP_LENGTH / SAMPLE_RATE
UNFINISHED_SECONDS = 1.0  # a window whose text stops this long before its end, over sound, is continued
AUDIBLE_BELOW_PEAK_DB = 35.0  # sound within this many dB of the window's loudest 10 ms counts as audible


@dataclass
class DecodeSettings:
    """openai-whisper's transcription options, with its defaults."""

    task: str = "transcribe"
    language: str | None = None
    temperature: float | Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    beam_size: int | None = None
    best_of: int | None = 5
    patience: float | None = None
    initial_prompt: str | None = None
    condition_on_previous_text: bool = True
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    word_timestamps: bool = False
    suppress_tokens: str = "-1"
    seed: int = 0  # temperature-fallback sampling in window i draws from a generator seeded with seed + i


class DecoderOnly:
    """Stands in for a Whisper model inside ``whisper.timing``: its forward pass takes encoder
    features instead of a mel spectrogram, so word alignment does not re-run the encoder."""

    def __init__(self, model: Whisper):
        self.model = model
        self.dims = model.dims
        self.decoder = model.decoder
        self.alignment_heads = model.alignment_heads
        self.device = model.device

    def __call__(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(tokens, features)


class Continuation(LogitFilter):
    """Makes the decoder go on after a prefix that ends a segment: the first sampled token opens a
    segment no earlier than the prefix's last timestamp, and the second may not end the text."""

    def __init__(self, tokenizer: Tokenizer, sample_begin: int, min_timestamp: int):
        self.tokenizer = tokenizer
        self.sample_begin = sample_begin
        self.min_timestamp = min_timestamp

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        if tokens.shape[1] == self.sample_begin:
            logits[:, self.tokenizer.timestamp_begin : self.min_timestamp] = -np.inf
        elif tokens.shape[1] == self.sample_begin + 1:
            logits[:, self.tokenizer.eot] = -np.inf


def decode(model: Whisper, features: Tensor, options: DecodingOptions, continue_after: int | None = None,
           generator: torch.Generator | None = None) -> DecodingResult:
    """``whisper.decode`` of one encoded window [1500, D] (the encoder does not run): greedy and
    best-of-n sampling through ``textdecoder.run_task`` (sampling draws from ``generator``), beam
    search through openai-whisper's own loop; ``continue_after``: a timestamp token the text must
    go on from (see ``Continuation``)."""
    task = DecodingTask(model, options)
    if continue_after is not None:
        task.logit_filters.append(Continuation(task.tokenizer, task.sample_begin, continue_after))
    if options.beam_size is not None:
        return task.run(features.unsqueeze(0))[0]
    return run_task(task, features, generator)


def detect_language_from_features(model: Whisper, features: torch.Tensor) -> tuple[str, dict[str, float]]:
    """Most probable language of one encoded window [1500, D], with every language's probability."""
    if not model.is_multilingual:
        return "en", {"en": 1.0}
    tokenizer = get_tokenizer(True, num_languages=model.num_languages)
    _, probs = detect_language(model, features, tokenizer)
    return max(probs, key=probs.get), probs


def _plain(text: str) -> str:
    """Text compared without case, punctuation or spacing."""
    return "".join(c for c in text.lower() if c.isalnum())


@dataclass
class WindowDecoder:
    """Decodes windows in order, carrying the prompt from one window to the next."""

    model: Whisper
    settings: DecodeSettings
    language: str
    segments: list[Segment] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    _prompt_reset_since: int = 0
    _initial_tokens: int = 0
    _last_speech: float = 0.0

    def __post_init__(self) -> None:
        self.tokenizer: Tokenizer = get_tokenizer(
            self.model.is_multilingual,
            num_languages=self.model.num_languages,
            language=self.language,
            task=self.settings.task,
        )
        if self.settings.initial_prompt:
            self.tokens = self.tokenizer.encode(" " + self.settings.initial_prompt.strip())
            self._initial_tokens = len(self.tokens)
        self._generator = torch.Generator(device=self.model.device)

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.tokens[self._initial_tokens :]).strip()

    def _options(self, temperature: float) -> DecodingOptions:
        settings = self.settings
        sampling = {"best_of": settings.best_of} if temperature > 0 else {
            "beam_size": settings.beam_size, "patience": settings.patience}
        return DecodingOptions(
            task=settings.task,
            language=self.language,
            temperature=temperature,
            prompt=self.tokens[self._prompt_reset_since :] or None,
            suppress_tokens=settings.suppress_tokens,
            fp16=self.model.device.type == "cuda",
            **sampling,
        )

    def decode_with_fallback(self, features: torch.Tensor) -> DecodingResult:
        """Decode one window at rising temperatures until the output looks sane; same features each time."""
        settings = self.settings
        temperatures = [settings.temperature] if isinstance(settings.temperature, (int, float)) else settings.temperature
        result: DecodingResult | None = None
        for temperature in temperatures:
            result = decode(self.model, features, self._options(temperature), generator=self._generator)
            too_repetitive = (
                settings.compression_ratio_threshold is not None
                and result.compression_ratio > settings.compression_ratio_threshold
            )
            too_unsure = settings.logprob_threshold is not None and result.avg_logprob < settings.logprob_threshold
            silence = (
                settings.no_speech_threshold is not None
                and result.no_speech_prob > settings.no_speech_threshold
                and too_unsure
            )
            if silence or not (too_repetitive or too_unsure):
                break
        assert result is not None
        return result

    def continue_unfinished(self, features: torch.Tensor, result: DecodingResult, seconds: float,
                            loudness: np.ndarray | None) -> list[int]:
        """The window's tokens, continued when the text stops early over audible sound.

        Whisper ends a window's text early (closing timestamp, opening timestamp, end of text)
        when speech runs past the window's end: its ``transcribe`` then re-encodes from that
        timestamp. Windows here are fixed, so the decoder is run again on the same features with
        the tokens so far as a prefix and made to go on; it transcribes the rest of the window.
        """
        tokens = list(result.tokens)
        begin = self.tokenizer.timestamp_begin
        if len(tokens) < 2 or tokens[-1] < begin or tokens[-2] < begin or loudness is None or not len(loudness):
            return tokens
        last = (tokens[-1] - begin) * TIME_PRECISION
        tail = loudness[int(last * 100) : int(seconds * 100)]
        if seconds - last < UNFINISHED_SECONDS or not len(tail) or tail.max() < loudness.max() - AUDIBLE_BELOW_PEAK_DB:
            return tokens
        options = replace(self._options(result.temperature), prefix=tokens[:-1], max_initial_timestamp=None)
        more = decode(self.model, features, options, continue_after=tokens[-1], generator=self._generator)
        settings = self.settings
        if (settings.logprob_threshold is not None and more.avg_logprob < settings.logprob_threshold) or (
                settings.compression_ratio_threshold is not None
                and more.compression_ratio > settings.compression_ratio_threshold):
            return tokens
        added = self._piece_texts(list(more.tokens))
        recent = [s.text for s in self.segments[-1:]] + self._piece_texts(tokens[:-1])  # in time order
        if added and _plain(added[0]) in {_plain(text) for text in recent[-2:]}:
            return tokens  # the continuation repeats what was just said: a loop, not more speech
        return tokens[:-1] + list(more.tokens)

    def _piece_texts(self, tokens: list[int]) -> list[str]:
        return [self.tokenizer.decode([t for t in piece if t < self.tokenizer.eot])
                for _, _, piece in self._split_by_timestamps(tokens, 0.0, WINDOW_SECONDS)]

    def add_window(self, index: int, features: torch.Tensor, frames: int, loudness: np.ndarray | None = None
                   ) -> list[Segment]:
        """Decode window ``index`` (encoded features [1500, D], ``frames`` real mel frames; ``loudness``:
        dBFS of each of its 10 ms frames, which lets an unfinished text be continued)."""
        settings = self.settings
        offset = index * WINDOW_SECONDS
        window_end = offset + frames * HOP_LENGTH / SAMPLE_RATE
        self._generator.manual_seed(settings.seed + index)  # the same audio gives the same transcript
        result = self.decode_with_fallback(features)
        if settings.no_speech_threshold is not None and result.no_speech_prob > settings.no_speech_threshold:
            if settings.logprob_threshold is None or result.avg_logprob <= settings.logprob_threshold:
                return []  # silence: Whisper would only make something up here

        tokens = self.continue_unfinished(features, result, frames * HOP_LENGTH / SAMPLE_RATE, loudness)
        pieces = self._split_by_timestamps(tokens, offset, window_end)
        current = [
            {
                "seek": index * N_FRAMES,
                "start": start,
                "end": end,
                "tokens": tokens,
                "text": self.tokenizer.decode([t for t in tokens if t < self.tokenizer.eot]),
            }
            for start, end, tokens in pieces
        ]
        if settings.word_timestamps and current:
            add_word_timestamps(
                segments=current,
                model=DecoderOnly(self.model),
                tokenizer=self.tokenizer,
                mel=features,
                num_frames=frames,
                last_speech_timestamp=self._last_speech,
            )
            ends = [w["end"] for s in current for w in s["words"]]
            if ends:
                self._last_speech = ends[-1]

        new_segments = []
        for piece in current:
            start, end = min(piece["start"], window_end), min(piece["end"], window_end)
            if end <= start or not piece["text"].strip():
                continue
            words = None
            if settings.word_timestamps:
                words = [
                    Word(start=float(min(w["start"], window_end)), end=float(min(w["end"], window_end)),
                         word=w["word"], probability=float(w["probability"]))
                    for w in piece["words"]
                ]
            new_segments.append(
                Segment(
                    id=len(self.segments) + len(new_segments),
                    seek=piece["seek"],
                    start=round(start, 3),
                    end=round(end, 3),
                    text=piece["text"],
                    tokens=piece["tokens"],
                    temperature=result.temperature,
                    avg_logprob=result.avg_logprob,
                    compression_ratio=result.compression_ratio,
                    no_speech_prob=result.no_speech_prob,
                    words=words,
                )
            )
        self.segments.extend(new_segments)
        self.tokens.extend(t for s in new_segments for t in s.tokens)
        if not settings.condition_on_previous_text or result.temperature > 0.5:
            self._prompt_reset_since = len(self.tokens)  # a high temperature's output is a poor prompt
        return new_segments

    def _split_by_timestamps(self, tokens: list[int], offset: float, window_end: float) -> list[tuple[float, float, list[int]]]:
        """Split a window's tokens at pairs of timestamp tokens, as openai-whisper does.

        Windows are fixed (the encoder ran once per 30 s), so an unfinished last piece is kept
        and ends at the window's end rather than being re-decoded from a later seek point.
        """
        begin = self.tokenizer.timestamp_begin
        pieces: list[tuple[float, float, list[int]]] = []
        piece: list[int] = []
        start: float | None = None
        last_time = offset
        for token in tokens:
            if token < begin:
                if start is None:
                    start = last_time
                piece.append(token)
                continue
            time = offset + (token - begin) * TIME_PRECISION
            last_time = time
            if start is not None and any(t < begin for t in piece):
                pieces.append((start, time, piece + [token]))  # a closing timestamp
                piece, start = [], None
            else:
                piece, start = [token], time  # an opening timestamp
        if start is not None and any(t < begin for t in piece):
            pieces.append((start, window_end, piece))
        return pieces
