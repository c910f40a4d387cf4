"""Benchmark worker for openai-whisper itself (``whisper.transcribe``), run in Earmark's venv,
which has openai-whisper installed. It imports nothing of Earmark. Protocol: bench/worker_common.py.

It loads Earmark's converted checkpoint (``--checkpoint``, the same weights every other system
runs) with ``whisper.load_model(PATH)`` and calls ``model.transcribe(audio, ...)`` with the
settings of the other workers: language given, greedy at temperature 0 with fallback over
0.2 ... 1.0 (best_of 5), the default compression-ratio / log-prob / no-speech thresholds,
conditioning on previous text, no word timestamps. Torch's random generator is seeded before each
run (``seed``, default 0), so that the samples of a temperature fallback are the same every time.

By hand: .venv/bin/python bench/worker_openai_whisper.py --checkpoint FILE.pt --loop 3 --audio FILE
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import worker_common as common


class OpenAIWhisperWorker:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.encoder_calls = 0

    def load(self) -> dict:
        common.set_threads(self.args.threads)
        import torch
        import whisper

        self.model = whisper.load_model(self.args.checkpoint, device=self.args.device)
        self.sync = torch.cuda.synchronize if self.model.device.type == "cuda" else (lambda: None)

        def count_encoder(_module, _inputs):
            self.encoder_calls += 1

        self.model.encoder.register_forward_pre_hook(count_encoder)
        return {"versions": {"openai-whisper": whisper.__version__, "torch": torch.__version__},
                "threads": torch.get_num_threads(), "device": str(self.model.device)}

    def run(self, request: dict) -> dict:
        import torch

        audio = common.read_wav(request["audio"])
        self.encoder_calls = 0
        torch.manual_seed(int(request.get("seed", 0)))  # the fallback samples: the same on every run of a clip
        self.sync()
        start = time.perf_counter()
        result = self.model.transcribe(audio, language=request.get("language") or None, best_of=5,
                                       fp16=self.model.device.type == "cuda")
        self.sync()
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "text": result["text"].strip(), "language": result["language"],
                "segments": len(result["segments"]), "encoder_calls": self.encoder_calls}


def main() -> None:
    parser = common.command_line(__doc__)
    parser.add_argument("--checkpoint", required=True, help="a Whisper .pt checkpoint (Earmark's converted one)")
    args = parser.parse_args()
    worker = OpenAIWhisperWorker(args)
    common.main("openai-whisper", args, worker, {"run": worker.run})


if __name__ == "__main__":
    main()
