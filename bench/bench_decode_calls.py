"""Where the text decoder's time goes on one bench input: the time inside CTranslate2's
``generate``, split into first decodings and continuations (a window whose text ended early,
decoded again from its last timestamp), for continuation prompts of several lengths
(``tagger.decoding.CONTEXT_TOKENS``), with the WER of each; also the time inside the tagging head.
Settings alternate round by round in one process.

Run: .venv/bin/python bench/bench_decode_calls.py --model base --context 10000,32 [--runs 2]
     [--decode-batch 16]
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

from tagger import decoding, load_audio, load_model
from tagger.heads import LoadedHead


def timed(totals: dict, key, function):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[key(*args, **kwargs)] += time.perf_counter() - started
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--input", default="600s")
    parser.add_argument("--context", default="10000,32", help="comma-separated CONTEXT_TOKENS values")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--decode-batch", type=int, default=None, help="windows per decoder call (default: the model's)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path, reference = packages_input(args.input)
    audio = load_audio(path)
    model = load_model(args.model, device="cpu")
    if args.decode_batch:
        model.decode_batch_size = args.decode_batch
    model.transcribe(audio[:16000 * 5], language="en")  # warm-up
    totals: dict = defaultdict(float)
    decoding.Decoder._generate = timed(totals, lambda *a, go_on=False, **k: "continuations" if go_on else "first decodings",
                                       decoding.Decoder._generate)
    LoadedHead.probabilities = timed(totals, lambda *a, **k: "head", LoadedHead.probabilities)
    contexts = [int(c) for c in args.context.split(",")]
    rows: dict[int, list[dict]] = {c: [] for c in contexts}
    wers: dict[int, float] = {}
    for _ in range(args.runs):
        for context in contexts:
            decoding.CONTEXT_TOKENS = context
            totals.clear()
            started = time.perf_counter()
            result = model.transcribe(audio, language="en", tags=model.head is not None)
            rows[context].append({"request": time.perf_counter() - started, **totals})
            wers[context] = word_error_rate(result.text, reference)
    print(f"model {args.model}, input {args.input}, {args.threads} threads, decode batch {model.decode_batch_size}, "
          f"transcript + tags, {args.runs} alternating rounds; seconds per request (median)")
    print("| continuation prompt tokens | request s | first decodings s | continuations s | head s | WER |")
    print("|---|---|---|---|---|---|")
    for context in contexts:
        median = {k: float(np.median([r.get(k, 0.0) for r in rows[context]]))
                  for k in ("request", "first decodings", "continuations", "head")}
        print(f"| {context} | {median['request']:.2f} | {median['first decodings']:.2f} | {median['continuations']:.2f} "
              f"| {median['head']:.2f} | {wers[context] * 100:.1f} % |")


if __name__ == "__main__":
    main()
