"""``earmark label``: the teacher's 527 AudioSet probabilities for every clip of a data set, for
distillation (``earmark train --teacher-labels``).

    earmark label --teacher ../shared/teachers/mn04_as_mAP_432.pt --data pool/train.csv --out labels/train

For each clip: the teacher on the whole clip (``clip``) and on tag windows of ``window`` seconds
every ``hop`` seconds (``windows``), sigmoid probabilities stored as float16.

Store layout (a directory)::

    meta.json            format, the teacher file's name and sha256, window, hop, the label set
    part-00000.npz       clip [n, 527] and windows [m, 527] of a few hundred clips
    part-00000.json      their records: clip_id, source, duration, row, first window, windows;
                         written after the .npz, so a part counts only once both are on disk
    skipped.jsonl        clips that could not be read, and why; tried again by the next run
                         (a file missing then, a pool being rebuilt, may be there now)

An interrupted run loses at most the clips of its unfinished part; the next run skips every clip
already labelled. ``TeacherLabels.open`` reads a store while or after it is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio import SAMPLE_RATE
from ..labels import LabelSet, audioset
from .datasets import FORMATS, Clip, DatasetError, load_dataset
from .features import decode_ahead

FORMAT = "earmark-teacher-labels"
FORMAT_VERSION = 1
META_NAME = "meta.json"
SKIPPED_NAME = "skipped.jsonl"


@dataclass
class LabelReport:
    n_done: int
    n_cached: int
    skipped: list[tuple[str, str]]
    audio_seconds: float
    wall_seconds: float


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TeacherLabels:
    """A label store opened read-only: ``clip(clip_id)`` [527] and ``windows(clip_id)`` [n, 527], float32."""

    def __init__(self, path: Path, meta: dict, records: dict[str, dict], parts: dict[tuple[int, int], dict[str, np.ndarray]]):
        self.path = path
        self.meta = meta
        self.records = records
        self._parts = parts

    @classmethod
    def open(cls, *paths: str | os.PathLike) -> TeacherLabels:
        """One store, or several read as one (made by the same teacher with the same windows)."""
        records: dict[str, dict] = {}
        parts: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        meta: dict = {}
        for number, path in enumerate(Path(p) for p in paths):
            meta_path = path / META_NAME
            if not meta_path.is_file():
                raise FileNotFoundError(f"{path} is not a teacher label store (no {META_NAME}); "
                                        "write one with `earmark label`")
            this = json.loads(meta_path.read_text())
            if this.get("format") != FORMAT:
                raise ValueError(f"{meta_path} is not a teacher label store (format {this.get('format')!r})")
            changed = [k for k in ("teacher_sha256", "window", "hop") if meta and meta.get(k) != this.get(k)]
            if changed:
                raise ValueError(f"{path} was labelled with another {', '.join(changed)} than {paths[0]}")
            meta = meta or this
            for part_json in sorted(path.glob("part-*.json")):
                key = (number, int(part_json.stem.split("-")[1]))
                arrays = np.load(part_json.with_suffix(".npz"))
                parts[key] = {"clip": arrays["clip"], "windows": arrays["windows"]}
                for record in json.loads(part_json.read_text()):
                    records[record["clip_id"]] = {**record, "part": key}
        return cls(Path(paths[0]), meta, records, parts)

    @property
    def labels(self) -> LabelSet:
        return audioset()

    @property
    def window(self) -> float:
        return float(self.meta["window"])

    @property
    def hop(self) -> float:
        return float(self.meta["hop"])

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self.records

    def clip(self, clip_id: str) -> np.ndarray:
        r = self.records[clip_id]
        return self._parts[r["part"]]["clip"][r["row"]].astype(np.float32)

    def windows(self, clip_id: str) -> np.ndarray:
        r = self.records[clip_id]
        return self._parts[r["part"]]["windows"][r["first_window"] : r["first_window"] + r["n_windows"]].astype(np.float32)


def _write_part(out: Path, number: int, records: list[dict], clip: list[np.ndarray], windows: list[np.ndarray]) -> None:
    npz = out / f"part-{number:05d}.npz"
    tmp = out / f"part-{number:05d}.tmp.npz"
    np.savez(tmp, clip=np.stack(clip).astype(np.float16), windows=np.concatenate(windows).astype(np.float16))
    os.replace(tmp, npz)
    tmp_json = out / f"part-{number:05d}.json.tmp"
    tmp_json.write_text(json.dumps(records))
    os.replace(tmp_json, out / f"part-{number:05d}.json")


def label_clips(teacher, teacher_path: str | os.PathLike, clips: Sequence[Clip], out: str | os.PathLike, *,
                window: float = 10.0, hop: float | None = None, batch_size: int = 16, part_clips: int = 256,
                progress: bool = True) -> LabelReport:
    """Label ``clips`` with ``teacher`` into the store at ``out`` (created, or resumed)."""
    from .teacher import teacher_probs_many

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hop = window if hop is None else hop
    if not (window > 0 and hop > 0):
        raise ValueError(f"the window ({window}) and hop ({hop}) must be positive seconds")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "teacher": Path(teacher_path).name,
            "teacher_sha256": file_sha256(teacher_path), "window": window, "hop": hop,
            "label_set": audioset().name, "n_classes": len(audioset())}
    meta_path = out / META_NAME
    if meta_path.is_file():
        existing = json.loads(meta_path.read_text())
        changed = [k for k in ("teacher_sha256", "window", "hop", "label_set") if existing.get(k) != meta[k]]
        if changed:
            raise ValueError(f"{out} holds labels made with another {', '.join(changed)}; "
                             "write these to another folder or delete it")
    else:
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    for stale in out.glob("part-*.tmp.npz"):
        stale.unlink()
    done = set(TeacherLabels.open(out).records)
    todo = [c for c in clips if c.clip_id not in done]
    if (out / SKIPPED_NAME).is_file():  # keep the skips of clips this run does not try again
        settled = done | {c.clip_id for c in todo}
        rows = [line for line in (out / SKIPPED_NAME).read_text().splitlines()
                if line.strip() and json.loads(line)["clip_id"] not in settled]
        (out / SKIPPED_NAME).write_text("".join(f"{row}\n" for row in rows), encoding="utf-8")
    number = max((int(p.stem.split("-")[1]) + 1 for p in out.glob("part-*.json")), default=0)
    records: list[dict] = []
    clip_rows: list[np.ndarray] = []
    window_rows: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    audio_seconds = 0.0
    n_windows = 0
    bar = tqdm(total=len(todo), unit="clip", desc="label", disable=not progress, smoothing=0.1)
    pending: list[tuple[Clip, np.ndarray]] = []

    def flush_pending() -> None:
        nonlocal n_windows, audio_seconds
        if not pending:
            return
        for (clip, audio), (whole, per_window) in zip(pending, teacher_probs_many(
                teacher, [audio for _, audio in pending], window, hop, batch_size)):
            records.append({"clip_id": clip.clip_id, "source": str(clip.path), "duration": len(audio) / SAMPLE_RATE,
                            "row": len(clip_rows), "first_window": n_windows, "n_windows": len(per_window)})
            clip_rows.append(whole)
            window_rows.append(per_window)
            n_windows += len(per_window)
            audio_seconds += len(audio) / SAMPLE_RATE
        bar.update(len(pending))
        pending.clear()

    with open(out / SKIPPED_NAME, "a", encoding="utf-8") as skipped_file:
        for clip, audio, reason in decode_ahead(todo, None, workers=1, lookahead=2 * batch_size):
            if audio is None:
                bar.update(1)
                skipped.append((clip.clip_id, reason or "unreadable"))
                skipped_file.write(json.dumps({"clip_id": clip.clip_id, "reason": reason}) + "\n")
                skipped_file.flush()
                continue
            pending.append((clip, audio))
            if len(pending) >= batch_size:
                flush_pending()
            if len(records) >= part_clips:
                _write_part(out, number, records, clip_rows, window_rows)
                number += 1
                records, clip_rows, window_rows, n_windows = [], [], [], 0
        flush_pending()
        if records:
            _write_part(out, number, records, clip_rows, window_rows)
    bar.close()
    n_done = len(todo) - len(skipped)
    return LabelReport(n_done=n_done, n_cached=len(clips) - len(todo), skipped=skipped, audio_seconds=audio_seconds,
                       wall_seconds=time.perf_counter() - started)


class TeacherTargets:
    """Cached features with the teacher's probabilities as training targets (distillation).

    Over the 527 AudioSet classes, a clip's target is the teacher's clip probabilities; where the
    data has labels of its own (a corpus clip), ``hard_weight * labels + (1 - hard_weight) *
    teacher`` on the data's classes (matched to AudioSet by mid); the other classes keep the
    teacher's probabilities, which the data's labels say nothing about.
    ``targets()``, the 0/1 view that dev metrics and balanced sampling use, is the soft target at
    or above ``threshold``. Clips the teacher has not labelled are left out (``missing``)."""

    multi_label = True

    def __init__(self, data, teacher: TeacherLabels, hard_weight: float = 0.0, threshold: float = 0.5):
        if not 0.0 <= hard_weight <= 1.0:
            raise ValueError(f"the weight of the data's own labels must be in [0, 1], not {hard_weight}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"the teacher threshold must be in (0, 1), not {threshold}")
        ids = list(data.clip_ids)
        keep = [i for i, clip_id in enumerate(ids) if clip_id in teacher]
        if not keep:
            raise ValueError(f"the teacher labels at {teacher.path} cover none of the {len(ids)} clips of "
                             f"{getattr(data, 'path', 'the data')}; label the same data set with `earmark label`")
        self.missing = len(ids) - len(keep)
        self.data = data.subset(keep) if self.missing else data
        self.labels = audioset()
        self.n_layers, self.d_model = data.n_layers, data.d_model
        self.backbone = getattr(data, "backbone", None)
        self.backbone_sha256 = getattr(data, "backbone_sha256", None)
        self.path = f"{getattr(data, 'path', '<memory>')} + teacher {teacher.path}"
        self.clip_ids = [ids[i] for i in keep]
        soft = np.stack([teacher.clip(clip_id) for clip_id in self.clip_ids])
        own = self.data.targets()
        if hard_weight > 0 and own.size:
            from .scoring import label_mapping

            data_cols, audioset_cols = label_mapping(self.labels, data.labels)
            labelled = np.flatnonzero(own.any(axis=1))
            rows, cols = labelled[:, None], np.asarray(audioset_cols)[None, :]
            hard = (own[labelled][:, data_cols] > 0.5).astype(np.float32)
            soft[rows, cols] = hard_weight * hard + (1.0 - hard_weight) * soft[rows, cols]
        self._soft = soft.astype(np.float32)
        self.threshold = threshold

    def __len__(self) -> int:
        return len(self.clip_ids)

    def features(self, i: int) -> np.ndarray:
        return self.data.features(i)

    def soft_targets(self) -> np.ndarray:
        return self._soft

    def targets(self) -> np.ndarray:
        return (self._soft >= self.threshold).astype(np.float32)

    def folds(self) -> np.ndarray | None:
        return self.data.folds()

    def subset(self, indices) -> TeacherTargets:
        out = object.__new__(TeacherTargets)
        out.__dict__.update(self.__dict__)
        indices = [int(i) for i in indices]
        out.data = self.data.subset(indices)
        out.clip_ids = [self.clip_ids[i] for i in indices]
        out._soft = self._soft[indices]
        return out


# --------------------------------------------------------------------------- CLI


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    from .teacher import DEFAULT_TEACHER

    parser.add_argument("--teacher", type=Path, default=DEFAULT_TEACHER,
                        help=f"the teacher's weights (EfficientAT mn04 AudioSet; default: {DEFAULT_TEACHER})")
    parser.add_argument("--data", required=True, type=Path,
                        help="a CSV (path,labels[,fold]), an AudioSet segments CSV, a JSON, or a folder of audio")
    parser.add_argument("--out", required=True, type=Path, help="the label store directory (created, or resumed)")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="data format (default: from the path)")
    parser.add_argument("--window", type=float, default=10.0, help="tag window in seconds (default: 10)")
    parser.add_argument("--hop", type=float, default=None, help="seconds between windows (default: the window)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per teacher call (default: 16)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run_label(args: argparse.Namespace) -> int:
    import torch

    from .teacher import load_teacher

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.data.is_dir() and not any(p.is_dir() for p in args.data.iterdir()):
            clips = audio_files(args.data)
        else:
            dataset = load_dataset(args.data, args.format)
            clips = dataset.clips
        if not clips:
            raise DatasetError(f"{args.data}: no clips to label")
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        teacher = load_teacher(args.teacher, device)
        report = label_clips(teacher, args.teacher, clips, args.out, window=args.window, hop=args.hop,
                             batch_size=args.batch_size, progress=args.progress and sys.stderr.isatty())
    except (FileNotFoundError, DatasetError, ValueError) as error:
        print(f"earmark label: {error}", file=sys.stderr)
        return 2
    for clip_id, reason in report.skipped[:20]:
        print(f"  skipped {clip_id}: {reason}", file=sys.stderr)
    print(f"earmark label: {report.n_done} clips labelled, {report.n_cached} already there, {len(report.skipped)} "
          f"skipped; {report.audio_seconds / 60:.1f} min of audio in {report.wall_seconds:.1f} s -> {args.out}",
          file=sys.stderr)
    return 0


def audio_files(folder: Path) -> list[Clip]:
    """Every audio file of a flat folder, as unlabelled clips (ids: the file names)."""
    from .datasets import AUDIO_EXTENSIONS

    return [Clip(clip_id=p.name, path=p, labels=[]) for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]
