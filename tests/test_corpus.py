"""The default corpus builder on real Debian packages: the small slice end to end.

The packages come from the package cache that `make test-data` fills (`earmark data fetch --slice
small`); the tests run offline and fail with a clear message when the cache lacks them.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import jiwer
import numpy as np
import pytest
from whisper.normalizers import EnglishTextNormalizer

from tagger.audio import SAMPLE_RATE, load_audio
from tagger.corpus.build import SPLITS, BuildConfig, select_sources, split_groups
from tagger.corpus.default_corpus import build_default, collect_sources
from tagger.corpus.packages import fetch_debian
from tagger.corpus.sources import MAPPING_TABLE, family, read_rules
from tagger.corpus.synth import fetch_espeak, random_speech
from tagger.corpus.unpack import read_opensfx_cat, read_rcc
from tagger.labels import audioset


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("corpus")
    report = build_default(out, slice_name="small", config=BuildConfig(seed=3), progress=False)
    return out, report


def test_the_mapping_table_speaks_audioset():
    rules = read_rules(MAPPING_TABLE)
    assert len(rules) > 500
    names = set(audioset().names)
    assert {label for rule in rules for label in rule.labels} <= names
    assert len({(rule.package, rule.text) for rule in rules}) == len(rules)  # no pattern twice


def test_takes_of_one_recording_are_one_family():
    assert family("kit/Snare-Hard.flac") == family("kit/snare_soft2.flac") == "kit/snare"
    assert family("sounds/cow_ack2.ogg") == family("sounds/cow_ack1.ogg") != family("sounds/cow_die.ogg")
    assert family("a/dog.ogg") != family("b/dog.ogg")  # another folder, another recording


def test_packed_archives_decode():
    opensfx = fetch_debian("openttd-opensfx").root / "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
    sounds = dict(read_opensfx_cat(opensfx))
    assert len(sounds) >= 70 and "35_modern_car_horn.wav" in sounds
    horn = load_audio(sounds["35_modern_car_horn.wav"])
    assert 0.2 < len(horn) / SAMPLE_RATE < 10 and np.abs(horn).max() > 0.05
    rcc = fetch_debian("gcompris-qt-data").root / "usr/share/gcompris-qt/rcc/explore_farm_animals.rcc"
    entries = dict(read_rcc(rcc))
    cow = next(data for name, data in entries.items() if name.endswith("animals/cow.ogg"))
    assert len(load_audio(cow)) > SAMPLE_RATE // 2


def test_espeak_speech_is_intelligible(tiny_en):
    """Most synthetic utterances are understood by Whisper (some voice variants much less than others)."""
    espeak = fetch_espeak()
    normalise = EnglishTextNormalizer()
    errors = []
    for seed in range(6):
        for gender in ("female", "male"):
            utterance = random_speech(espeak, np.random.default_rng(seed), language="en", gender=gender)
            assert f"{gender.title()} speech, {'wo' if gender == 'female' else ''}man speaking" in utterance.labels
            assert "Speech synthesizer" in utterance.labels
            heard = tiny_en.transcribe(utterance.audio, language="en", tags=False).text
            errors.append(jiwer.wer(normalise(utterance.text), normalise(heard)))
    assert np.median(errors) <= 0.35, errors


def test_splits_never_share_a_recording():
    sources = collect_sources(None, "small", progress=False).sources
    config = BuildConfig(seed=1)
    chosen = select_sources(sources, config)
    assignment = split_groups(chosen, config.seed)
    per_class: dict[str, set[str]] = defaultdict(set)
    for source in chosen:
        per_class[source.labels[0]].add(assignment[source.group])
    # a class of three or more recordings is heard in training and, nearly always, tested on another
    # recording (a recording goes where its rarest class needs it, so a common class can miss a split)
    groups = defaultdict(set)
    for source in chosen:
        groups[source.labels[0]].add(source.group)
    common = [leaf for leaf, members in groups.items() if len(members) >= 3]
    assert all("train" in per_class[leaf] for leaf in common)
    tested = [leaf for leaf in common if "test" in per_class[leaf]]
    assert len(tested) >= 0.9 * len(common), sorted(set(common) - set(tested))


def test_small_slice_end_to_end(small_corpus):
    out, report = small_corpus
    labels = rows(out / "labels.csv")
    covered = [row["display_name"] for row in labels]
    assert covered == report.covered and len(covered) >= 10
    for row in labels:
        assert audioset()[audioset().index_of(row["display_name"])].mid == row["mid"]
    card = json.loads((out / "card.json").read_text())
    assert set(card["covered"]) == set(covered) and (out / "CARD.md").read_text().startswith("# Earmark default corpus")
    sources = collect_sources(None, "small", progress=False).sources
    group_of = {source.source_id: source.group for source in sources}
    split_of_group: dict[str, str] = {}
    train_counts: dict[str, int] = defaultdict(int)
    for split in SPLITS:
        clips = rows(out / f"{split}.csv")
        assert clips, split
        for clip in clips:
            for source_id in clip["sources"].split(" | "):
                group = group_of[source_id]
                assert split_of_group.setdefault(group, split) == split, f"{group} in two splits"
            clip_labels = [label for label in clip["labels"].split(";") if label]
            assert set(clip_labels) <= set(covered)
            if split == "train":
                for label in clip_labels:
                    train_counts[label] += 1
    assert all(train_counts[label] >= BuildConfig().min_train_clips for label in covered)
    some = rows(out / "train.csv")[:20]
    for clip in some:
        audio = load_audio(out / clip["path"])
        assert 0.5 <= len(audio) / SAMPLE_RATE <= 12.5 and np.isfinite(audio).all()


def test_the_build_is_deterministic(small_corpus, tmp_path):
    out, _ = small_corpus
    again = tmp_path / "again"
    build_default(again, slice_name="small", config=BuildConfig(seed=3), progress=False)
    for name in ("train.csv", "dev.csv", "test.csv", "labels.csv"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    for clip in rows(out / "test.csv")[:10]:
        assert (again / clip["path"]).read_bytes() == (out / clip["path"]).read_bytes()
