"""Head training and evaluation: the recipe, metrics, resume, torchrun, the CLI functions, on real drums.

The real data: 64 drum one-shots (kick / snare / hi-hat / cymbal, 16 each) from 12 Hydrogen kits,
each kit in one of 4 folds (``tests/sound_fixtures.py``), extracted once with tiny.en. The drum
label set is custom and every clip has one label, so the cache is single-label (softmax + CE);
a copy flagged multi-label exercises BCE. The clips are at most 2 s (5 steps of 0.4 s), so the
tests train on 2 s windows: 10 s windows of 2 s clips would be the same steps repeated 5 times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from sound_fixtures import DRUM_CLASSES, decoded, drum_clips, pick, write_csv

from tagger import load_model
from tagger.corpus.default_heads import train_one
from tagger.heads import HeadCard, LoadedHead, TLTr, create_head, load_head
from tagger.labels import Label, LabelSet, audioset
from tagger.train.convert import add_convert_head_arguments, run_convert_head
from tagger.train.datasets import default_multi_label, load_dataset, resolve_labels
from tagger.train.evaluate import add_evaluate_arguments, evaluate_head, run_evaluate
from tagger.train.features import CacheMismatchError, FeatureCache, extract_features, join_caches
from tagger.train.metrics import average_precision, compute_metrics, d_prime, map_standard_error, roc_auc
from tagger.train.scoring import label_mapping, score_clips, window_spans
from tagger.train.trainer import (
    BatchMaker,
    TrainConfig,
    add_train_arguments,
    init_output_bias,
    plan_epoch,
    run_train,
    sample_weights,
    state_dir,
    train_head,
    window_of,
)

ROOT = Path(__file__).resolve().parents[1]
WINDOW = "2.0"  # seconds: the drum clips are 0.1-2 s long


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def drum_csvs(tmp_path_factory) -> tuple[Path, Path]:
    """64 drum clips: folds 0-2 (9 kits, 50 clips) to train on, fold 3 (3 other kits, 14 clips) held out."""
    clips = pick(drum_clips(), per_class=16)
    directory = tmp_path_factory.mktemp("drums")
    return (write_csv(directory, [c for c in clips if c.fold != 3], name="train.csv"),
            write_csv(directory, [c for c in clips if c.fold == 3], name="test.csv"))


@pytest.fixture(scope="module")
def split(tiny_en, drum_csvs, tmp_path_factory) -> tuple[FeatureCache, FeatureCache]:
    """The two caches, extracted with tiny.en as ``earmark extract`` does."""
    train_clips, test_clips = (load_dataset(csv_path).clips for csv_path in drum_csvs)
    labels = resolve_labels(train_clips)
    assert default_multi_label(train_clips, labels) is False  # one custom label per clip
    caches = []
    for name, clips in (("train", train_clips), ("test", test_clips)):
        out = tmp_path_factory.mktemp("cache") / name
        extract_features(tiny_en, clips, out, labels, False, batch_size=8, progress=False)
        caches.append(FeatureCache.open(out))
    train, test = caches
    assert (len(train), len(test)) == (50, 14) and train.labels.names == DRUM_CLASSES and not train.multi_label
    assert set(train.folds()) == {0, 1, 2} and set(test.folds()) == {3}
    return train, test


def quick(**overrides) -> TrainConfig:
    options = {"head_type": "wa_mlp", "epochs": 4, "batch_size": 16, "lr": 1e-3, "window": float(WINDOW), "progress": False}
    options.update(overrides)
    return TrainConfig(**options)


def parse(add, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args([str(a) for a in argv])


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors file, not a dict)


# --------------------------------------------------------------------------- metrics


def test_metrics_hand_computed_cases():
    y, s = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])
    assert average_precision(y, s) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # thresholds .9, .8, .7
    assert roc_auc(y, s) == pytest.approx(0.75)  # 3 of 4 positive/negative pairs in order
    assert d_prime(0.75) == pytest.approx(math.sqrt(2) * 0.6744897501960817)
    assert d_prime(0.5) == 0.0 and math.isfinite(d_prime(1.0))
    # ties: one threshold for equal scores; AUC counts tied pairs half
    assert average_precision([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert math.isnan(average_precision([0, 0], [0.1, 0.2])) and math.isnan(roc_auc([1, 1], [0.1, 0.2]))
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)  # class 2: no positives
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.1], [0.4, 0.6, 0.2], [0.3, 0.7, 0.9]])
    m = compute_metrics(targets, scores, multi_label=False)
    assert (m.classes_scored, m.classes_without_positives, m.n_clips) == (2, 1, 4)
    assert m.mAP == pytest.approx(np.nanmean([1.0, 1.0])) and m.accuracy == pytest.approx(0.5)
    assert m.main == m.accuracy and m.summary()["classes_without_positives"] == 1
    json.dumps(m.to_json(), allow_nan=False)  # JSON-safe: nan -> null


def test_metrics_equal_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    targets = (rng.random((60, 9)) < 0.3).astype(np.float32)
    targets[:, 0] = 0  # a class without positives is left out of the mAP, as the reference does with nan
    scores = np.round(rng.random((60, 9)), 2)  # rounding makes ties
    scores[:, 3] += targets[:, 3]
    m = compute_metrics(targets, scores)
    keep = targets.sum(axis=0) > 0
    assert m.mAP == pytest.approx(sklearn_metrics.average_precision_score(targets[:, keep], scores[:, keep], average="macro"))
    assert m.mAUC == pytest.approx(sklearn_metrics.roc_auc_score(targets[:, keep], scores[:, keep], average="macro"))
    for c in np.flatnonzero(keep):
        assert m.per_class_ap[c] == pytest.approx(sklearn_metrics.average_precision_score(targets[:, c], scores[:, c]))


def test_the_map_standard_error_shrinks_with_more_clips_and_grows_with_rare_classes():
    rng = np.random.default_rng(3)
    targets = np.eye(5)[rng.integers(0, 5, 400)]  # every clip one of 5 classes
    assert map_standard_error(targets, targets) == 0.0  # scored exactly: every resampling ranks them perfectly
    scores = targets + rng.normal(0, 0.6, targets.shape)
    few_clips, many_clips = map_standard_error(targets[:40], scores[:40]), map_standard_error(targets, scores)
    assert few_clips > many_clips > 0
    rare = np.zeros((400, 1))
    rare[[3, 200], 0] = 1  # two positives, one ranked first and one far down: the AP swings with the draw
    rare_scores = rng.random((400, 1)) * 0.9
    rare_scores[3], rare_scores[200] = 1.0, 0.5
    assert map_standard_error(rare, rare_scores) > 5 * many_clips
    assert map_standard_error(targets, scores, seed=1) == map_standard_error(targets, scores, seed=1)
    with pytest.raises(ValueError, match="resamples"):
        map_standard_error(targets, scores, resamples=1)


# --------------------------------------------------------------------------- the recipe, unit by unit


def test_balanced_sampling_weights_follow_the_reference():
    targets = np.array([[1, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=np.float32)
    w = sample_weights(targets)
    class_weight = 1000 / (np.array([3, 2]) + 0.01)
    np.testing.assert_allclose(w[:4], [class_weight[0], class_weight[0], class_weight.sum(), class_weight[1]])
    assert w[4] == pytest.approx(1000 / 1.01)  # no labels: a class of its own
    config = quick(batch_size=4, seed=3)
    a, b = plan_epoch(config, 2, 5, w), plan_epoch(config, 2, 5, w)
    assert len(a) == 8 and all(np.array_equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    assert not np.array_equal(plan_epoch(config, 3, 5, w).clip, a.clip)  # each epoch draws anew
    draws = plan_epoch(quick(batch_size=1000), 1, 5, w).clip
    np.testing.assert_allclose(np.bincount(draws, minlength=5) / 1000, w / w.sum(), atol=0.05)
    unbalanced = plan_epoch(quick(batch_size=4, balanced=False), 1, 5, None).clip
    assert sorted(unbalanced[:5]) == list(range(5))  # a permutation: every clip once


@pytest.mark.parametrize("head_type", ["wa_mlp", "tl_tr", "linear"])
def test_a_new_head_starts_at_the_targets_prior(head_type):
    """Each class starts at its frequency in the training targets, not at probability 0.5."""
    targets = np.zeros((100, 5), np.float32)
    targets[:50, 0], targets[:2, 1], targets[:, 2] = 1, 1, 0.25  # 0.5, 0.02, a soft 0.25, then never
    head = create_head(head_type, 2, 64, 5)
    init_output_bias(head, targets, multi_label=True)
    x = torch.zeros(1, 2, 3, 64)
    with torch.no_grad():
        # inputs of zero (the LayerNorm's output is then its bias, zero at init): the bias alone speaks
        probs = torch.sigmoid(head(x)).numpy()[0] if head_type != "tl_tr" else None
    bias = [m for m in head.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 5][-1].bias
    np.testing.assert_allclose(torch.sigmoid(bias).detach().numpy(), [0.5, 0.02, 0.25, 1e-4, 1e-4], rtol=1e-3)
    if probs is not None:
        np.testing.assert_allclose(probs, [0.5, 0.02, 0.25, 1e-4, 1e-4], rtol=1e-3)
    init_output_bias(head, np.eye(5)[[0, 0, 0, 1]], multi_label=False)  # softmax: log frequencies
    np.testing.assert_allclose(torch.softmax(bias, 0).detach().numpy()[:2] / 0.9996, [0.75, 0.25], atol=1e-3)


def test_batches_by_length_are_as_long_as_their_longest_clip():
    """--by-length: each batch holds clips of about one length and is as long as its longest one
    (never longer than the window); a short clip is then seen as it is scored, not repeated."""
    feats = [np.full((2, n, 3), float(n), np.float16) for n in (3, 4, 20, 40)]
    targets = np.eye(4, dtype=np.float32)
    config = quick(window=10.0, batch_size=2, mixup=0.0, time_mask=10, by_length=True, balanced=False, epoch_steps=8)
    maker = BatchMaker(feats, targets, config, True, torch.device("cpu"))
    plan = plan_epoch(config, 1, 4, None, maker.lengths)
    assert sorted(plan.clip) == sorted(plan_epoch(dataclasses.replace(config, by_length=False), 1, 4, None).clip)  # the same draws
    for batch in range(8):
        positions = np.arange(2 * batch, 2 * batch + 2)
        clips = plan.clip[positions]
        assert set(clips) <= {0, 1} or set(clips) <= {2, 3}
        x, _ = maker.make(plan, positions)
        assert x.shape[2] == min(25, max(int(feats[c].shape[1]) for c in clips))
        for row, clip in enumerate(clips):
            masked = x[row, 0] == 0
            assert masked.any(dim=1).sum() <= 10 * x.shape[2] // 25  # the mask keeps its share of the window
            kept = x[row, 0][~masked.all(dim=1)]
            assert torch.all(kept == float(feats[clip][0, 0, 0]))


def test_targets_mixup_masking_and_windows():
    steps = 25
    feats = [np.full((2, 40, 3), 1.0, np.float16), np.full((2, 3, 3), 2.0, np.float16)]
    targets = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32)
    config = quick(window=10.0, mixup=0.0, time_mask=0)
    plan = plan_epoch(config, 1, 2, None)
    x, y = BatchMaker(feats, targets, config, True, torch.device("cpu")).make(plan, np.arange(2))
    assert x.shape == (2, 2, steps, 3) and x.dtype == torch.float32
    for row, clip in enumerate(plan.clip[:2]):  # multi-label smoothing: 1 - eps / eps / C
        expected = np.where(targets[clip] > 0, 0.9, 0.1 / 4)
        np.testing.assert_allclose(y[row].numpy(), expected, rtol=1e-6)
        assert float(x[row].mean()) == pytest.approx(float(feats[clip][0, 0, 0]))  # repeated, never zero-padded
    _, y_single = BatchMaker(feats, targets, config, False, torch.device("cpu")).make(plan, np.arange(2))
    np.testing.assert_allclose(y_single.sum(dim=1).numpy(), 1.0, rtol=1e-6)  # single-label: a distribution

    mixed = dataclasses.replace(plan, mixed=np.array([True, True]), partner=np.array([1, 0]), lam=np.array([0.7, 0.7]),
                                clip=np.array([0, 1]), mask_len=np.array([10, 0]), mask_start=np.array([0.0, 0.0]))
    x, y = BatchMaker(feats, targets, config, True, torch.device("cpu")).make(mixed, np.arange(2))
    np.testing.assert_allclose(y[0].numpy(), [0.1 / 4 + 0.9 * 0.7, 0.1 / 4 + 0.9 * 0.3, 0.1 / 4, 0.1 / 4], rtol=1e-6)
    assert torch.all(x[0, :, :10] == 0) and torch.allclose(x[0, :, 10:], torch.tensor(0.7 * 1 + 0.3 * 2))
    assert quick(window=10.0).mask_steps == 10 and quick(window=2.0).mask_steps == 2  # 10 of 25, scaled to the window
    assert set(plan_epoch(quick(window=10.0, batch_size=2000), 1, 2, None).mask_len) == set(range(11))

    out = np.empty((2, steps, 3), np.float32)
    long_clip = np.arange(2 * 40 * 3, dtype=np.float16).reshape(2, 40, 3)
    window_of(long_clip, steps, 0.999, out)
    np.testing.assert_array_equal(out, long_clip[:, 15:])  # the last possible crop
    window_of(long_clip, steps, 0.0, out)
    np.testing.assert_array_equal(out, long_clip[:, :25])
    assert window_spans(60, 25) == [(0, 25), (25, 50), (50, 60)] and window_spans(3, 25) == [(0, 3)]


def test_repeating_a_short_clip_is_what_the_head_sees_of_the_clip_itself():
    """Why short clips are repeated, not zero-padded: without positional embeddings, a clip repeated
    a whole number of times gives the TL-Tr head exactly the output of the clip alone."""
    torch.manual_seed(0)
    head = TLTr(3, 64, 5).eval()
    clip = torch.randn(1, 3, 5, 64)
    with torch.no_grad():
        alone = head(clip)
        repeated = head(clip[:, :, torch.arange(25) % 5])
        padded = head(torch.nn.functional.pad(clip, (0, 0, 0, 20)))
    torch.testing.assert_close(repeated, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(padded, alone, atol=1e-3)


# --------------------------------------------------------------------------- real drums


def test_a_trained_head_beats_chance_on_held_out_kits(split, tmp_path: Path, capsys):
    """3-fold cross-validation by kit (``evaluate --folds``): every test clip is a recording of a kit
    the head never heard. Chance is 25 % accuracy; a 4-class mAP by chance is about 0.3."""
    args = parse(add_evaluate_arguments, ["--features", split[0].path, "--folds", "--head-type", "wa_mlp",
                                          "--epochs", 20, "--batch-size", 16, "--lr", 1e-3, "--window", WINDOW,
                                          "--eval-window", WINDOW, "--json", "--report-dir", tmp_path / "cv"])
    assert run_evaluate(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert [f["fold"] for f in result["folds"]] == [0, 1, 2]
    assert all(f["accuracy"] > 0.25 for f in result["folds"])
    assert result["summary"]["accuracy"]["mean"] >= 0.5, result["summary"]
    assert result["summary"]["mAP"]["mean"] >= 0.6, result["summary"]
    assert result["summary"]["accuracy"]["std"] >= 0
    assert (tmp_path / "cv" / "folds.csv").is_file() and (tmp_path / "cv" / "fold_2.safetensors").is_file()


def test_training_is_deterministic_and_resumes_to_the_same_weights(split, tmp_path: Path):
    """Interrupted after epoch 2 of 3 (the averaging window, epochs 2-3, is half summed and a best
    epoch is kept), resumed: bit for bit the weights, losses and choice of the uninterrupted run."""
    train, dev = split
    config = quick(head_type="wa_tr", epochs=3, average_last=2)
    whole = train_head(train, dev, config, tmp_path / "whole.safetensors", write_plot=False)
    reference = weights_of(whole.path)

    class Interrupted(Exception):
        pass

    def stop_after_two(epoch, _row):
        if epoch == 2:
            raise Interrupted

    out = tmp_path / "resumed.safetensors"
    with pytest.raises(Interrupted):
        train_head(train, dev, config, out, on_epoch_end=stop_after_two, write_plot=False)
    assert (state_dir(out) / "state.pt").is_file() and not out.exists()
    with pytest.raises(FileExistsError, match="--resume"):
        train_head(train, dev, config, out)  # never silently starts over
    with pytest.raises(ValueError, match="lr"):
        train_head(train, dev, dataclasses.replace(config, lr=5e-4), out, resume=True)
    resumed = train_head(train, dev, config, out, resume=True, write_plot=False)
    assert resumed.selected == whole.selected
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in whole.history]
    got = weights_of(resumed.path)
    assert got.keys() == reference.keys() and all(torch.equal(reference[k], got[k]) for k in reference)
    assert not state_dir(out).exists()  # removed once the run is complete
    card = json.loads(out.with_suffix(".json").read_text())
    assert len(card["extra"]["history"]) == 3 and card["extra"]["metrics"]["selected"] == whole.selected


def test_single_and_multi_label_heads(split, tmp_path: Path):
    train, dev = split
    single = train_head(train, dev, quick(epochs=2, preload="no"), tmp_path / "single", write_plot=False)
    multi = train_head(dataclasses.replace(train, multi_label=True), dataclasses.replace(dev, multi_label=True),
                       quick(epochs=2, fp16=True), tmp_path / "multi", write_plot=False)
    assert {v.dtype for v in weights_of(multi.path).values()} == {torch.float16}  # --fp16
    assert single.path.name == "single.safetensors"
    x = torch.from_numpy(np.asarray(dev.features(0), np.float32))[None]
    one = load_head(single.path)
    assert one.card.multi_label is False
    torch.testing.assert_close(one.probabilities(x).sum(), torch.tensor(1.0))  # softmax
    many = load_head(multi.path)
    assert many.card.multi_label is True
    assert not math.isclose(float(many.probabilities(x).sum()), 1.0, abs_tol=1e-3)  # sigmoids


def test_two_processes_under_torchrun_write_the_same_head_format(split, tmp_path: Path):
    train, dev = split
    config = quick(head_type="wa_tr", epochs=2, average_last=2, threads=1)
    single = train_head(train, dev, config, tmp_path / "one.safetensors", write_plot=False)
    out = tmp_path / "two.safetensors"
    env = dict(os.environ, EARMARK_OFFLINE="1", OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         "-m", "tagger.train.trainer", "--train", str(train.path), "--dev", str(dev.path),
         "--head", "wa_tr", "--epochs", "2", "--average-last", "2", "--batch-size", "16", "--lr", "1e-3",
         "--window", WINDOW, "--device", "cpu", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT, check=False)
    Path("/tmp/torchrun.err").write_text(run.stderr)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = weights_of(single.path), weights_of(out)
    assert {k: v.shape for k, v in one.items()} == {k: v.shape for k, v in two.items()}
    # each rank takes half of every global batch: the same draws, so (nearly) the same weights
    assert all(torch.allclose(one[k], two[k], atol=1e-3) for k in one)
    card_one = json.loads(single.path.with_suffix(".json").read_text())
    card_two = json.loads(out.with_suffix(".json").read_text())
    assert card_one.keys() == card_two.keys() and card_one["extra"].keys() == card_two["extra"].keys()
    for key in ("head_type", "n_layers", "d_model", "n_classes", "multi_label", "backbone", "backbone_sha256", "labels"):
        assert card_one[key] == card_two[key], key
    assert (card_one["extra"]["world_size"], card_two["extra"]["world_size"]) == (1, 2)
    assert out.with_name("two.train.csv").is_file() and not state_dir(out).exists()


def test_train_evaluate_and_tag_end_to_end(tiny_en, split, drum_csvs, tmp_path: Path, capsys):
    train, test = split
    train_dir, test_dir, test_csv = train.path, test.path, drum_csvs[1]
    held_out = [c for c in pick(drum_clips(), per_class=16) if c.fold == 3]
    out = tmp_path / "heads" / "drums.safetensors"
    args = parse(add_train_arguments, ["--train", train_dir, "--dev", test_dir, "--head", "tl_tr", "--epochs", 3,
                                       "--batch-size", 16, "--lr", 3e-4, "--window", WINDOW, "--out", out])
    assert run_train(args) == 0
    printed = capsys.readouterr()
    assert "saved" in printed.out and "epoch 3/3: loss" in printed.err
    card = json.loads(out.with_suffix(".json").read_text())
    extra = card["extra"]
    assert (card["head_type"], card["multi_label"], card["backbone"]) == ("tl_tr", False, "tiny.en")
    assert card["backbone_sha256"] == tiny_en.backbone.sha256 and [l["name"] for l in card["labels"]] == list(DRUM_CLASSES)
    assert extra["training_data"]["train"]["clips"] == len(train)
    assert sum(extra["training_data"]["train"]["class_counts"].values()) == len(train)
    assert extra["metrics"]["dev"]["accuracy"] is not None and extra["metrics"]["selected"]
    assert extra["hyperparameters"]["batch_size"] == 16 and extra["hyperparameters"]["betas"] == [0.95, 0.999]
    assert extra["command_line"] and extra["seconds"] > 0
    log_rows = out.with_name("drums.train.csv").read_text().splitlines()
    assert log_rows[0].split(",")[:4] == ["epoch", "lr", "train_loss", "dev_mAP"] and len(log_rows) == 4
    assert out.with_name("drums.train.png").stat().st_size > 1000
    with safe_open(str(out), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float32 for k in f.keys())  # noqa: SIM118 (fp32 unless --fp16)

    report = tmp_path / "report"
    args = parse(add_evaluate_arguments, ["--head", out, "--features", test_dir, "--eval-window", WINDOW,
                                          "--json", "--report-dir", report])
    assert run_evaluate(args) == 0
    on_features = json.loads(capsys.readouterr().out)
    assert on_features["n_clips"] == len(held_out) and 0 <= on_features["mAP"] <= 1
    assert on_features["d_prime"] == pytest.approx(d_prime(on_features["mAUC"]))
    assert (report / "per_class.csv").read_text().count("\n") == 5 and (report / "per_class_ap.png").is_file()

    args = parse(add_evaluate_arguments, ["--head", out, "--data", test_csv, "--eval-window", WINDOW, "--json"])
    assert run_evaluate(args) == 0  # extracts on the fly with the card's backbone (tiny.en)
    on_audio = json.loads(capsys.readouterr().out)
    assert on_audio["n_clips"] == on_features["n_clips"]
    assert on_audio["mAP"] == pytest.approx(on_features["mAP"], abs=0.02)

    model = load_model("tiny.en", head=out, device="cpu")
    result = model.tag(decoded(held_out[0]), top_k=None)
    assert result.tags and {t.name for t in result.tags[0].labels} == set(DRUM_CLASSES)
    assert sum(t.probability for t in result.tags[0].labels) == pytest.approx(1.0, abs=1e-4)  # softmax head


def test_convert_an_official_whisper_at_head(tmp_path: Path, capsys):
    torch.manual_seed(1)
    official = create_head("tl_tr", 4, 384)  # the layout of tiny_ori.pth; its weights are random here
    source = tmp_path / "tiny_ori.pth"
    torch.save({f"at_model.{k}": v for k, v in official.state_dict().items()}, source)
    args = parse(add_convert_head_arguments, [source, "--out", tmp_path / "tiny_at", "--model", "tiny.en", "--fp16"])
    assert run_convert_head(args) == 0
    assert "wrote" in capsys.readouterr().out
    loaded = load_head(tmp_path / "tiny_at.safetensors")
    assert isinstance(loaded.card, HeadCard) and loaded.card.labels == audioset()
    assert (loaded.card.head_type, loaded.card.n_layers, loaded.card.backbone) == ("tl_tr", 4, "tiny.en")
    assert loaded.card.extra["converted_from"] == "tiny_ori.pth"
    for k, v in official.state_dict().items():
        torch.testing.assert_close(loaded.module.state_dict()[k], v.half().float())
    bad = parse(add_convert_head_arguments, [source, "--out", tmp_path / "x", "--model", "base"])
    assert run_convert_head(bad) == 2  # a tiny head (width 384) is not a base head (width 512)
    assert "width 384" in capsys.readouterr().err


def test_label_sets_are_matched_by_mid(split):
    drum_cache = split[1]
    labels = drum_cache.labels
    data_cols, head_cols = label_mapping(labels, labels)
    assert list(data_cols) == list(head_cols) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="share no class"):
        label_mapping(audioset(), labels)
    # a head that scores snare, kick and a class the data lacks, in another order
    head_labels = LabelSet("other", (Label(0, "custom:snare", "snare"), Label(1, "/m/0dl5d", "x"),
                                     Label(2, "custom:kick", "kick")))
    data_cols, head_cols = label_mapping(head_labels, labels)
    assert [labels[i].name for i in data_cols] == ["kick", "snare"] and list(head_cols) == [2, 0]
    torch.manual_seed(0)
    module = create_head("last_mlp", 4, 384, 3).eval()
    head = LoadedHead(module, HeadCard("last_mlp", 4, 384, head_labels, multi_label=True))
    evaluation = evaluate_head(head, drum_cache, window=float(WINDOW))
    assert evaluation.labels.names == ("kick", "snare") and evaluation.missing == ["custom:cymbal", "custom:hihat"]
    assert evaluation.scores.shape == (len(drum_cache), 2)
    full = score_clips(module, [drum_cache.features(i) for i in range(len(drum_cache))], 5, True)
    np.testing.assert_allclose(evaluation.scores, full[:, [2, 0]], rtol=1e-6)


# --------------------------------------------------------------------------- several caches (final fit)


def test_several_caches_train_as_one(split, tmp_path: Path, capsys):
    train, test = split
    joined = join_caches([train, test])
    assert len(joined) == len(train) + len(test) and joined.labels == train.labels and not joined.multi_label
    np.testing.assert_array_equal(joined.targets(), np.concatenate([train.targets(), test.targets()]))
    np.testing.assert_array_equal(joined.features(len(train)), test.features(0))
    assert list(joined.folds()) == list(train.folds()) + list(test.folds())
    assert join_caches([train]) is train

    other_model = dataclasses.replace(test, backbone="base", backbone_sha256="0" * 64)
    reordered = LabelSet("custom", tuple(Label(i, f"custom:{n}", n) for i, n in enumerate(reversed(DRUM_CLASSES))))
    bf16 = dataclasses.replace(test, meta=dict(test.meta, encoder_autocast="bfloat16"))
    for bad, message in ((other_model, "base features"), (dataclasses.replace(test, labels=reordered), "label sets"),
                         (bf16, "bfloat16 autocast features")):
        with pytest.raises(CacheMismatchError, match=message):
            join_caches([train, bad])

    out = tmp_path / "both.safetensors"
    args = parse(add_train_arguments, ["--train", train.path, "--train", test.path, "--head", "wa_mlp", "--epochs", 2,
                                       "--batch-size", 16, "--window", WINDOW, "--out", out, "--no-plot"])
    assert run_train(args) == 0
    assert "saved" in capsys.readouterr().out
    data = json.loads(out.with_suffix(".json").read_text())["extra"]["training_data"]["train"]
    assert data["clips"] == len(train) + len(test) and data["path"] == f"{train.path} + {test.path}"


def test_final_fit_trains_on_train_and_dev_and_still_tests(split, tmp_path: Path):
    train, held_out = split
    caches = {"train": train, "dev": held_out, "test": held_out}
    result = train_one(caches, "wa_mlp", tmp_path / "final.safetensors", quick(), final_fit=True)
    card = json.loads((tmp_path / "final.json").read_text())["extra"]
    assert card["training_data"]["train"]["clips"] == len(train) + len(held_out) and card["training_data"]["dev"] is None
    assert card["metrics"]["selected"] == "averaged (epochs 3-4)" and result.dev_mAP is None
    assert 0 < result.test_mAP <= 1 and result.model == "tiny.en"
    selected = train_one(caches, "wa_mlp", tmp_path / "selected.safetensors", quick())
    assert selected.dev_mAP is not None
    assert json.loads((tmp_path / "selected.json").read_text())["extra"]["training_data"]["train"]["clips"] == len(train)
