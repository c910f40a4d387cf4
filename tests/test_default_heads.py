"""The default heads shipped in the package: they load offline, report only their own classes, and
tell speech, music and silence apart on real recordings they never heard (tests/fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from speech_fixtures import FIXTURES as SPEECH

from tagger import load_model
from tagger.cli import build_parser
from tagger.corpus.cli import train_config
from tagger.heads import card_path, int8_head
from tagger.labels import audioset
from tagger.pipeline import bundled_head_path, bundled_heads

SCENES = Path(__file__).resolve().parent / "fixtures" / "scenes"
# Real speech that the default corpus does not contain (its Asterisk voice is the English one).
SPEECH_CLIPS = sorted(SPEECH.glob("librivox-*.flac")) + [SPEECH / "asterisk-it-tt-allbusy.flac"]
MUSIC_CLIPS = sorted(SCENES.glob("music-*.flac"))
SILENCE_CLIPS = sorted(SCENES.glob("silence-*.flac"))


@pytest.fixture(scope="module", params=["tiny.en", "base"])
def default_model(request):
    return load_model(request.param, device="cpu")  # head="auto": the bundled head


def test_both_models_have_a_bundled_head():
    assert {"tiny.en", "base"} <= set(bundled_heads())
    for name in ("tiny.en", "base"):
        path = bundled_head_path(name)
        assert path.stat().st_size <= 15_000_000
        card = json.loads(card_path(path).read_text())
        assert card["backbone"] == name
        metrics = card["extra"]["test_metrics"]
        if card["label_set"] == "audioset":  # distilled from the AudioSet teacher (MODEL_CARD.md)
            assert card["n_classes"] == 527
            # held-out pool audio against the teacher's labels, and the labelled corpus' test split (166 classes)
            assert metrics["pool_test_vs_teacher"]["mAP"] >= 0.4 and metrics["corpus_test"]["mAP"] >= 0.5
            thresholds = card["extra"]["thresholds"]  # calibrated per class, for sound events
            assert len(thresholds) == 527 and all(0 < t < 1 for t in thresholds)
        else:  # trained on the labelled corpus alone
            assert card["n_classes"] >= 80 and metrics["mAP"] >= 0.45  # chance is about 0.03


def test_the_default_head_loads_offline_and_fits_its_backbone(default_model):
    head = default_model.head
    assert head is not None and head.card.source == f"earmark-default-{default_model.name}"
    assert head.card.backbone_sha256 == default_model.backbone.sha256
    if head.card.labels.name == audioset().name:
        assert head.card.labels.mids == audioset().mids  # every AudioSet class, in AudioSet's order
    else:
        assert set(head.card.labels.names) <= set(audioset().names) and len(head.card.labels) < len(audioset())
    explicit = load_model(default_model.name, head="default", device="cpu")
    assert explicit.head.card.labels == head.card.labels
    assert load_model(default_model.name, head=None, device="cpu").head is None


def quantized_layers(head) -> int:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    return sum(isinstance(m, DynamicInt8Linear) for m in head.module.modules())


def test_on_a_cpu_the_head_runs_in_int8_and_tags_as_the_float_head_does(default_model):
    """The default compute type on a CPU is int8, for the head's Linear layers as for the decoder;
    a float compute type keeps the head float32, and both tag real recordings alike."""
    assert quantized_layers(default_model.head) >= 5  # TL-Tr: 2 blocks x (4 attention + 2 MLP) + the classifier
    float_model = load_model(default_model.name, device="cpu", compute_type="float32")
    assert quantized_layers(float_model.head) == 0
    assert int8_head(default_model.head) is default_model.head  # int8 already
    for path in (SPEECH_CLIPS[0], MUSIC_CLIPS[0], *sorted((SCENES.parent / "sounds" / "drums").glob("*.flac"))[:2]):
        int8, float32 = default_model.tag(path, top_k=None).scores, float_model.tag(path, top_k=None).scores
        assert int8.shape == float32.shape and np.abs(int8 - float32).max() < 0.05, (path.name, np.abs(int8 - float32).max())
        top3 = np.argsort(-float32, axis=1)[:, :3]  # the top class may swap with a near tie, never further
        assert all(best in row for best, row in zip(int8.argmax(axis=1), top3)), path.name


def top_class(model, path: Path, among: tuple[str, ...]) -> tuple[str, dict[str, float], list[str]]:
    result = model.tag(path, top_k=None, tag_resolution=10.0)
    labels = model.head.card.labels
    peak = result.scores.max(axis=0)  # the most confident window of the clip
    scores = {name: float(peak[labels.index_of(name)]) for name in among}
    return max(scores, key=scores.get), scores, result.notes


@pytest.mark.parametrize("kind, clips", [("Speech", SPEECH_CLIPS), ("Music", MUSIC_CLIPS), ("Silence", SILENCE_CLIPS)])
def test_speech_music_and_silence_on_real_recordings(default_model, kind, clips):
    assert clips
    for path in clips:
        top, scores, notes = top_class(default_model, path, ("Speech", "Music", "Silence"))
        if kind == "Silence" and not any(scores.values()):  # below -60 dBFS: a note says so, no tags
            assert any("silent" in note for note in notes), (path.name, notes)
            continue
        assert top == kind and scores[kind] >= 0.3, (path.name, scores)


def test_digital_silence_is_silence(default_model):
    _, scores, notes = top_class(default_model, np.zeros(16000 * 8, np.float32), ("Speech", "Music", "Silence"))
    assert not any(scores.values()) and any(note.startswith("the audio is silent") for note in notes), (scores, notes)


def test_only_the_trained_classes_are_reported(default_model):
    result = default_model.tag(MUSIC_CLIPS[0], top_k=None)
    served = set(default_model.head.card.labels.names)
    assert result.labels == list(default_model.head.card.labels.mids)
    assert result.scores.shape[1] == len(default_model.head.card.labels)
    assert {label.name for window in result.tags for label in window.labels} == served
    assert result.head == f"earmark-default-{default_model.name}"


def test_music_is_a_sound_event_with_calibrated_thresholds(default_model):
    result = default_model.tag(MUSIC_CLIPS[0], tag_resolution=2.0)
    music = [e for e in result.events if e.name == "Music"]
    assert music and max(e.end - e.start for e in music) >= 4.0, result.events  # 10 s of music
    thresholds = default_model.head.card.extra.get("thresholds") or [0.5] * len(default_model.head.card.labels)
    assert all(e.probability >= thresholds[e.index] for e in result.events)


def test_train_default_stretches_the_reference_schedule_to_its_epochs():
    parser = build_parser()

    def config(*flags: str):
        return train_config(parser.parse_args(["data", "train-default", "--corpus", "c", "--work", "w", *flags]))

    reference = config()
    assert (reference.epochs, reference.lr_decay_start, reference.lr_decay_every, reference.average_last) == (30, 15, 5, 15)
    longer = config("--epochs", "60", "--lr", "5e-4")
    assert (longer.lr_decay_start, longer.lr_decay_every, longer.average_last, longer.lr) == (30, 10, 30, 5e-4)
    assert config("--epochs", "100", "--lr-decay-every", "10").lr_decay_every == 10
