"""Earmark: transcripts and AudioSet sound tags from one pass of a frozen Whisper encoder."""

from .audio import AudioError, load_audio
from .decoding import DecodeOptions, Share, decode_together
from .onepass import AudioJob, Slice, encode_step
from .pipeline import EarmarkModel, load_model
from .results import Segment, TagLabel, TagResult, TagWindow, TranscriptionResult, Word
from .tagging import TagOptions
from .windows import WindowOptions

__all__ = [
    "AudioError",
    "AudioJob",
    "DecodeOptions",
    "EarmarkModel",
    "Segment",
    "Share",
    "Slice",
    "TagLabel",
    "TagOptions",
    "TagResult",
    "TagWindow",
    "TranscriptionResult",
    "WindowOptions",
    "Word",
    "decode_together",
    "encode_step",
    "load_audio",
    "load_model",
]
__version__ = "0.1.0"
