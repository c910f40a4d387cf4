"""Training on your own sounds: UrbanSound8K- and ESC-50-style data sets, errors that say what is
wrong, the recipe fitted to the data (``--recipe auto``), and cross-validation from one cache.

The data: drum one-shots from Hydrogen kits (``tests/sound_fixtures.py``), each kit in one fold,
written in the UrbanSound8K and ESC-50 layouts in temporary folders (the audio is linked, not
copied). The ESC-50 set names its classes by AudioSet display names, so ``earmark extract`` gives
a cache with all 527 AudioSet classes and multi-label targets: the case the auto recipe narrows to
the 4 classes named, trained single-label. The clips are at most 2 s, so training and scoring use
2 s windows.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sound_fixtures import drum_clips, pick

from tagger import load_model
from tagger.audio import load_audio
from tagger.heads import LinearProbe, load_head
from tagger.labels import audioset
from tagger.train.datasets import DatasetError, default_multi_label, detect_format, load_dataset, resolve_labels
from tagger.train.evaluate import add_evaluate_arguments, confusion_matrix, run_evaluate
from tagger.train.extract import add_extract_arguments, run_extract
from tagger.train.features import FeatureCache, extract_features
from tagger.train.recipe import EARLY_STOP_DEV, LARGE_DATA, SMALL_HEAD_DATA, SMALL_STEPS, choose_recipe
from tagger.train.trainer import TrainConfig, add_train_arguments, config_from_args, lr_factor, run_train, train_head

WINDOW = "2.0"
AUDIOSET_NAMES = ("Bass drum", "Cymbal", "Hi-hat", "Snare drum")
IN_AUDIOSET_ORDER = tuple(sorted(AUDIOSET_NAMES, key=audioset().index_of))  # a narrowed label set's order


def parse(add, argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args([str(a) for a in argv])


def _link(target: Path, source: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)


def write_urbansound8k(root: Path, clips) -> Path:
    """``root/metadata/UrbanSound8K.csv`` and ``root/audio/foldN/`` (folds 1-4: the kit folds + 1)."""
    classes = sorted({c.label for c in clips})
    meta = root / "metadata" / "UrbanSound8K.csv"
    meta.parent.mkdir(parents=True)
    with open(meta, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"])
        for number, clip in enumerate(clips):
            name = f"{number}-{clip.path.name}"
            _link(root / "audio" / f"fold{clip.fold + 1}" / name, clip.path)
            writer.writerow([name, number, 0.0, clip.seconds, 1, clip.fold + 1, classes.index(clip.label), clip.label])
    return meta


def write_esc50(root: Path, clips) -> Path:
    """``root/meta/esc50.csv`` and ``root/audio/``; categories are AudioSet display names."""
    names = sorted({c.audioset for c in clips})
    meta = root / "meta" / "esc50.csv"
    meta.parent.mkdir(parents=True)
    with open(meta, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        for number, clip in enumerate(clips):
            name = f"{clip.fold + 1}-{number}-A-{names.index(clip.audioset)}.flac"
            _link(root / "audio" / name, clip.path)
            writer.writerow([name, clip.fold + 1, names.index(clip.audioset), clip.audioset, "False", number, "A"])
    return meta


@pytest.fixture(scope="module")
def esc50(tmp_path_factory) -> Path:
    clips = pick(drum_clips(), per_class=10)  # 40 clips, 12 kits in 4 folds, every class in fold 4
    return write_esc50(tmp_path_factory.mktemp("ESC-50-master"), clips)


@pytest.fixture(scope="module")
def caches(tiny_en, esc50, tmp_path_factory) -> tuple[FeatureCache, FeatureCache]:
    """The ESC-50-style set extracted as ``earmark extract`` does: AudioSet's 527 classes,
    multi-label; folds 1-3 to train (and cross-validate) on, fold 4 (other kits) held out."""
    dataset = load_dataset(esc50)
    labels = resolve_labels(dataset.clips)
    multi_label = default_multi_label(dataset.clips, labels)
    assert labels is audioset() and multi_label
    caches = []
    for name, keep in (("train", lambda fold: fold != 4), ("test", lambda fold: fold == 4)):
        out = tmp_path_factory.mktemp("cache") / name
        extract_features(tiny_en, [c for c in dataset.clips if keep(c.fold)], out, labels, multi_label,
                         batch_size=8, progress=False)
        caches.append(FeatureCache.open(out))
    train, test = caches
    assert len(train) == 32 and len(test) == 8 and set(train.folds()) == {1, 2, 3}
    return train, test


# --------------------------------------------------------------------------- formats and errors


def test_urbansound8k_and_esc50_layouts_are_found_by_their_columns(tmp_path: Path, esc50: Path):
    clips = pick(drum_clips(), per_class=3)
    meta = write_urbansound8k(tmp_path / "UrbanSound8K", clips)
    with open(meta, "a", newline="") as f:
        csv.writer(f).writerow(["missing.wav", 99, 0, 1, 1, 2, 0, "kick"])
    assert detect_format(meta) == "urbansound8k"
    dataset = load_dataset(meta)
    assert dataset.format == "urbansound8k" and len(dataset) == len(clips)
    assert [c.fold for c in dataset.clips] == [c.fold + 1 for c in clips]
    assert [c.labels for c in dataset.clips] == [[c.label] for c in clips]  # the data's own class names
    assert all(c.path.parent.name == f"fold{c.fold}" and c.path.is_file() for c in dataset.clips)
    audio = tmp_path / "UrbanSound8K" / "audio"
    assert dataset.problems == [(f"UrbanSound8K.csv, row {len(clips) + 2}",
                                 f"no audio file: missing.wav (looked in {audio / 'fold2'}, {audio / '2'}, {audio})")]
    assert resolve_labels(dataset.clips).names == ("cymbal", "hihat", "kick", "snare")

    assert detect_format(esc50) == "esc50"
    dataset = load_dataset(esc50)
    assert dataset.format == "esc50" and len(dataset) == 40 and not dataset.problems
    assert {c.labels[0] for c in dataset.clips} == set(AUDIOSET_NAMES) and dataset.clips[0].path.parent.name == "audio"
    assert sorted({c.fold for c in dataset.clips}) == [1, 2, 3, 4]


def test_folds_written_as_fold1_or_as_names(tmp_path: Path):
    clips = pick(drum_clips(), per_class=2)
    rows = [[str(c.path), c.audioset, f"fold{c.fold + 1}"] for c in clips]
    prefixed = tmp_path / "prefixed.csv"
    with open(prefixed, "w", newline="") as f:
        csv.writer(f).writerows([["path", "labels", "fold"], *rows, [str(clips[0].path), "Cymbal", "3"]])
    dataset = load_dataset(prefixed)
    assert [c.fold for c in dataset.clips] == [c.fold + 1 for c in clips]
    assert dataset.fold_names == {n: f"fold{n}" for n in sorted({c.fold + 1 for c in clips})}
    assert dataset.problems == [("prefixed.csv, row 10",
                                 "fold written unlike the other rows' folds ('fold' and a number): '3'")]

    named = tmp_path / "named.csv"
    with open(named, "w", newline="") as f:
        csv.writer(f).writerows([["file", "class", "fold"], *([p, label, "AB"[c.fold % 2]] for (p, label, _), c
                                                            in zip(rows, clips))])
    dataset = load_dataset(named)  # the columns found by name: file, class
    assert [c.fold for c in dataset.clips] == [1 + c.fold % 2 for c in clips]
    assert dataset.fold_names == {1: "A", 2: "B"} and not dataset.problems


def test_errors_say_what_is_wrong(tmp_path: Path, capsys):
    wrong = tmp_path / "wrong.csv"
    clip = pick(drum_clips(), per_class=1)[0]
    wrong.write_text(f"file_path,label\n{clip.path},kick\n")
    with pytest.raises(DatasetError, match="'file_path', 'label'; expected a path column .*UrbanSound8K.*ESC-50"):
        load_dataset(wrong)

    bad = tmp_path / "bad.csv"
    bad.write_text("path,labels,fold\n" + "".join(f"a{i}.wav,kick,{i}.5\n" for i in range(7)) + ",kick,1\n")
    args = parse(add_extract_arguments, ["--data", bad, "--model", "tiny.en", "--out", tmp_path / "feats"])
    assert run_extract(args) == 2
    err = capsys.readouterr().err
    assert "no usable clips; every row (8) was left out" in err
    assert "7 rows: fold is not a whole number" in err and "1 row: empty path" in err
    assert "bad.csv, row 2: fold is not a whole number: '0.5'" in err and "... and 3 more" in err
    assert not (tmp_path / "feats").exists()

    us8k = tmp_path / "us8k.csv"
    us8k.write_text("slice_file_name,fsID,fold,category_name\nx.wav,1,1,dog_bark\n")
    with pytest.raises(DatasetError, match="not an UrbanSound8K CSV.*expected slice_file_name, fsid"):
        load_dataset(us8k, "urbansound8k")
    us8k.write_text("slice_file_name,fsID,fold,classID,class\nx.wav,1,1,3,dog_bark\n")
    dataset = load_dataset(us8k)
    assert not dataset.clips and dataset.problems[0][1].startswith("no audio file: x.wav")


# --------------------------------------------------------------------------- the recipe


def test_the_reference_recipe_is_the_train_config_defaults(caches):
    train, _ = caches
    args = parse(add_train_arguments, ["--train", train.path, "--out", "x", "--recipe", "reference"])
    reference = choose_recipe(args, train)
    assert reference.config == TrainConfig() and reference.columns is None and reference.apply(train) is train
    assert config_from_args(args) == TrainConfig()
    defaults = TrainConfig()
    assert (defaults.epoch_steps, defaults.warmup_steps, defaults.schedule, defaults.early_stop) == (None, 0, "step", 0)
    # the step schedule as a per-step factor equals the reference's MultiStepLR (x0.75 after epochs 15, 20, 25)
    assert [lr_factor(defaults, epoch * 7, 7) for epoch in (0, 14, 15, 19, 20, 29)] == [1, 1, 0.75, 0.75, 0.75 ** 2, 0.75 ** 3]
    warm = TrainConfig(warmup_steps=10, schedule="cosine", epochs=10)
    assert lr_factor(warm, 0, 10) == pytest.approx(0.1) and lr_factor(warm, 9, 10) == pytest.approx(1.0)
    assert lr_factor(warm, 99, 10) == pytest.approx(0.0, abs=1e-3) and 0.4 < lr_factor(warm, 55, 10) < 0.6


def test_the_auto_recipe_fits_the_data(caches):
    train, _ = caches
    args = parse(add_train_arguments, ["--train", train.path, "--dev", "d", "--out", "x"])
    auto = choose_recipe(args, train)
    narrowed = auto.apply(train)
    assert narrowed.labels.names == IN_AUDIOSET_ORDER and not narrowed.multi_label
    assert narrowed.labels.mids == tuple(audioset()[audioset().index_of(n)].mid for n in IN_AUDIOSET_ORDER)
    assert narrowed.targets().shape == (32, 4) and (narrowed.targets().sum(axis=1) == 1).all()
    config = auto.config
    assert config.epochs * config.epoch_steps >= SMALL_STEPS and config.schedule == "cosine"
    assert config.lr == pytest.approx(1e-3) and config.warmup_steps == config.epochs * config.epoch_steps // 10
    assert config.early_stop >= 5 and config.head_type == "stats"  # a small set: the light head
    notes = "\n".join(auto.notes)
    assert "the 4 AudioSet classes the training clips name" in notes and "single-label" in notes
    assert "too few to converge" in notes and "lr 0.001" in notes and "early stopping" in notes

    given = choose_recipe(parse(add_train_arguments, ["--train", "t", "--out", "x", "--epochs", 3, "--lr", 3e-4,
                                                      "--all-classes"]), train)
    assert (given.config.epochs, given.config.epoch_steps, given.config.lr, given.config.warmup_steps) == (3, None, 3e-4, 0)
    assert given.config.early_stop == 0 and given.apply(train) is train  # all 527 classes, as extracted
    distil = choose_recipe(args, train, teacher=True)
    assert distil.apply(train) is train  # distillation keeps 527
    assert (distil.config.mixup, distil.config.time_mask, distil.config.balanced) == (0.0, 0, False)
    assert (config.mixup, config.time_mask) == (TrainConfig.mixup, TrainConfig.time_mask)  # not distilling: as given
    mixed = choose_recipe(parse(add_train_arguments, ["--train", "t", "--out", "x", "--mixup", 0.3]), train, teacher=True)
    assert (mixed.config.mixup, mixed.config.time_mask) == (0.3, 0)  # a given option wins; the other stays off
    assert any(note.startswith("no time mask:") for note in mixed.notes)
    assert not any(note.startswith("balanced sampling") for note in mixed.notes)  # distillation draws uniformly
    large = choose_recipe(args, train, n_clips=LARGE_DATA)
    assert large.config == TrainConfig() and large.columns is not None  # the reference schedule, the data's classes
    assert choose_recipe(args, train, n_clips=SMALL_HEAD_DATA).config.head_type == "tl_tr"
    few_dev = choose_recipe(args, train, n_dev=EARLY_STOP_DEV - 1)  # a dev set too small to stop on
    assert few_dev.config.early_stop == 0 and "no early stopping" in "\n".join(few_dev.notes)
    assert choose_recipe(args, train, n_dev=EARLY_STOP_DEV).config.early_stop == config.early_stop


def test_early_stopping_keeps_the_best_epoch(caches, tmp_path: Path):
    train, test = caches
    args = parse(add_train_arguments, ["--train", train.path, "--out", "x"])
    recipe = choose_recipe(args, train)
    config = TrainConfig(head_type="wa_mlp", epochs=8, epoch_steps=2, batch_size=8, lr=1e-9, early_stop=2,
                         window=float(WINDOW), progress=False)
    result = train_head(recipe.apply(train), recipe.apply(test), config, tmp_path / "h.safetensors")
    assert [row.epoch for row in result.history] == [1, 2, 3]  # no better dev metric after epoch 1: stop after 3
    assert result.selected == "epoch 1" and result.extra["metrics"]["stopped_early_after_epoch"] == 3


# --------------------------------------------------------------------------- the command line


def test_train_with_the_auto_recipe_and_evaluate_on_audioset_labels(caches, tmp_path: Path, capsys):
    train, test = caches
    out = tmp_path / "drums.safetensors"
    args = parse(add_train_arguments, ["--train", train.path, "--dev", test.path, "--steps", 100,
                                       "--window", WINDOW, "--out", out, "--no-plot"])
    assert run_train(args) == 0
    printed = capsys.readouterr()
    assert "earmark train: recipe auto, 32 training clips:" in printed.err
    assert "4 AudioSet classes" in printed.err and "100 optimizer steps (as given)" in printed.err
    assert "head stats: 32 training clips" in printed.err and "no early stopping: 8 dev clips" in printed.err
    assert "accuracy" in printed.out
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["multi_label"] is False and [label["name"] for label in card["labels"]] == list(IN_AUDIOSET_ORDER)
    assert card["labels"][0]["mid"] == audioset()[audioset().index_of(IN_AUDIOSET_ORDER[0])].mid
    assert card["extra"]["recipe"]["recipe"] == "auto" and card["extra"]["hyperparameters"]["epoch_steps"] == 25
    head = load_head(out)
    assert head.card.labels.name == "audioset-subset" and len(head.card.labels) == 4
    assert head.card.head_type == "stats" and card["extra"]["hyperparameters"]["early_stop"] == 0

    args = parse(add_evaluate_arguments, ["--head", out, "--features", test.path, "--eval-window", WINDOW, "--json"])
    assert run_evaluate(args) == 0  # the 527-class test cache, scored on the head's 4 classes by mid
    result = json.loads(capsys.readouterr().out)
    assert result["n_clips"] == 8 and result["accuracy"] is not None and result["accuracy"] > 0.25
    args = parse(add_evaluate_arguments, ["--head", out, "--features", test.path, "--eval-window", WINDOW, "--json",
                                          "--int8"])
    assert run_evaluate(args) == 0  # as load_model serves the head on a CPU
    served = json.loads(capsys.readouterr().out)
    assert served["n_clips"] == 8 and abs(served["mAP"] - result["mAP"]) < 0.05


def test_cross_validation_from_one_cache(caches, tmp_path: Path, capsys):
    train, _ = caches
    report = tmp_path / "cv"
    args = parse(add_evaluate_arguments, ["--features", train.path, "--folds", "--head-type", "wa_mlp", "--steps", 60,
                                          "--window", WINDOW, "--eval-window", WINDOW, "--report-dir", report])
    assert run_evaluate(args) == 0
    printed = capsys.readouterr()
    assert "recipe auto, for about 21 training clips per fold" in printed.err
    assert "fold 1: mAP" in printed.out and "accuracy:" in printed.out and " ± " in printed.out
    result = json.loads((report / "cv.json").read_text())
    assert [f["fold"] for f in result["folds"]] == [1, 2, 3] and result["labels"] == list(IN_AUDIOSET_ORDER)
    assert result["summary"]["accuracy"]["mean"] > 0.4 and result["summary"]["mAP"]["mean"] > 0.5, result["summary"]
    assert result["summary"]["accuracy"]["std"] >= 0 and not result["multi_label"]
    matrix = np.array(result["confusion"])
    per_class = [int(train.targets()[:, audioset().index_of(name)].sum()) for name in IN_AUDIOSET_ORDER]
    assert matrix.shape == (4, 4) and matrix.sum() == 32 and matrix.sum(axis=1).tolist() == per_class
    correct = sum(round(f["accuracy"] * f["test_clips"]) for f in result["folds"])
    assert int(np.trace(matrix)) == correct  # the held-out predictions behind the per-fold accuracy
    rows = list(csv.reader((report / "confusion.csv").read_text().splitlines()))
    assert rows[0] == ["true \\ predicted", "mid", *IN_AUDIOSET_ORDER] and len(rows) == 5
    assert (report / "confusion.png").stat().st_size > 5000 and (report / "folds.csv").is_file()


# --------------------------------------------------------------------------- the linear probe


def test_the_linear_probe_trains_evaluates_and_serves(caches, tmp_path: Path, capsys):
    """``--head linear``: the auto recipe's schedule, classes and single-label mode, saved and loaded like
    every head, scored by ``earmark evaluate`` and served by ``load_model(..., head=PATH)``."""
    train, test = caches
    out = tmp_path / "probe.safetensors"
    args = parse(add_train_arguments, ["--train", train.path, "--dev", test.path, "--head", "linear", "--steps", 100,
                                       "--window", WINDOW, "--out", out, "--no-plot"])
    assert run_train(args) == 0
    printed = capsys.readouterr()
    assert "head linear, as given" in printed.err and "4 AudioSet classes" in printed.err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["head_type"] == "linear" and card["multi_label"] is False
    assert [label["name"] for label in card["labels"]] == list(IN_AUDIOSET_ORDER)
    assert card["extra"]["recipe"]["recipe"] == "auto" and card["extra"]["hyperparameters"]["head_type"] == "linear"
    head = load_head(out)
    assert isinstance(head.module, LinearProbe) and head.module.linear.weight.shape == (4, 4 * 384)

    args = parse(add_evaluate_arguments, ["--head", out, "--features", test.path, "--eval-window", WINDOW, "--json"])
    assert run_evaluate(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_clips"] == 8 and result["accuracy"] >= 0.5 and result["mAP"] > 0.6, result  # other kits

    model = load_model("tiny.en", head=out, device="cpu")
    index = next(i for i, r in enumerate(test.records) if r.duration >= 1.0)  # a held-out clip, long enough to tag
    tags = model.tag(load_audio(test.records[index].source), top_k=None).tags[0].labels
    assert {t.name for t in tags} == set(IN_AUDIOSET_ORDER)
    assert sum(t.probability for t in tags) == pytest.approx(1.0, abs=1e-4)  # softmax, as trained
    cached = head.probabilities(torch.from_numpy(np.asarray(test.features(index), np.float32))[None])[0]
    served = {t.name: t.probability for t in tags}
    assert [served[name] for name in IN_AUDIOSET_ORDER] == pytest.approx(cached.tolist(), abs=0.02)


def test_cross_validation_of_the_linear_probe(caches, tmp_path: Path, capsys):
    train, _ = caches
    report = tmp_path / "cv"
    args = parse(add_evaluate_arguments, ["--features", train.path, "--folds", "--head", "linear", "--steps", 60,
                                          "--window", WINDOW, "--eval-window", WINDOW, "--report-dir", report])
    assert run_evaluate(args) == 0
    assert "head linear, as given" in capsys.readouterr().err
    result = json.loads((report / "cv.json").read_text())
    assert [f["fold"] for f in result["folds"]] == [1, 2, 3] and not result["multi_label"]
    assert result["summary"]["accuracy"]["mean"] > 0.4 and result["summary"]["mAP"]["mean"] > 0.5, result["summary"]
    heads = sorted(report.glob("*.safetensors"))
    assert heads and all(load_head(h).card.head_type == "linear" for h in heads)

    args = parse(add_evaluate_arguments, ["--features", train.path, "--folds", "--head", "linear", "--head-type",
                                          "wa_mlp"])
    assert run_evaluate(args) == 2
    assert "--head linear and --head-type wa_mlp disagree" in capsys.readouterr().err


def test_confusion_matrix_counts_each_true_class():
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]])
    scores = np.array([[0.9, 0.1, 0.0], [0.6, 0.3, 0.1], [0.2, 0.1, 0.7]])
    assert confusion_matrix(targets, scores).tolist() == [[1, 0, 1], [1, 0, 0], [0, 0, 1]]
