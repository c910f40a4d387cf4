"""Earmark: transcripts and AudioSet sound tags from one pass of a frozen Whisper encoder."""

from .audio import (
    SAMPLE_RATE,
    AudioError,
    AudioTooLongError,
    AudioTrackError,
    DecodedAudio,
    EmptyAudioError,
    UndecodableAudioError,
    decode_audio,
    load_audio,
)
from .decoding import DecodeOptions, Share, decode_together
from .labels import LabelSet
from .onepass import AudioJob, Slice, encode_step
from .pipeline import EarmarkModel, load_model
from .results import Segment, SoundEvent, TagLabel, TagResult, TagWindow, TranscriptionResult, Word
from .stream import AudioFormat, ContainerDecoder, Partial, PcmDecoder, StreamJob, partial_of, stream_transcribe
from .tagging import TagOptions, steps_per_window
from .windows import WindowOptions
from .writers import render

__all__ = [
    "SAMPLE_RATE",
    "AudioError",
    "AudioFormat",
    "AudioJob",
    "AudioTooLongError",
    "AudioTrackError",
    "ContainerDecoder",
    "DecodeOptions",
    "DecodedAudio",
    "EarmarkModel",
    "EmptyAudioError",
    "LabelSet",
    "Partial",
    "PcmDecoder",
    "Segment",
    "Share",
    "Slice",
    "SoundEvent",
    "StreamJob",
    "TagLabel",
    "TagOptions",
    "TagResult",
    "TagWindow",
    "TranscriptionResult",
    "UndecodableAudioError",
    "WindowOptions",
    "Word",
    "decode_audio",
    "decode_together",
    "encode_step",
    "load_audio",
    "load_model",
    "partial_of",
    "render",
    "steps_per_window",
    "stream_transcribe",
]
__version__ = "0.1.0"
