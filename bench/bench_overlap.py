"""The encoder beside the text decoder (``onepass.run_job``) against encoding and decoding in turn,
in one process on the same jobs, alternating, with the same text checked.

Run (every other job on the machine paused for the timings to mean anything):

    .venv/bin/python bench/bench_overlap.py --model base --rounds 2
"""

from __future__ import annotations

import argparse
import time

from bench_inputs import build

from tagger import DecodeOptions, load_audio, load_model
from tagger.onepass import Slice, encode_step, run_job
from tagger.pipeline import DEFAULT_TAGS


def in_turn(model, job):
    """Encode a window, decode it, encode the next: ``run_job`` before the encoder had its thread."""
    while not job.encoded_all:
        piece = Slice(job, job.next_window, min(model.encode_batch_size, job.n_windows - job.next_window))
        job.take(piece.first, encode_step(model.backbone, [piece])[0])
        job.decode(limit=1)
    job.decode()
    return job.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--input", default="600s", help="a bench input (bench/bench_inputs.py)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    audio = load_audio(build("packages")[args.input])
    options = DecodeOptions(language="en")
    texts: dict[str, str] = {}
    for r in range(args.rounds):
        for name in ("beside", "in turn") if r % 2 == 0 else ("in turn", "beside"):
            job = model.job(audio, options, DEFAULT_TAGS)
            started = time.perf_counter()
            if name == "beside":
                result = run_job(model.backbone, job, model.encode_batch_size, model.decode_batch_size)
            else:
                result = in_turn(model, job)
            print(f"round {r + 1}: {name} {time.perf_counter() - started:.2f} s", flush=True)
            texts.setdefault(name, result.text)
    print("same text:", texts["beside"] == texts["in turn"])


if __name__ == "__main__":
    main()
