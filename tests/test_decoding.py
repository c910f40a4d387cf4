"""Windows cut at pauses, the CTranslate2 decoder, languages per window and the speech gate, on
real weights and real recordings."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from speech_fixtures import long_speech, speech_clips
from test_pipeline import EncoderCounter

from tagger import DecodeOptions, load_audio
from tagger.decoding import features_view, recent_segments
from tagger.mel import log_mel
from tagger.windows import GRID, Window, WindowOptions, plan_next, plan_windows

SHARED_SPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"
SCENES = Path(__file__).parent / "fixtures" / "scenes"
MUSIC = sorted(SCENES.glob("music-*.flac"))


@pytest.fixture(scope="module")
def speech_95s():
    return long_speech(95.0)


def test_windows_tile_the_audio_on_the_tag_grid(speech_95s):
    audio, _ = speech_95s
    windows = plan_windows(audio)
    assert windows[0].start == 0 and windows[-1].end == len(audio)
    for window, following in itertools.pairwise(windows):
        assert window.end == following.start  # no gap, no overlap
        assert window.end % GRID == 0  # cuts on the 0.4 s grid of the tag stream
    assert all(0 < w.samples <= 30 * 16000 for w in windows)


def test_no_cut_inside_speech(speech_95s):
    """Every cut falls in a pause: outside the spoken recordings, or where a recording is silent."""
    audio, spans = speech_95s
    cuts = [w.end for w in plan_windows(audio)[:-1]]
    assert cuts
    for cut in cuts:
        inside = [(start, end, text) for start, end, text in spans if start * 16000 < cut < end * 16000]
        if inside:
            around = audio[cut - 1600 : cut + 1600]
            level = 10 * np.log10(np.mean(around.astype(np.float64) ** 2) + 1e-12)
            peak = 10 * np.log10(np.max(audio.astype(np.float64) ** 2))
            assert level < peak - 35, (cut / 16000, inside, level, peak)


def test_segment_boundaries_do_not_split_words(tiny_en, speech_95s):
    """Each recording's words come out within one window's segments, in order: a cut never drops
    or splits the sentence it falls next to."""
    audio, spans = speech_95s
    result = tiny_en.transcribe(audio, tags=False)
    cuts = [w.end / 16000 for w in plan_windows(audio)[:-1]]
    for segment in result.segments:
        assert not any(segment.start < cut < segment.end - 1e-6 for cut in cuts)
    spoken = "".join(c for c in result.text.lower() if c.isalnum())
    for *_, text in spans:
        last_word = "".join(c for c in text.split()[-1].lower() if c.isalnum())
        assert last_word in spoken, (text, result.text)


@pytest.mark.parametrize("frame", [320, 4013, 16000 * 7 + 13, 16000 * 31])
def test_a_stream_plans_the_same_windows_as_the_whole_file(speech_95s, frame):
    """The planner looks only inside the window it cuts: fed piece by piece, it cuts the same."""
    audio, _ = speech_95s
    whole = plan_windows(audio)
    streamed, start, received = [], 0, 0
    while received < len(audio):
        received = min(len(audio), received + frame)
        while (window := plan_next(audio[:received], start, received == len(audio))) is not None:
            streamed.append(window)
            start = window.end
    assert [(w.start, w.end) for w in streamed] == [(w.start, w.end) for w in whole]
    for ours, theirs in zip(streamed, whole):
        np.testing.assert_allclose(ours.speech_probs, theirs.speech_probs, atol=1e-6)


def test_greedy_tokens_equal_faster_whisper_on_the_same_features(tiny_en):
    faster_whisper = pytest.importorskip("faster_whisper")
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import TranscriptionOptions

    from tagger.weights import ct2_whisper_dir

    path, _ = speech_clips()[0]
    audio = load_audio(path)
    features = tiny_en.backbone.encode(log_mel(torch.from_numpy(audio), 80)[None]).features
    with EncoderCounter(tiny_en) as counter:
        ours = tiny_en.transcribe(audio, tags=False, temperature=0.0, speech_gate=None)
    assert counter.encoder_calls == 1
    peer = faster_whisper.WhisperModel(str(ct2_whisper_dir(tiny_en.weights)), device="cpu", compute_type="int8")
    tokenizer = Tokenizer(peer.hf_tokenizer, False, task="transcribe", language="en")
    options = TranscriptionOptions(
        beam_size=1, best_of=5, patience=1, length_penalty=1, repetition_penalty=1, no_repeat_ngram_size=0,
        log_prob_threshold=-1.0, no_speech_threshold=0.6, compression_ratio_threshold=2.4,
        condition_on_previous_text=True, prompt_reset_on_temperature=0.5, temperatures=[0.0], initial_prompt=None,
        prefix=None, suppress_blank=True, suppress_tokens=[-1], without_timestamps=False, max_initial_timestamp=1.0,
        word_timestamps=False, prepend_punctuations="", append_punctuations="", multilingual=False,
        max_new_tokens=None, clip_timestamps="0", hallucination_silence_threshold=None, hotwords=None)
    prompt = peer.get_prompt(tokenizer, [], without_timestamps=False)
    result, *_ = peer.generate_with_fallback(features_view(features), prompt, tokenizer, options)
    assert [t for s in ours.segments for t in s.tokens] == [t for t in result.sequences_ids[0] if t != tokenizer.eot]


@pytest.mark.skipif(not (SHARED_SPEECH / "multilingual.mp3").is_file(), reason="../shared/data/speech is not here")
def test_multilingual_detects_the_language_of_every_window(base):
    result = base.transcribe(SHARED_SPEECH / "multilingual.mp3", tags=False, multilingual=True)
    languages = [s.language for s in result.segments]
    assert languages[0] == "en" and languages[-1] == "de"
    german = " ".join(s.text for s in result.segments if s.language == "de").lower()
    assert "software" in german and ("recht" in german or "bedingungen" in german), german
    once = base.transcribe(SHARED_SPEECH / "multilingual.mp3", tags=False)
    assert {s.language for s in once.segments} == {"en"}  # detected once: one language for all


@pytest.mark.parametrize("path", MUSIC, ids=[p.stem for p in MUSIC])
def test_no_words_over_music(tiny_en_tagged, path):
    with EncoderCounter(tiny_en_tagged) as counter:
        result = tiny_en_tagged.transcribe(path)
    assert result.text == "", [(s.start, s.end, s.text, s.speech_prob) for s in result.segments]
    assert all(s.no_speech for s in result.segments)
    assert counter.encoder_calls >= 1


def test_a_pure_tone_is_not_decoded(tiny_en):
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    with EncoderCounter(tiny_en) as counter:
        result = tiny_en.transcribe(tone, tags=False)
    assert result.text == "" and counter.encoder_calls == 1
    assert counter.decoder_calls == 0  # the detector finds no speech: nothing to decode


def test_speech_passes_the_gate(tiny_en_tagged):
    path, _ = speech_clips()[0]
    result = tiny_en_tagged.transcribe(path)
    assert result.segments and not any(s.no_speech for s in result.segments)
    assert all(s.speech_prob is not None and s.speech_prob >= 0.5 for s in result.segments)


def test_batched_decoding_makes_one_decoder_call_for_many_windows(tiny_en, speech_95s):
    audio, _ = speech_95s
    with EncoderCounter(tiny_en) as counter:
        batched = tiny_en.transcribe(audio, tags=False, condition_on_previous_text=False, temperature=0.0)
    first_calls = [batch for name, batch, kwargs in counter.text.calls if name == "generate"]
    assert first_calls[0] == len(plan_windows(audio))  # every window with speech in one batch
    sequential = tiny_en.transcribe(audio, tags=False, temperature=0.0)
    assert len(batched.text) > 0.8 * len(sequential.text)


def test_options_are_frozen_and_passed_whole():
    options = DecodeOptions(language="en", temperature=[0.0, 0.5])
    assert options.temperatures == (0.0, 0.5)
    with pytest.raises(AttributeError):
        options.language = "de"  # type: ignore[misc]
    with pytest.raises(ValueError, match="task"):
        DecodeOptions(task="summarise")
    assert WindowOptions().max_samples == 30 * 16000


def test_a_short_burst_does_not_make_a_long_segment_speech():
    """A segment's detector speech probability is its highest frame, scaled down when under a
    quarter of its frames are speech: half a second of a beep under seven seconds of text is not speech."""
    frames = np.zeros(300, np.float32)  # 300 frames of 32 ms = 9.6 s, the window starting at 10 s
    frames[100:116] = 0.95  # about 0.5 s that the detector takes for speech
    frames[200:280] = 0.9  # 2.6 s of speech
    window = Window(start=160_000, end=160_000 + 300 * 512, speech_probs=frames)
    both = window.segment_speech(10.0 + 90 * 0.032, 10.0 + 300 * 0.032)  # the burst and 2.6 s of speech: speech
    assert window.speech(10.0 + 90 * 0.032, 10.0 + 200 * 0.032) == pytest.approx(0.95)
    assert window.segment_speech(10.0 + 90 * 0.032, 10.0 + 200 * 0.032) == pytest.approx(0.95 * (16 / 110) / 0.25, rel=0.05)
    assert window.segment_speech(10.0 + 195 * 0.032, 10.0 + 285 * 0.032) == pytest.approx(0.9)
    assert both == pytest.approx(0.95, rel=1e-3)


def test_a_continuation_is_prompted_with_the_last_whole_segments():
    """A window's text that stopped early is continued from its last segments, not all of it: the
    prompt stays short (decoding cost follows it) and starts at a segment's opening timestamp."""
    begin = 50364
    segments = [[begin + 0, 1, 2, 3, begin + 50], [begin + 50, 4, 5, begin + 90],
                [begin + 90, 6, 7, 8, 9, 10, begin + 200], [begin + 200, 11, begin + 260]]
    tokens = [t for segment in segments for t in segment]
    assert recent_segments(tokens, begin, 100) == tokens
    assert recent_segments(tokens, begin, 10) == segments[2] + segments[3]
    assert recent_segments(tokens, begin, 9) == segments[3]
    assert recent_segments(tokens, begin, 2) == segments[3]  # the last segment, whatever its length
    continued = tokens + [begin + 260, 12, 13, begin + 300]  # a continuation's segment opens on one timestamp
    assert recent_segments(continued, begin, 8) == [begin + 200, 11, begin + 260, begin + 260, 12, 13, begin + 300]
