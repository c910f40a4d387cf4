"""The AudioSet label table shipped as package data, and label lookups."""

from __future__ import annotations

import hashlib
from importlib import resources

import pytest

from tagger.labels import Label, LabelSet, audioset

# SHA-256 of whisper_at/assets/class_labels_indices.csv as recorded in the whisper-at 0.5 wheel's RECORD.
AUDIOSET_CSV_SHA256 = "cdd1049833c4b86127c2773ac0d14a2754b6a6d0d1798002ed5c66e699708429"


def test_package_data_is_the_registry_copy():
    data = (resources.files("tagger") / "data" / "audioset_labels.csv").read_bytes()
    assert hashlib.sha256(data).hexdigest() == AUDIOSET_CSV_SHA256
    assert data.startswith(b"index,mid,display_name")


def test_audioset_table():
    labels = audioset()
    assert labels.name == "audioset"
    assert len(labels) == 527
    assert labels[0] == Label(0, "/m/09x0r", "Speech")
    assert labels[137] == Label(137, "/m/04rlf", "Music")
    assert labels[526] == Label(526, "/m/07hvw1", "Field recording")
    assert labels[1].name == "Male speech, man speaking"  # quoted CSV field with a comma
    assert [label.index for label in labels] == list(range(527))
    assert len(set(labels.mids)) == len(set(labels.names)) == 527
    assert labels.mids[137] == "/m/04rlf" and labels.names[0] == "Speech"
    assert audioset() is labels  # cached


def test_lookups():
    labels = audioset()
    assert labels.index_of("/m/09x0r") == 0
    assert labels.index_of("Speech") == 0
    assert labels.index_of("  music ") == 137
    assert labels.index_of("/M/04RLF") == 137
    assert labels.index_of("male speech, man speaking") == 1
    assert labels.indices(["Speech", "/m/04rlf", "Field recording"]) == [0, 137, 526]
    assert labels.indices("Music") == [137]  # one string is one key, not its characters
    assert labels.indices([]) == []


def test_unknown_label_is_a_helpful_key_error():
    with pytest.raises(KeyError) as caught:
        audioset().index_of("Musc")
    message = str(caught.value)
    assert "'Musc'" in message and "audioset" in message and "'Music'" in message
    with pytest.raises(KeyError, match="no label 'zzzzqqq'"):
        audioset().indices(["Speech", "zzzzqqq"])


def test_json_round_trip():
    labels = audioset()
    rows = labels.to_json()
    assert rows[0] == {"index": 0, "mid": "/m/09x0r", "name": "Speech"}
    assert LabelSet.from_json("audioset", rows) == labels
    assert LabelSet.from_json("audioset", [{"mid": r["mid"], "display_name": r["name"]} for r in rows]) == labels


def test_custom_label_set():
    custom = LabelSet.from_json(
        "gym", [{"index": 0, "mid": "squat", "name": "Squat"}, {"index": 1, "mid": "rest", "name": "Rest"}]
    )
    assert len(custom) == 2 and list(custom) == [Label(0, "squat", "Squat"), Label(1, "rest", "Rest")]
    assert custom.index_of("REST") == 1
    assert LabelSet.from_json("gym", custom.to_json()) == custom
    assert custom != audioset()
    with pytest.raises(ValueError, match="unique"):
        LabelSet.from_json("dup", [{"mid": "a", "name": "A"}, {"mid": "b", "name": "a"}])
    with pytest.raises(ValueError, match="index 5, expected 0"):
        LabelSet("bad", (Label(5, "a", "A"),))
    with pytest.raises(ValueError, match="no 'mid'"):
        LabelSet.from_json("bad", [{"name": "A"}])
