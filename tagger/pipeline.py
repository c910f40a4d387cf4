"""Audio in, transcript and time-resolved sound tags out: the public entry point.

The audio is cut into windows of at most 30 s at pauses; each goes through the Whisper encoder
exactly once (``onepass``). The same pass feeds the text decoder (CTranslate2: language detection,
decoding, temperature fallback, word timestamps) and the tagging head.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import torch
from tqdm import tqdm

from . import weights as _weights
from .audio import AudioReader, AudioSource, decode_audio
from .backbone import Backbone
from .decoding import DecodeOptions, Decoder
from .heads import LoadedHead, check_backbone, int8_head, load_head
from .onepass import NO_HEAD_NOTE, AudioJob, run_job
from .results import TagResult, TranscriptionResult
from .stream import StreamJob
from .tagging import TagOptions, steps_per_window
from .weights import ResolvedWeights, load_whisper
from .windows import WindowOptions

log = logging.getLogger(__name__)

AUTO_HEAD = "auto"  # the head bundled for the model when there is one, else none
DEFAULT_TAG_RESOLUTION = 10.0  # seconds; the window length Whisper-AT heads were trained on
DEFAULT_TAGS = TagOptions(DEFAULT_TAG_RESOLUTION)


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
                 encode_batch_size: int = 8, text_decoder=None, decode_batch_size: int = 16,
                 window_options: WindowOptions | None = None):
        self.whisper = whisper_model
        self.weights = weights
        self.backbone = Backbone(whisper_model)
        self.head = head
        self.encode_batch_size = encode_batch_size
        self.decode_batch_size = decode_batch_size
        self.window_options = window_options or WindowOptions()
        self.text_decoder = text_decoder  # ctranslate2.models.Whisper: the decoder side of the same weights
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

    def decoder(self, options: DecodeOptions) -> Decoder:
        """A text decoder for one recording."""
        if self.text_decoder is None:  # a model built by hand: the decoder for its weights, default compute type
            self.text_decoder = _weights.load_ct2_whisper(self.weights, self.device.type, threads=decoder_threads(),
                                                          device_index=self.device.index or 0)
        if options.language not in (None, "en") and not self.is_multilingual:
            raise ValueError(f"{self.name} is English-only; language must be 'en' or None, not {options.language!r}")
        return Decoder(self.text_decoder, options, self.is_multilingual, self.whisper.num_languages)

    def transcribe(
        self,
        audio: AudioSource,
        *,
        language: str | None = None,
        task: str = "transcribe",
        multilingual: bool = False,
        tags: bool = True,
        tag_resolution: float = DEFAULT_TAG_RESOLUTION,
        top_k: int | None = 5,
        threshold: float | None = None,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        word_timestamps: bool = False,
        initial_prompt: str | None = None,
        condition_on_previous_text: bool = False,
        temperature: float | Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        beam_size: int | None = None,
        best_of: int | None = 5,
        compression_ratio_threshold: float | None = 2.4,
        logprob_threshold: float | None = -1.0,
        no_speech_threshold: float | None = 0.6,
        speech_gate: float | None = DecodeOptions.speech_gate,
        seed: int = 0,
        max_duration: float | None = None,
        audio_track: int | None = None,
        progress: bool = False,
        options: DecodeOptions | None = None,
        tag_options: TagOptions | None = None,
    ) -> TranscriptionResult:
        """Transcribe (or translate, ``task="translate"``) and tag, from one encoder pass per window.

        ``audio``: a path, bytes, a binary file object, or float32 16 kHz mono samples.
        Tags need a head (``load_model(..., head=...)``); ``tags=False`` skips them.
        ``multilingual=True`` detects the language of every window rather than once.
        ``condition_on_previous_text=False`` (the default) decodes windows in batches, each without
        the previous window's text as its prompt; True decodes them one after another, each
        prompted with the text so far (as openai-whisper does: slower, sometimes more accurate). ``speech_gate``: segments whose speech
        probability is below it are flagged ``no_speech`` and left out of the text (None: off).
        Sampling is seeded with ``seed`` (plus the window's index), so the same audio and settings
        always give the same result. ``audio_track``: which audio track of a file with several, from 1
        (default: the first with sound; ``result.notes`` says which was used). Silent or too short
        audio gets a note in ``result.notes`` rather than tags. ``options`` / ``tag_options``
        replace the keywords whole.
        """
        options = options or DecodeOptions(
            task=task, language=language, multilingual=multilingual,
            temperature=temperature if isinstance(temperature, (int, float)) else tuple(temperature),
            beam_size=beam_size, best_of=best_of, initial_prompt=initial_prompt,
            condition_on_previous_text=condition_on_previous_text,
            compression_ratio_threshold=compression_ratio_threshold, logprob_threshold=logprob_threshold,
            no_speech_threshold=no_speech_threshold, word_timestamps=word_timestamps, seed=seed,
            speech_gate=speech_gate)
        tag_options = tag_options or TagOptions(tag_resolution, top_k, threshold, include, exclude)
        return self._run(audio, options, tag_options if tags else None, max_duration, audio_track, progress)

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
        audio_track: int | None = None,
        progress: bool = False,
        tag_options: TagOptions | None = None,
    ) -> TagResult:
        """Sound tags only: the decoder never runs. ``top_k=None`` reports every class.
        ``audio_track`` and the notes on silent or too short audio: as in ``transcribe``."""
        if self.head is None:
            raise ValueError(NO_HEAD_NOTE)
        tag_options = tag_options or TagOptions(tag_resolution, top_k, threshold, include, exclude)
        return self._run(audio, None, tag_options, max_duration, audio_track, progress)

    def job(self, audio: AudioSource, options: DecodeOptions | None = None, tags: TagOptions | None = DEFAULT_TAGS,
            max_duration: float | None = None, audio_track: int | None = None) -> AudioJob:
        """Decode the audio and plan its windows; the caller feeds them through the encoder.

        ``options=None`` means tags only, ``tags=None`` no tags. The service uses jobs to batch
        windows of several requests into one encoder call; ``transcribe`` and ``tag`` run one job
        to the end.
        """
        self._check(options, tags)
        decoded = decode_audio(audio, max_duration=max_duration, audio_track=audio_track)
        job = AudioJob(self, decoded.samples, options, tags, self.window_options)
        job.audio_note = decoded.note  # which audio track was used: the result's first note
        return job

    def reader_job(self, audio: AudioSource, options: DecodeOptions | None = None,
                   tags: TagOptions | None = DEFAULT_TAGS, max_duration: float | None = None,
                   audio_track: int | None = None) -> tuple[AudioReader, StreamJob]:
        """``job`` for audio held window by window rather than whole: the same checks, the audio
        opened (its header read, nothing decoded yet) and an empty ``StreamJob``; the caller feeds
        it piece by piece (``StreamJob.feed_from``) as its windows are encoded."""
        self._check(options, tags)
        reader = AudioReader(audio, max_duration=max_duration, audio_track=audio_track)
        return reader, StreamJob(self, options, tags)

    def _check(self, options: DecodeOptions | None, tags: TagOptions | None) -> None:
        """Refuse before decoding any audio: a bad tag resolution, unknown class names, a language
        the model cannot speak."""
        if tags is not None:
            steps_per_window(tags.tag_resolution)
            if self.head is not None:
                tags.candidates(self.head.card.labels)
        if options is not None:
            self.decoder(options)

    def _run(self, audio: AudioSource, options: DecodeOptions | None, tags: TagOptions | None,
             max_duration: float | None, audio_track: int | None, progress: bool) -> TranscriptionResult | TagResult:
        job = self.job(audio, options, tags, max_duration, audio_track)
        with tqdm(total=job.duration, disable=not progress, leave=False,
                  bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]") as bar:
            return run_job(self.backbone, job, self.encode_batch_size, self.decode_batch_size, bar.update)


def decoder_threads() -> int:
    """The text decoder's CPU threads: half of torch's, at least one. It decodes beside the encoder
    (``tagger.onepass.decode_beside``), which keeps every core busy; on two cores, one decoder
    thread made a 10-minute request 0.94 of its time with two (docs/benchmarks.md)."""
    return max(1, torch.get_num_threads() // 2)


def load_model(
    name: str | os.PathLike = "base",
    head: str | os.PathLike | LoadedHead | None = AUTO_HEAD,
    device: str | torch.device | None = None,
    *,
    cache_dir: Path | None = None,
    download: bool | None = None,
    encode_batch_size: int | None = None,
    compute_type: str = "default",
    threads: int | None = None,
) -> EarmarkModel:
    """Load a Whisper model (an official name, a ``.pt`` checkpoint or a CTranslate2 directory)
    and a tagging head: ``"auto"`` (the default) for the head bundled for this model when there is
    one, ``"default"`` for the bundled head (an error when there is none), a path to a head
    checkpoint or an official Whisper-AT ``.pth``, or None (transcripts only, no tags).
    ``compute_type``: the text decoder's CTranslate2 compute type ("default": int8 on a CPU,
    float16 on a GPU); on a CPU an int8 type runs the head's Linear layers in int8 too
    (``int8_head``), a float type keeps it float32; ``threads``: the decoder's CPU threads
    (default: ``decoder_threads()``)."""
    device = torch.device(device or default_device())
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for, but this torch sees no CUDA GPU; use device='cpu'")
    # CTranslate2 decodes: openai-whisper's torch text decoder (base: 210 MB of float32) is never loaded
    whisper_model, weights = load_whisper(name, device, cache_dir=cache_dir, download=download, text_decoder=False)
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
    int8 = _weights.resolved_compute_type(device.type, compute_type).startswith("int8")
    if loaded_head is not None and device.type == "cpu" and int8:
        loaded_head = int8_head(loaded_head)
    if encode_batch_size is None:
        # on a CPU, batching windows makes the encoder slower per window (base: 0.54 s at 1, 0.65 s at 8)
        encode_batch_size = 16 if device.type == "cuda" else 1
    text_decoder = _weights.load_ct2_whisper(weights, device.type, compute_type, threads=threads or decoder_threads(),
                                    device_index=device.index or 0, cache_dir=cache_dir)
    return EarmarkModel(whisper_model, weights, loaded_head, encode_batch_size, text_decoder)
