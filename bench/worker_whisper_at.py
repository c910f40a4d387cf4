"""Benchmark worker for the original Whisper-AT code (the ``whisper-at`` 0.5 wheel), run in its
own venv. Protocol: bench/worker_common.py.

``whisper_at.load_model(NAME, download_root=ROOT)`` is its own loader: it takes ``ROOT/NAME.pt``
(the Whisper checkpoint) and ``ROOT/NAME_ori.pth`` (or ``NAME_low.pth`` for TL-Tr-512) when they
are already there, without a checksum, and downloads them otherwise. bench/bench_peers.py fills
ROOT with links to Earmark's converted checkpoint and to a head in the official key layout, so
both systems run the same weights and nothing is downloaded.

``run`` calls ``model.transcribe(audio, at_time_res=10, ...)`` exactly as a user would. To tell
which tag rows come from which 30 s encoder window, it records the seek (in mel frames) of each
window it decodes: ``transcribe`` slices ``mel[:, seek:seek + 3000]`` and passes the view to
``pad_or_trim``, whose storage offset is the seek. Nothing in the computation changes.

By hand: /work/peers/whisper-at/bin/python bench/worker_whisper_at.py --root DIR --model tiny.en --loop 3 --audio FILE
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import worker_common as common


class WhisperATWorker:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.seeks: list[int] = []
        self.at_calls: list[tuple[int, int]] = []  # (seek, rows) per call of the tagging head
        self.encoder_calls = 0

    def load(self) -> dict:
        common.set_threads(self.args.threads)
        import torch
        import whisper_at

        transcribe_module = sys.modules["whisper_at.transcribe"]  # whisper_at.transcribe is the function

        root = Path(self.args.root)
        head = root / f"{self.args.model}{'_low' if self.args.low else '_ori'}.pth"
        for needed in (root / f"{self.args.model}.pt", head):
            if not needed.is_file():  # whisper_at would try to download it
                raise FileNotFoundError(f"{needed} is missing; bench/bench_peers.py prepares it")
        self.model = whisper_at.load_model(self.args.model, device=self.args.device, download_root=str(root),
                                           at_low_compute=self.args.low)
        self.model.eval()
        self.sync = torch.cuda.synchronize if self.model.device.type == "cuda" else (lambda: None)

        original_pad = transcribe_module.pad_or_trim

        def recording_pad(array, *args, **kwargs):
            if isinstance(array, torch.Tensor) and array.dim() == 2:
                self.seeks.append(int(array.storage_offset()))
            return original_pad(array, *args, **kwargs)

        transcribe_module.pad_or_trim = recording_pad

        def record_at(_module, _inputs, output):
            self.at_calls.append((self.seeks[-1] if self.seeks else -1, int(output.shape[0])))

        def count_encoder(_module, _inputs):
            self.encoder_calls += 1

        self.model.at_model.register_forward_hook(record_at)
        self.model.encoder.register_forward_pre_hook(count_encoder)
        from importlib.metadata import version

        return {"versions": {"torch": torch.__version__, "whisper-at": version("whisper-at"),
                             "tiktoken": version("tiktoken"), "numba": version("numba")},
                "threads": torch.get_num_threads(), "device": str(self.model.device),
                "head_file": str(head.resolve())}

    def run(self, request: dict) -> dict:
        audio = common.read_wav(request["audio"])
        self.seeks, self.at_calls, self.encoder_calls = [], [], 0
        options = {"language": request.get("language") or None, "at_time_res": request.get("tag_resolution", 10),
                   "best_of": 5, "fp16": self.model.device.type == "cuda"}
        if request.get("transcript_only"):
            raise ValueError("whisper-at always tags")
        self.sync()
        start = time.perf_counter()
        result = self.model.transcribe(audio, **options)
        self.sync()
        seconds = time.perf_counter() - start
        out = {"seconds": seconds, "text": result["text"], "language": result["language"],
               "segments": len(result["segments"]), "encoder_calls": self.encoder_calls,
               "decode_calls": self.encoder_calls, "windows_decoded": len(self.seeks),
               "fallback_decodes": self.encoder_calls - len(self.seeks)}
        if request.get("save"):
            logits = result["audio_tag"].float().numpy()
            np.save(request["save"], logits)
            Path(request["save"]).with_suffix(".json").write_text(json.dumps(
                {"at_calls": self.at_calls, "rows": int(logits.shape[0]),
                 "content_frames": int(len(audio) // 160), "at_time_res": options["at_time_res"]}))
            out["saved"] = request["save"]
        return out

    def tag_windows(self, request: dict) -> dict:
        """Whisper-AT's own encoder and head on every *full* 30 s window at 0, 30, 60 s ...: the
        windows Earmark encodes. The mel is computed as ``transcribe`` computes it (whole file,
        30 s of padding), so window w is exactly what ``transcribe`` sees at seek 3000 * w."""
        import torch
        from whisper_at.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram

        audio = common.read_wav(request["audio"])
        resolution = request.get("tag_resolution", 10)
        start = time.perf_counter()
        mel = log_mel_spectrogram(torch.from_numpy(audio.copy()), padding=N_SAMPLES).to(self.model.device)
        full_windows = (mel.shape[-1] - N_FRAMES) // N_FRAMES
        rows = []
        with torch.no_grad():
            for w in range(full_windows):
                segment = mel[:, w * N_FRAMES : (w + 1) * N_FRAMES][None]
                if self.model.device.type == "cuda":
                    segment = segment.half()
                _, pooled = self.model.encoder(segment)
                rows.append(self.model.at_model(pooled, time_resolution=resolution).float().cpu().numpy())
        logits = np.concatenate(rows) if rows else np.zeros((0, 527), np.float32)
        np.save(request["save"], logits)
        return {"seconds": time.perf_counter() - start, "full_windows": full_windows, "rows": int(logits.shape[0]),
                "saved": request["save"]}

    def encoder(self, request: dict) -> dict:
        import torch
        from whisper_at.audio import log_mel_spectrogram, pad_or_trim

        audio = common.read_wav(request["audio"])[: 30 * common.SAMPLE_RATE]
        mel = pad_or_trim(log_mel_spectrogram(torch.from_numpy(audio.copy())), 3000)[None].to(self.model.device)
        times = []
        with torch.no_grad():
            for _ in range(int(request.get("repeat", 1))):
                self.sync()
                start = time.perf_counter()
                self.model.encoder(mel)
                self.sync()
                times.append(time.perf_counter() - start)
        return {"seconds": float(np.median(times)), "times": times, "batch": 1}


def main() -> None:
    parser = common.command_line(__doc__)
    parser.add_argument("--root", required=True, help="folder holding NAME.pt and NAME_ori.pth (or NAME_low.pth)")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--low", action="store_true", help="a TL-Tr-512 head (NAME_low.pth)")
    args = parser.parse_args()
    worker = WhisperATWorker(args)
    common.main("whisper-at", args, worker, {"run": worker.run, "encoder": worker.encoder,
                                             "tag_windows": worker.tag_windows})


if __name__ == "__main__":
    main()
