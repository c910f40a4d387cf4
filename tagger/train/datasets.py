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
``urbansound8k``
    The UrbanSound8K metadata CSV (``slice_file_name, fsID, start, end, salience, fold, classID,
    class``), audio in ``AUDIO/foldN/`` where ``AUDIO`` is ``audio_dir`` or found next to the CSV
    (``../audio``, ``audio``, the CSV's folder). Labels: ``class``. ``start``/``end`` locate a
    slice in its freesound recording, not in the slice file, so they are not used.
``esc50``
    The ESC-50 CSV (``filename, fold, target, category, esc10, src_file, take``), audio in
    ``AUDIO/`` found the same way. Labels: ``category``.
``json``
    The Whisper-AT / AST data JSON, ``{"data": [{"wav": path, "labels": "mid1,mid2"}, ...]}``
    (an optional ``"fold"`` per item is kept). Relative paths are relative to the JSON's folder.

Folds may be written any way a data set writes them, one way per file: whole numbers (``1``),
one prefix and a number (``fold1``: fold 1), or names (``A``, ``B``: numbered 1, 2, ... in sorted
order, ``Dataset.fold_names`` keeps the names). A row whose fold is written another way than most
rows is left out and listed.

Rows that cannot be used go to ``Dataset.problems`` as ``(where, why)``; ``why`` reads ``reason:
detail`` so ``problem_summary`` can count them per reason.

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
import re
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
    "problem_summary",
    "read_ast_json",
    "read_audioset_csv",
    "read_csv",
    "read_esc50",
    "read_folders",
    "read_label_file",
    "read_urbansound8k",
    "resolve_labels",
]

FORMATS = ("auto", "csv", "audioset", "urbansound8k", "esc50", "json", "folders")
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
    format: str  # the format that was read: csv | audioset | urbansound8k | esc50 | json | folders
    source: Path
    problems: list[tuple[str, str]] = field(default_factory=list)  # (row or clip, why it was left out)
    fold_names: dict[int, str] = field(default_factory=dict)  # fold number -> the id as written, where they differ

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def has_folds(self) -> bool:
        return any(clip.fold is not None for clip in self.clips)


# --------------------------------------------------------------------------- format detection

PATH_COLUMNS = ("path", "file", "filename", "file_name", "wav", "audio", "slice_file_name")
LABEL_COLUMNS = ("labels", "label", "class", "category", "classes", "tags")
URBANSOUND8K_COLUMNS = ("slice_file_name", "fsid", "start", "end", "salience", "fold", "classid", "class")
ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


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


def _header(path: Path) -> list[str]:
    """The first row of a CSV that is not empty or a comment, lower-cased (``[]`` if none)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            for row in csv.reader(line for _, line in zip(range(50), f)):
                if row and any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#"):
                    return [cell.strip().lower() for cell in row]
    except (OSError, csv.Error):
        pass
    return []


def detect_format(path: str | os.PathLike) -> str:
    """``folders`` for a directory, ``json`` for .json, ``audioset`` for a CSV with a YTID header,
    ``urbansound8k`` / ``esc50`` for a CSV with those data sets' columns, else ``csv``."""
    path = Path(path)
    if path.is_dir():
        return "folders"
    if path.suffix.lower() == ".json":
        return "json"
    if _is_audioset_csv(path):
        return "audioset"
    header = set(_header(path))
    if "slice_file_name" in header and header & {"class", "classid"}:
        return "urbansound8k"
    if "filename" in header and "category" in header and header & {"target", "esc10", "src_file"}:
        return "esc50"
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
    fold_names: dict[int, str] = {}
    if format == "folders":
        if not path.is_dir():
            raise DatasetError(f"the folders format needs a directory with one subfolder per class, not the file {path}")
        clips, problems = read_folders(path)
    elif path.is_dir():
        raise DatasetError(f"the {format} format needs a file, but {path} is a directory")
    elif format == "csv":
        clips, problems, fold_names = read_csv(path)
    elif format == "audioset":
        clips, problems = read_audioset_csv(path, audio_dir)
    elif format == "urbansound8k":
        clips, problems, fold_names = read_urbansound8k(path, audio_dir)
    elif format == "esc50":
        clips, problems, fold_names = read_esc50(path, audio_dir)
    else:
        clips, problems, fold_names = read_ast_json(path)
    seen: set[str] = set()
    unique = []
    for clip in clips:
        if clip.clip_id in seen:
            problems.append((clip.clip_id, "the same clip id appears again: the later row is left out"))
            continue
        seen.add(clip.clip_id)
        unique.append(clip)
    return Dataset(clips=unique, format=format, source=path, problems=problems, fold_names=fold_names)


def problem_summary(problems: list[tuple[str, str]], shown: int = 5, noun: str = "row") -> str:
    """Lines for a report: how many rows were left out per reason (the part of ``why`` before its
    first ``: ``), then the first ``shown`` rows with their reasons."""
    if not problems:
        return ""
    reasons = Counter(why.split(": ", 1)[0] for _, why in problems)
    lines = [f"{count} {noun}{'s' if count != 1 else ''}: {reason}" for reason, count in reasons.most_common()]
    lines += [f"{where}: {why}" for where, why in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"... and {len(problems) - shown} more")
    return "\n".join("  " + line for line in lines)


# --------------------------------------------------------------------------- readers


def _split_labels(text: str, separator: str) -> list[str]:
    labels = []
    for part in (text or "").split(separator):
        part = part.strip()
        if part and part not in labels:
            labels.append(part)
    return labels


_PREFIXED_FOLD = re.compile(r"^([^\d]*?)[\s_-]*(\d+)$")


def _fold_kind(text: str) -> tuple[str, int | None]:
    """How a fold id is written: ``("number", n)``, ``("bad number", None)`` (``1.5``),
    ``("prefix fold", n)`` for ``fold1`` (the prefix, lower-cased, names the kind), ``("name", None)``."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return ("number", int(value)) if value.is_integer() else ("bad number", None)
    match = _PREFIXED_FOLD.match(text)
    if match and match.group(1):
        return f"prefix {match.group(1).strip().lower()}", int(match.group(2))
    return "name", None


def _number_folds(pending: list[tuple[int, str, Clip, str]], problems: list[tuple[int, str, str]]
                  ) -> tuple[list[Clip], list[tuple[str, str]], dict[int, str]]:
    """Give each pending clip ``(row, where, clip, fold as written)`` its fold number (see the
    module docstring). Rows whose fold is written unlike most rows join ``problems`` (``(row,
    where, why)``); returns the clips, every problem in row order, and the fold names."""
    kinds = {text: _fold_kind(text) for *_, text in pending if text}
    counts = Counter(kinds[text][0] for *_, text in pending if text and kinds[text][0] != "bad number")
    kind = counts.most_common(1)[0][0] if counts else "number"
    if kind == "name":
        names = sorted({text for text, (k, _) in kinds.items() if k == "name"}, key=lambda t: (t.casefold(), t))
        numbers = {text: position for position, text in enumerate(names, start=1)}
    else:
        numbers = {text: number for text, (k, number) in kinds.items() if k == kind}
    described = {"number": "whole numbers", "name": "names"}.get(kind, f"'{kind[7:]}' and a number")
    clips: list[Clip] = []
    for row, where, clip, text in pending:
        if not text:
            clips.append(clip)
        elif text in numbers:
            clips.append(Clip(clip.clip_id, clip.path, clip.labels, numbers[text], clip.start, clip.end))
        elif kinds[text][0] == "bad number":
            problems.append((row, where, f"fold is not a whole number: {text!r}"))
        else:
            problems.append((row, where, f"fold written unlike the other rows' folds ({described}): {text!r}"))
    used = {numbers[text] for *_, text in pending if text in numbers}
    fold_names = {number: text for text, number in numbers.items() if text != str(number) and number in used}
    taken = Counter(numbers[text] for text in {t for *_, t in pending if t in numbers})
    clashes = sorted(n for n, c in taken.items() if c > 1)  # "1" and "01", "fold1" and "Fold 1": one fold
    for number in clashes:
        fold_names[number] = " / ".join(sorted(text for text, n in numbers.items() if n == number))
    return clips, [(where, why) for _, where, why in sorted(problems, key=lambda p: p[0])], fold_names


def _seconds(text: str | None) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"start/end is not a number of seconds: {text!r}") from None


def _resolve(base: Path, text: str) -> Path:
    path = Path(os.path.expanduser(text.strip()))
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """The CSV's rows that are not empty or comments, with their line numbers (1-based)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    rows = [(number, row) for number, row in enumerate(csv.reader(io.StringIO(text)), start=1)
            if row and any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")]
    if not rows:
        raise DatasetError(f"{path} has no rows")
    return rows


def _looks_like_audio(cell: str) -> bool:
    return Path(cell.strip()).suffix.lower() in AUDIO_EXTENSIONS


def _find_column(header: list[str], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None


def _expected_columns(path: Path, header: list[str]) -> DatasetError:
    return DatasetError(
        f"{path}: the header names the columns {', '.join(repr(c) for c in header)}; expected a path column "
        f"({', '.join(PATH_COLUMNS[:4])}) and a labels column ({', '.join(LABEL_COLUMNS[:4])}), optionally fold, "
        f"start and end; or the UrbanSound8K metadata columns ({', '.join(URBANSOUND8K_COLUMNS)}); or the ESC-50 "
        f"columns ({', '.join(ESC50_COLUMNS)})"
    )


def read_csv(path: Path) -> tuple[list[Clip], list[tuple[str, str]], dict[int, str]]:
    """The generic ``path,labels[,fold]`` CSV (see the module docstring): clips, problems, fold names."""
    path = Path(path)
    rows = _read_rows(path)
    columns: dict[str, int | None] = {"path": 0, "labels": 1, "fold": 2, "start": None, "end": None}
    first = [cell.strip().lower() for cell in rows[0][1]]
    second_is_clip = len(rows) > 1 and _looks_like_audio(rows[1][1][0])
    if first[0] in PATH_COLUMNS or (not any(_looks_like_audio(cell) for cell in first) and second_is_clip):
        path_column = _find_column(first, PATH_COLUMNS)
        labels_column = _find_column(first, LABEL_COLUMNS)
        if path_column is None or labels_column is None:
            raise _expected_columns(path, first)
        columns = {"path": path_column, "labels": labels_column, "fold": _find_column(first, ("fold",)),
                   "start": _find_column(first, ("start",)), "end": _find_column(first, ("end",))}
        rows = rows[1:]
    base = path.resolve().parent
    pending: list[tuple[int, str, Clip, str]] = []
    problems: list[tuple[int, str, str]] = []

    def cell(row: list[str], name: str) -> str:
        index = columns[name]
        return row[index].strip() if index is not None and index < len(row) else ""

    for number, row in rows:
        where = f"{path.name}, row {number}"
        if len(row) < 2:
            problems.append((number, where, "expected at least path and labels: one cell"))
            continue
        try:
            start, end = _seconds(cell(row, "start")), _seconds(cell(row, "end"))
        except ValueError as error:
            problems.append((number, where, str(error)))
            continue
        name = cell(row, "path")
        if not name:
            problems.append((number, where, "empty path"))
            continue
        clip = Clip(clip_id=name, path=_resolve(base, name), labels=_split_labels(cell(row, "labels"), LABEL_SEPARATOR),
                    start=start, end=end)
        pending.append((number, where, clip, cell(row, "fold")))
    clips, problems_in_order, fold_names = _number_folds(pending, problems)
    return clips, problems_in_order, fold_names


def _audio_root(path: Path, audio_dir: str | os.PathLike | None) -> Path:
    """The audio folder of an UrbanSound8K / ESC-50 CSV: ``audio_dir``, else ``../audio``,
    ``audio`` or the CSV's own folder, whichever exists first."""
    if audio_dir is not None:
        if not Path(audio_dir).is_dir():
            raise DatasetError(f"the audio folder {audio_dir} does not exist")
        return Path(audio_dir)
    base = path.resolve().parent
    for candidate in (base.parent / "audio", base / "audio"):
        if candidate.is_dir():
            return candidate
    return base


def _read_named_table(path: Path, layout: str, file_column: str, label_columns: tuple[str, ...],
                      locate) -> tuple[list[Clip], list[tuple[str, str]], dict[int, str]]:
    """An UrbanSound8K- or ESC-50-style CSV: columns by name; ``locate(file, fold)`` lists where
    the audio may be."""
    rows = _read_rows(path)
    header = [cell.strip().lower() for cell in rows[0][1]]
    file_index = _find_column(header, (file_column,))
    label_index = _find_column(header, label_columns)
    fold_index = _find_column(header, ("fold",))
    if file_index is None or label_index is None:
        expected = URBANSOUND8K_COLUMNS if layout == "UrbanSound8K" else ESC50_COLUMNS
        raise DatasetError(f"{path}: not an {layout} CSV: it has the columns {', '.join(repr(c) for c in header)}; "
                           f"expected {', '.join(expected)} (at least {file_column!r} and {label_columns[0]!r})")
    pending: list[tuple[int, str, Clip, str]] = []
    problems: list[tuple[int, str, str]] = []
    for number, row in rows[1:]:
        where = f"{path.name}, row {number}"
        cells = [cell.strip() for cell in row] + [""] * max(0, len(header) - len(row))
        name, label = cells[file_index], cells[label_index]
        fold = cells[fold_index] if fold_index is not None else ""
        if not name:
            problems.append((number, where, f"empty {file_column}"))
            continue
        if not label:
            problems.append((number, where, f"empty {header[label_index]}: {name}"))
            continue
        candidates = locate(name, fold)
        audio = next((c for c in candidates if c.is_file()), None)
        if audio is None:
            problems.append((number, where, f"no audio file: {name} (looked in {', '.join(str(c.parent) for c in candidates)})"))
            continue
        pending.append((number, where, Clip(clip_id=name, path=audio, labels=[label]), fold))
    clips, problems_in_order, fold_names = _number_folds(pending, problems)
    return clips, problems_in_order, fold_names


def read_urbansound8k(path: Path, audio_dir: str | os.PathLike | None = None
                      ) -> tuple[list[Clip], list[tuple[str, str]], dict[int, str]]:
    """The UrbanSound8K metadata CSV, audio in ``AUDIO/foldN/`` (see the module docstring)."""
    path = Path(path)
    root = _audio_root(path, audio_dir)

    def locate(name: str, fold: str) -> list[Path]:
        folders = [root / f"fold{fold}", root / fold] if fold and not fold.lower().startswith("fold") else [root / fold]
        return [folder / name for folder in folders if fold] + [root / name]

    return _read_named_table(path, "UrbanSound8K", "slice_file_name", ("class", "classid"), locate)


def read_esc50(path: Path, audio_dir: str | os.PathLike | None = None
               ) -> tuple[list[Clip], list[tuple[str, str]], dict[int, str]]:
    """The ESC-50 CSV, audio in ``AUDIO/`` (see the module docstring)."""
    path = Path(path)
    root = _audio_root(path, audio_dir)
    return _read_named_table(path, "ESC-50", "filename", ("category", "target"), lambda name, fold: [root / name])


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
            problems.append((ytid, "expected YTID, start_seconds, end_seconds, positive_labels: fewer cells"))
            continue
        try:
            start, end = float(row[1]), float(row[2])
        except ValueError:
            problems.append((ytid, f"start/end is not a number of seconds: {row[1]!r}, {row[2]!r}"))
            continue
        audio = files.get(ytid) or files.get("Y" + ytid)
        if audio is None:
            problems.append((ytid, f"no audio file: {ytid}.* in {audio_dir}"))
            continue
        labels = _split_labels(",".join(row[3:]), ",")
        clip_id = ytid if ytid not in seen else f"{ytid}_{start:g}"  # one video, several segments
        seen.add(ytid)
        clips.append(Clip(clip_id=clip_id, path=audio, labels=labels, start=start, end=end))
    return clips, problems


def read_ast_json(path: Path) -> tuple[list[Clip], list[tuple[str, str]], dict[int, str]]:
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
    pending: list[tuple[int, str, Clip, str]] = []
    problems: list[tuple[int, str, str]] = []
    for number, item in enumerate(items):
        where = f"{path.name}, item {number}"
        if not isinstance(item, dict) or not isinstance(item.get("wav"), str) or not item["wav"].strip():
            problems.append((number, where, 'expected an object with a "wav" path'))
            continue
        labels = item.get("labels", "")
        if isinstance(labels, list):
            labels = ",".join(str(label) for label in labels)
        fold = str(item["fold"]).strip() if item.get("fold") is not None else ""
        pending.append((number, where, Clip(clip_id=item["wav"].strip(), path=_resolve(base, item["wav"]),
                                    labels=_split_labels(str(labels), ",")), fold))
    clips, problems_in_order, fold_names = _number_folds(pending, problems)
    return clips, problems_in_order, fold_names


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
