"""Where the text decoder's time goes on one bench input: the time inside CTranslate2's
``generate``, split into first decodings and continuations (a window whose text ended early,
decoded again from its last timestamp), for continuation prompts of several lengths
(``tagger.decoding.CONTEXT_TOKENS``), with the WER of each; also the time inside the encoder and
the tagging head. ``--beside on,off`` compares decoding on a second thread beside the encoder (the
library's ``run_job``) with encoding and decoding in turn on one thread; ``--plan first,beside``
compares planning every window before the first encoding with planning them on the decoding thread
while the encoder runs (the library's way). Settings alternate round
by round in one process; with decoding beside the encoder the parts overlap, so they add up to more
than the request.

Run: .venv/bin/python bench/bench_decode_calls.py --model base --context 10000,32 [--runs 2]
     [--decode-batch 16] [--beside on,off] [--plan beside,first] [--timeline]
Inputs come from bench/bench_inputs.py (the packages source, with transcripts).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch
from bench_inputs import packages_input
from bench_suite import word_error_rate

from tagger import decoding, load_audio, load_model, onepass, pipeline
from tagger.backbone import Backbone
from tagger.heads import LoadedHead


def timed(totals: dict, key, function, calls: list | None = None):
    """``function`` with its time added to ``totals[key(...)]``; each call's (kind, start, end) in ``calls``."""
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            ended = time.perf_counter()
            totals[key(*args, **kwargs)] += ended - started
            if calls is not None:
                calls.append((key(*args, **kwargs), started, ended))
    return wrapper


def in_turn(backbone, job, batch_size, decode_batch=8, progress=None):
    """``run_job`` on one thread: each encoded window is decoded once ``decode_batch`` of them wait."""
    if job.options is None or not job.options.batched:
        decode_batch = 1
    while not job.encoded_all:
        job.take(job.next_window, onepass._encode_next(backbone, job, batch_size, progress))
        while job.undecoded >= decode_batch or (job.encoded_all and job.undecoded):
            job.decode(limit=decode_batch)
    return job.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--input", default="600s")
    parser.add_argument("--context", default="10000,32", help="comma-separated CONTEXT_TOKENS values")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--decode-batch", type=int, default=None, help="windows per decoder call (default: the model's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeline", action="store_true",
                        help="print when each encoder and decoder call of each setting's last request began and ended")
    parser.add_argument("--beside", default="on", help="comma-separated: on (decode beside the encoder), off (in turn)")
    parser.add_argument("--plan", default="beside",
                        help="comma-separated: beside (windows planned as the encoder goes, on the decoding thread when "
                             "decoding beside it), first (all before the first encoding)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path, reference = packages_input(args.input)
    audio = load_audio(path)
    model = load_model(args.model, device="cpu")
    if args.decode_batch:
        model.decode_batch_size = args.decode_batch
    model.transcribe(audio[:16000 * 5], language="en")  # warm-up
    totals: dict = defaultdict(float)
    calls: list[tuple[str, float, float]] = []
    decoding.Decoder._generate = timed(totals, lambda *a, go_on=False, **k: "continuations" if go_on else "first decodings",
                                       decoding.Decoder._generate, calls)
    LoadedHead.probabilities = timed(totals, lambda *a, **k: "head", LoadedHead.probabilities)
    Backbone.encode = timed(totals, lambda *a, **k: "encoder", Backbone.encode, calls)
    onepass.plan_next = timed(totals, lambda *a, **k: "planning", onepass.plan_next, calls)
    timelines: dict[tuple, str] = {}
    settings = [(int(c), b, p) for c in args.context.split(",") for b in args.beside.split(",")
                for p in args.plan.split(",")]
    runners = {"on": pipeline.run_job, "off": in_turn}

    def planned_first(runner):
        def run(backbone, job, *args, **kwargs):
            job.plan_ahead()
            return runner(backbone, job, *args, **kwargs)
        return run
    rows: dict[tuple, list[dict]] = {setting: [] for setting in settings}
    wers: dict[tuple, float] = {}
    for _ in range(args.runs):
        for setting in settings:
            decoding.CONTEXT_TOKENS, beside, plan = setting
            pipeline.run_job = runners[beside] if plan == "beside" else planned_first(runners[beside])
            totals.clear()
            calls.clear()
            started = time.perf_counter()
            result = model.transcribe(audio, language="en", tags=model.head is not None)
            rows[setting].append({"request": time.perf_counter() - started, **totals})
            timelines[setting] = f"request {time.perf_counter() - started:.2f} s; " + ", ".join(
                f"{kind} {begin - started:.1f}-{end - started:.1f}" for kind, begin, end in calls)
            wers[setting] = word_error_rate(result.text, reference)
    print(f"model {args.model}, input {args.input}, {args.threads} threads, decode batch {model.decode_batch_size}, "
          f"transcript + tags, {args.runs} alternating rounds; seconds per request (median)")
    columns = ("request", "planning", "encoder", "first decodings", "continuations", "head")
    print("| continuation prompt tokens | decoded beside the encoder | windows planned | "
          + " | ".join(f"{c} s" for c in columns) + " | WER |")
    print("|---|---|---|" + "---|" * len(columns) + "---|")
    for setting in settings:
        median = [float(np.median([r.get(c, 0.0) for r in rows[setting]])) for c in columns]
        print(f"| {setting[0]} | {setting[1]} | {setting[2]} | " + " | ".join(f"{m:.2f}" for m in median)
              + f" | {wers[setting] * 100:.1f} % |")
    if args.timeline:
        for setting, line in timelines.items():
            print(f"\ncontext {setting[0]}, beside {setting[1]}, planned {setting[2]}, last request "
                  f"(seconds from its start): {line}")

if __name__ == "__main__":
    main()
