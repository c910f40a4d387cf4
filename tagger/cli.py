"""The ``earmark`` command line: ``transcribe``, ``tag``, ``serve``, ``extract``, ``train``, ``evaluate``,
``convert-head`` and ``data``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from .audio import AudioError
from .corpus.cli import add_data_arguments, run_data
from .pipeline import DEFAULT_TAG_RESOLUTION, load_model
from .stream_cli import add_stream_arguments, run_stream
from .train.convert import add_convert_head_arguments, run_convert_head
from .train.evaluate import add_evaluate_arguments, run_evaluate
from .train.extract import add_extract_arguments, run_extract
from .train.labelling import add_label_arguments, run_label
from .train.trainer import add_train_arguments, run_train
from .writers import FORMATS, render

# Commands that bring their own model handling: name -> (help, add arguments, run)
TRAINING_COMMANDS = {
    "extract": ("encoder features of a labeled data set, cached for training", add_extract_arguments, run_extract),
    "label": ("a teacher's 527 AudioSet probabilities for each clip and tag window, for distillation",
              add_label_arguments, run_label),
    "train": ("train a tagging head on cached features", add_train_arguments, run_train),
    "evaluate": ("mAP, AUC, d-prime (and k-fold cross-validation) of a head", add_evaluate_arguments, run_evaluate),
    "convert-head": ("convert an official Whisper-AT .pth head to safetensors + card", add_convert_head_arguments,
                     run_convert_head),
    "data": ("build the default corpus and train the default heads", add_data_arguments, run_data),
    "stream": ("live transcript and tags of a file or standard input (-), partial text as it comes",
               add_stream_arguments, run_stream),
}


def top_k_value(text: str) -> int | None:
    if text.lower() in ("all", "none"):
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("--top-k takes a positive number or 'all'")
    return value


def track_value(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("--audio-track counts a file's audio tracks from 1")
    return value


def head_value(text: str) -> str | None:
    return None if text.strip().lower() in ("", "none") else text


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="audio or video files")
    parser.add_argument("--model", default="base", help="Whisper model name, .pt checkpoint or CTranslate2 directory (default: base)")
    parser.add_argument("--head", default="auto", type=head_value,
                        help="tagging head: auto (the model's bundled head, if any), default, none, "
                             "a checkpoint path or an official Whisper-AT .pth (default: auto)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--top-k", type=top_k_value, default=5, help="tags per window, or 'all' (default: 5)")
    parser.add_argument("--threshold", type=float, default=None, help="only tags at least this probable")
    parser.add_argument("--tag-resolution", type=float, default=DEFAULT_TAG_RESOLUTION,
                        help="tag window in seconds, a multiple of 0.4 (default: 10)")
    parser.add_argument("--include", action="append", default=None, help="only this class (mid or name); repeatable")
    parser.add_argument("--exclude", action="append", default=None, help="never this class (mid or name); repeatable")
    parser.add_argument("--output-dir", "-o", type=Path, default=None, help="write FILE_STEM.FORMAT here instead of stdout")
    parser.add_argument("--max-duration", type=float, default=None, help="refuse audio longer than this many seconds")
    parser.add_argument("--audio-track", type=track_value, default=None,
                        help="which audio track of a file with several, from 1 (default: the first with sound)")
    parser.add_argument("--compute-type", default=os.environ.get("EARMARK_COMPUTE_TYPE", "default"),
                        help="the text decoder's CTranslate2 compute type (default: int8 on CPU, float16 on GPU); "
                             "on a CPU an int8 type runs the tagging head's linear layers in int8 too")


def gate_value(text: str) -> float | None:
    if text.strip().lower() in ("none", "off"):
        return None
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"the speech gate is a probability from 0 to 1, or 'none'; not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="earmark", description="Transcripts and sound tags from one Whisper encoder pass.")
    parser.add_argument("--verbose", "-v", action="store_true", help="log where weights come from and more")
    commands = parser.add_subparsers(dest="command", required=True)

    transcribe = commands.add_parser("transcribe", help="transcript (and tags, with --head) of each file")
    add_common(transcribe)
    transcribe.add_argument("--language", default=None, help="spoken language code, e.g. en (default: detect)")
    transcribe.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    transcribe.add_argument("--format", "-f", choices=FORMATS, default="txt")
    transcribe.add_argument("--word-timestamps", action="store_true", help="time every word")
    transcribe.add_argument("--initial-prompt", default=None, help="text to condition the first window on")
    transcribe.add_argument("--beam-size", type=int, default=None, help="beam search width (default: greedy)")
    transcribe.add_argument("--multilingual", action="store_true",
                            help="detect the language of every window (a recording that switches language)")
    transcribe.add_argument("--condition-on-previous-text", action="store_true",
                            help="prompt each window with the text so far and decode windows one after another "
                                 "(default: windows decoded in batches, without that prompt)")
    transcribe.add_argument("--speech-gate", type=gate_value, default=0.5,
                            help="leave out segments whose speech probability is below this; 'none' keeps all (default: 0.5)")

    tag = commands.add_parser("tag", help="sound tags only (the decoder never runs)")
    add_common(tag)
    tag.add_argument("--format", "-f", choices=FORMATS, default="txt")

    serve = commands.add_parser("serve", help="run the HTTP service (settings also from EARMARK_* variables)")
    serve.add_argument("--host", default=None, help="address to listen on (EARMARK_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (EARMARK_PORT, default 8000)")
    serve.add_argument("--model", default=None, help="Whisper model to serve (EARMARK_MODEL)")
    serve.add_argument("--head", default=None, help="tagging head to serve (EARMARK_HEAD)")
    serve.add_argument("--device", default=None, help="cpu or cuda (EARMARK_DEVICE)")

    for name, (description, add_arguments, _) in TRAINING_COMMANDS.items():
        add_arguments(commands.add_parser(name, help=description, description=description))
    return parser


def serve(args: argparse.Namespace) -> int:
    """Start the service. The flags become EARMARK_* settings; the app is found by name, so the
    model package never imports the service package."""
    import uvicorn

    for flag, variable in (("host", "EARMARK_HOST"), ("port", "EARMARK_PORT"), ("model", "EARMARK_MODEL"),
                           ("head", "EARMARK_HEAD"), ("device", "EARMARK_DEVICE")):
        if getattr(args, flag) is not None:
            os.environ[variable] = str(getattr(args, flag))
    host = os.environ.get("EARMARK_HOST", "127.0.0.1")
    port = int(os.environ.get("EARMARK_PORT", "8000"))
    uvicorn.run("service.app:create_app", factory=True, host=host, port=port, log_config=None, http="service.protocol:GuardedH11Protocol")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)  # the service configures its own (JSON) logging
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command in TRAINING_COMMANDS:
        return TRAINING_COMMANDS[args.command][2](args)
    try:
        model = load_model(args.model, head=args.head, device=args.device,
                           compute_type=args.compute_type)
    except (FileNotFoundError, ValueError) as error:
        print(f"earmark: {error}", file=sys.stderr)
        return 2
    if args.command == "tag" and model.head is None:
        print(f"earmark tag: needs a tagging head, and none is bundled for {model.name}; pass --head PATH",
              file=sys.stderr)
        return 2
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)

    failures = 0
    interactive = sys.stderr.isatty()
    for path in tqdm(args.files, unit="file", disable=len(args.files) < 2 or not interactive):
        options = {"tag_resolution": args.tag_resolution, "top_k": args.top_k, "threshold": args.threshold,
                   "include": args.include, "exclude": args.exclude, "max_duration": args.max_duration,
                   "audio_track": args.audio_track, "progress": interactive}
        try:
            if args.command == "tag":
                result = model.tag(path, **options)
            else:
                result = model.transcribe(path, language=args.language, task=args.task, word_timestamps=args.word_timestamps,
                                          initial_prompt=args.initial_prompt, beam_size=args.beam_size,
                                          multilingual=args.multilingual, speech_gate=args.speech_gate,
                                          condition_on_previous_text=args.condition_on_previous_text,
                                          tags=model.head is not None, **options)
        except (AudioError, FileNotFoundError, ValueError) as error:
            print(f"earmark: {path}: {error}", file=sys.stderr)
            failures += 1
            continue
        for note in result.notes:  # which audio track was used, silent or too short audio, no head
            print(f"earmark: {path}: note: {note}", file=sys.stderr)
        text = render(result, args.format)
        if args.output_dir:
            (args.output_dir / f"{path.stem}.{args.format}").write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
