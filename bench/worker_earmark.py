"""Benchmark worker for Earmark itself (the project's venv). Protocol: bench/worker_common.py.

Modes of ``run``: ``transcript`` (tags=False), ``joint`` (transcript + tags, one encoder pass
per window), ``two_pass`` (transcribe with tags=False, then ``tag`` in a second call: the
encoder runs twice), ``tags_only``. Audio is handed over as decoded 16 kHz float32 samples, as it
is to the peers; ``profile`` hands over the file's bytes so that decoding is timed too.

By hand: .venv/bin/python bench/worker_earmark.py --model tiny.en --loop 3 --audio FILE --mode joint
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import worker_common as common

MODES = ("transcript", "joint", "two_pass", "tags_only")


class EarmarkWorker:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.model = None
        self.encoder_calls = 0
        self.encoder_windows = 0
        self.decode_calls = 0
        self.fallbacks = 0
        self.counts_decodes = False

    # ------------------------------------------------------------------ setup

    def load(self) -> dict:
        common.set_threads(self.args.threads)
        import torch
        import whisper

        import tagger
        import tagger.decoding
        from tagger.pipeline import load_model

        head = self.args.head if self.args.head and self.args.head != "none" else None
        self.model = load_model(self.args.model, head=head, device=self.args.device)
        self.sync = torch.cuda.synchronize if self.model.device.type == "cuda" else (lambda: None)

        def count_encoder(_module, inputs):
            self.encoder_calls += 1
            self.encoder_windows += int(inputs[0].shape[0])

        self.model.whisper.encoder.register_forward_pre_hook(count_encoder)
        original_decode = getattr(tagger.decoding, "decode", None)
        self.counts_decodes = original_decode is not None  # a decoder without that function: not counted

        def counted_decode(model, features, options, **kwargs):
            self.decode_calls += 1
            self.fallbacks += options.temperature > 0
            return original_decode(model, features, options, **kwargs)

        if self.counts_decodes:
            tagger.decoding.decode = counted_decode
        return {"versions": {"torch": torch.__version__, "openai-whisper": whisper.__version__,
                             "earmark": getattr(tagger, "__version__", "?")},
                "threads": torch.get_num_threads(), "device": str(self.model.device),
                "weights": str(self.model.weights.checkpoint), "weights_sha256": self.model.weights.sha256,
                "head": self.model.head_name}

    def _counters(self) -> dict:
        counters = {"encoder_calls": self.encoder_calls, "encoder_windows": self.encoder_windows,
                    "decode_calls": self.decode_calls if self.counts_decodes else None,
                    "fallback_decodes": self.fallbacks if self.counts_decodes else None}
        self.encoder_calls = self.encoder_windows = self.decode_calls = self.fallbacks = 0
        return counters

    # ------------------------------------------------------------------ ops

    def run(self, request: dict) -> dict:
        mode = request.get("mode", "joint")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        audio = common.read_wav(request["audio"])
        language = request.get("language") or None
        model = self.model
        self._counters()
        result = tags = None
        self.sync()
        start = time.perf_counter()
        if mode == "transcript":
            result = model.transcribe(audio, language=language, tags=False)
        elif mode == "joint":
            result = model.transcribe(audio, language=language, tags=True, tag_resolution=request.get("tag_resolution", 10.0))
        elif mode == "two_pass":
            result = model.transcribe(audio, language=language, tags=False)
            tags = model.tag(audio, tag_resolution=request.get("tag_resolution", 10.0))
        else:
            tags = model.tag(audio, tag_resolution=request.get("tag_resolution", 10.0))
        self.sync()
        seconds = time.perf_counter() - start
        out = {"seconds": seconds, "mode": mode, **self._counters()}
        if result is not None:
            out.update(text=result.text, language=result.language, segments=len(result.segments))
        scores = (tags if tags is not None else result).scores
        if request.get("save") and len(scores):
            np.save(request["save"], np.asarray(scores, dtype=np.float32))
            out["saved"] = request["save"]
        return out

    def overhead(self, request: dict) -> dict:
        """Transcript only and transcript + tags back to back, ``pairs`` times, the order alternating
        (so drift in the machine's speed falls on both alike): the single pass's tag overhead."""
        pairs = []
        for index in range(int(request.get("pairs", 1))):
            order = ("transcript", "joint") if index % 2 == 0 else ("joint", "transcript")
            times = {mode: self.run({**request, "mode": mode})["seconds"] for mode in order}
            pairs.append(times)
        return {"pairs": pairs}

    def encoder(self, request: dict) -> dict:
        """The encoder alone on ``batch`` copies of the input's first 30 s window, ``repeat`` times."""
        import torch

        from tagger.mel import log_mel

        audio = common.read_wav(request["audio"])[: 30 * common.SAMPLE_RATE]
        mel = log_mel(torch.from_numpy(audio.copy()), self.model.whisper.dims.n_mels, self.model.device)[None]
        batch = mel.repeat(int(request.get("batch", 1)), 1, 1)
        times = []
        for _ in range(int(request.get("repeat", 1))):
            self.sync()
            start = time.perf_counter()
            self.model.backbone.encode(batch)
            self.sync()
            times.append(time.perf_counter() - start)
        self._counters()
        return {"seconds": float(np.median(times)), "times": times, "batch": int(batch.shape[0])}

    def profile(self, request: dict) -> dict:
        """One joint request from the file's bytes, with the time of each stage."""
        from tagger import onepass, pipeline
        from tagger.backbone import Backbone
        from tagger.tagging import TagStream

        spent: dict[str, float] = defaultdict(float)
        sync = self.sync

        def timer(stage, function):
            def wrapper(*args, **kwargs):
                sync()
                start = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    sync()
                    spent[stage] += time.perf_counter() - start
            return wrapper

        patches = [
            (pipeline, "decode_audio", "decode (PyAV, resample)"),
            (onepass, "plan_next", "window planning (voice-activity detector)"),
            (onepass, "log_mel", "log-mel"),
            (Backbone, "encode", "encoder (incl. block capture + 0.4 s pooling)"),
            (TagStream, "add", "tagging head"),
            (TagStream, "finish", "tagging head"),
            (onepass, "decode_together", "decoder (incl. fallback)"),
        ]
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
        for owner, name, stage in patches:
            setattr(owner, name, timer(stage, getattr(owner, name)))
        data = Path(request["audio"]).read_bytes()
        language = request.get("language") or None
        self._counters()
        try:
            sync()
            start = time.perf_counter()
            result = self.model.transcribe(data, language=language, tags=self.model.head is not None)
            sync()
            total = time.perf_counter() - start
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)
        stages = dict(spent)
        stages["other (setup, tag selection, results)"] = max(0.0, total - sum(spent.values()))
        return {"seconds": total, "stages": stages, "duration": result.duration, "text": result.text,
                **self._counters()}


def main() -> None:
    parser = common.command_line(__doc__)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--head", default=None,
                        help="a head checkpoint (official .pth or Earmark .safetensors), 'auto' (the bundled default "
                             "head), or none (the default)")
    parser.add_argument("--mode", default="joint", choices=MODES)
    args = parser.parse_args()
    worker = EarmarkWorker(args)
    common.main("earmark", args, worker, {"run": worker.run, "overhead": worker.overhead, "encoder": worker.encoder,
                                          "profile": worker.profile}, {"mode": args.mode})


if __name__ == "__main__":
    main()
