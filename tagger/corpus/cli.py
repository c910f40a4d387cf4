"""``earmark data build-default`` and ``earmark data train-default``: the default corpus and heads."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..heads import HEAD_TYPES

if TYPE_CHECKING:
    from ..train.trainer import TrainConfig


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="data_command", required=True)
    build = commands.add_parser("build-default", help="build the default labeled corpus from Debian packages",
                                description="Download the Debian packages of tagger/corpus/sources.csv into a cache, "
                                            "synthesise speech, music and tones, and render train/dev/test clips.")
    build.add_argument("--out", type=Path, required=True, help="the corpus folder to write")
    build.add_argument("--cache", type=Path, default=None, help="package cache (default: the user cache folder)")
    build.add_argument("--slice", choices=("full", "small"), default="full",
                       help="small: a few small packages and little synthesis, for trying the builder out")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--no-synthesis", action="store_true", help="package recordings only")

    fetch = commands.add_parser("fetch", help="download the packages a corpus build needs into the cache",
                                description="Fetch (and unpack) every package build-default uses, without building.")
    fetch.add_argument("--cache", type=Path, default=None, help="package cache (default: the user cache folder)")
    fetch.add_argument("--slice", choices=("full", "small"), default="full")

    pool = commands.add_parser("build-pool", help="build the distillation pool: every sound of many packages, in pieces",
                               description="Every audio file of the corpus packages and more, plus the synthesised "
                                           "sources, cut into pieces of at most 10 s, with variants and mixtures, "
                                           "split by recording (resumable).")
    pool.add_argument("--out", type=Path, required=True, help="the pool folder to write")
    pool.add_argument("--corpus", type=Path, default=None,
                      help="a folder written by build-default: its recordings keep their splits in the pool")
    pool.add_argument("--cache", type=Path, default=None, help="package cache (default: the user cache folder)")
    pool.add_argument("--seed", type=int, default=0)
    pool.add_argument("--package-minutes", type=float, default=None,
                      help="plain pieces one package gives, at most, in minutes (default: 12; a pool rebuilt with "
                           "another value keeps the pieces both have)")

    distil = commands.add_parser("distil-default", help="distil the AudioSet teacher into 527-class default heads",
                                 description="Label the pool (and the corpus' test split) with the teacher, extract "
                                             "features for each model, train each head type on the teacher's "
                                             "probabilities, measure, and optionally install one type (resumable).")
    distil.add_argument("--pool", type=Path, required=True, help="a folder written by build-pool")
    distil.add_argument("--corpus", type=Path, required=True, help="a folder written by build-default (its test split)")
    distil.add_argument("--work", type=Path, required=True, help="label stores, feature caches, heads, the comparison")
    distil.add_argument("--teacher", type=Path, default=None, help="the teacher's weights (default: the shared file)")
    distil.add_argument("--models", default="tiny.en,base", help="comma-separated Whisper models (default: tiny.en,base)")
    distil.add_argument("--heads", default="tl_tr", help=f"comma-separated head types of {', '.join(HEAD_TYPES)}")
    distil.add_argument("--install", default=None, help="copy this head type's heads into tagger/data/heads")
    distil.add_argument("--steps", type=int, default=3000, help="optimizer steps per head (default: 3000)")
    distil.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    distil.add_argument("--window", type=float, default=10.0, help="training window in seconds (default: 10)")
    distil.add_argument("--hard-weight", type=float, default=0.3,
                        help="weight of the pieces' own labels against the teacher's, where they have them (default: 0.3)")
    distil.add_argument("--teacher-threshold", type=float, default=0.5,
                        help="teacher probability counted as present (default: 0.5)")
    distil.add_argument("--early-stop", type=int, default=None, metavar="N",
                        help="stop after N evaluations without a better dev mAP; 0: never (default: half the "
                             "evaluations, at least 5)")
    distil.add_argument("--by-length", action="store_true",
                        help="train on batches of pieces of about one length, each as long as its longest piece")
    distil.add_argument("--with-corpus", action="store_true",
                        help="train on the labelled corpus' train and dev clips too (their labels mixed with the "
                             "teacher's by --hard-weight)")
    distil.add_argument("--init-heads", type=Path, default=None, metavar="DIR",
                        help="start each student from DIR/MODEL.safetensors where that head is of the same type (the "
                             "corpus-trained heads): its layers, and its output rows for the classes it has")
    distil.add_argument("--corpus-first", type=int, default=None, metavar="EPOCHS",
                        help="without --init-heads: start each student from a head trained first on the corpus' "
                             "own labels alone, a final fit of EPOCHS epochs of train-default's recipe at lr 5e-4 on "
                             "the features already extracted (needs --with-corpus; the corpus-trained heads had 100)")
    distil.add_argument("--bf16", action="store_true", help="train under bfloat16 autocast")
    distil.add_argument("--extract-bf16", action="store_true", help="extract features under bfloat16 autocast")

    train = commands.add_parser("train-default", help="train and compare heads on the default corpus",
                                description="Extract features for each model, train each head type, report test "
                                            "mAP and cost, and optionally install one type as the default heads.")
    train.add_argument("--corpus", type=Path, required=True, help="a folder written by build-default")
    train.add_argument("--work", type=Path, required=True, help="feature caches, trained heads and the comparison")
    train.add_argument("--models", default="tiny.en,base", help="comma-separated Whisper models (default: tiny.en,base)")
    train.add_argument("--heads", default="tl_tr", help=f"comma-separated head types of {', '.join(HEAD_TYPES)}")
    train.add_argument("--install", default=None, help="copy this head type's heads into tagger/data/heads")
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--lr-decay-start", type=int, default=None,
                       help="first epoch after which the lr decays (default: half the epochs)")
    train.add_argument("--lr-decay-every", type=int, default=None,
                       help="epochs between lr decays (default: a sixth of the epochs; 5 for 30, as the reference)")
    train.add_argument("--window", type=float, default=10.0, help="training window in seconds (default: 10)")
    train.add_argument("--lr", type=float, default=None, help="learning rate (default: the trainer's)")
    train.add_argument("--bf16", action="store_true", help="train under bfloat16 autocast")
    train.add_argument("--extract-bf16", action="store_true",
                       help="extract features with the encoder under bfloat16 autocast (about 1.4x faster on "
                            "CPUs with AVX512-BF16 or AMX)")
    train.add_argument("--final-fit", action="store_true",
                       help="train on train + dev together (no dev selection: the average of the last epochs); "
                            "test mAP is still measured on the untouched test split")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe of ``train-default`` (``corpus_config``) with the command's options."""
    from .default_heads import corpus_config

    return corpus_config(args.epochs, args.lr_decay_start, args.lr_decay_every, window=args.window, bf16=args.bf16,
                         **({"lr": args.lr} if args.lr else {}))


def run_data(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.data_command == "fetch":
        from .default_corpus import collect_sources

        collected = collect_sources(args.cache, args.slice)
        print(f"{len(collected.packages)} packages, {len(collected.sources)} sources, in "
              f"{time.perf_counter() - started:.0f} s")
        return 0
    if args.data_command == "build-pool":
        from .pool import PoolConfig, build_default_pool

        report = build_default_pool(args.out, args.cache, args.corpus,
                                    PoolConfig(seed=args.seed, **({} if args.package_minutes is None else
                                                                  {"package_minutes": args.package_minutes})))
        print(f"{len(report.pieces)} pieces, {report.hours():.2f} hours ("
              + ", ".join(f"{s} {report.hours(s):.2f}" for s in ("train", "dev", "test"))
              + f"), in {report.seconds:.0f} s: {args.out / 'POOL.md'}")
        return 0
    if args.data_command == "build-default":
        from .build import BuildConfig
        from .default_corpus import build_default

        report = build_default(args.out, args.cache, args.slice, BuildConfig(seed=args.seed),
                               synthesise=not args.no_synthesis)
        print(f"{len(report.clips)} clips, {len(report.covered)} covered classes, in {report.seconds:.0f} s: "
              f"{args.out / 'CARD.md'}")
        return 0
    if args.data_command == "distil-default":
        from ..train.teacher import DEFAULT_TEACHER
        from .distil import distil_config, distil_defaults

        heads = [h.strip() for h in args.heads.split(",") if h.strip()]
        if any(h not in HEAD_TYPES for h in heads) or (args.install and args.install not in heads):
            print(f"earmark data distil-default: unknown head type in {args.heads!r} or --install", file=sys.stderr)
            return 2
        if args.corpus_first is not None and not (args.with_corpus and args.corpus_first > 0):
            print("earmark data distil-default: --corpus-first trains on the corpus' train and dev features, which "
                  "only --with-corpus extracts; pass --with-corpus and a positive number of epochs", file=sys.stderr)
            return 2
        config = distil_config(args.steps, args.lr, args.early_stop, window=args.window, bf16=args.bf16,
                               hard_weight=args.hard_weight, teacher_threshold=args.teacher_threshold,
                               by_length=args.by_length)
        distil_defaults(args.pool, args.corpus, args.work, args.teacher or DEFAULT_TEACHER,
                        [m.strip() for m in args.models.split(",")], heads, config, args.install,
                        extract_bf16=args.extract_bf16, with_corpus=args.with_corpus, init_heads=args.init_heads,
                        corpus_first=args.corpus_first)
        print(f"done in {time.perf_counter() - started:.0f} s")
        return 0
    from .default_heads import train_defaults

    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    unknown = [h for h in heads if h not in HEAD_TYPES]
    if unknown or (args.install and args.install not in heads):
        print(f"earmark data train-default: unknown head type {unknown or args.install}", file=sys.stderr)
        return 2
    models = [m.strip() for m in args.models.split(",")]
    train_defaults(args.corpus, args.work, models, heads, train_config(args), args.install,
                   extract_bf16=args.extract_bf16, final_fit=args.final_fit)
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0
