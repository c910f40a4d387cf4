"""Word timestamps for segments decoded by CTranslate2, as openai-whisper's ``add_word_timestamps``.

openai-whisper runs its torch decoder once more over a window's text, takes the cross-attention
weights of the alignment heads, and aligns text to audio with DTW (``whisper.timing.find_alignment``).
Here CTranslate2's ``Whisper.align`` does that part, for a whole batch of encoded windows in one
call; the rest (words from tokens, punctuation merging, the clipping of long words, the
segment-boundary adjustments) follows ``whisper.timing.add_word_timestamps``.

Words are added to each segment dict as openai-whisper adds them: ``segment["words"]`` is a list
of ``{"word", "start", "end", "probability"}`` dicts, with absolute times rounded to 10 ms.
Internally a word is a ``whisper.timing.WordTiming`` (a mutable dataclass: punctuation merging
edits it in place) with times relative to its window.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import ctranslate2
import numpy as np
from whisper.audio import N_FRAMES, TOKENS_PER_SECOND
from whisper.timing import WordTiming, merge_punctuations
from whisper.tokenizer import Tokenizer

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END_MARKS = ".。!！?？"

__all__ = ["WordTiming", "add_word_timestamps", "find_alignment"]


def _tokenizers(tokenizer: Tokenizer | Sequence[Tokenizer], count: int) -> list[Tokenizer]:
    """One tokenizer per window: the same one for all, or the given list."""
    if isinstance(tokenizer, Tokenizer):
        return [tokenizer] * count
    if len(tokenizer) != count:
        raise ValueError(f"{len(tokenizer)} tokenizers for {count} windows")
    return list(tokenizer)


def _take(features: ctranslate2.StorageView, rows: list[int]) -> ctranslate2.StorageView:
    """The batch items ``rows`` of ``features``, as a new StorageView on the same device."""
    if rows == list(range(features.shape[0])):
        return features
    if features.device == "cpu":
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(features)[rows]))
    import torch  # the CUDA array interface, read without a copy to the host

    tensor = torch.as_tensor(features, device=f"cuda:{features.device_index}")
    return ctranslate2.StorageView.from_array(tensor[rows].contiguous())


def _words(tokenizer: Tokenizer, text_tokens: list[int], result) -> list[WordTiming]:
    """Words of ``text_tokens`` with times (seconds from the window start) and probabilities,
    from one CTranslate2 alignment result, as the end of ``whisper.timing.find_alignment``."""
    words, word_tokens = tokenizer.split_to_word_tokens(text_tokens + [tokenizer.eot])
    if len(word_tokens) <= 1:
        return []
    text_indices, time_indices = np.array(result.alignments, dtype=np.int64).reshape(-1, 2).T
    word_boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND
    start_times = jump_times[word_boundaries[:-1]]
    end_times = jump_times[word_boundaries[1:]]
    probabilities = [float(np.mean(result.text_token_probs[i:j])) for i, j in itertools.pairwise(word_boundaries)]
    return [
        WordTiming(word, tokens, float(start), float(end), probability)
        for word, tokens, start, end, probability in zip(words, word_tokens, start_times, end_times, probabilities)
    ]


def find_alignment(
    model: ctranslate2.models.Whisper,
    features: ctranslate2.StorageView,
    tokenizer: Tokenizer | Sequence[Tokenizer],
    text_tokens: list[list[int]],
    num_frames: list[int],
    median_filter_width: int = 7,
) -> list[list[WordTiming]]:
    """Words of each window's ``text_tokens`` (text only, no special or timestamp tokens), timed
    in seconds from the window start. ``features`` [B, 1500, d_model] are the encoded windows,
    ``num_frames`` their numbers of real mel frames (10 ms each).

    ``align`` takes a single start sequence for its batch, so windows whose tokenizers have
    different ``sot_sequence`` (multilingual models, different languages) go in separate calls;
    windows without text are not aligned.
    """
    tokenizers = _tokenizers(tokenizer, len(text_tokens))
    groups: dict[tuple[int, ...], list[int]] = {}
    for b, tokens in enumerate(text_tokens):
        if tokens:
            groups.setdefault(tuple(tokenizers[b].sot_sequence), []).append(b)

    alignments: list[list[WordTiming]] = [[] for _ in text_tokens]
    for sot_sequence, rows in groups.items():
        # under two encoder frames CTranslate2 returns frame -1: keep at least two
        frames = [min(max(num_frames[b], 4), N_FRAMES) for b in rows]
        results = model.align(
            _take(features, rows),
            list(sot_sequence),
            [text_tokens[b] for b in rows],
            frames,
            median_filter_width=median_filter_width,
        )
        for b, result in zip(rows, results):
            alignments[b] = _words(tokenizers[b], text_tokens[b], result)
    return alignments


def _clip_long_words(alignment: list[WordTiming], max_duration: float) -> None:
    """Words at sentence boundaries get at most ``max_duration`` seconds."""
    for previous, timing in itertools.pairwise(alignment):
        if timing.end - timing.start > max_duration:
            if timing.word in SENTENCE_END_MARKS:
                timing.end = timing.start + max_duration
            elif previous.word in SENTENCE_END_MARKS:
                timing.start = timing.end - max_duration


def _add_window_words(
    segments: list[dict],
    text_tokens: list[list[int]],
    alignment: list[WordTiming],
    offset: float,
    last_speech_timestamp: float,
    prepend_punctuations: str,
    append_punctuations: str,
) -> None:
    """Give each segment of one window its words, and adjust the segment's start and end, as
    ``whisper.timing.add_word_timestamps`` does."""
    durations = np.array([t.end - t.start for t in alignment])
    durations = durations[durations.nonzero()]
    median_duration = min(0.7, float(np.median(durations))) if len(durations) > 0 else 0.0
    max_duration = median_duration * 2
    if len(durations) > 0:
        _clip_long_words(alignment, max_duration)
    merge_punctuations(alignment, prepend_punctuations, append_punctuations)

    timings = iter(alignment)
    for segment, tokens in zip(segments, text_tokens):
        words = []
        saved_tokens = 0
        while saved_tokens < len(tokens):
            timing = next(timings, None)
            if timing is None:
                break
            if timing.word:
                words.append(
                    {
                        "word": timing.word,
                        "start": round(offset + timing.start, 2),
                        "end": round(offset + timing.end, 2),
                        "probability": timing.probability,
                    }
                )
            saved_tokens += len(timing.tokens)
        segment["words"] = words
        if not words:
            continue

        # the first and second words after a pause are not longer than twice the median
        first, last = words[0], words[-1]
        if first["end"] - last_speech_timestamp > median_duration * 4 and (
            first["end"] - first["start"] > max_duration
            or (len(words) > 1 and words[1]["end"] - first["start"] > max_duration * 2)
        ):
            if len(words) > 1 and words[1]["end"] - words[1]["start"] > max_duration:
                boundary = max(words[1]["end"] / 2, words[1]["end"] - max_duration)
                first["end"] = words[1]["start"] = boundary
            first["start"] = max(0, first["end"] - max_duration)

        # the segment's own start (end) wins over a first (last) word that is too long
        if segment["start"] < first["end"] and segment["start"] - 0.5 > first["start"]:
            first["start"] = max(0, min(first["end"] - median_duration, segment["start"]))
        else:
            segment["start"] = first["start"]
        if segment["end"] > last["start"] and segment["end"] + 0.5 < last["end"]:
            last["end"] = max(last["start"] + median_duration, segment["end"])
        else:
            segment["end"] = last["end"]
        last_speech_timestamp = segment["end"]


def add_word_timestamps(
    model: ctranslate2.models.Whisper,
    features: ctranslate2.StorageView,
    tokenizer: Tokenizer | Sequence[Tokenizer],
    windows: list[list[dict]],
    num_frames: list[int],
    offsets: list[float],
    last_speech_timestamp: float = 0.0,
    prepend_punctuations: str = PREPEND_PUNCTUATIONS,
    append_punctuations: str = APPEND_PUNCTUATIONS,
    median_filter_width: int = 7,
) -> float:
    """Add ``segment["words"]`` to every segment of every window, and move segment starts and ends
    to their words, with one ``align`` call for the batch (one per start sequence).

    ``features`` [B, 1500, d_model]: the encoded windows; ``windows[b]``: the segment dicts decoded
    from window b ("start", "end" in absolute seconds, "tokens", "text"); ``num_frames[b]``: its
    real mel frames; ``offsets[b]``: its start in seconds. ``tokenizer`` is one for all windows or
    one per window. Windows are taken in order, as consecutive windows of one recording; returns
    the updated ``last_speech_timestamp`` (the end of the last word, as ``whisper.transcribe``
    keeps it).
    """
    if not len(windows) == len(num_frames) == len(offsets) == features.shape[0]:
        raise ValueError("windows, num_frames, offsets and features must have the same batch size")
    tokenizers = _tokenizers(tokenizer, len(windows))
    text_tokens = [
        [[t for t in segment["tokens"] if t < window_tokenizer.eot] for segment in segments]
        for segments, window_tokenizer in zip(windows, tokenizers)
    ]
    alignments = find_alignment(
        model,
        features,
        tokenizers,
        [list(itertools.chain.from_iterable(tokens)) for tokens in text_tokens],
        num_frames,
        median_filter_width,
    )
    for segments, tokens, alignment, offset in zip(windows, text_tokens, alignments, offsets):
        if not segments:
            continue
        _add_window_words(
            segments, tokens, alignment, offset, last_speech_timestamp, prepend_punctuations, append_punctuations
        )
        ends = [word["end"] for segment in segments for word in segment["words"]]
        last_speech_timestamp = ends[-1] if ends else segments[-1]["end"]
    return last_speech_timestamp
