"""The engine end to end on real weights and real recordings."""

from __future__ import annotations

import io
import itertools
import math
import threading

import jiwer
import numpy as np
import pytest
import torch
from conftest import seeded_head
from speech_fixtures import foreign_speech, long_speech, speech_clips
from whisper.normalizers import EnglishTextNormalizer

import tagger.decoding
import tagger.onepass
from tagger import DecodeOptions, TagResult, TranscriptionResult, load_audio
from tagger.audio import EmptyAudioError
from tagger.pipeline import NO_HEAD_NOTE, EarmarkModel
from tagger.windows import plan_windows


class CountingDecoder:
    """Stands between the pipeline and its CTranslate2 decoder and records every call (the real
    decoder does the work)."""

    def __init__(self, real, timeline: list[tuple[str, str]]):
        self.real = real
        self.calls: list[tuple[str, int, dict]] = []  # (method, batch size, keyword arguments)
        self.timeline = timeline  # (method, thread), shared with the encoder's counter

    def __getattr__(self, name):
        method = getattr(self.real, name)
        if name not in ("generate", "detect_language", "align"):
            return method

        def counted(features, *args, **kwargs):
            self.calls.append((name, features.shape[0], kwargs))
            self.timeline.append((name, threading.current_thread().name))
            return method(features, *args, **kwargs)

        return counted


class EncoderCounter:
    """Wraps a model's encoder forward pass and its text decoder, and counts what goes through them."""

    def __init__(self, model: EarmarkModel):
        self.model = model
        self.encoder = model.whisper.encoder
        self.windows = 0
        self.encoder_calls = 0
        self.timeline: list[tuple[str, str]] = []  # ("encode" or a decoder method, thread) in order
        self._encoder_forward = self.encoder.forward

    @property
    def decoder_calls(self) -> int:
        return len(self.text.calls)

    def __enter__(self):
        def encoder_forward(mel):
            self.encoder_calls += 1
            self.windows += mel.shape[0]
            self.timeline.append(("encode", threading.current_thread().name))
            return self._encoder_forward(mel)

        self.encoder.forward = encoder_forward
        self.model.decoder(DecodeOptions())  # loads the text decoder
        self.text = self.model.text_decoder = CountingDecoder(self.model.text_decoder, self.timeline)
        return self

    def __exit__(self, *exc):
        del self.encoder.forward
        self.model.text_decoder = self.text.real


@pytest.fixture(scope="module")
def speech_95s():
    audio, spans = long_speech(95.0)
    assert len(audio) / 16000 >= 95.0
    return audio, spans


def test_wer_tiny_en_on_real_speech(tiny_en):
    normalise = EnglishTextNormalizer()
    references, hypotheses = [], []
    for path, transcript in speech_clips():
        result = tiny_en.transcribe(path, tags=False)
        references.append(normalise(transcript))
        hypotheses.append(normalise(result.text))
    wer = jiwer.wer(references, hypotheses)
    assert wer <= 0.10, f"WER {wer:.3f}\n" + "\n".join(f"{r!r}\n{h!r}" for r, h in zip(references, hypotheses))


def test_multilingual_base_detects_language(base):
    path, language, expected = foreign_speech()
    result = base.transcribe(path, tags=False)
    assert result.language == language
    normalise = lambda text: "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()
    heard = set(normalise(result.text))
    wanted = set(normalise(expected))
    assert len(heard & wanted) >= max(1, len(wanted) // 2), (result.text, expected)


def test_one_encoder_pass_per_window_with_tags_language_detection_and_words(base, speech_95s):
    audio, _ = speech_95s
    model = EarmarkModel(base.whisper, base.weights, seeded_head("tl_tr", 6, 512))
    with EncoderCounter(model) as counter:
        result = model.transcribe(audio, language=None, word_timestamps=True, tag_resolution=10.0)
    windows = math.ceil(len(audio) / 16000 / 30)
    assert windows == 4
    assert counter.windows == windows
    assert counter.encoder_calls == 1  # one batch of four windows
    assert result.language == "en"
    assert len(result.tags) == math.ceil(result.duration / 10)
    assert result.segments and all(s.words for s in result.segments)


def test_text_is_decoded_on_a_second_thread_while_later_windows_are_encoded(tiny_en, speech_95s):
    audio, _ = speech_95s
    tiny_en.decode_batch_size = 4  # the decoder takes a window as soon as one waits
    try:
        with EncoderCounter(tiny_en) as counter:
            result = tiny_en.transcribe(audio, tags=False)
    finally:
        tiny_en.decode_batch_size = 16
    assert counter.windows == 4
    timeline = counter.timeline
    encodes = [i for i, (what, _) in enumerate(timeline) if what == "encode"]
    decodes = [i for i, (what, _) in enumerate(timeline) if what == "generate"]
    assert {thread for what, thread in timeline if what == "encode"} == {threading.main_thread().name}
    assert {thread for what, thread in timeline if what != "encode"} == {"earmark-decode"}
    assert decodes[0] < encodes[-1]  # decoding began before the last window was encoded
    assert len(result.text.split()) > 100
    assert [s.start for s in result.segments] == sorted(s.start for s in result.segments)
    assert not [t for t in threading.enumerate() if t.name == "earmark-decode"]


def test_windows_after_the_first_are_planned_on_the_decoding_thread_while_the_encoder_runs(
        tiny_en, speech_95s, monkeypatch):
    """A job plans its first window only; the decoding thread plans the rest while the first is
    encoded, and the windows come out the same as planning the whole file first."""
    audio, _ = speech_95s
    job = tagger.onepass.AudioJob(tiny_en, audio, DecodeOptions(), None, tiny_en.window_options)
    assert job.n_windows == 1 and not job.planned_all and not job.encoded_all
    planned_by = []
    real = tagger.onepass.plan_next

    def plan_next(*args, **kwargs):
        planned_by.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(tagger.onepass, "plan_next", plan_next)
    with EncoderCounter(tiny_en) as counter:
        tiny_en.transcribe(audio, tags=False)
    whole = plan_windows(audio, tiny_en.window_options)
    assert counter.windows == len(whole) == len(planned_by) == 4
    assert planned_by[0] == threading.main_thread().name  # the first, before anything is encoded
    assert "earmark-decode" in planned_by[1:]  # the rest beside the encoder (which plans one itself if it gets there first)
    job.plan_ahead()
    assert job.planned_all and [(w.start, w.end) for w in job.window_list] == [(w.start, w.end) for w in whole]


@pytest.mark.parametrize("side", ["decoder", "encoder"])
def test_a_failure_on_either_thread_stops_both_and_is_raised(tiny_en, speech_95s, monkeypatch, side):
    audio, _ = speech_95s
    calls = []

    def fail(*args, **kwargs):
        calls.append(side)
        if side == "encoder" and len(calls) < 3:
            return real(*args, **kwargs)
        raise RuntimeError(f"the {side} broke")

    target = tagger.onepass if side == "encoder" else tagger.decoding.Decoder
    name = "encode_step" if side == "encoder" else "finish"
    real = getattr(target, name)
    monkeypatch.setattr(target, name, fail)
    tiny_en.decode_batch_size = 4
    try:
        with pytest.raises(RuntimeError, match=f"the {side} broke"):
            tiny_en.transcribe(audio, tags=False)
    finally:
        tiny_en.decode_batch_size = 16
    assert not [t for t in threading.enumerate() if t.name == "earmark-decode"]


def test_one_encoder_pass_per_window_with_fallback_forced(tiny_en_tagged, speech_95s):
    audio, _ = speech_95s
    tiny_en_tagged.encode_batch_size = 3  # two encoder calls: windows 0-2, then window 3
    try:
        with EncoderCounter(tiny_en_tagged) as counter:
            result = tiny_en_tagged.transcribe(
                audio, compression_ratio_threshold=0.0, temperature=(0.0, 1.0), best_of=1
            )
    finally:
        tiny_en_tagged.encode_batch_size = 8
    assert counter.windows == 4
    assert counter.encoder_calls == 2
    hot = [call for call in counter.text.calls if call[2].get("sampling_temperature") == 1.0]
    decoded = {s.seek for s in result.segments}
    assert sum(batch for _, batch, _ in hot) == len(decoded) == 4  # every window went through every temperature
    assert result.scores.shape == (math.ceil(result.duration / 10), 527)
    again = tiny_en_tagged.transcribe(audio, compression_ratio_threshold=0.0, temperature=(0.0, 1.0), best_of=1)
    assert again.text == result.text  # fallback sampling is seeded: the same audio, the same transcript


def test_long_speech_segments_are_inside_the_audio_and_ordered(tiny_en, speech_95s):
    audio, spans = speech_95s
    result = tiny_en.transcribe(audio, tags=False)
    duration = len(audio) / 16000
    assert result.duration == pytest.approx(duration, abs=1e-3)
    assert result.segments
    for previous, segment in zip(result.segments, result.segments[1:]):
        assert previous.end <= segment.start + 1e-6
    for segment in result.segments:
        assert 0 <= segment.start < segment.end <= duration + 1e-6
    normalise = EnglishTextNormalizer()
    wer = jiwer.wer(normalise(" ".join(text for *_, text in spans)), normalise(result.text))
    assert wer <= 0.15, result.text


def test_word_timestamps_lie_inside_their_segments(tiny_en):
    path, _ = speech_clips()[0]
    result = tiny_en.transcribe(path, word_timestamps=True, tags=False)
    words = [w for s in result.segments for w in s.words]
    assert len(words) >= 3
    for segment in result.segments:
        for word in segment.words:
            assert segment.start - 0.01 <= word.start <= word.end <= segment.end + 0.01
    assert all(a.start <= b.start for a, b in itertools.pairwise(words))


def test_tags_only_never_runs_the_decoder(tiny_en_tagged):
    path, _ = speech_clips()[0]
    with EncoderCounter(tiny_en_tagged) as counter:
        result = tiny_en_tagged.tag(path, tag_resolution=2.0, top_k=None)
    assert counter.decoder_calls == 0
    assert counter.windows == 1
    assert isinstance(result, TagResult) and not isinstance(result, TranscriptionResult)
    assert all(len(window.labels) == 527 for window in result.tags)  # top_k=None: every class
    assert np.all((result.scores >= 0) & (result.scores <= 1))


@pytest.mark.parametrize("resolution, expected_steps", [(0.4, 1), (2.0, 5), (4.4, 11), (8.8, 22), (10.0, 25)])
def test_tag_windows_cover_only_the_real_audio(tiny_en_tagged, speech_95s, resolution, expected_steps):
    audio = speech_95s[0][: 16000 * 41 + 1234]  # 41.08 s: the second 30 s window is mostly padding
    result = tiny_en_tagged.tag(audio, tag_resolution=resolution)
    steps = math.ceil((len(audio) // 160) / 40)
    assert len(result.tags) == math.ceil(steps / expected_steps)
    assert result.tags[0].start == 0
    assert result.tags[-1].end == pytest.approx(result.duration, abs=1e-3)
    for window, following in zip(result.tags, result.tags[1:]):
        assert window.end == pytest.approx(following.start)
        assert window.end - window.start == pytest.approx(resolution)


def test_bad_tag_resolution_is_refused(tiny_en_tagged):
    with pytest.raises(ValueError, match="multiple of 0.4"):
        tiny_en_tagged.tag(np.zeros(16000, np.float32), tag_resolution=1.0)


def test_tags_equal_the_head_on_independently_computed_features(tiny_en_tagged, speech_95s):
    """Reference: whisper's own mel and a hand-written encoder loop, pooled as Whisper-AT does."""
    import whisper

    audio = speech_95s[0][: 16000 * 20]
    result = tiny_en_tagged.tag(audio, tag_resolution=10.0, top_k=None)
    encoder = tiny_en_tagged.whisper.encoder
    mel = whisper.log_mel_spectrogram(torch.from_numpy(audio), 80, padding=whisper.audio.N_SAMPLES)
    mel = whisper.pad_or_trim(mel[:, : len(audio) // 160], 3000)[None]
    with torch.no_grad():
        x = torch.nn.functional.gelu(encoder.conv2(torch.nn.functional.gelu(encoder.conv1(mel)))).permute(0, 2, 1)
        x = x + encoder.positional_embedding
        layers = []
        for block in encoder.blocks:
            x = block(x)
            layers.append(torch.nn.functional.avg_pool2d(x, kernel_size=(20, 1), stride=(20, 1))[0])
        pooled = torch.stack(layers)  # [L, 75, D]
        windows = pooled[:, :50].reshape(4, 2, 25, 384).transpose(0, 1)
        expected = torch.sigmoid(tiny_en_tagged.head.module(windows)).numpy()
    np.testing.assert_allclose(result.scores, expected, atol=1e-4)


def test_batch_size_does_not_change_results(tiny_en_tagged, speech_95s):
    audio = speech_95s[0]
    one = tiny_en_tagged.tag(audio, tag_resolution=4.4, top_k=None)
    tiny_en_tagged.encode_batch_size = 1
    try:
        batched = tiny_en_tagged.tag(audio, tag_resolution=4.4, top_k=None)
    finally:
        tiny_en_tagged.encode_batch_size = 8
    np.testing.assert_allclose(one.scores, batched.scores, atol=1e-4)


def test_label_filters(tiny_en_tagged):
    path, _ = speech_clips()[0]
    everything = tiny_en_tagged.tag(path, top_k=None)
    probabilities = everything.scores[0]
    top3 = tiny_en_tagged.tag(path, top_k=3).tags[0].labels
    assert [label.index for label in top3] == list(np.argsort(-probabilities)[:3])
    cut = float(np.sort(probabilities)[-10])
    assert all(label.probability >= cut for label in tiny_en_tagged.tag(path, top_k=None, threshold=cut).tags[0].labels)
    only = tiny_en_tagged.tag(path, top_k=None, include=["Speech", "/m/04rlf"]).tags[0].labels
    assert {label.mid for label in only} == {"/m/09x0r", "/m/04rlf"}
    without = tiny_en_tagged.tag(path, top_k=None, exclude=["Speech"]).tags[0].labels
    assert len(without) == 526 and "/m/09x0r" not in {label.mid for label in without}
    label = top3[0]
    assert label == (label.index, label.mid, label.name, label.probability)


def test_transcript_without_head_says_there_are_no_tags(tiny_en):
    path, _ = speech_clips()[0]
    result = tiny_en.transcribe(path)
    assert result.text and result.tags == [] and result.scores.shape[0] == 0
    assert NO_HEAD_NOTE in result.notes
    with pytest.raises(ValueError, match="no tagging head"):
        tiny_en.tag(path)


def test_segments_carry_tags_and_to_dict_is_json_ready(tiny_en_tagged):
    import json

    path, _ = speech_clips()[0]
    result = tiny_en_tagged.transcribe(path, top_k=2)
    assert all(len(segment.tags) == 2 for segment in result.segments)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["text"] == result.text and data["head"] == "test-seeded"
    assert data["tags"][0]["labels"][0].keys() == {"index", "mid", "name", "probability"}


def test_every_input_kind_gives_the_same_transcript(tiny_en):
    path, _ = speech_clips()[0]
    from_path = tiny_en.transcribe(path, tags=False).text
    assert tiny_en.transcribe(str(path), tags=False).text == from_path
    assert tiny_en.transcribe(path.read_bytes(), tags=False).text == from_path
    with open(path, "rb") as handle:
        assert tiny_en.transcribe(handle, tags=False).text == from_path
    assert tiny_en.transcribe(io.BytesIO(path.read_bytes()), tags=False).text == from_path
    assert tiny_en.transcribe(load_audio(path), tags=False).text == from_path


@pytest.mark.parametrize("level", [0.0, 1e-4])
def test_silence_gives_no_made_up_text(tiny_en, level):
    noise = np.random.default_rng(0).standard_normal(16000 * 35).astype(np.float32) * level
    with EncoderCounter(tiny_en) as counter:
        result = tiny_en.transcribe(noise)
    assert result.text == "" and result.segments == []
    assert counter.decoder_calls == 0  # silent windows are not decoded at all


def test_too_short_or_empty_audio_is_refused(tiny_en):
    with pytest.raises(EmptyAudioError):
        tiny_en.transcribe(b"")
    with pytest.raises(EmptyAudioError):
        tiny_en.transcribe(np.zeros(16, np.float32))  # 1 ms: not one 10 ms frame


def test_an_hour_long_recording_is_encoded_once_and_tagged_throughout(tiny_en_tagged):
    """An hour of quiet room noise with one spoken sentence 40 minutes in."""
    path, transcript = speech_clips()[0]
    speech = load_audio(path)
    audio = np.random.default_rng(1).standard_normal(16000 * 3600).astype(np.float32) * 1e-4
    at = 16000 * 2400 + 16000 * 7  # 40:07, inside the window that starts at 40:00
    audio[at : at + len(speech)] += speech
    with EncoderCounter(tiny_en_tagged) as counter:
        result = tiny_en_tagged.transcribe(audio, tag_resolution=10.0, top_k=1)
    assert counter.windows == 120
    assert len(result.tags) == 360 and result.tags[-1].end == 3600.0
    assert result.segments and all(2400 <= s.start and s.end <= 2430 for s in result.segments)
    normalise = EnglishTextNormalizer()
    assert jiwer.wer(normalise(transcript), normalise(result.text)) <= 0.2
