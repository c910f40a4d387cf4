"""Core engine costs, measured side by side in one process with interleaved runs.

1. Tags on top of a transcript: transcribe(tags=False) against transcribe(tags=True) on 60 s+
   of real speech (distinct recordings, never one clip repeated).
2. Tags only for one 30 s window against the bare Whisper encoder on the same window.

The head is a TL-Tr of the published shape with seeded weights: its cost is that of any
trained head of the same type, its tags mean nothing. Run: .venv/bin/python bench/bench_core.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import whisper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from speech_fixtures import long_speech

from tagger.heads import HeadCard, LoadedHead, create_head, int8_head
from tagger.labels import audioset
from tagger.pipeline import EarmarkModel, load_model


def seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def interleaved(runs: int, **candidates) -> dict[str, list[float]]:
    """Time each candidate once per round, in turn, for ``runs`` rounds (after one warm-up round)."""
    for function in candidates.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(runs):
        for name, function in candidates.items():
            times[name].append(seconds(function))
    return times


def row(name: str, values: list[float], reference: list[float] | None = None) -> str:
    median = statistics.median(values)
    ratio = f"{median / statistics.median(reference):.3f}" if reference else "1.000"
    return f"| {name} | {median:.3f} | {min(values):.3f}–{max(values):.3f} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="base")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=65.0, help="length of the speech (distinct real clips)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bare = load_model(args.model, head=None, device="cpu")
    torch.manual_seed(0)
    dims = bare.whisper.dims
    float_head = LoadedHead(create_head("tl_tr", dims.n_audio_layer, dims.n_audio_state).eval(),
                            HeadCard("tl_tr", dims.n_audio_layer, dims.n_audio_state, audioset(), source="bench-seeded"))
    head = int8_head(float_head)  # as load_model serves a head on a CPU
    model = EarmarkModel(bare.whisper, bare.weights, head)
    speech, _ = long_speech(args.seconds)
    language = "en"

    print(f"model {args.model}, {len(speech) / 16000:.1f} s of real speech, {args.threads} threads, "
          f"torch {torch.__version__}, {args.runs} interleaved runs\n")
    times = interleaved(
        args.runs,
        transcript=lambda: model.transcribe(speech, language=language, tags=False),
        transcript_and_tags=lambda: model.transcribe(speech, language=language, tags=True),
    )
    print("| run | median s | min–max s | ratio |\n|---|---|---|---|")
    print(row("transcript only", times["transcript"]))
    print(row("transcript + tags (same pass)", times["transcript_and_tags"], times["transcript"]))

    window = speech[: 16000 * 30]
    mel = whisper.pad_or_trim(whisper.log_mel_spectrogram(torch.from_numpy(window), dims.n_mels), 3000)[None]

    def bare_encoder() -> None:
        with torch.inference_mode():
            bare.whisper.encoder(mel)

    times = interleaved(args.runs * 2, encoder=bare_encoder, tags_only=lambda: model.tag(window))
    print(row("bare encoder, one 30 s window", times["encoder"]))
    print(row("tags only, one 30 s window (decode+mel+encoder+head)", times["tags_only"], times["encoder"]))

    # the head alone on that window's pooled features: three 10 s tag windows, as a request scores them
    pooled = bare.backbone.encode(mel).pooled  # [1, L, 75, D]
    windows = pooled.reshape(dims.n_audio_layer, 3, 25, dims.n_audio_state).transpose(0, 1).contiguous()
    times = interleaved(args.runs * 20, float32=lambda: float_head.probabilities(windows),
                        int8=lambda: head.probabilities(windows))
    print(row("tagging head float32, one 30 s window", times["float32"]))
    print(row("tagging head int8 (as served on a CPU)", times["int8"], times["float32"]))


if __name__ == "__main__":
    main()
