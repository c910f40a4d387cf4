"""The text decoder loop against openai-whisper's own, on real weights and real speech."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import whisper
from speech_fixtures import long_speech
from whisper.decoding import DecodingOptions, DecodingResult, DecodingTask

import tagger.decoding
from tagger.backbone import log_mel
from tagger.decoding import DecodeSettings, WindowDecoder, decode
from tagger.textdecoder import Logits, TextDecoderState, projection, run_task


@pytest.fixture(scope="module")
def encoded_windows(tiny_en):
    """Encoder features of three 30 s windows of real speech."""
    audio, _ = long_speech(85.0)
    mel = log_mel(torch.from_numpy(audio), tiny_en.whisper.dims.n_mels)
    return [tiny_en.backbone.encode(mel.windows(i, i + 1)).features[0] for i in range(3)]


def test_greedy_tokens_equal_openai_whisper(tiny_en, encoded_windows):
    prompt = None
    for features in encoded_windows:
        options = DecodingOptions(language="en", temperature=0.0, fp16=False, prompt=prompt)
        expected = whisper.decode(tiny_en.whisper, features, options)
        result = decode(tiny_en.whisper, features, options)
        assert len(result.tokens) > 20
        assert result.tokens == expected.tokens
        assert result.text == expected.text
        assert result.no_speech_prob == pytest.approx(expected.no_speech_prob, abs=1e-5)
        assert result.avg_logprob == pytest.approx(expected.avg_logprob, abs=5e-3)
        assert result.compression_ratio == expected.compression_ratio
        prompt = list(result.tokens)  # the next window is conditioned on this one, as in transcription


@torch.no_grad()
def test_screened_logits_stay_within_their_error_bound(tiny_en, encoded_windows):
    """On real decoder states, every screened logit is within its proven bound of float32, and the
    tokens the loop makes exact (the best, and all that could be) equal float32 exactly."""
    model = tiny_en.whisper
    task = DecodingTask(model, DecodingOptions(language="en", temperature=0.0, fp16=False))
    weights = projection(model, torch.float32)
    assert weights.int8 is not None  # screening is on for float32 on a CPU
    state = TextDecoderState(model, encoded_windows[0], 1)
    hidden = state.step(torch.tensor([task.initial_tokens]))[:, -1]
    eot = task.tokenizer.eot
    for token in task.tokenizer.encode(" and then we went to the river to see what was there"):
        logits = Logits(weights, hidden, eot)
        exact = F.linear(hidden, weights.weight)
        gap = (logits.values - exact).abs()
        assert (gap <= logits.error + 1e-6).all()
        assert gap[:, :eot].max() > 0  # screening really happened
        assert torch.equal(logits.values[:, eot:], exact[:, eot:])  # timestamps and specials are exact
        best = logits.best()
        assert int(best) == int(exact.argmax())
        assert logits.values[0, best] == exact[0, best]
        hidden = state.step(torch.tensor([[token]]))[:, -1]


def test_sampling_is_reproducible_and_ends_every_sample(tiny_en, encoded_windows):
    model = tiny_en.whisper
    options = DecodingOptions(language="en", temperature=0.8, best_of=5, fp16=False)
    results = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(7)
        results.append(run_task(DecodingTask(model, options), encoded_windows[1], generator))
    assert results[0].tokens == results[1].tokens
    assert results[0].avg_logprob == results[1].avg_logprob
    assert results[0].text and results[0].temperature == 0.8
    assert whisper.tokenizer.get_tokenizer(False).eot not in results[0].tokens
    other = run_task(DecodingTask(model, options), encoded_windows[1], torch.Generator().manual_seed(8))
    assert other.tokens != results[0].tokens or other.avg_logprob != results[0].avg_logprob


def test_beam_search_goes_through_openai_whisper(tiny_en, encoded_windows):
    options = DecodingOptions(language="en", beam_size=3, fp16=False)
    expected = whisper.decode(tiny_en.whisper, encoded_windows[2], options)
    assert decode(tiny_en.whisper, encoded_windows[2], options).tokens == expected.tokens


@pytest.mark.parametrize("continuation, kept", [(" Press star for help.", False), (" Then press one.", True)])
def test_a_continuation_that_repeats_what_was_just_said_is_dropped(tiny_en, monkeypatch, continuation, kept):
    """The rule alone, with the decoder's answer given: a window whose text stopped early over sound
    is continued, unless the continuation only says again what the window's last piece said."""
    window = WindowDecoder(tiny_en.whisper, DecodeSettings(), "en")
    tokenizer = window.tokenizer

    def stamp(seconds: float) -> int:
        return tokenizer.timestamp_begin + round(seconds / 0.02)

    def result(tokens: list[int]) -> DecodingResult:
        return DecodingResult(audio_features=torch.zeros(1), language="en", tokens=tokens, temperature=0.0,
                              avg_logprob=-0.1, compression_ratio=1.0)

    said = [stamp(0.0), *tokenizer.encode(" Press star for help."), stamp(2.0), stamp(2.0)]
    more = [stamp(2.0), *tokenizer.encode(continuation), stamp(3.0)]
    monkeypatch.setattr(tagger.decoding, "decode", lambda *args, **kwargs: result(more))
    loud = np.full(3000, -20.0)
    tokens = window.continue_unfinished(torch.zeros(1500, 384), result(said), 30.0, loud)
    assert tokens == (said[:-1] + more if kept else said)
