"""Class labels of a tagging head: the 527 AudioSet classes, or a custom set that travels in a head's card."""

from __future__ import annotations

import csv
import difflib
import functools
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources

AUDIOSET_CSV = "audioset_labels.csv"  # in tagger/data; columns index,mid,display_name


@dataclass(frozen=True)
class Label:
    index: int  # column of the head's output
    mid: str  # ontology id, e.g. "/m/09x0r"; custom sets may use any unique string
    name: str  # display name, e.g. "Speech"


def _key(text: str) -> str:
    return text.strip().casefold()


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of labels: ``labels[i].index == i``; mids and names are unique (case-insensitive)."""

    name: str  # "audioset" or a custom name
    labels: tuple[Label, ...]
    _lookup: dict[str, int] = field(init=False, repr=False, compare=False, hash=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        lookup: dict[str, int] = {}
        for position, label in enumerate(self.labels):
            if label.index != position:
                raise ValueError(
                    f"label set {self.name!r}: label {label.name!r} has index {label.index}, expected {position}"
                )
        for kind in ("mid", "name"):
            for label in self.labels:
                key = _key(getattr(label, kind))
                other = lookup.get(key)
                if other is not None and other != label.index:
                    raise ValueError(
                        f"label set {self.name!r}: {getattr(label, kind)!r} names both class "
                        f"{other} and class {label.index}; mids and names must be unique"
                    )
                lookup[key] = label.index
        object.__setattr__(self, "_lookup", lookup)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Label:
        return self.labels[i]

    def __iter__(self) -> Iterator[Label]:
        return iter(self.labels)

    @property
    def mids(self) -> tuple[str, ...]:
        return tuple(label.mid for label in self.labels)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)

    def index_of(self, key: str) -> int:
        """The index of a label given by mid ("/m/04rlf") or display name ("music"), case-insensitive."""
        if not isinstance(key, str):
            raise TypeError(f"a label is looked up by mid or display name (a str), not {type(key).__name__}")
        index = self._lookup.get(_key(key))
        if index is not None:
            return index
        choices = {_key(label.name): label.name for label in self.labels}
        choices.update({_key(label.mid): label.mid for label in self.labels})
        close = [choices[c] for c in difflib.get_close_matches(_key(key), list(choices), n=5, cutoff=0.6)]
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(
            f"no label {key!r} in the {self.name!r} label set ({len(self)} classes, "
            f"looked up by mid or display name, case-insensitive){hint}"
        )

    def indices(self, keys: Iterable[str]) -> list[int]:
        if isinstance(keys, str):  # a lone string would otherwise be read character by character
            keys = [keys]
        return [self.index_of(key) for key in keys]

    def to_json(self) -> list[dict]:
        return [{"index": label.index, "mid": label.mid, "name": label.name} for label in self.labels]

    @classmethod
    def from_json(cls, name: str, rows: Iterable[dict]) -> LabelSet:
        """Rows as written by ``to_json``; ``display_name`` is accepted for ``name`` and a missing
        ``index`` means the row's position."""
        labels = []
        for position, row in enumerate(rows):
            try:
                label_name = row["name"] if "name" in row else row["display_name"]
                labels.append(Label(index=int(row.get("index", position)), mid=str(row["mid"]), name=str(label_name)))
            except KeyError as missing:
                raise ValueError(
                    f"label set {name!r}: row {position} has no {missing}; expected index, mid and name"
                ) from None
        return cls(name=name, labels=tuple(labels))


@functools.cache
def audioset() -> LabelSet:
    """The 527 AudioSet classes in the order Whisper-AT heads score them (index 0 is Speech)."""
    text = (resources.files("tagger") / "data" / AUDIOSET_CSV).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    return LabelSet.from_json("audioset", rows)
