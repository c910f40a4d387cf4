"""Source recordings from Debian packages, labeled through the mapping table ``sources.csv``.

Each row of the table is ``package,pattern,labels,notes``: ``pattern`` is a shell-style pattern
(case-insensitive) over a file's path inside the unpacked package; for sounds packed in an archive
(a Qt ``.rcc`` file, OpenTTD's ``opensfx.cat``) it is the archive's path, ``/``, and the name
inside it. ``labels`` are AudioSet display names separated by ``;``, the most specific first. The
first matching row wins. Files with the same bytes are one recording.
"""

from __future__ import annotations

import csv
import fnmatch
import functools
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..audio import load_audio
from .build import Source
from .packages import Package
from .unpack import UnpackError, read_opensfx_cat, read_rcc

MAPPING_TABLE = Path(__file__).resolve().parent / "sources.csv"
ARCHIVES = {".rcc": read_rcc, ".cat": read_opensfx_cat}


@dataclass(frozen=True)
class Rule:
    package: str
    text: str  # the pattern as written, lower case
    labels: tuple[str, ...]
    one_recording: bool = False  # every file it matches is a take of one recording (notes: "group as one source")

    @functools.cached_property
    def pattern(self) -> re.Pattern:
        return re.compile(fnmatch.translate(self.text))


def read_rules(path: Path = MAPPING_TABLE) -> list[Rule]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["package"] and not row["package"].startswith("#")]
    return [Rule(row["package"].strip(), row["pattern"].strip().lower(),
                 tuple(label.strip() for label in row["labels"].split(";") if label.strip()),
                 "group as one source" in row.get("notes", "")) for row in rows]


def rule_packages(rules: list[Rule]) -> list[str]:
    return list(dict.fromkeys(rule.package for rule in rules))


_TAKE_SUFFIX = re.compile(r"([\s_\-.]+(hardest|hard|medium|med|softest|soft|loud|quiet|normal|ff|mf|mp|pp)|[\s_\-.]*\d+)$")


def family(name: str) -> str:
    """Files that differ only by a trailing number or loudness word are takes of one recording:
    ``dir/cow_ack2.ogg`` -> ``dir/cow_ack``, ``kit/Snare-Hard.flac`` -> ``kit/snare``."""
    folder, _, file = name.rpartition("/")
    stem = file.rsplit(".", 1)[0].lower()
    while (shorter := _TAKE_SUFFIX.sub("", stem)) not in (stem, ""):
        stem = shorter
    return f"{folder}/{stem}"


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(root).as_posix(), path


def _decode_bytes(data: bytes) -> np.ndarray:
    return load_audio(data)


AUDIO_SUFFIXES = frozenset({".wav", ".ogg", ".oga", ".flac", ".mp3", ".opus", ".au", ".aif", ".aiff", ".spx", ".m4a"})


def package_sources(package: Package, rules: list[Rule], every_file: bool = False,
                    seen: set[str] | None = None) -> list[Source]:
    """The package's recordings that a rule labels, one ``Source`` per distinct file content.
    ``every_file``: also every other audio file (and every sound inside its archives), unlabelled.
    ``seen``: digests of files already taken (shared across packages to drop copies)."""
    mine = [rule for rule in rules if rule.package == package.name]
    if not mine and not every_file:
        return []

    def rule_for(name: str) -> Rule | None:
        key = name.lower()
        return next((rule for rule in mine if rule.pattern.match(key)), None)

    sources: list[Source] = []
    seen = set() if seen is None else seen

    def add(name: str, data: bytes, load) -> None:
        rule = rule_for(name)
        if rule is None and not (every_file and Path(name).suffix.lower() in AUDIO_SUFFIXES):
            return
        digest = hashlib.sha1(data).hexdigest()
        if digest in seen:
            return
        seen.add(digest)
        group = rule.text if rule is not None and rule.one_recording else family(name)
        sources.append(Source(source_id=f"{package.name}:{name}", group=f"{package.name}:{group}",
                              labels=rule.labels if rule is not None else (), origin=package.name, load=load))

    for name, path in _files(package.root):
        suffix = path.suffix.lower()
        reader = ARCHIVES.get(suffix)
        if reader is not None and any(f"{suffix}/" in rule.text for rule in mine):
            for inner, data in reader(path):
                add(f"{name}/{inner}", data, partial(_decode_bytes, data))
        elif reader is not None and every_file:
            try:
                for inner, data in reader(path):
                    add(f"{name}/{inner}", data, partial(_decode_bytes, data))
            except UnpackError:  # an archive of another kind under the same suffix
                continue
        elif rule_for(name) is not None or (every_file and suffix in AUDIO_SUFFIXES):
            add(name, path.read_bytes(), partial(load_audio, path))
    return sources
