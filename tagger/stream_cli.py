"""``earmark stream FILE|-``: live transcript and sound tags of a file or of standard input.

Final segments go to standard output as they become final (with their tags), partial text to
standard error (overwritten in place on a terminal). ``-`` reads raw PCM (``--input-format``
s16le or f32le, ``--sample-rate``, ``--channels``) or any container PyAV reads front to back, so
``ffmpeg -i URL -f s16le -ac 1 -ar 16000 - | earmark stream -`` transcribes a live source.
``--realtime`` paces a file at real speed, as if it were live.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from .audio import AudioError, _Mono16k, _sanitise
from .decoding import DecodeOptions
from .results import Segment, TagResult, TagWindow
from .stream import AudioFormat, Partial, PcmDecoder, paced, stream_transcribe
from .tagging import TagOptions

READ_BYTES = 8192  # stdin is read in pieces this big (a quarter second of 16 kHz s16 mono)
CONTAINER_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"\x1a\x45\xdf\xa3", b"caff", b"FORM", b"#!AMR", b"MThd")


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="an audio or video file, or - for standard input (raw PCM or a container)")
    parser.add_argument("--model", default="base", help="Whisper model name, .pt checkpoint or CTranslate2 directory")
    parser.add_argument("--head", default="auto", help="tagging head: auto, default, none or a checkpoint path")
    parser.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    parser.add_argument("--language", default=None, help="spoken language code (default: detect)")
    parser.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    parser.add_argument("--no-tags", action="store_true", help="transcript only")
    parser.add_argument("--top-k", type=int, default=3, help="tags shown per segment (default: 3)")
    parser.add_argument("--tag-resolution", type=float, default=10.0, help="tag window in seconds (default: 10)")
    parser.add_argument("--no-partials", action="store_true", help="final segments only")
    parser.add_argument("--realtime", action="store_true", help="read the input no faster than real time")
    parser.add_argument("--input-format", choices=("auto", "s16le", "f32le", "container"), default="auto",
                        help="what standard input holds (default: a container when its first bytes say so, "
                             "else raw s16le)")
    parser.add_argument("--sample-rate", type=int, default=16000, help="raw PCM's sample rate (default: 16000)")
    parser.add_argument("--channels", type=int, default=1, help="raw PCM's channels (default: 1)")


def container_chunks(source: str | BinaryIO) -> Iterator[np.ndarray]:
    """16 kHz mono float32 chunks of a container, decoded as it is read."""
    with av.open(source, mode="r", metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise ValueError("there is no audio in the input")
        converter = _Mono16k()
        for packet in container.demux(container.streams.audio[0]):
            for frame in packet.decode():
                for chunk in converter.push(frame):
                    yield _sanitise(chunk.copy())
        for chunk in converter.flush():
            yield _sanitise(chunk.copy())


class _Prefixed:
    """Standard input with its first bytes (read to sniff the format) put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self.head, self.rest = head, rest

    def read(self, size: int = -1) -> bytes:
        if self.head:
            out, self.head = (self.head, b"") if size < 0 or size >= len(self.head) else \
                (self.head[:size], self.head[size:])
            return out
        return self.rest.read(size) if size >= 0 else self.rest.read()


def stdin_chunks(args: argparse.Namespace) -> Iterator[np.ndarray]:
    stdin = sys.stdin.buffer
    head = stdin.read(12)
    kind = args.input_format
    if kind == "auto":
        is_mp4 = head[4:8] == b"ftyp"
        kind = "container" if head.startswith(CONTAINER_MAGIC) or is_mp4 else "s16le"
    if kind == "container":
        yield from container_chunks(_Prefixed(head, stdin))
        return
    decoder = PcmDecoder(AudioFormat("pcm_" + kind, args.sample_rate, args.channels))
    data = head
    while True:
        if data:
            yield decoder.push(data)
        data = stdin.read1(READ_BYTES) if hasattr(stdin, "read1") else stdin.read(READ_BYTES)
        if not data:
            break
    yield decoder.flush()


def clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes):02d}:{rest:05.2f}"


def run_stream(args: argparse.Namespace) -> int:
    from .pipeline import load_model

    try:
        model = load_model(args.model, head=None if args.head.lower() == "none" else args.head, device=args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"earmark stream: {error}", file=sys.stderr)
        return 2
    options = DecodeOptions(task=args.task, language=args.language)
    tags = None if args.no_tags or model.head is None else TagOptions(args.tag_resolution, top_k=args.top_k)
    if args.file == "-":
        chunks = stdin_chunks(args)
    else:
        path = Path(args.file)
        if not path.is_file():
            print(f"earmark stream: no such file: {path}", file=sys.stderr)
            return 2
        chunks = container_chunks(str(path))
    if args.realtime:
        chunks = paced(chunks)
    try:
        return show(stream_transcribe(model, chunks, options, tags, partials=not args.no_partials))
    except (AudioError, av.error.FFmpegError, ValueError) as error:
        print(f"earmark stream: {args.file}: {error}", file=sys.stderr)
        return 1


def show(events) -> int:
    """Partials on standard error, final segments on standard output, as they come."""
    terminal = sys.stderr.isatty()
    shown = False
    for event in events:
        if isinstance(event, Partial):
            if terminal:
                sys.stderr.write(f"\r\x1b[K~ {event.text.strip()[-150:]}")
                shown = True
            else:
                sys.stderr.write(f"~ [{clock(event.start)} --> {clock(event.end)}] {event.text.strip()}\n")
            sys.stderr.flush()
        elif isinstance(event, Segment):
            if shown:
                sys.stderr.write("\r\x1b[K")
                shown = False
            if event.no_speech:
                continue
            labels = ", ".join(f"{t.name} {t.probability:.2f}" for t in event.tags)
            print(f"[{clock(event.start)} --> {clock(event.end)}] {event.text.strip()}" + (f"  ({labels})" if labels
                                                                                         else ""), flush=True)
        elif isinstance(event, (TagWindow, TagResult)):
            continue
    if shown:
        sys.stderr.write("\r\x1b[K")
    return 0
