"""Earmark: transcripts and AudioSet sound tags from one pass of a frozen Whisper encoder."""

from .audio import AudioError, load_audio
from .pipeline import EarmarkModel, load_model
from .results import Segment, TagLabel, TagResult, TagWindow, TranscriptionResult, Word

__all__ = [
    "AudioError",
    "EarmarkModel",
    "Segment",
    "TagLabel",
    "TagResult",
    "TagWindow",
    "TranscriptionResult",
    "Word",
    "load_audio",
    "load_model",
]
__version__ = "0.1.0"
