"""Earmark: transcripts and AudioSet sound tags from one pass of a frozen Whisper encoder."""

from .audio import SAMPLE_RATE, AudioError, AudioTooLongError, EmptyAudioError, UndecodableAudioError, load_audio
from .decoding import DecodeOptions, Share, decode_together
from .labels import LabelSet
from .onepass import AudioJob, Slice, encode_step
from .pipeline import EarmarkModel, load_model
from .results import Segment, SoundEvent, TagLabel, TagResult, TagWindow, TranscriptionResult, Word
from .tagging import TagOptions, steps_per_window
from .windows import WindowOptions
from .writers import render

__all__ = [
    "SAMPLE_RATE",
    "AudioError",
    "AudioTooLongError",
    "AudioJob",
    "DecodeOptions",
    "EarmarkModel",
    "EmptyAudioError",
    "LabelSet",
    "Segment",
    "Share",
    "Slice",
    "SoundEvent",
    "TagLabel",
    "TagOptions",
    "TagResult",
    "TagWindow",
    "TranscriptionResult",
    "UndecodableAudioError",
    "WindowOptions",
    "Word",
    "decode_together",
    "encode_step",
    "load_audio",
    "load_model",
    "render",
    "steps_per_window",
]
__version__ = "0.1.0"
