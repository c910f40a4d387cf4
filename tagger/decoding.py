"""Encoded windows to text with CTranslate2's Whisper decoder; the encoder never runs again.

``ctranslate2.models.Whisper.generate``, ``detect_language`` and ``align`` take the torch encoder's
final output [batch, 1500, d_model] directly: language detection, temperature fallback and word
timestamps all reuse the features the one pass made. Windows whose text does not depend on the
previous window (``condition_on_previous_text=False``) are decoded in batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ctranslate2
import numpy as np
import torch
from whisper.tokenizer import Tokenizer, get_tokenizer
from whisper.utils import compression_ratio

from .alignment import add_word_timestamps
from .results import Segment, Word
from .windows import Window

TIME_PRECISION = 0.02  # seconds per timestamp token
MAX_NEW_TOKENS = 224  # openai-whisper's sample_len: half the text context
MAX_LENGTH = 448  # the text context
TOKENS_PER_SECOND = 12  # a window's token budget grows with its length: fast speech is under 6 a second
MIN_TOKENS = 16
CONTINUATIONS = 3  # rounds of continuing a window whose text stopped early
UNFINISHED_SECONDS = 1.0  # a window whose text stops this long before its end, over speech, is continued
SEGMENT_TOKENS = 48  # a continuation keeps one segment: at most this many new tokens (segments are mostly under 25)
CONTEXT_TOKENS = 32  # a continuation is prompted with the window's last whole segments, at most this many tokens


@dataclass(frozen=True)
class DecodeOptions:
    """How windows become text: openai-whisper's transcription options and defaults, plus
    ``multilingual`` (detect the language of every window, not once) and ``speech_gate`` (a
    segment whose speech probability is below it is flagged ``no_speech`` and left out of the
    text; None keeps everything)."""

    task: str = "transcribe"
    language: str | None = None
    multilingual: bool = False
    temperature: float | tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    beam_size: int | None = None
    best_of: int | None = 5
    patience: float | None = None
    initial_prompt: str | None = None
    condition_on_previous_text: bool = False  # False: windows decoded in batches (faster; see the README)
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    word_timestamps: bool = False
    suppress_tokens: str = "-1"
    seed: int = 0  # sampling in window i is seeded with seed + i
    speech_gate: float | None = 0.5

    def __post_init__(self) -> None:
        if self.task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', not {self.task!r}")
        if isinstance(self.temperature, list):
            object.__setattr__(self, "temperature", tuple(self.temperature))

    @property
    def temperatures(self) -> tuple[float, ...]:
        t = self.temperature
        return (float(t),) if isinstance(t, (int, float)) else tuple(float(x) for x in t)

    @property
    def batched(self) -> bool:
        """Whether windows are decoded in batches: when no window's text is the next one's prompt."""
        return not self.condition_on_previous_text


@dataclass
class Attempt:
    """One decoding of a window at one temperature."""

    tokens: list[int]
    text: str
    temperature: float
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float


def features_view(features: torch.Tensor) -> ctranslate2.StorageView:
    """Encoder output [B, 1500, D] as CTranslate2's input (float32 on a CPU, float16 on a GPU)."""
    if features.device.type == "cuda":
        return ctranslate2.StorageView.from_array(features.to(torch.float16).contiguous())
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(features.float().numpy()))


def token_budget(seconds: float) -> int:
    """At most this many new tokens for a window of ``seconds``: decoding work stays bounded."""
    return min(MAX_NEW_TOKENS, MIN_TOKENS + math.ceil(TOKENS_PER_SECOND * seconds))


def detect_languages(model: ctranslate2.models.Whisper, features: torch.Tensor) -> list[tuple[str, float]]:
    """The most probable language of each encoded window [B, 1500, D], with its probability."""
    results = model.detect_language(features_view(features))
    return [(pairs[0][0][2:-2], float(pairs[0][1])) for pairs in results]


class Decoder:
    """One request's text: decodes its windows in order, carrying the prompt when asked to."""

    def __init__(self, model: ctranslate2.models.Whisper, options: DecodeOptions, multilingual_model: bool,
                 num_languages: int):
        self.model = model
        self.options = options
        self.multilingual_model = multilingual_model
        self.num_languages = num_languages
        self.language: str | None = options.language if multilingual_model else "en"
        self.segments: list[Segment] = []
        self._tokenizers: dict[str, Tokenizer] = {}
        self._prompt: list[int] = []
        self._last_speech = 0.0
        if options.initial_prompt:
            self._prompt = self.tokenizer("en").encode(" " + options.initial_prompt.strip())
        self._prompt_since = 0

    def tokenizer(self, language: str) -> Tokenizer:
        if language not in self._tokenizers:
            self._tokenizers[language] = get_tokenizer(
                self.multilingual_model, num_languages=self.num_languages,
                language=language if self.multilingual_model else None, task=self.options.task)
        return self._tokenizers[language]

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments if not s.no_speech).strip()

    def languages(self, windows: Sequence[Window], features: torch.Tensor) -> list[str]:
        """The language of each window: given, detected once (first window with speech), or per window."""
        if not self.multilingual_model:
            return ["en"] * len(windows)
        if self.options.multilingual and self.options.language is None:
            return [code for code, _ in detect_languages(self.model, features)]
        if self.language is None:
            self.language = detect_languages(self.model, features[:1])[0][0]
        return [self.language] * len(windows)

    def _prompt_tokens(self, tokenizer: Tokenizer) -> list[int]:
        previous = self._prompt[self._prompt_since :]
        prompt = [tokenizer.sot_prev, *previous[-(MAX_NEW_TOKENS - 1) :]] if previous else []
        return prompt + list(tokenizer.sot_sequence)

    def _generate(self, features: ctranslate2.StorageView, prompts: list[list[int]], budgets: list[int],
                  temperature: float, seed: int, prefixes: list[int] | None = None,
                  go_on: bool = False) -> list[Attempt]:
        """One CTranslate2 call over a batch of windows at one temperature. ``prefixes``: how many
        tokens at the end of each prompt are text to go on from (CTranslate2 returns them too);
        ``go_on``: the text may not end, only its first segment is kept."""
        options = self.options
        # CTranslate2 stops Whisper well short of max_length (about half of it, measured): give it room.
        # A continuation cannot end (its end token is suppressed) and keeps one segment only, so it
        # runs to max_length: bound it by one segment's tokens, not the window's budget.
        if go_on:
            budgets = [min(b, SEGMENT_TOKENS) for b in budgets]
        max_length = min(MAX_LENGTH, 2 * max(len(p) + b for p, b in zip(prompts, budgets)))
        suppress = [int(t) for t in options.suppress_tokens.split(",")] if options.suppress_tokens else []
        eot = self.tokenizer("en").eot
        common = {"max_length": max_length, "return_scores": True, "return_no_speech_prob": True,
                  "suppress_blank": True, "suppress_tokens": suppress + [eot] if go_on else suppress}
        if temperature > 0:
            ctranslate2.set_random_seed(seed)
            results = self.model.generate(features, prompts, beam_size=1, num_hypotheses=options.best_of or 1,
                                          sampling_topk=0, sampling_temperature=temperature, **common)
        else:
            results = self.model.generate(features, prompts, beam_size=options.beam_size or 1,
                                          patience=options.patience or 1, **common)
        attempts = []
        for row, (result, budget) in enumerate(zip(results, budgets)):
            skip = prefixes[row] if prefixes else 0
            tokens = result.sequences_ids[0][skip : skip + budget]
            if go_on:
                tokens = first_segment(tokens, self.tokenizer("en").timestamp_begin)
            text_tokens = [t for t in tokens if t < eot]
            text = self.tokenizer("en").decode(text_tokens)
            avg_logprob = result.scores[0] * len(result.sequences_ids[0]) / (len(result.sequences_ids[0]) + 1)
            attempts.append(Attempt(tokens, text, temperature, avg_logprob, result.no_speech_prob,
                                    compression_ratio(text) if text.strip() else 0.0))
        return attempts

    def _loops(self, attempt: Attempt) -> bool:
        """Too repetitive: its text compresses too well."""
        threshold = self.options.compression_ratio_threshold
        return threshold is not None and attempt.compression_ratio > threshold

    def _failed(self, attempt: Attempt) -> bool:
        """openai-whisper's fallback rule: too repetitive or too unsure, unless it is silence."""
        options = self.options
        too_repetitive = self._loops(attempt)
        too_unsure = options.logprob_threshold is not None and attempt.avg_logprob < options.logprob_threshold
        return (too_repetitive or too_unsure) and not self._silence(attempt)

    def _silence(self, attempt: Attempt) -> bool:
        options = self.options
        return (options.no_speech_threshold is not None and attempt.no_speech_prob > options.no_speech_threshold
                and (options.logprob_threshold is None or attempt.avg_logprob <= options.logprob_threshold))

    @property
    def first_call(self) -> tuple:
        """What the first decoding of a window depends on besides the window: decoders that agree
        on it share one CTranslate2 call (``decode_together``)."""
        o = self.options
        return (o.temperatures[0], o.beam_size, o.patience, o.best_of, o.suppress_tokens)

    def prepare(self, windows: Sequence[Window], indices: Sequence[int], features: torch.Tensor,
                stop: Callable[[], bool] | None = None) -> Share:
        """This decoder's windows for a decoding call: languages, prompts, token budgets."""
        languages = self.languages(windows, features)
        return Share(self, list(windows), list(indices), features, languages,
                     [self._prompt_tokens(self.tokenizer(language)) for language in languages],
                     [token_budget(w.seconds) for w in windows], stop)

    def _fall_back(self, share: Share, first: list[Attempt]) -> list[Attempt]:
        """Windows whose first text fails the rules are decoded again, one at a time, at the next
        temperatures, on the same features; when none passes, the surest that does not loop is kept."""
        best = list(first)
        for row, attempt in enumerate(first):
            tries = [attempt]
            for temperature in self.options.temperatures[1:]:
                if not self._failed(tries[-1]) or (share.stop is not None and share.stop()):
                    break
                tries += self._generate(features_view(share.features[row : row + 1]), share.prompts[row : row + 1],
                                        share.budgets[row : row + 1], temperature,
                                        self.options.seed + share.indices[row])
            if self._failed(tries[-1]):
                sane = [t for t in tries if not self._loops(t)] or tries
                tries.append(max(sane, key=lambda t: t.avg_logprob))
            best[row] = tries[-1]
        return best

    def _continue_unfinished(self, features: torch.Tensor, windows: Sequence[Window], languages: Sequence[str],
                             attempts: list[Attempt]) -> None:
        """Whisper sometimes ends a window's text early, though speech goes on: openai-whisper
        then encodes again from the last timestamp. Here the same features are decoded again with
        the window's last segments (``CONTEXT_TOKENS``: a longer prefix costs decoding time, not
        accuracy, measured) and a new segment's opening timestamp as the prefix, in one batch for all
        such windows, up to ``CONTINUATIONS`` rounds; a continuation that is unsure, loops or repeats
        the last piece is dropped (and ends that window's rounds)."""
        begin = self.tokenizer("en").timestamp_begin
        candidates = set(range(len(attempts)))
        continued: set[int] = set()  # a continuation ends on one timestamp: it may be continued again
        for _ in range(CONTINUATIONS):
            rows, prompts, budgets, prefixes = [], [], [], []
            for row in sorted(candidates):
                window, tokens = windows[row], attempts[row].tokens
                if self._silence(attempts[row]) or len(tokens) < 2 or tokens[-1] < begin:
                    continue
                if tokens[-2] < begin and row not in continued:  # a first text ends on a timestamp pair
                    continue
                last = window.offset + (tokens[-1] - begin) * TIME_PRECISION
                if window.offset + window.seconds - last < UNFINISHED_SECONDS or window.speech(last + 0.3) < 0.5:
                    continue
                rows.append(row)
                context = recent_segments(tokens, begin, CONTEXT_TOKENS)
                prefixes.append(len(context) + 1)
                prompts.append(self._prompt_tokens(self.tokenizer(languages[row])) + context + [tokens[-1]])
                budgets.append(token_budget(window.offset + window.seconds - last))
            candidates = set()
            if not rows:
                return
            more = self._generate(features_view(features[rows]), prompts, budgets, 0.0, 0, prefixes, go_on=True)
            for row, extra in zip(rows, more):
                attempt = attempts[row]
                if self._failed(extra) or self._silence(extra) or not extra.text.strip():
                    continue
                if _plain(extra.text) in _plain(attempt.text[-len(extra.text) - 8 :]):
                    continue  # it repeats what was just said: a loop, not more speech
                tokens = attempt.tokens + [attempt.tokens[-1]] + extra.tokens
                text = attempt.text + extra.text
                attempts[row] = Attempt(tokens, text, attempt.temperature, attempt.avg_logprob, attempt.no_speech_prob,
                                        compression_ratio(text))
                candidates.add(row)  # it may stop early again
                continued.add(row)

    def finish(self, share: Share, first: list[Attempt]) -> list[Segment]:
        """Fallback, continuation, segments and word timestamps of a share whose first decoding is done."""
        windows, features, languages = share.windows, share.features, share.languages
        attempts = self._fall_back(share, first)
        self._continue_unfinished(features, windows, languages, attempts)
        pieces: list[list[dict]] = []
        for window, language, attempt in zip(windows, languages, attempts):
            if self._silence(attempt) or not attempt.text.strip():
                pieces.append([])
                continue
            tokenizer = self.tokenizer(language)
            pieces.append([{"seek": round(window.offset * 100), "start": start, "end": end, "tokens": tokens, "language": language,
                                "text": tokenizer.decode([t for t in tokens if t < tokenizer.eot])}
                           for start, end, tokens in split_by_timestamps(tokenizer, attempt.tokens, window)])
        if self.options.word_timestamps and any(pieces):
            rows = [row for row, p in enumerate(pieces) if p]
            self._last_speech = add_word_timestamps(
                self.model, features_view(features[rows]), [self.tokenizer(languages[r]) for r in rows],
                [pieces[r] for r in rows],
                [windows[r].samples // 160 for r in rows], [windows[r].offset for r in rows], self._last_speech)
        added: list[Segment] = []
        for window, attempt, window_pieces in zip(windows, attempts, pieces):
            window_end = window.offset + window.seconds
            new: list[Segment] = []
            for piece in window_pieces:
                start, end = min(piece["start"], window_end), min(piece["end"], window_end)
                if end <= start or not piece["text"].strip():
                    continue
                words = None
                if self.options.word_timestamps:
                    words = [Word(start=float(min(w["start"], window_end)), end=float(min(w["end"], window_end)),
                                  word=w["word"], probability=float(w["probability"])) for w in piece.get("words", [])]
                segment = Segment(
                    id=len(self.segments), seek=piece["seek"], start=round(start, 3), end=round(end, 3),
                    text=piece["text"], tokens=piece["tokens"], temperature=attempt.temperature,
                    avg_logprob=attempt.avg_logprob, compression_ratio=attempt.compression_ratio,
                    no_speech_prob=attempt.no_speech_prob, words=words, language=piece["language"],
                    speech_prob=window.segment_speech(start, end))
                self.segments.append(segment)
                new.append(segment)
            added += new
            self._prompt += [t for s in new for t in s.tokens]
            if not self.options.condition_on_previous_text or attempt.temperature > 0.5:
                self._prompt_since = len(self._prompt)  # a high temperature's output is a poor prompt
        return added

    def gate(self, head_speech: Callable[[float, float], float] | None = None) -> None:
        """Flag segments where speech is improbable (``speech_gate``): the detector's highest speech
        probability inside the segment, and the head's speech classes over it when there is a head."""
        threshold = self.options.speech_gate
        if threshold is None:
            return
        for segment in self.segments:
            probability = segment.speech_prob
            if head_speech is not None and probability is not None:
                probability = math.sqrt(probability * head_speech(segment.start, segment.end))
            segment.speech_prob = probability
            segment.no_speech = probability is not None and probability < threshold


@dataclass
class Share:
    """One decoder's windows in a decoding call."""

    decoder: Decoder
    windows: list[Window]
    indices: list[int]
    features: torch.Tensor  # [B, 1500, D]
    languages: list[str]
    prompts: list[list[int]]
    budgets: list[int]
    stop: Callable[[], bool] | None = None
    error: Exception | None = None  # set by ``decode_together`` when finishing this share failed


def decode_together(shares: list[Share]) -> list[list[Segment]]:
    """Decode the windows of several decoders (several requests) with one CTranslate2 call per
    group of decoders that agree on the first decoding's settings; then each decoder finishes its
    own windows (fallback, continuation, word timestamps). The new segments of each share.

    A failure of the shared calls raises before any share is finished; a failure while finishing
    one share is kept in its ``error`` (its segments: none) and the others go on."""
    firsts: dict[int, list[Attempt]] = {}
    groups: dict[tuple, list[int]] = {}
    for number, share in enumerate(shares):
        if share.windows:
            groups.setdefault(share.decoder.first_call, []).append(number)
    for numbers in groups.values():
        group = [shares[n] for n in numbers]
        lead = group[0].decoder
        attempts = lead._generate(
            features_view(torch.cat([s.features for s in group])), [p for s in group for p in s.prompts],
            [b for s in group for b in s.budgets], lead.options.temperatures[0],
            lead.options.seed + group[0].indices[0])
        for n, share in zip(numbers, group):
            firsts[n], attempts = attempts[: len(share.windows)], attempts[len(share.windows) :]
    added: list[list[Segment]] = []
    for n, share in enumerate(shares):
        try:
            added.append(share.decoder.finish(share, firsts[n]) if share.windows else [])
        except Exception as error:  # noqa: BLE001 - one request's failure must not end the others'
            share.error = error
            added.append([])
    return added


def recent_segments(tokens: list[int], timestamp_begin: int, limit: int) -> list[int]:
    """The last whole segments of ``tokens`` (text between timestamp pairs) that fit in ``limit``
    tokens; at least the last segment."""
    starts = [i for i, token in enumerate(tokens) if token >= timestamp_begin and (i == 0 or tokens[i - 1] >= timestamp_begin)]
    fitting = [i for i in starts if len(tokens) - i <= limit] or starts[-1:] or [0]
    return tokens[fitting[0] :]


def first_segment(tokens: list[int], timestamp_begin: int) -> list[int]:
    """The tokens up to and including the first timestamp after some text (none if it never closes)."""
    for i, token in enumerate(tokens):
        if token >= timestamp_begin and any(t < timestamp_begin for t in tokens[:i]):
            return tokens[: i + 1]
    return []


def _plain(text: str) -> str:
    """Text compared without case, punctuation or spacing."""
    return "".join(c for c in text.lower() if c.isalnum())


def split_by_timestamps(tokenizer: Tokenizer, tokens: list[int], window: Window
                        ) -> list[tuple[float, float, list[int]]]:
    """Split a window's tokens at timestamp tokens into (start, end, tokens) pieces, as
    openai-whisper does; an unfinished last piece ends at the window's end."""
    begin, offset = tokenizer.timestamp_begin, window.offset
    window_end = offset + window.seconds
    pieces: list[tuple[float, float, list[int]]] = []
    piece: list[int] = []
    start: float | None = None
    last_time = offset
    for token in tokens:
        if token >= tokenizer.eot and token < begin:
            continue
        if token < begin:
            if start is None:
                start = last_time
            piece.append(token)
            continue
        time = offset + (token - begin) * TIME_PRECISION
        last_time = time
        if start is not None and any(t < begin for t in piece):
            pieces.append((start, time, piece + [token]))  # a closing timestamp
            piece, start = [], None
        else:
            piece, start = [token], time  # an opening timestamp
    if start is not None and any(t < begin for t in piece):
        pieces.append((start, window_end, piece))
    return pieces


__all__ = ["DecodeOptions", "Decoder", "Share", "decode_together", "detect_languages", "split_by_timestamps",
           "token_budget"]
