"""The earmark console script, run as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import seeded_head
from speech_fixtures import is_speech_class, speech_clips

from tagger.heads import save_head

EARMARK = shutil.which("earmark", path=str(Path(sys.executable).parent)) or "earmark"


def earmark(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EARMARK, *args], check=False, capture_output=True, text=True, timeout=600)


def test_transcribe_srt_to_stdout():
    path, transcript = speech_clips()[0]
    run = earmark("transcribe", str(path), "--model", "tiny.en", "--format", "srt")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "1" and " --> " in lines[1]
    assert transcript.split()[0].lower().strip(",.") in run.stdout.lower()


def test_transcribe_and_tag_into_an_output_dir(tmp_path: Path):
    head = seeded_head("tl_tr", 4, 384)
    head_path = save_head(head.module, head.card, tmp_path / "head.safetensors")
    clips = [path for path, _ in speech_clips()[:2]]
    out = tmp_path / "out"
    run = earmark("transcribe", *map(str, clips), "--model", "tiny.en", "--head", str(head_path), "--format", "json",
                  "--top-k", "3", "--tag-resolution", "4.4", "--output-dir", str(out))
    assert run.returncode == 0, run.stderr
    for clip in clips:
        data = json.loads((out / f"{clip.stem}.json").read_text())
        assert data["text"] and data["tag_resolution"] == 4.4
        assert all(len(window["labels"]) == 3 for window in data["tags"])
    run = earmark("tag", str(clips[0]), "--model", "tiny.en", "--head", str(head_path), "--format", "tsv", "--top-k", "all")
    assert run.returncode == 0, run.stderr
    rows = run.stdout.splitlines()
    assert rows[0] == "start\tend\tmid\tname\tprobability" and len(rows) - 1 == 527 * len({r.split("\t")[0] for r in rows[1:]})


def test_tag_without_a_head_is_a_clear_error():
    path, _ = speech_clips()[0]
    run = earmark("tag", str(path), "--model", "tiny.en", "--head", "none")
    assert run.returncode == 2 and "--head" in run.stderr


def test_the_default_head_tags_speech_and_marks_sound_cues():
    path = Path(__file__).parent / "fixtures" / "scenes" / "music-macroform-cold_day.flac"
    run = earmark("tag", str(path), "--model", "tiny.en", "--format", "json", "--top-k", "1")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["tags"][0]["labels"][0]["name"] in ("Music", "Musical instrument")
    speech, _ = speech_clips()[0]
    run = earmark("transcribe", str(speech), "--model", "tiny.en", "--format", "json")
    assert run.returncode == 0, run.stderr
    assert is_speech_class(json.loads(run.stdout)["tags"][0]["labels"][0]["name"])


@pytest.mark.parametrize("content", [b"", b"this is not audio at all"])
def test_bad_files_are_reported_and_the_rest_still_run(tmp_path: Path, content: bytes):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    good, _ = speech_clips()[0]
    run = earmark("transcribe", str(bad), str(good), "--model", "tiny.en")
    assert run.returncode == 1
    assert "bad.wav" in run.stderr and "Traceback" not in run.stderr
    assert run.stdout.strip()


def test_unknown_model_lists_where_it_looked():
    path, _ = speech_clips()[0]
    run = earmark("transcribe", str(path), "--model", "no-such-model")
    assert run.returncode == 2 and "Traceback" not in run.stderr and "no-such-model" in run.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
def test_asking_for_a_missing_gpu_is_a_clear_error():
    path, _ = speech_clips()[0]
    run = earmark("transcribe", str(path), "--model", "tiny.en", "--device", "cuda")
    assert run.returncode == 2 and "CUDA" in run.stderr and "Traceback" not in run.stderr


def test_audio_track_and_the_notes_are_shown(tmp_path: Path):
    from test_audio import SPEECH_8K, matroska, read_native, resample

    native, rate = read_native(SPEECH_8K)
    speech = resample(native, rate, 16000)
    mkv = tmp_path / "two-tracks.mkv"
    mkv.write_bytes(matroska([np.zeros_like(speech), speech]))
    run = earmark("transcribe", str(mkv), "--model", "tiny.en")
    assert run.returncode == 0, run.stderr
    assert "telemarketers" in run.stdout.lower(), run.stdout
    assert "two-tracks.mkv: note: the file has 2 audio tracks; track 2 was used" in run.stderr, run.stderr
    run = earmark("tag", str(mkv), "--model", "tiny.en", "--audio-track", "1", "--format", "json")
    assert run.returncode == 0, run.stderr
    assert "note: audio track 1 of the file's 2 was used, as asked" in run.stderr, run.stderr
    assert "note: the audio is silent" in run.stderr and all(not w["labels"] for w in json.loads(run.stdout)["tags"])
    run = earmark("transcribe", str(mkv), "--model", "tiny.en", "--audio-track", "3")
    assert run.returncode == 1 and "only 2 audio tracks" in run.stderr and "Traceback" not in run.stderr
    run = earmark("tag", str(mkv), "--model", "tiny.en", "--audio-track", "0")
    assert run.returncode == 2 and "--audio-track" in run.stderr and "Traceback" not in run.stderr
