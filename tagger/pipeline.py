"""Audio in, transcript and time-resolved sound tags out: the public entry point.

The audio is cut into 30 s windows; each goes through the Whisper encoder exactly once, in
batches. The same pass feeds the decoder (language detection, decoding, temperature fallback,
word timestamps) and the tagging head.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from whisper.audio import HOP_LENGTH, N_FRAMES

from .audio import SAMPLE_RATE, AudioSource, EmptyAudioError, load_audio
from .backbone import Backbone, Encoded, log_mel
from .decoding import DecodeSettings, WindowDecoder, detect_language_from_features
from .heads import LoadedHead, check_backbone, load_head
from .results import TagResult, TagWindow, TranscriptionResult
from .tagging import LabelFilter, TagStream, steps_per_window, tag_segments, tag_windows
from .weights import ResolvedWeights, load_whisper

log = logging.getLogger(__name__)

NO_HEAD_NOTE = "no tagging head is loaded, so there are no sound tags; load one with load_model(..., head=PATH)"
AUTO_HEAD = "auto"  # the head bundled for the model when there is one, else none
DEFAULT_TAG_RESOLUTION = 10.0  # seconds; the window length Whisper-AT heads were trained on
SILENCE_DBFS = -60.0  # a window whose loudest 10 ms is quieter than this is not decoded


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def bundled_head_path(model_name: str) -> Path | None:
    """The default head shipped in the package for this Whisper model, if there is one."""
    path = resources.files("tagger") / "data" / "heads" / f"{model_name}.safetensors"
    return Path(str(path)) if path.is_file() else None


def bundled_heads() -> list[str]:
    """The Whisper models that have a default head in the package."""
    folder = resources.files("tagger") / "data" / "heads"
    return sorted(p.name[: -len(".safetensors")] for p in folder.iterdir()
                  if p.name.endswith(".safetensors")) if folder.is_dir() else []


class EarmarkModel:
    """A frozen Whisper model with an optional tagging head. Create it with ``load_model``."""

    def __init__(self, whisper_model, weights: ResolvedWeights, head: LoadedHead | None = None,
                 encode_batch_size: int = 8):
        self.whisper = whisper_model
        self.weights = weights
        self.backbone = Backbone(whisper_model)
        self.head = head
        self.encode_batch_size = encode_batch_size
        if head is not None:
            check_backbone(head.card, self.backbone.n_layers, self.backbone.d_model, self.backbone.sha256)

    @property
    def name(self) -> str:
        return self.weights.name

    @property
    def device(self) -> torch.device:
        return self.whisper.device

    @property
    def is_multilingual(self) -> bool:
        return self.whisper.is_multilingual

    @property
    def head_name(self) -> str | None:
        return None if self.head is None else (self.head.card.source or self.head.card.head_type)

    def transcribe(
        self,
        audio: AudioSource,
        *,
        language: str | None = None,
        task: str = "transcribe",
        tags: bool = True,
        tag_resolution: float = DEFAULT_TAG_RESOLUTION,
        top_k: int | None = 5,
        threshold: float | None = None,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        word_timestamps: bool = False,
        initial_prompt: str | None = None,
        condition_on_previous_text: bool = True,
        temperature: float | Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        beam_size: int | None = None,
        best_of: int | None = 5,
        compression_ratio_threshold: float | None = 2.4,
        logprob_threshold: float | None = -1.0,
        no_speech_threshold: float | None = 0.6,
        seed: int = 0,
        max_duration: float | None = None,
        progress: bool = False,
    ) -> TranscriptionResult:
        """Transcribe (or translate, ``task="translate"``) and tag, from one encoder pass per 30 s window.

        ``audio``: a path, bytes, a binary file object, or float32 16 kHz mono samples.
        Tags need a head (``load_model(..., head=...)``); ``tags=False`` skips them. Temperature
        fallback samples from a generator seeded with ``seed`` (plus the window's index), so the same
        audio and settings always give the same result.
        """
        if task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', not {task!r}")
        settings = DecodeSettings(
            task=task, language=language, temperature=temperature, beam_size=beam_size, best_of=best_of,
            initial_prompt=initial_prompt, condition_on_previous_text=condition_on_previous_text,
            compression_ratio_threshold=compression_ratio_threshold, logprob_threshold=logprob_threshold,
            no_speech_threshold=no_speech_threshold, word_timestamps=word_timestamps, seed=seed,
        )
        chosen = LabelFilter(top_k=top_k, threshold=threshold, include=include, exclude=exclude)
        return self._run(audio, settings, tags, tag_resolution, chosen, max_duration, progress)

    def tag(
        self,
        audio: AudioSource,
        *,
        tag_resolution: float = DEFAULT_TAG_RESOLUTION,
        top_k: int | None = 5,
        threshold: float | None = None,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        max_duration: float | None = None,
        progress: bool = False,
    ) -> TagResult:
        """Sound tags only: the decoder never runs. ``top_k=None`` reports every class."""
        if self.head is None:
            raise ValueError(NO_HEAD_NOTE)
        chosen = LabelFilter(top_k=top_k, threshold=threshold, include=include, exclude=exclude)
        return self._run(audio, None, True, tag_resolution, chosen, max_duration, progress)

    def job(self, audio: AudioSource, settings: DecodeSettings | None = None, tags: bool = True,
            tag_resolution: float = DEFAULT_TAG_RESOLUTION, chosen: LabelFilter | None = None,
            max_duration: float | None = None) -> AudioJob:
        """Decode the audio and prepare its windows; the caller feeds them through the encoder.

        ``settings=None`` means tags only. The service uses jobs to batch windows of several
        requests into one encoder call; ``transcribe`` and ``tag`` run one job to the end.
        """
        chosen = chosen or LabelFilter()
        steps_per_window(tag_resolution)  # refuse a bad resolution before decoding any audio
        if tags and self.head is not None:
            chosen.candidates(self.head.card.labels)  # and unknown class names
        return AudioJob(self, load_audio(audio, max_duration=max_duration), settings, tags, tag_resolution, chosen)

    def _run(self, audio: AudioSource, settings: DecodeSettings | None, want_tags: bool, tag_resolution: float,
             chosen: LabelFilter, max_duration: float | None, progress: bool) -> TranscriptionResult | TagResult:
        job = self.job(audio, settings, want_tags, tag_resolution, chosen, max_duration)
        with tqdm(total=job.n_windows, unit="window", disable=not progress, leave=False) as bar:
            while not job.encoded_all:
                first = job.next_window
                last = min(job.n_windows, first + self.encode_batch_size)
                job.accept(first, self.backbone.encode(job.windows(first, last)))
                bar.update(last - first)
        return job.result()


def frame_loudness(samples: np.ndarray) -> np.ndarray:
    """dBFS (RMS) of every 10 ms mel frame of the audio."""
    frames = samples[: len(samples) // HOP_LENGTH * HOP_LENGTH].reshape(-1, HOP_LENGTH)
    power = np.mean(np.square(frames, dtype=np.float64), axis=1)
    return 10 * np.log10(np.maximum(power, 1e-20))


class AudioJob:
    """One request's way through the model: its mel windows go through the encoder in order
    (alone or batched with other jobs' windows), and each encoded batch is decoded and tagged."""

    def __init__(self, model: EarmarkModel, samples: np.ndarray, settings: DecodeSettings | None, want_tags: bool,
                 tag_resolution: float, chosen: LabelFilter):
        if len(samples) < HOP_LENGTH:
            raise EmptyAudioError(f"the audio is {len(samples) / SAMPLE_RATE * 1000:.1f} ms long, shorter than one 10 ms frame")
        self.model = model
        self.settings = settings
        self.chosen = chosen
        self.tag_resolution = tag_resolution
        self.duration = round(len(samples) / SAMPLE_RATE, 3)
        self.mel = log_mel(torch.from_numpy(samples), model.whisper.dims.n_mels, model.device)
        self.loudness = frame_loudness(samples)
        self.silent = [not np.any(self.window_loudness(i) >= SILENCE_DBFS) for i in range(self.mel.n_windows)]
        head = model.head
        self.stream = TagStream(head, tag_resolution, self.mel.content_frames, self.duration) if want_tags and head else None
        self.decoder: WindowDecoder | None = None
        self.next_window = 0

    @property
    def n_windows(self) -> int:
        return self.mel.n_windows

    def window_loudness(self, index: int) -> np.ndarray:
        return self.loudness[index * N_FRAMES : (index + 1) * N_FRAMES]

    @property
    def encoded_all(self) -> bool:
        return self.next_window >= self.n_windows

    def windows(self, first: int, last: int) -> torch.Tensor:
        return self.mel.windows(first, last)

    def accept(self, first: int, encoded: Encoded) -> None:
        """Take the encoder's output for windows ``first``, ``first + 1``, ... (in order)."""
        if first != self.next_window:
            raise ValueError(f"window {first} arrived, expected {self.next_window}")
        if self.stream is not None:
            self.stream.add(encoded.pooled)
        if self.settings is not None:
            if self.decoder is None:
                # the language of the first window with sound in it
                audible = [i for i in range(len(encoded.features)) if not self.silent[first + i]] or [0]
                language = self.settings.language or detect_language_from_features(
                    self.model.whisper, encoded.features[audible[0]])[0]
                self.decoder = WindowDecoder(self.model.whisper, self.settings, language)
            for offset, features in enumerate(encoded.features):
                index = first + offset
                if not self.silent[index]:  # Whisper makes words up in digital silence ("you")
                    self.decoder.add_window(index, features, self.mel.frames_in(index), self.window_loudness(index))
        self.next_window = first + len(encoded.features)

    def result(self) -> TranscriptionResult | TagResult:
        """The finished result, once every window went through ``accept``."""
        if not self.encoded_all:
            raise RuntimeError("the job still has windows to encode")
        notes: list[str] = []
        head = self.model.head
        labels = head.card.labels if head is not None else None
        bounds: list[tuple[float, float]] = []
        windows: list[TagWindow] = []
        if self.stream is not None and labels is not None:
            scores = self.stream.finish()
            bounds = [self.stream.window_bounds(i) for i in range(len(scores))]
            windows = tag_windows(scores, bounds, labels, self.chosen)
        else:
            scores = np.zeros((0, len(labels) if labels else 0), np.float32)
            notes.append(NO_HEAD_NOTE if head is None else "tags were not requested")
        common = dict(duration=self.duration, tags=windows, scores=scores, tag_resolution=self.tag_resolution,
                      head=self.model.head_name if self.stream is not None else None,
                      labels=list(labels.mids) if labels else [], notes=notes)
        if self.settings is None:
            return TagResult(**common)
        assert self.decoder is not None
        if labels is not None and self.stream is not None:
            tag_segments(self.decoder.segments, scores, bounds, labels, self.chosen)
        return TranscriptionResult(**common, text=self.decoder.text, language=self.decoder.language,
                                   task=self.settings.task, segments=self.decoder.segments)


def load_model(
    name: str | os.PathLike = "base",
    head: str | os.PathLike | LoadedHead | None = AUTO_HEAD,
    device: str | torch.device | None = None,
    *,
    cache_dir: Path | None = None,
    download: bool | None = None,
    encode_batch_size: int | None = None,
) -> EarmarkModel:
    """Load a Whisper model (an official name, a ``.pt`` checkpoint or a CTranslate2 directory)
    and a tagging head: ``"auto"`` (the default) for the head bundled for this model when there is
    one, ``"default"`` for the bundled head (an error when there is none), a path to a head
    checkpoint or an official Whisper-AT ``.pth``, or None (transcripts only, no tags)."""
    device = torch.device(device or default_device())
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for, but this torch sees no CUDA GPU; use device='cpu'")
    whisper_model, weights = load_whisper(name, device, cache_dir=cache_dir, download=download)
    loaded_head: LoadedHead | None
    if head is None or isinstance(head, LoadedHead):
        loaded_head = head
    elif str(head) in (AUTO_HEAD, "default"):
        path = bundled_head_path(weights.name)
        if path is None and str(head) == "default":
            raise FileNotFoundError(f"no default head is bundled for {weights.name!r} (there are heads for "
                                    f"{', '.join(bundled_heads()) or 'no model'}); pass a head checkpoint path")
        loaded_head = None if path is None else load_head(path, device=device)
    else:
        loaded_head = load_head(head, device=device, n_layers=whisper_model.dims.n_audio_layer)
    if encode_batch_size is None:
        # on a CPU, batching windows makes the encoder slower per window (base: 0.54 s at 1, 0.65 s at 8)
        encode_batch_size = 16 if device.type == "cuda" else 1
    return EarmarkModel(whisper_model, weights, loaded_head, encode_batch_size)
