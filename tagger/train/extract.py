"""``earmark extract``: encoder features of a labeled data set into a feature cache.

    earmark extract --data train.csv --model base --out feats/train
    torchrun --nproc-per-node 2 -m tagger.cli extract --data train.csv --model base --out feats/train

Also runnable as ``python -m tagger.train.extract ...`` (same arguments).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import distributed
from .datasets import FORMATS, DatasetError, default_multi_label, load_dataset, problem_summary, resolve_labels
from .features import CacheMismatchError, extract_features

log = logging.getLogger(__name__)

SHOWN_PROBLEMS = 20
DISTRIBUTED_TIMEOUT_S = 6 * 3600.0  # ranks wait this long for the slowest one at the final barrier


def add_extract_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path,
                        help="a CSV (path,labels[,fold]), an AudioSet segments CSV, an UrbanSound8K or ESC-50 metadata "
                             "CSV, a Whisper-AT/AST JSON, or a folder with one subfolder per class")
    parser.add_argument("--out", required=True, type=Path, help="the feature cache directory (created, or resumed)")
    parser.add_argument("--model", default="base", help="Whisper model name, .pt checkpoint or CTranslate2 directory (default: base)")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="data format (default: from the path)")
    parser.add_argument("--audio-dir", type=Path, default=None,
                        help="AudioSet: the folder of audio files named by YTID (default: the CSV's folder); "
                             "UrbanSound8K / ESC-50: the audio folder (default: ../audio, audio or the CSV's folder)")
    parser.add_argument("--labels", default="auto",
                        help="audioset, data, or a label file (CSV with mid,display_name); default: audioset when every "
                             "label is an AudioSet class, else the data's own labels")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--multi-label", dest="multi_label", action="store_true", default=None,
                      help="sigmoid per class (default unless every clip has one label of a custom set)")
    mode.add_argument("--single-label", dest="multi_label", action="store_false",
                      help="softmax over classes: one label per clip")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="30 s windows per encoder call (default: 16 on a GPU, 1 on a CPU, where batching is slower)")
    parser.add_argument("--shard-clips", type=int, default=2048, help="clips per shard file (default: 2048)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available; "
                                                      "under torchrun cuda:LOCAL_RANK)")
    parser.add_argument("--max-duration", type=float, default=None,
                        help="keep at most the first this many seconds of each clip (default: all of it)")
    parser.add_argument("--bf16", action="store_true",
                        help="run the encoder under bfloat16 autocast: about 1.4x faster on CPUs with AVX512-BF16 "
                             "or AMX; features differ from the float32 serving path by about 1 %%")
    parser.add_argument("--pack", action="store_true",
                        help="short clips share 30 s encoder windows, each on the 0.4 s grid: extraction then costs "
                             "what the hours of audio cost, not what the number of clips does (for many short clips)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _print_problems(title: str, problems: list[tuple[str, str]], noun: str = "row") -> None:
    """The count per reason, then the first rows with their reasons."""
    if not problems:
        return
    print(f"earmark extract: {title}: {len(problems)}", file=sys.stderr)
    print(problem_summary(problems, shown=SHOWN_PROBLEMS, noun=noun), file=sys.stderr)


def run_extract(args: argparse.Namespace) -> int:
    """Run ``earmark extract``; 0 on success (skipped clips are reported, not fatal), 2 on bad input."""
    from ..pipeline import load_model

    rank, world = distributed.init_distributed(timeout_s=DISTRIBUTED_TIMEOUT_S)
    main = rank == 0
    try:
        if (args.batch_size is not None and args.batch_size < 1) or args.shard_clips < 1:
            raise ValueError("--batch-size and --shard-clips must be at least 1")
        if args.max_duration is not None and not args.max_duration > 0:
            raise ValueError("--max-duration must be a positive number of seconds")
        dataset = load_dataset(args.data, args.format, audio_dir=args.audio_dir)
        if not dataset.clips:
            raise DatasetError(f"{args.data}: no usable clips" + (
                f"; every row ({len(dataset.problems)}) was left out:\n{problem_summary(dataset.problems)}"
                if dataset.problems else f" ({dataset.format} format: no rows)"))
        labels = resolve_labels(dataset.clips, args.labels)
        multi_label = args.multi_label if args.multi_label is not None else default_multi_label(dataset.clips, labels)
    except (FileNotFoundError, DatasetError, ValueError) as error:
        if main:
            print(f"earmark extract: {error}", file=sys.stderr)
        distributed.cleanup()
        return 2
    if main:
        _print_problems("rows left out of the data set", dataset.problems)
        print(f"earmark extract: {len(dataset.clips)} clips ({dataset.format}), {len(labels)} classes "
              f"({labels.name}), {'multi' if multi_label else 'single'}-label, {world} process(es)", file=sys.stderr)
        if dataset.fold_names:
            print("earmark extract: folds " + ", ".join(f"{name!r} -> {number}" for number, name
                                                        in sorted(dataset.fold_names.items())), file=sys.stderr)

    device = args.device
    if device is None and world > 1:
        device = distributed.local_device()
    try:
        # rank 0 first: a first load may convert weights into the cache; the others then find them there
        if main:
            model = load_model(args.model, head=None, device=device, encode_batch_size=args.batch_size)
        distributed.barrier()
        if not main:
            model = load_model(args.model, head=None, device=device, encode_batch_size=args.batch_size)
    except (FileNotFoundError, ValueError) as error:
        print(f"earmark extract: {error}", file=sys.stderr)
        distributed.cleanup()
        return 2

    try:
        report = extract_features(model, dataset.clips, args.out, labels, multi_label, batch_size=args.batch_size,
                                  shard_clips=args.shard_clips, max_duration=args.max_duration, bf16=args.bf16,
                                  pack=args.pack,
                                  progress=args.progress and sys.stderr.isatty())
    except CacheMismatchError as error:
        if main:
            print(f"earmark extract: {error}", file=sys.stderr)
        distributed.cleanup()
        return 2
    if main:
        _print_problems("clips skipped", report.skipped, noun="clip")
        print(f"earmark extract: {report.n_done} clips extracted, {report.n_cached} already cached, "
              f"{report.n_skipped} skipped; {report.audio_seconds:.1f} s of audio in {report.wall_seconds:.1f} s "
              f"(real-time factor {report.real_time_factor:.1f}x) -> {args.out}", file=sys.stderr)
    distributed.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="earmark extract", description="Extract encoder features for head training.")
    add_extract_arguments(parser)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_extract(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
