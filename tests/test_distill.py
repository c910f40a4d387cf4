"""Distillation: packed extraction, the teacher's label store, training on soft targets, the pool."""

from __future__ import annotations

import argparse
import csv
import json
import re
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from sound_fixtures import drum_clips, percussion_clips, pick
from speech_fixtures import speech_clips

from tagger.audio import SAMPLE_RATE, load_audio
from tagger.corpus.build import Source
from tagger.corpus.distil import note_unlabelled
from tagger.corpus.pool import PIECE_SECONDS, PoolConfig, build_pool, source_pieces
from tagger.heads import HEAD_TYPES, load_head
from tagger.labels import audioset
from tagger.train.datasets import load_dataset
from tagger.train.features import FeatureCache, clip_features, extract_features, packs
from tagger.train.labelling import TeacherLabels, TeacherTargets, add_label_arguments, label_clips, run_label
from tagger.train.scoring import score_clips
from tagger.train.teacher import DEFAULT_TEACHER, load_teacher, window_bounds
from tagger.train.trainer import TrainConfig, add_train_arguments, run_train, sample_weights, train_head

needs_teacher = pytest.mark.skipif(not DEFAULT_TEACHER.is_file(),
                                   reason=f"the teacher's weights are not at {DEFAULT_TEACHER} (set EARMARK_TEACHER)")


def parse(add, argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args([str(a) for a in argv])


@pytest.fixture(scope="module")
def mixed_csv(tmp_path_factory) -> Path:
    """Speech recordings (no labels given) and percussion one-shots (AudioSet labels), one CSV."""
    directory = tmp_path_factory.mktemp("mixed")
    rows = [[str(path), ""] for path, _ in speech_clips()[:10]]
    rows += [[str(c.path), c.audioset] for c in pick(percussion_clips(), per_class=6)]
    rows += [[str(c.path), ""] for c in pick(drum_clips(), per_class=3)]
    path = directory / "data.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["path", "labels"], *rows])
    return path


@pytest.fixture(scope="module")
def teacher():
    if not DEFAULT_TEACHER.is_file():
        pytest.skip(f"the teacher's weights are not at {DEFAULT_TEACHER}")
    return load_teacher(DEFAULT_TEACHER)


@pytest.fixture(scope="module")
def labelled(teacher, mixed_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("labels") / "store"
    clips = load_dataset(mixed_csv).clips
    report = label_clips(teacher, DEFAULT_TEACHER, clips, out, progress=False)
    assert report.n_done == len(clips) == 40 and not report.skipped
    return out


@pytest.fixture(scope="module")
def packed_cache(tiny_en, mixed_csv, tmp_path_factory) -> FeatureCache:
    out = tmp_path_factory.mktemp("feats") / "packed"
    extract_features(tiny_en, load_dataset(mixed_csv).clips, out, audioset(), True, pack=True, progress=False)
    return FeatureCache.open(out)


# --------------------------------------------------------------------------- packing


def test_a_cache_is_read_over_the_clips_its_data_set_lists_now(packed_cache, mixed_csv):
    clips = load_dataset(mixed_csv).clips
    assert packed_cache.only(clip.clip_id for clip in clips) is packed_cache
    kept = packed_cache.only(clip.clip_id for clip in clips[1::2])
    assert kept.clip_ids == [c for c in packed_cache.clip_ids if c in {clip.clip_id for clip in clips[1::2]}]
    assert np.array_equal(kept.features(0), packed_cache.features(packed_cache.clip_ids.index(kept.clip_ids[0])))


def test_packs_fill_30_second_windows_on_the_step_grid():
    step = 6400
    assert packs([10 * SAMPLE_RATE] * 4) == [[0, 1, 2], [3]]
    assert packs([1] * 75) == [list(range(75))]  # 75 steps of 0.4 s = 30 s
    assert packs([1] * 76) == [list(range(75)), [75]]
    assert packs([step + 1, 31 * SAMPLE_RATE, 5]) == [[0, 2], [1]]  # a long clip is a group of its own
    # first fit, longest first: 20 + 10 s and 14 + 16 s fill two windows; taken in turn they need three
    assert packs([x * SAMPLE_RATE for x in (20, 14, 10, 16)]) == [[0, 2], [1, 3]]


def test_packed_clips_get_the_steps_over_their_own_audio(tiny_en):
    """Three short clips packed into one window: each one's features are exactly the steps of the
    joined audio (zeros up to the 0.4 s grid between them) over its own samples, from one encoder
    call of one window; unpacked they cost three windows."""
    clips = [load_audio(c.path) for c in pick(percussion_clips(), per_class=1)]
    calls = []
    handle = tiny_en.whisper.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        packed = clip_features(tiny_en, clips, pack=True)
        assert calls == [1]
        calls.clear()
        alone = clip_features(tiny_en, clips, pack=False)
        assert sum(calls) == 3
        calls.clear()
        step = 6400
        joined = np.concatenate([np.pad(c, (0, -len(c) % step)) for c in clips])
        whole = clip_features(tiny_en, [joined])[0]
    finally:
        handle.remove()
    at = 0
    for clip, feats, single in zip(clips, packed, alone):
        n = -(-len(clip) // step)
        assert feats.shape == single.shape == (tiny_en.backbone.n_layers, n, tiny_en.backbone.d_model)
        np.testing.assert_array_equal(feats, whole[:, at : at + n])
        at += n
    assert not np.allclose(packed[1], alone[1], atol=1e-2)  # the neighbours are heard: packing is not a no-op


# --------------------------------------------------------------------------- the teacher's labels


@needs_teacher
def test_label_store_resumes_and_reads_back(teacher, mixed_csv, labelled, packed_cache, tmp_path, capsys):
    clips = load_dataset(mixed_csv).clips
    store = TeacherLabels.open(labelled)
    assert len(store) == len(clips) and store.window == 10.0 and store.labels.name == audioset().name
    speech = audioset().index_of("Speech")
    for clip in clips[:10]:  # the speech recordings
        assert int(np.argmax(store.clip(clip.clip_id))) == speech
        samples = round(store.records[clip.clip_id]["duration"] * SAMPLE_RATE)
        assert store.windows(clip.clip_id).shape == (len(window_bounds(samples)), 527)
    # an interrupted run (its first part only) resumed: the same labels, nothing labelled twice
    out = tmp_path / "resumed"
    label_clips(teacher, DEFAULT_TEACHER, clips[:12], out, progress=False, part_clips=5)
    partial = TeacherTargets(packed_cache, TeacherLabels.open(out))
    assert (len(partial), partial.missing) == (12, len(clips) - 12)
    note_unlabelled("pool-train", partial)  # what distil-default says of clips it trains without
    assert f"pool-train: {len(clips) - 12} clips have no teacher labels and are left out" in capsys.readouterr().out
    report = label_clips(teacher, DEFAULT_TEACHER, clips, out, progress=False, part_clips=5)
    assert (report.n_cached, report.n_done) == (12, len(clips) - 12)
    resumed = TeacherLabels.open(out)
    for clip in clips:  # (other batches: float rounding differs in the last bits)
        np.testing.assert_allclose(resumed.clip(clip.clip_id), store.clip(clip.clip_id), atol=1e-3)
    with pytest.raises(ValueError, match="window"):
        label_clips(teacher, DEFAULT_TEACHER, clips, out, window=5.0, progress=False)


@needs_teacher
def test_label_command_reports_unreadable_clips(tmp_path, capsys):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "notes.wav").write_text("not audio")
    good = speech_clips()[0][0]
    (tmp_path / "audio" / good.name).write_bytes(good.read_bytes())
    code = run_label(parse(add_label_arguments, ["--data", tmp_path / "audio", "--out", tmp_path / "store",
                                                  "--no-progress"]))
    err = capsys.readouterr().err
    assert code == 0 and "1 clips labelled" in err and "notes.wav" in err
    assert len(TeacherLabels.open(tmp_path / "store")) == 1
    # a skip is this run's finding, not the store's: the next run tries the clip again, and labels
    # it once it reads (a file missing or broken then, a pool being rebuilt, may be whole now)
    again = ["--data", tmp_path / "audio", "--out", tmp_path / "store", "--no-progress"]
    assert run_label(parse(add_label_arguments, again)) == 0
    err = capsys.readouterr().err
    assert "0 clips labelled, 1 already there, 1 skipped" in err and "notes.wav" in err
    assert len((tmp_path / "store" / "skipped.jsonl").read_text().splitlines()) == 1
    (tmp_path / "audio" / "notes.wav").unlink()
    (tmp_path / "audio" / "notes.flac").write_bytes(good.read_bytes())  # another clip id: a new clip
    (tmp_path / "audio" / "notes.wav").write_bytes(speech_clips()[1][0].read_bytes())  # the broken one, whole
    assert run_label(parse(add_label_arguments, again)) == 0
    assert "2 clips labelled, 1 already there, 0 skipped" in capsys.readouterr().err
    assert len(TeacherLabels.open(tmp_path / "store")) == 3
    assert (tmp_path / "store" / "skipped.jsonl").read_text() == ""
    code = run_label(parse(add_label_arguments, ["--data", tmp_path / "missing.csv", "--out", tmp_path / "x"]))
    assert code == 2 and "missing.csv" in capsys.readouterr().err


# --------------------------------------------------------------------------- training on soft targets


@needs_teacher
def test_soft_targets_mix_the_datas_own_labels(packed_cache, labelled):
    store = TeacherLabels.open(labelled)
    pure = TeacherTargets(packed_cache, store, hard_weight=0.0)
    mixed = TeacherTargets(packed_cache, store, hard_weight=0.5)
    assert len(pure) == len(packed_cache) and pure.labels.name == audioset().name and pure.missing == 0
    clapping = audioset().index_of("Clapping")
    for i, clip_id in enumerate(pure.clip_ids):
        teacher_p = store.clip(clip_id)
        np.testing.assert_allclose(pure.soft_targets()[i], teacher_p, atol=1e-6)
        own = packed_cache.targets()[packed_cache.clip_ids.index(clip_id)]
        if own.any():  # a labelled percussion clip: halfway between its labels and the teacher
            expected = 0.5 * (own > 0.5) + 0.5 * teacher_p
            np.testing.assert_allclose(mixed.soft_targets()[i], expected, atol=1e-6)
        else:
            np.testing.assert_allclose(mixed.soft_targets()[i], teacher_p, atol=1e-6)
    assert mixed.targets()[:, clapping].sum() >= 1
    weights = sample_weights(mixed.targets(), soft=True)
    assert weights.min() >= 0.5 / len(weights) - 1e-12 and abs(weights.sum() - 1.0) < 1e-9


@needs_teacher
def test_a_distilled_head_follows_the_teacher_on_all_527_classes(packed_cache, labelled, tmp_path, capsys):
    """Trained on the teacher's probabilities only (no labels), a head of 527 outputs gives Speech
    to speech and something else to the drums and percussion, as the teacher does; the command line
    writes the same kind of head."""
    store = TeacherLabels.open(labelled)
    data = TeacherTargets(packed_cache, store, hard_weight=0.0)
    config = TrainConfig(head_type="wa_mlp", epochs=6, batch_size=16, lr=2e-3, progress=False, mixup=0.0)
    result = train_head(data, data, config, tmp_path / "distilled", write_plot=False)
    head = load_head(result.path)
    assert head.card.labels.name == audioset().name and len(head.card.labels) == 527
    scores = score_clips(head.module, [data.features(i) for i in range(len(data))], 25, True)
    speech = audioset().index_of("Speech")
    teacher_top = np.argmax(data.soft_targets(), axis=1)
    is_speech = teacher_top == speech
    assert is_speech.sum() >= 8 and (~is_speech).sum() >= 8
    student_speech = scores[:, speech]
    assert student_speech[is_speech].min() > student_speech[~is_speech].max()
    assert result.dev_metrics is not None and result.dev_metrics.mAP > 0.5  # against the teacher's labels
    # `earmark evaluate --clips`: only the clips a data set lists (a pool rebuilt since holds fewer)
    from tagger.train.evaluate import add_evaluate_arguments, run_evaluate

    listed = tmp_path / "listed.csv"
    listed.write_text("path,labels\n" + "".join(f"{clip_id},\n" for clip_id in packed_cache.clip_ids[::2]))
    common = ["--head", result.path, "--features", packed_cache.path, "--teacher-labels", labelled, "--json"]
    capsys.readouterr()
    assert run_evaluate(parse(add_evaluate_arguments, [*common, "--clips", listed])) == 0
    assert json.loads(capsys.readouterr().out)["n_clips"] == len(packed_cache.clip_ids[::2])
    assert run_evaluate(parse(add_evaluate_arguments, [*common[:-1], "--bootstrap", 50])) == 0
    assert re.search(r"mAP: 0\.\d{4} ± 0\.\d{4} \(standard error, 50 resamplings", capsys.readouterr().out)
    assert run_evaluate(parse(add_evaluate_arguments, [*common[:-1], "--bootstrap", 1])) == 2
    assert "at least 2 resamplings" in capsys.readouterr().err
    listed.write_text(listed.read_text() + "not/extracted.flac,\n")
    assert run_evaluate(parse(add_evaluate_arguments, [*common, "--clips", listed])) == 2
    err = capsys.readouterr().err
    assert "1 of the" in err and "not/extracted.flac" in err and "extract them" in err
    for head_type in HEAD_TYPES:  # every head type distils, from the command line too
        out = tmp_path / f"cli-{head_type}"
        code = run_train(parse(add_train_arguments, [
            "--train", packed_cache.path, "--dev", packed_cache.path, "--teacher-labels", labelled, "--out", out,
            "--head", head_type, "--epochs", 1, "--batch-size", 16, "--no-plot", "--hard-weight", 0.2,
            "--by-length"]))
        assert code == 0, capsys.readouterr().err
        card = json.loads(out.with_suffix(".json").read_text())
        hyper = card["extra"]["hyperparameters"]
        assert card["n_classes"] == 527 and hyper["hard_weight"] == 0.2 and hyper["by_length"]
        assert (hyper["mixup"], hyper["time_mask"], hyper["balanced"]) == (0.0, 0, False)  # the auto recipe distils


def test_a_student_starts_from_a_head_over_fewer_classes(packed_cache, labelled, tmp_path, capsys):
    """--init-head: a 527-class student starts with a trained head's layers and its output rows for
    the classes both have (the corpus-trained heads have 166); a head of another type is refused."""
    from tagger.heads import HeadCard, LoadedHead, create_head, save_head
    from tagger.labels import LabelSet
    from tagger.train.trainer import start_from

    names = ["Speech", "Music", "Dog", "Siren"]
    few = LabelSet(name="four", labels=tuple(replace(audioset()[audioset().index_of(n)], index=i)
                                            for i, n in enumerate(names)))
    torch.manual_seed(1)
    source = LoadedHead(create_head("wa_mlp", 4, 384, len(few)),
                        HeadCard(head_type="wa_mlp", n_layers=4, d_model=384, labels=few, source="test"))
    student = create_head("wa_mlp", 4, 384)
    fresh = {k: v.clone() for k, v in student.state_dict().items()}
    assert start_from(student, source, audioset()) == 4
    theirs, ours = source.module.state_dict(), student.state_dict()
    output = [k for k, v in ours.items() if v.shape[0] == 527]
    assert output  # the output layer's weight and bias
    for key, value in ours.items():
        if key in output:
            rows = [audioset().index_of(n) for n in names]
            assert torch.equal(value[rows], theirs[key])
            others = [i for i in range(527) if i not in rows]
            assert torch.equal(value[others], fresh[key][others])
        else:
            assert torch.equal(value, theirs[key])
    with pytest.raises(ValueError, match="cannot start"):
        start_from(create_head("wa_tr", 4, 384), source, audioset())
    path = save_head(source.module, source.card, tmp_path / "four.safetensors")
    out = tmp_path / "student"
    code = run_train(parse(add_train_arguments, [
        "--train", packed_cache.path, "--dev", packed_cache.path, "--teacher-labels", labelled, "--out", out,
        "--head", "wa_mlp", "--epochs", 1, "--batch-size", 16, "--no-plot", "--init-head", path]))
    assert code == 0, capsys.readouterr().err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["n_classes"] == 527 and card["extra"]["hyperparameters"]["init_head"] == str(path)


# --------------------------------------------------------------------------- the pool


def test_event_thresholds_are_calibrated_only_where_the_dev_split_has_positives_enough():
    from tagger.corpus.distil import CALIBRATION_POSITIVES, LOWEST_THRESHOLD, best_f1_thresholds

    rng = np.random.default_rng(0)
    scores = rng.uniform(0.0, 0.3, size=(100, 3))
    positive = np.zeros((100, 3), dtype=bool)
    positive[:CALIBRATION_POSITIVES, 0] = True  # class 0: enough positives, all scoring 0.6-0.7
    scores[:CALIBRATION_POSITIVES, 0] = np.linspace(0.6, 0.7, CALIBRATION_POSITIVES)
    positive[0, 1] = True  # class 1: one positive scoring 0.02, under most negatives' scores
    scores[0, 1] = 0.02
    thresholds = best_f1_thresholds(scores, positive, default=0.5)
    assert 0.3 <= thresholds[0] < 0.6  # between the highest negative and the lowest positive
    assert thresholds[1] == 0.5 and thresholds[2] == 0.5  # too few positives, none: the default
    scores[:, 0] /= 10  # positives 0.06-0.07, negatives under 0.03: the best F1 is at 0.045, raised
    assert best_f1_thresholds(scores, positive, default=0.5)[0] == LOWEST_THRESHOLD


def test_pieces_of_a_recording_are_at_most_10_seconds():
    rng = np.random.default_rng(0)
    long = rng.standard_normal(45 * SAMPLE_RATE).astype(np.float32) * 0.1
    pieces = source_pieces(long, "sound", np.random.default_rng(1), 3, variant=True)
    assert [kind for _, kind in pieces] == ["plain", "plain", "plain", "variant"]
    assert all(0 < len(p) <= PIECE_SECONDS * SAMPLE_RATE for p, _ in pieces)
    short = long[: SAMPLE_RATE // 2]
    (piece, kind), = source_pieces(short, "sound", np.random.default_rng(1), 3, variant=False)
    assert kind == "plain" and 2 * SAMPLE_RATE <= len(piece) <= 6 * SAMPLE_RATE  # placed over a background


def test_pool_keeps_the_corpus_splits_and_resumes(tmp_path):
    clips = pick(drum_clips(), per_class=4)
    sources = [Source(source_id=f"drums:{c.path.name}", group=f"drums:{c.kit}", labels=(c.audioset,) if i % 2 else (),
                      origin="hydrogen-drumkits", load=partial(load_audio, c.path)) for i, c in enumerate(clips)]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    fixed = {sources[0].source_id: "test", sources[1].source_id: "dev"}
    for split in ("train", "dev", "test"):
        with open(corpus / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["path", "labels", "sources", "kind"]]
                                    + [["x.flac", "", s, "plain"] for s, where in fixed.items() if where == split])
    config = PoolConfig(seed=3, mixtures=0.5, variants=0.5)
    report = build_pool(sources, tmp_path / "pool", config, corpus, progress=False)
    assert report.pieces and (tmp_path / "pool" / "POOL.md").is_file()
    split_of_group: dict[str, set[str]] = {}
    for piece in report.pieces:
        assert (tmp_path / "pool" / "audio" / piece.split / piece.name).is_file()
        assert piece.seconds <= PIECE_SECONDS + 1e-6
        if piece.kind != "mixture":
            group = next(s.group for s in sources if s.source_id == piece.sources[0])
            split_of_group.setdefault(group, set()).add(piece.split)
    assert all(len(splits) == 1 for splits in split_of_group.values())  # a recording in one split only
    assert split_of_group[sources[0].group] == {"test"} and split_of_group[sources[1].group] == {"dev"}
    assert any(p.kind == "mixture" for p in report.pieces) and any(p.kind == "variant" for p in report.pieces)
    rows = {split: (tmp_path / "pool" / f"{split}.csv").read_text() for split in ("train", "dev", "test")}
    again = build_pool(sources, tmp_path / "pool", config, corpus, progress=False)
    assert [p.name for p in again.pieces] == [p.name for p in report.pieces]
    assert rows == {split: (tmp_path / "pool" / f"{split}.csv").read_text() for split in ("train", "dev", "test")}
    clips_read = load_dataset(tmp_path / "pool" / "train.csv").clips
    assert clips_read and all(c.path.is_file() for c in clips_read)
    # rebuilt with a smaller package budget: other plain pieces, so other mixtures; a mixture's name
    # says what it mixes, and the folder keeps only the pieces its CSVs list
    fewer = build_pool(sources, tmp_path / "pool", replace(config, package_minutes=0.1), corpus, progress=False)
    assert 0 < sum(p.kind == "plain" for p in fewer.pieces) < sum(p.kind == "plain" for p in report.pieces)
    mixed_before = {p.name: p.sources for p in report.pieces if p.kind == "mixture"}
    mixed_after = {p.name: p.sources for p in fewer.pieces if p.kind == "mixture"}
    assert mixed_after and all(mixed_before[name] == mixed for name, mixed in mixed_after.items() if name in mixed_before)
    on_disk = {(path.parent.name, path.name) for path in (tmp_path / "pool" / "audio").glob("*/*.flac")}
    assert on_disk == {(p.split, p.name) for p in fewer.pieces}


@needs_teacher
def test_distil_default_runs_every_stage_and_installs(tmp_path, capsys):
    """The whole pipeline on a small pool: label, extract (packed), train, measure, install into a
    folder; run again, every stage comes from its cache."""
    from tagger.corpus.distil import distil_config, distil_defaults

    clips = pick(percussion_clips(), per_class=6) + pick(drum_clips(), per_class=3)
    sources = [Source(source_id=f"fixtures:{c.path.name}", group=f"fixtures:{c.kit}:{c.label}", labels=(c.audioset,),
                      origin="fixtures", load=partial(load_audio, c.path)) for c in clips]
    sources += [Source(source_id=f"speech:{path.name}", group=f"speech:{path.name}", labels=(), origin="speech",
                       load=partial(load_audio, path)) for path, _ in speech_clips()[:12]]
    pool = tmp_path / "pool"
    build_pool(sources, pool, PoolConfig(mixtures=0.2, variants=0.0, shares=(0.6, 0.2, 0.2)), progress=False)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    chosen = pick(percussion_clips(), per_class=3)
    names = sorted({c.audioset for c in chosen})
    with open(corpus / "test.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["path", "labels"], *([str(c.path), c.audioset] for c in chosen)])
    others = [c for c in pick(percussion_clips(), per_class=6) if c not in chosen]
    for split, part in (("train", others[::2]), ("dev", others[1::2])):
        with open(corpus / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["path", "labels"], *([str(c.path), c.audioset] for c in part)])
    with open(corpus / "labels.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["index", "mid", "display_name"],
                                 *([i, audioset()[audioset().index_of(n)].mid, n] for i, n in enumerate(names))])
    recipe = distil_config(steps=100, lr=1e-3, by_length=True)
    assert (recipe.mixup, recipe.time_mask, recipe.balanced, recipe.by_length) == (0.0, 0, False, True)
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-3, progress=False, label_smoothing=0.0)
    install_dir = tmp_path / "installed"
    install_dir.mkdir()
    results = distil_defaults(pool, corpus, tmp_path / "work", DEFAULT_TEACHER, ["tiny.en"], ["wa_tr"], config,
                              install_type="wa_tr", install_dir=install_dir)
    (result,) = results
    assert 0 <= result.pool_test_mAP <= 1 and -1 <= result.pool_test_correlation <= 1
    assert 0 <= result.pool_test_mAP_se < 0.5
    assert 0 < result.corpus_test_mAP <= 1 and 0 < result.teacher_corpus_test_mAP <= 1
    head = load_head(install_dir / "tiny.en.safetensors")
    assert len(head.card.labels) == 527 and len(head.card.extra["thresholds"]) == 527
    assert head.card.extra["test_metrics"]["corpus_test"]["mAP"] == pytest.approx(result.corpus_test_mAP)
    assert f"| tiny.en | wa_tr | {result.pool_test_mAP:.3f} ± {result.pool_test_mAP_se:.3f} |" in \
        (tmp_path / "work" / "distillation.md").read_text()
    capsys.readouterr()
    again = distil_defaults(pool, corpus, tmp_path / "work", DEFAULT_TEACHER, ["tiny.en"], ["wa_tr"], config)
    out = capsys.readouterr().out
    assert "0 clips labelled" in out and "0 clips extracted" in out and "not trained again" in out
    assert again[0].pool_test_mAP == pytest.approx(result.pool_test_mAP)
    # measured again, the report keeps the trained head's dev mAP and training time
    assert (again[0].dev_mAP, again[0].train_seconds) == (result.dev_mAP, result.train_seconds) and result.train_seconds > 0
    # the corpus' own train and dev clips train too: labelled, extracted (packed) and counted
    (with_corpus,) = distil_defaults(pool, corpus, tmp_path / "work", DEFAULT_TEACHER, ["tiny.en"], ["last_mlp"],
                                     config, with_corpus=True)
    card = load_head(with_corpus.path).card
    pool_train = len(load_dataset(pool / "train.csv").clips)
    assert card.extra["training_data"]["train"]["clips"] == pool_train + len(others)
    assert TeacherLabels.open(tmp_path / "work" / "labels" / "corpus-train").records
    # corpus first: a head on the corpus' own labels from the packed features, then the student from it
    with pytest.raises(ValueError, match="with_corpus"):
        distil_defaults(pool, corpus, tmp_path / "work", DEFAULT_TEACHER, ["tiny.en"], ["wa_mlp"], config,
                        corpus_first=2)
    capsys.readouterr()
    (student,) = distil_defaults(pool, corpus, tmp_path / "work", DEFAULT_TEACHER, ["tiny.en"], ["wa_mlp"], config,
                                 with_corpus=True, corpus_first=2)
    first = tmp_path / "work" / "heads" / "tiny.en-wa_mlp-corpus.safetensors"
    assert "trained on the corpus' own labels" in capsys.readouterr().out
    corpus_card = load_head(first).card
    assert [label.name for label in corpus_card.labels] == names
    assert corpus_card.extra["training_data"]["train"]["clips"] == len(others)  # train and dev: a final fit
    assert corpus_card.extra["hyperparameters"]["epochs"] == 2
    assert load_head(student.path).card.extra["hyperparameters"]["init_head"] == str(first)
