"""Earmark: transcripts and AudioSet sound tags from one pass of a frozen Whisper encoder."""

import os

# OpenMP threads that spin while they wait (the default of torch's and CTranslate2's runtimes) steal
# the CPU from the process's other threads, and the service runs the encoder and the text decoder on
# two threads at once: on a busy 2-core machine a 20 s upload took 16 s and 165 s to transcribe with
# spinning, 5.0 s and 6.7 s with passive waiting (offline transcribe: no slower). Set before torch
# loads; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KMP_BLOCKTIME", "0")

from .audio import (
    SAMPLE_RATE,
    AudioError,
    AudioReader,
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
    "AudioReader",
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
