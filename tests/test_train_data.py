"""The data side of head training: data set formats, label sets, the feature cache, torchrun."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from sound_fixtures import (
    DRUM_CLASSES,
    PERCUSSION_CLASSES,
    SOUNDS,
    decoded,
    drum_clips,
    long_sound,
    percussion_clips,
    pick,
    write_csv,
    write_tree,
)

from tagger.audio import SAMPLE_RATE, load_audio
from tagger.backbone import STEPS_PER_WINDOW
from tagger.labels import Label, LabelSet, audioset
from tagger.mel import log_mel
from tagger.onepass import window_steps
from tagger.pipeline import EarmarkModel
from tagger.train import distributed
from tagger.train.datasets import Clip, DatasetError, default_multi_label, detect_format, load_dataset, resolve_labels
from tagger.train.extract import add_extract_arguments, run_extract
from tagger.train.features import CacheMismatchError, FeatureCache, clip_features, extract_features, prepare_audio
from tagger.windows import plan_windows

# --------------------------------------------------------------------------- fixtures on disk


def test_sound_fixtures_are_small_real_and_split_by_kit():
    drums = drum_clips()
    for label in DRUM_CLASSES:
        of_class = [c for c in drums if c.label == label]
        assert len(of_class) >= 16, label
        assert len({c.kit for c in of_class}) >= 8, label  # many different recordings
        assert len({c.fold for c in of_class}) == 4, label  # every fold holds every class
    for clips in (drums, percussion_clips()):
        folds_of_kit: dict[str, set[int]] = {}
        for c in clips:
            folds_of_kit.setdefault(c.kit, set()).add(c.fold)
        assert all(len(f) == 1 for f in folds_of_kit.values())  # no kit in two folds
    assert {c.label for c in percussion_clips()} == set(PERCUSSION_CLASSES)
    files = sorted(SOUNDS.glob("*/*.flac"))
    assert len(files) == len(drums) + len(percussion_clips())
    assert sum(f.stat().st_size for f in files) <= 2.5e6
    for file in files[::7]:
        with av.open(str(file)) as container:
            stream = container.streams.audio[0]
            assert (stream.codec_context.name, stream.rate, stream.channels) == ("flac", 16000, 1)
    assert max(c.seconds for c in (*drums, *percussion_clips())) <= 2.0


# --------------------------------------------------------------------------- data set formats


def test_generic_csv_with_relative_paths_folds_and_header(tmp_path: Path):
    clips = pick(drum_clips(), per_class=2)
    path = write_csv(tmp_path / "data", clips, extra_rows=[["x.flac", "kick", "one"], ["", "kick", "1"]])
    dataset = load_dataset(path)
    assert dataset.format == "csv" and detect_format(path) == "csv"
    assert [c.path for c in dataset.clips] == [c.path for c in clips]  # relative paths resolved from the CSV
    assert [c.labels for c in dataset.clips] == [[c.label] for c in clips]
    assert [c.fold for c in dataset.clips] == [c.fold for c in clips]
    assert dataset.has_folds
    assert [where for where, _ in dataset.problems] == ["data.csv, row 10", "data.csv, row 11"]

    # no header, positional columns, several labels, no fold
    bare = tmp_path / "bare.csv"
    bare.write_text(f"{clips[0].path},Snare drum; Drum ;Snare drum\n{clips[1].path},/m/0bm02\n")
    dataset = load_dataset(bare)
    assert dataset.clips[0].labels == ["Snare drum", "Drum"]
    assert dataset.clips[1].labels == ["/m/0bm02"] and dataset.clips[1].fold is None
    assert not dataset.has_folds


def test_audioset_segments_csv_with_an_audio_folder(tmp_path: Path):
    clips = pick(drum_clips(), per_class=1)
    audio = tmp_path / "audio"
    (audio / "nested").mkdir(parents=True)
    (audio / "--aE2O5G5WE.flac").symlink_to(clips[0].path)
    (audio / "nested" / "Y-0BIyqJj9ZU.flac").symlink_to(clips[1].path)  # the "Y" prefix some downloads use
    (audio / "0Bhf9Ju2SKU.wav").write_bytes(b"not audio")
    segments = tmp_path / "eval_segments.csv"
    segments.write_text(
        "# Segments csv created Sun Mar  5 10:54:25 2017\n"
        "# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        '--aE2O5G5WE, 0.000, 10.000, "/m/03fwl,/m/04rlf,/m/09x0r"\n'
        '-0BIyqJj9ZU, 30.000, 40.000, "/m/07rgt08"\n'
        '0Bhf9Ju2SKU, 5.000, 15.000, "/m/01qbl"\n'
        '0MissingAAA, 5.000, 15.000, "/m/01qbl"\n'
    )
    assert detect_format(segments) == "audioset"
    dataset = load_dataset(segments, audio_dir=audio)
    assert dataset.format == "audioset"
    assert [c.clip_id for c in dataset.clips] == ["--aE2O5G5WE", "-0BIyqJj9ZU", "0Bhf9Ju2SKU"]
    assert dataset.clips[0].labels == ["/m/03fwl", "/m/04rlf", "/m/09x0r"]
    assert dataset.clips[1].path.name == "Y-0BIyqJj9ZU.flac"
    assert (dataset.clips[1].start, dataset.clips[1].end) == (30.0, 40.0)
    assert [where for where, _ in dataset.problems] == ["0MissingAAA"]
    assert resolve_labels(dataset.clips) == audioset()


def test_ast_json_and_folder_tree(tmp_path: Path):
    clips = pick(drum_clips(), per_class=2)
    document = {"data": [{"wav": os.path.relpath(c.path, tmp_path), "labels": "/m/0bm02,/m/026t6"} for c in clips[:3]]
                + [{"labels": "/m/0bm02"}]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(document))
    dataset = load_dataset(path)
    assert dataset.format == "json" and len(dataset) == 3
    assert dataset.clips[0].path == clips[0].path and dataset.clips[0].labels == ["/m/0bm02", "/m/026t6"]
    assert len(dataset.problems) == 1

    root = write_tree(tmp_path, clips)
    (root / "kick" / "README.txt").write_text("not a clip")
    (root / "empty").mkdir()
    dataset = load_dataset(root)
    assert dataset.format == "folders" and len(dataset) == len(clips)
    assert sorted({c.labels[0] for c in dataset.clips}) == list(DRUM_CLASSES)
    assert dataset.clips[0].clip_id.startswith("cymbal/")
    assert dataset.problems == [("empty", "the class folder holds no audio files")]
    # an explicit format wins over detection
    with pytest.raises(DatasetError):
        load_dataset(root, "csv")


# --------------------------------------------------------------------------- label sets


def _clips(*label_lists: list[str]) -> list[Clip]:
    return [Clip(f"c{i}", Path(f"c{i}.wav"), list(labels)) for i, labels in enumerate(label_lists)]


def test_label_sets_and_single_or_multi_label(tmp_path: Path):
    by_name = _clips(["Bass drum"], ["snare drum"], ["Hi-hat"])  # names, any case
    assert resolve_labels(by_name) is audioset()
    assert default_multi_label(by_name, audioset())  # AudioSet is always multi-label by default
    assert resolve_labels(_clips(["/m/0bm02", "/m/01qbl"], ["Speech"])) is audioset()

    custom = _clips(["snare"], ["kick"], ["Hi-hat"], ["kick"])
    labels = resolve_labels(custom)
    assert labels.name == "custom"
    assert labels.names == ("Hi-hat", "kick", "snare")  # sorted, as given
    assert labels.mids == ("custom:Hi-hat", "custom:kick", "custom:snare")
    assert not default_multi_label(custom, labels)  # one label each, custom set: softmax
    assert default_multi_label(_clips(["kick"], ["kick", "snare"]), resolve_labels(_clips(["kick"], ["kick", "snare"])))

    forced = resolve_labels(by_name, "data")  # AudioSet names, but only the classes in the data
    assert forced.names == ("Bass drum", "Hi-hat", "snare drum") and len(forced) == 3
    mids = resolve_labels(_clips(["/m/0bm02"], ["Speech"], ["/m/09x0r"]), "data")
    assert [(l.mid, l.name) for l in mids] == [("/m/0bm02", "Bass drum"), ("/m/09x0r", "Speech")]

    with pytest.raises(DatasetError, match="'kick'"):
        resolve_labels(custom, "audioset")
    label_file = tmp_path / "labels.csv"
    label_file.write_text("index,mid,display_name\n0,k,kick\n1,s,snare\n2,h,Hi-hat\n3,c,cymbal\n")
    from_file = resolve_labels(custom, label_file)
    assert from_file.names == ("kick", "snare", "Hi-hat", "cymbal") and from_file.mids[0] == "k"
    with pytest.raises(DatasetError, match="'tom'"):
        resolve_labels(_clips(["tom"]), label_file)


def test_segments_are_cut_only_from_longer_files():
    audio = np.arange(12 * SAMPLE_RATE, dtype=np.float32)
    segment = Clip("x", Path("x"), [], start=2.0, end=4.0)
    assert np.array_equal(prepare_audio(segment, audio), audio[2 * SAMPLE_RATE:4 * SAMPLE_RATE])
    already_cut = Clip("x", Path("x"), [], start=30.0, end=42.0)  # a download of just the segment
    assert prepare_audio(already_cut, audio) is audio
    assert len(prepare_audio(Clip("x", Path("x"), []), audio, max_duration=10.0)) == 10 * SAMPLE_RATE


# --------------------------------------------------------------------------- extraction

LONG_SECONDS = 41.0


def _write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def drum_data(tmp_path_factory) -> Path:
    """A CSV of 8 drum clips (2 per class, different kits) and one 41 s recording of other clips."""
    directory = tmp_path_factory.mktemp("drums")
    _write_wav(directory / "long.wav", long_sound(LONG_SECONDS)[: int(LONG_SECONDS * SAMPLE_RATE)])
    return write_csv(directory, pick(drum_clips(), per_class=2), extra_rows=[["long.wav", "kick;snare;hihat;cymbal", "9"]])


@pytest.fixture(scope="module")
def drum_cache(tiny_en, drum_data, tmp_path_factory):
    clips = load_dataset(drum_data).clips
    labels = resolve_labels(clips)
    out = tmp_path_factory.mktemp("cache") / "feats"
    report = extract_features(tiny_en, clips, out, labels, True, batch_size=4, shard_clips=4, progress=False)
    return out, clips, report


def assert_close_fp16(actual: np.ndarray, desired: np.ndarray) -> None:
    """Equal as float16 values: atol 1e-2, plus one float16 step for Whisper's few large activations
    (float16 steps are 0.125 at 128..256, so a float32 difference of batching can round either way)."""
    np.testing.assert_allclose(np.asarray(actual, np.float32), np.asarray(desired, np.float16).astype(np.float32),
                               atol=1e-2, rtol=2 ** -10)


def _inference_pooled(model: EarmarkModel, path: Path) -> np.ndarray:
    """Pooled features the way serving computes them: a job's windows, one encoder call each."""
    job = model.job(path, None, None)
    job.plan_ahead()
    pooled = [model.backbone.encode(job.windows(i, i + 1)).pooled[0, :, : window_steps(window)]
              for i, window in enumerate(job.window_list)]
    return torch.cat(pooled, dim=1).numpy()


def test_extracted_features_equal_the_inference_path(tiny_en, drum_cache):
    out, clips, report = drum_cache
    assert (report.n_done, report.n_skipped, report.n_cached) == (len(clips), 0, 0)
    cache = FeatureCache.open(out)
    assert (cache.backbone, cache.backbone_sha256) == (tiny_en.weights.name, tiny_en.backbone.sha256)
    assert (cache.n_layers, cache.d_model, cache.multi_label) == (4, 384, True)
    assert cache.labels.names == DRUM_CLASSES and cache.labels.mids[0] == "custom:cymbal"
    assert cache.clip_ids == [c.clip_id for c in clips]
    assert len(cache.shards) == 3  # 9 clips, 4 per shard
    for i, clip in enumerate(clips):
        features = cache.features(i)
        frames = len(load_audio(clip.path)) // 160
        assert features.dtype == np.float16 and isinstance(features, np.memmap)
        assert features.shape == (4, math.ceil(frames / 40), 384) == (4, cache.records[i].n_steps, 384)
        assert_close_fp16(features, _inference_pooled(tiny_en, clip.path))
    targets = cache.targets()
    assert targets.shape == (9, 4) and targets.dtype == np.float32
    assert targets.sum(axis=1).tolist() == [1.0] * 8 + [4.0]
    assert cache.folds().tolist() == [c.fold for c in clips]
    part = cache.subset([8, 0])
    assert part.clip_ids == [clips[8].clip_id, clips[0].clip_id]
    assert np.array_equal(part.features(1), cache.features(0)) and part.targets()[0].sum() == 4


def test_a_clip_longer_than_30_s_spans_two_windows(tiny_en, drum_cache):
    out, clips, _ = drum_cache
    cache = FeatureCache.open(out)
    record = cache.records[-1]
    assert record.duration == pytest.approx(LONG_SECONDS, abs=1e-3)
    assert record.n_steps == math.ceil(LONG_SECONDS * 100 / 40) > STEPS_PER_WINDOW  # 103 steps over 2 windows
    features = cache.features(len(cache) - 1).astype(np.float32)
    samples = load_audio(clips[-1].path)
    windows = plan_windows(samples, need_speech=False)
    assert len(windows) == 2
    first_steps = window_steps(windows[0])
    second = log_mel(torch.from_numpy(samples[windows[1].start :]), tiny_en.whisper.dims.n_mels)
    second = tiny_en.backbone.encode(second[None]).pooled[0].numpy()  # the second window alone
    assert_close_fp16(features[:, first_steps:], second[:, : record.n_steps - first_steps])
    # in-memory audio through clip_features gives the same, batched with a short clip
    short, long_ = clip_features(tiny_en, [decoded(pick(drum_clips(), 1)[0]), samples], batch_size=2)
    assert long_.shape == features.shape and short.shape[1] >= 1
    assert_close_fp16(long_, features)


def test_unreadable_clips_are_skipped_and_reported(tiny_en, tmp_path: Path):
    (tmp_path / "text.wav").write_text("this is not audio")
    (tmp_path / "empty.flac").write_bytes(b"")
    _write_wav(tmp_path / "tiny.wav", np.zeros(100, dtype=np.float32))  # shorter than one 10 ms frame
    good = pick(drum_clips(), per_class=1)[:2]
    path = write_csv(tmp_path, good, extra_rows=[["missing.flac", "kick", "0"], ["text.wav", "kick", "0"],
                                                 ["empty.flac", "snare", "1"], ["tiny.wav", "snare", "1"]])
    args = argparse.ArgumentParser()
    add_extract_arguments(args)
    code = run_extract(args.parse_args(["--data", str(path), "--model", "tiny.en", "--out", str(tmp_path / "feats"),
                                        "--no-progress", "--device", "cpu"]))
    assert code == 0
    cache = FeatureCache.open(tmp_path / "feats")
    assert cache.clip_ids == [os.path.relpath(c.path, tmp_path) for c in good]
    assert not cache.multi_label  # one custom label per clip
    skipped = {s["clip_id"]: s["reason"] for s in cache.meta["skipped"]}
    assert sorted(skipped) == ["empty.flac", "missing.flac", "text.wav", "tiny.wav"]
    assert "FileNotFoundError" in skipped["missing.flac"] and "too short" in skipped["tiny.wav"]


def _same_cache(a: FeatureCache, b: FeatureCache) -> None:
    assert a.clip_ids == b.clip_ids
    assert [(r.labels, r.fold, r.n_steps, r.duration, r.source) for r in a.records] == \
           [(r.labels, r.fold, r.n_steps, r.duration, r.source) for r in b.records]
    assert a.labels == b.labels and a.multi_label == b.multi_label
    for i in range(len(a)):
        assert_close_fp16(a.features(i), b.features(i))


class Interrupt(Exception):
    pass


def test_an_interrupted_extraction_resumes_where_it_stopped(tiny_en, drum_cache, tmp_path: Path):
    reference, clips, _ = drum_cache
    labels = resolve_labels(clips)
    out = tmp_path / "feats"

    def stop(n_done: int) -> None:
        raise Interrupt(n_done)

    with pytest.raises(Interrupt):
        extract_features(tiny_en, clips, out, labels, True, batch_size=2, shard_clips=3, flush_every=2,
                         progress=False, on_flush=stop)
    partial = FeatureCache.open(out)  # readable mid-way, from the journal
    assert 2 <= len(partial) < len(clips) and partial.clip_ids == [c.clip_id for c in clips[: len(partial)]]
    # as if killed while writing: bytes past the last record, and half a journal line
    shard = max(out.glob("shard-*.npy"))
    with open(shard, "ab") as f:
        f.write(b"\x01" * 1000)
    with open(out / "journal.r0.jsonl", "a") as f:
        f.write('{"type": "clip", "clip_id": "torn')
    assert len(FeatureCache.open(out)) == len(partial)

    report = extract_features(tiny_en, clips, out, labels, True, batch_size=2, shard_clips=3, progress=False)
    assert report.n_cached == len(partial) and report.n_done == len(clips) - len(partial)
    resumed = FeatureCache.open(out)
    _same_cache(resumed, FeatureCache.open(reference))
    assert not list(out.glob("journal.*"))
    index = json.loads((out / "index.json").read_text())
    assert len({c["clip_id"] for c in index["clips"]}) == len(clips)  # no clip twice
    for name in index["shards"]:  # shards cut back to their clips
        assert np.load(out / name, mmap_mode="r").shape[0] == sum(
            4 * 384 * c["n_steps"] for c in index["clips"] if index["shards"][c["shard"]] == name)
    again = extract_features(tiny_en, clips, out, labels, True, progress=False)  # nothing left to do
    assert (again.n_done, again.n_cached) == (0, len(clips))


def test_a_cache_refuses_another_backbone_or_label_set(tiny_en, drum_cache):
    out, clips, _ = drum_cache
    before = (out / "index.json").read_bytes()
    weights = dataclasses.replace(tiny_en.weights, name="base", sha256="0" * 64)
    other = EarmarkModel(tiny_en.whisper, weights)
    other.backbone.sha256 = "0" * 64  # as if the encoder weights differed
    with pytest.raises(CacheMismatchError, match="backbone 'tiny.en'"):
        extract_features(other, clips, out, resolve_labels(clips), True, progress=False)
    with pytest.raises(CacheMismatchError, match="label set"):
        reordered = LabelSet("custom", tuple(Label(i, f"custom:{n}", n) for i, n in enumerate(reversed(DRUM_CLASSES))))
        extract_features(tiny_en, clips, out, reordered, True, progress=False)
    with pytest.raises(CacheMismatchError, match="multi-label"):
        extract_features(tiny_en, clips, out, resolve_labels(clips), False, progress=False)
    with pytest.raises(CacheMismatchError, match="autocast"):
        extract_features(tiny_en, clips, out, resolve_labels(clips), True, progress=False, bf16=True)
    assert (out / "index.json").read_bytes() == before


def test_bf16_extraction_is_recorded_and_close_to_float32(tiny_en, drum_cache, tmp_path: Path):
    out, clips, _ = drum_cache
    report = extract_features(tiny_en, clips[:3], tmp_path / "bf16", resolve_labels(clips), True, progress=False, bf16=True)
    assert report.n_done == 3
    cache, reference = FeatureCache.open(tmp_path / "bf16"), FeatureCache.open(out)
    assert cache.meta["encoder_autocast"] == "bfloat16" and reference.meta["encoder_autocast"] is None
    for i in range(3):
        bf16, fp32 = (np.asarray(c.features(i), np.float32) for c in (cache, reference))
        assert bf16.shape == fp32.shape
        error = np.linalg.norm(bf16 - fp32) / np.linalg.norm(fp32)
        assert 0 < error < 0.05  # not the float32 path, but within bfloat16's precision of it


def test_shard_partitions_items():
    items = list(range(10))
    shards = [distributed.shard(items, r, 3) for r in range(3)]
    assert sorted(i for part in shards for i in part) == items and shards[0] == [0, 3, 6, 9]
    assert distributed.init_distributed() == (0, 1) and distributed.is_main()  # not under torchrun: a no-op
    distributed.barrier()
    distributed.cleanup()


def test_two_processes_under_torchrun_make_the_same_cache(drum_cache, drum_data, tmp_path: Path):
    reference, _, _ = drum_cache
    out = tmp_path / "feats"
    env = dict(os.environ, EARMARK_OFFLINE="1", OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         "-m", "tagger.train.extract", "--data", str(drum_data), "--model", "tiny.en", "--out", str(out),
         "--batch-size", "4", "--shard-clips", "4", "--device", "cpu"],
        check=False, capture_output=True, text=True, timeout=600, env=env, cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr[-3000:]
    assert "9 clips extracted" in run.stderr
    cache = FeatureCache.open(out)
    _same_cache(cache, FeatureCache.open(reference))
    assert {name.split("-")[1] for name in cache.shards} == {"r0", "r1"}  # each rank wrote its own shards
    assert not list(out.glob("journal.*"))
