"""Labeled audio for training tagging heads: four on-disk formats, one ``Clip`` type, label sets.

Formats (``detect_format`` picks one from the path; ``load_dataset(..., format=...)`` overrides):

``folders``
    A directory with one subfolder per class; every audio file under ``root/CLASS/`` (at any
    depth) is a clip of that class. No folds.
``csv``
    A generic CSV, ``path,labels[,fold]``. With a header row (first cell ``path``) the columns
    are found by name and may also include ``start`` and ``end`` (seconds); without one the
    columns are positional. ``labels`` holds AudioSet display names or mids (or any names of
    your own), separated by ``;``. Relative paths are relative to the CSV's folder.
``audioset``
    The official AudioSet segments CSV (``YTID, start_seconds, end_seconds, positive_labels``;
    lines starting with ``#`` are comments, the mids are quoted and comma-separated), with an
    audio folder (``audio_dir``, default: the CSV's folder) holding one file per YTID named
    ``YTID.*`` or ``YYTID.*`` (any extension, found at any depth). Rows whose audio is missing
    are reported in ``Dataset.problems``. Each clip keeps its segment as ``start``/``end``:
    extraction cuts the file to ``start..end`` only when the file is longer than the segment
    (a whole YouTube video); a file of the segment's length (the usual download) is used whole.
``json``
    The Whisper-AT / AST data JSON, ``{"data": [{"wav": path, "labels": "mid1,mid2"}, ...]}``
    (an optional ``"fold"`` per item is kept). Relative paths are relative to the JSON's folder.

Label sets (``resolve_labels``): ``"auto"`` gives the 527 AudioSet classes when every label of the
data is an AudioSet mid or display name, else a custom set built from the data's labels;
``"audioset"`` and ``"data"`` force one or the other; a path reads a label file. Multi-label
(sigmoid/BCE) or single-label (softmax): ``default_multi_label``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..labels import Label, LabelSet, audioset

__all__ = [
    "AUDIO_EXTENSIONS",
    "FORMATS",
    "Clip",
    "Dataset",
    "DatasetError",
    "default_multi_label",
    "detect_format",
    "label_indices",
    "load_dataset",
    "read_ast_json",
    "read_audioset_csv",
    "read_csv",
    "read_folders",
    "read_label_file",
    "resolve_labels",
]

FORMATS = ("auto", "csv", "audioset", "json", "folders")
LABEL_SEPARATOR = ";"
CUSTOM_LABEL_SET = "custom"

# Files a folder tree's classes are made of (others, such as README or .txt, are ignored).
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aif", ".aiff", ".aifc",
    ".au", ".snd", ".caf", ".amr", ".ac3", ".mka", ".webm", ".mp4", ".m4v", ".mov", ".mkv", ".avi", ".3gp",
})


class DatasetError(ValueError):
    """A data file that cannot be used at all (not one bad row: those go to ``Dataset.problems``)."""


@dataclass(frozen=True)
class Clip:
    """One labeled recording. ``labels`` are as the data gives them (names or mids)."""

    clip_id: str  # unique within a data set
    path: Path
    labels: list[str]
    fold: int | None = None
    start: float | None = None  # seconds; a segment of the file (AudioSet, or CSV start/end columns)
    end: float | None = None


@dataclass
class Dataset:
    clips: list[Clip]
    format: str  # the format that was read: csv | audioset | json | folders
    source: Path
    problems: list[tuple[str, str]] = field(default_factory=list)  # (row or clip, why it was left out)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def has_folds(self) -> bool:
        return any(clip.fold is not None for clip in self.clips)


# --------------------------------------------------------------------------- format detection


def _is_audioset_csv(path: Path) -> bool:
    """True when one of the first lines is an AudioSet header (``# YTID, start_seconds, ...``)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            for _, line in zip(range(10), f):
                cells = [c.strip().lower() for c in line.lstrip("#").split(",")]
                if cells and cells[0] == "ytid":
                    return True
    except OSError:
        return False
    return False


def detect_format(path: str | os.PathLike) -> str:
    """``folders`` for a directory, ``json`` for .json, ``audioset`` for a CSV with a YTID header,
    else ``csv``."""
    path = Path(path)
    if path.is_dir():
        return "folders"
    if path.suffix.lower() == ".json":
        return "json"
    if _is_audioset_csv(path):
        return "audioset"
    return "csv"


def load_dataset(path: str | os.PathLike, format: str = "auto", *, audio_dir: str | os.PathLike | None = None) -> Dataset:
    """Read a data set in any of the ``FORMATS``. Raises ``FileNotFoundError`` for a missing path and
    ``DatasetError`` for a file that is not the format asked for; rows that cannot be used are left
    out and listed in ``problems``. Clips with the same id as an earlier one are left out too."""
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"unknown data format {format!r}; choose one of {', '.join(FORMATS)}")
    if not path.exists():
        raise FileNotFoundError(f"no data set at {path}")
    if format == "auto":
        format = detect_format(path)
    if format == "folders":
        if not path.is_dir():
            raise DatasetError(f"the folders format needs a directory with one subfolder per class, not the file {path}")
        clips, problems = read_folders(path)
    elif path.is_dir():
        raise DatasetError(f"the {format} format needs a file, but {path} is a directory")
    elif format == "csv":
        clips, problems = read_csv(path)
    elif format == "audioset":
        clips, problems = read_audioset_csv(path, audio_dir)
    else:
        clips, problems = read_ast_json(path)
    seen: set[str] = set()
    unique = []
    for clip in clips:
        if clip.clip_id in seen:
            problems.append((clip.clip_id, "the same clip id appears again; the later row is left out"))
            continue
        seen.add(clip.clip_id)
        unique.append(clip)
    return Dataset(clips=unique, format=format, source=path, problems=problems)


# --------------------------------------------------------------------------- readers


def _split_labels(text: str, separator: str) -> list[str]:
    labels = []
    for part in (text or "").split(separator):
        part = part.strip()
        if part and part not in labels:
            labels.append(part)
    return labels


def _fold(text: str | None) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    value = float(text)
    if not value.is_integer():
        raise ValueError(f"fold {text!r} is not a whole number")
    return int(value)


def _seconds(text: str | None) -> float | None:
    text = (text or "").strip()
    return float(text) if text else None


def _resolve(base: Path, text: str) -> Path:
    path = Path(os.path.expanduser(text.strip()))
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def read_csv(path: Path) -> tuple[list[Clip], list[tuple[str, str]]]:
    """The generic ``path,labels[,fold]`` CSV (see the module docstring)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    rows = [row for row in csv.reader(io.StringIO(text)) if row and any(cell.strip() for cell in row)]
    rows = [row for row in rows if not row[0].lstrip().startswith("#")]
    if not rows:
        raise DatasetError(f"{path} has no rows")
    columns = {"path": 0, "labels": 1, "fold": 2, "start": None, "end": None}
    first = [cell.strip().lower() for cell in rows[0]]
    line_offset = 1
    if first[0] in ("path", "file", "filename", "wav"):
        named = {name: first.index(name) for name in ("labels", "fold", "start", "end") if name in first}
        if "labels" not in named and "label" in first:
            named["labels"] = first.index("label")
        if "labels" not in named:
            raise DatasetError(f"{path}: the header has no 'labels' column (found: {', '.join(first)})")
        columns = {"path": 0, "labels": named["labels"], "fold": named.get("fold"),
                   "start": named.get("start"), "end": named.get("end")}
        rows = rows[1:]
        line_offset = 2
    base = Path(path).resolve().parent
    clips: list[Clip] = []
    problems: list[tuple[str, str]] = []

    def cell(row: list[str], name: str) -> str | None:
        index = columns[name]
        return row[index] if index is not None and index < len(row) else None

    for number, row in enumerate(rows, start=line_offset):
        where = f"{Path(path).name}, row {number}"
        if len(row) < 2:
            problems.append((where, "expected at least path and labels"))
            continue
        try:
            fold = _fold(cell(row, "fold"))
            start, end = _seconds(cell(row, "start")), _seconds(cell(row, "end"))
        except ValueError as error:
            problems.append((where, str(error)))
            continue
        name = row[0].strip()
        if not name:
            problems.append((where, "empty path"))
            continue
        clips.append(Clip(clip_id=name, path=_resolve(base, name), labels=_split_labels(cell(row, "labels") or "", LABEL_SEPARATOR),
                          fold=fold, start=start, end=end))
    return clips, problems


def _audio_index(audio_dir: Path) -> dict[str, Path]:
    """File stem -> path for every file under ``audio_dir`` (the first in sorted order wins)."""
    found: dict[str, Path] = {}
    for root, dirs, files in os.walk(audio_dir):
        dirs.sort()
        for name in sorted(files):
            if name.startswith("."):
                continue
            stem = name.rsplit(".", 1)[0] if "." in name else name
            found.setdefault(stem, Path(root) / name)
    return found


def read_audioset_csv(path: Path, audio_dir: str | os.PathLike | None = None) -> tuple[list[Clip], list[tuple[str, str]]]:
    """An AudioSet segments CSV plus its audio folder (see the module docstring)."""
    path = Path(path)
    audio_dir = Path(audio_dir) if audio_dir is not None else path.resolve().parent
    if not audio_dir.is_dir():
        raise DatasetError(f"the AudioSet audio folder {audio_dir} does not exist")
    files = _audio_index(audio_dir)
    clips: list[Clip] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8-sig", newline="") as f:
        lines = [line for line in f if line.strip() and not line.lstrip().startswith("#")]
    for row in csv.reader(lines, skipinitialspace=True):
        if not row or row[0].strip().lower() == "ytid":  # a header without '#'
            continue
        ytid = row[0].strip()
        if len(row) < 4:
            problems.append((ytid, "expected YTID, start_seconds, end_seconds, positive_labels"))
            continue
        try:
            start, end = float(row[1]), float(row[2])
        except ValueError:
            problems.append((ytid, f"bad start/end seconds {row[1]!r}, {row[2]!r}"))
            continue
        audio = files.get(ytid) or files.get("Y" + ytid)
        if audio is None:
            problems.append((ytid, f"no audio file named {ytid}.* in {audio_dir}"))
            continue
        labels = _split_labels(",".join(row[3:]), ",")
        clip_id = ytid if ytid not in seen else f"{ytid}_{start:g}"  # one video, several segments
        seen.add(ytid)
        clips.append(Clip(clip_id=clip_id, path=audio, labels=labels, start=start, end=end))
    return clips, problems


def read_ast_json(path: Path) -> tuple[list[Clip], list[tuple[str, str]]]:
    """The Whisper-AT / AST ``{"data": [{"wav": ..., "labels": "mid1,mid2"}]}`` file."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not valid JSON: {error}") from None
    items = document.get("data") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise DatasetError(f'{path}: expected {{"data": [{{"wav": ..., "labels": ...}}, ...]}}')
    base = path.resolve().parent
    clips: list[Clip] = []
    problems: list[tuple[str, str]] = []
    for number, item in enumerate(items):
        where = f"{path.name}, item {number}"
        if not isinstance(item, dict) or not isinstance(item.get("wav"), str) or not item["wav"].strip():
            problems.append((where, 'expected an object with a "wav" path'))
            continue
        labels = item.get("labels", "")
        if isinstance(labels, list):
            labels = ",".join(str(label) for label in labels)
        try:
            fold = _fold(str(item["fold"])) if item.get("fold") is not None else None
        except ValueError as error:
            problems.append((where, str(error)))
            continue
        clips.append(Clip(clip_id=item["wav"].strip(), path=_resolve(base, item["wav"]),
                          labels=_split_labels(str(labels), ","), fold=fold))
    return clips, problems


def read_folders(root: Path) -> tuple[list[Clip], list[tuple[str, str]]]:
    """One subfolder per class; audio files (by extension) at any depth below it."""
    root = Path(root)
    clips: list[Clip] = []
    problems: list[tuple[str, str]] = []
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root} has no subfolders; the folders format needs one subfolder per class")
    for folder in classes:
        found = 0
        for dirpath, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith(".") or Path(name).suffix.lower() not in AUDIO_EXTENSIONS:
                    continue
                file = Path(dirpath) / name
                clips.append(Clip(clip_id=file.relative_to(root).as_posix(), path=file, labels=[folder.name]))
                found += 1
        if not found:
            problems.append((folder.name, "the class folder holds no audio files"))
    return clips, problems


# --------------------------------------------------------------------------- label sets


def _in_audioset(label: str) -> bool:
    try:
        audioset().index_of(label)
        return True
    except KeyError:
        return False


def read_label_file(path: str | os.PathLike) -> LabelSet:
    """A label set from a file: a CSV with a header naming ``mid`` and ``display_name`` or ``name``
    (``index`` optional; AudioSet's class_labels_indices.csv works), a CSV with a single ``name``
    column, or a JSON list of ``{"mid", "name"}`` rows (a head card's ``labels`` too)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        rows = json.loads(text)
        if isinstance(rows, dict):
            rows = rows.get("labels", rows)
        if rows == "audioset":
            return audioset()
        labels = LabelSet.from_json(path.stem, rows)
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows:
            raise DatasetError(f"the label file {path} has no rows")
        keys = {key.strip().lower(): key for key in rows[0] if key}
        name_key = keys.get("display_name") or keys.get("name")
        mid_key = keys.get("mid")
        if name_key is None and mid_key is None:
            raise DatasetError(f"the label file {path} needs a 'mid' and/or 'display_name' (or 'name') column")
        built = []
        for position, row in enumerate(rows):
            name = (row[name_key] if name_key else row[mid_key]).strip()
            mid = (row[mid_key] if mid_key else _custom_mid(name)).strip()
            built.append(Label(index=position, mid=mid, name=name))
        labels = LabelSet(name=path.stem, labels=tuple(built))
    if labels == audioset() or (len(labels) == len(audioset()) and labels.mids == audioset().mids):
        return audioset()
    return labels


def _custom_mid(name: str) -> str:
    return name if name.startswith("/") else f"custom:{name}"


def _data_label_set(clips: list[Clip]) -> LabelSet:
    """A custom set from the data's labels, sorted by name (case-insensitive), names as given and
    mids ``custom:NAME``. A label given as a mid (``/m/...``) keeps it as its mid, and is named by
    its AudioSet display name when it has one; labels that differ only in case are one class."""
    by_name: dict[str, tuple[str, str]] = {}
    for clip in clips:
        for label in clip.labels:
            if label.startswith("/"):
                mid = label
                name = audioset()[audioset().index_of(label)].name if _in_audioset(label) else label
            else:
                mid, name = _custom_mid(label), label
            key = name.casefold()
            if key not in by_name:
                by_name[key] = (mid, name)
            elif mid.startswith("/") and by_name[key][0].startswith("custom:"):  # "Speech" and "/m/09x0r"
                by_name[key] = (mid, by_name[key][1])
    ordered = sorted(by_name.values(), key=lambda pair: (pair[1].casefold(), pair[1]))
    return LabelSet(name=CUSTOM_LABEL_SET, labels=tuple(Label(i, mid, name) for i, (mid, name) in enumerate(ordered)))


def resolve_labels(clips: list[Clip], spec: str | os.PathLike | LabelSet = "auto") -> LabelSet:
    """The label set to train on.

    ``"auto"``: AudioSet's 527 classes if every label in the data is an AudioSet mid or display
    name, else ``"data"``. ``"audioset"``: AudioSet (a ``DatasetError`` names any label that is not
    an AudioSet class). ``"data"``: the data's own labels, sorted by name, mids ``custom:NAME`` (a
    label given as a mid keeps it). A path: a label file (``read_label_file``); every label
    of the data must be in it. A ``LabelSet`` is used as it is.
    """
    if isinstance(spec, LabelSet):
        labels = spec
    elif str(spec) == "data":
        labels = _data_label_set(clips)
    elif str(spec) in ("auto", "audioset"):
        unknown = sorted({label for clip in clips for label in clip.labels if not _in_audioset(label)})
        if str(spec) == "auto":
            has_labels = any(clip.labels for clip in clips)
            return audioset() if has_labels and not unknown else _data_label_set(clips)
        labels = audioset()
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"--labels takes audioset, data or a label file; no file {path}")
        labels = read_label_file(path)
    unknown = sorted({label for clip in clips for label in clip.labels if not _has(labels, label)})
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise DatasetError(f"labels not in the {labels.name!r} label set ({len(labels)} classes): {shown}")
    return labels


def _has(labels: LabelSet, label: str) -> bool:
    try:
        labels.index_of(label)
        return True
    except KeyError:
        return False


def default_multi_label(clips: list[Clip], labels: LabelSet) -> bool:
    """Single-label (softmax) when every clip has exactly one label and the set is not AudioSet;
    multi-label (sigmoid, BCE) otherwise."""
    if labels == audioset() or labels.name == "audioset":
        return True
    return not (clips and all(len(clip.labels) == 1 for clip in clips))


def label_indices(clip: Clip, labels: LabelSet) -> list[int]:
    """The clip's class indices, sorted, without repeats (``KeyError`` for an unknown label)."""
    return sorted(set(labels.indices(clip.labels)))


def label_counts(clips: list[Clip], labels: LabelSet) -> Counter:
    """Clips per class name (for reports)."""
    counts: Counter = Counter()
    for clip in clips:
        for index in label_indices(clip, labels):
            counts[labels[index].name] += 1
    return counts
