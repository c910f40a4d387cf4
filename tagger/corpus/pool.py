"""The distillation pool: far more, and more varied, audio than the labelled corpus, for a teacher
to label (``earmark label``) and a head to learn from (``earmark train --teacher-labels``).

- **Sources**: every audio file of the corpus packages (not only the files ``sources.csv`` maps;
  those keep their labels, the others have none), the packages of ``EXTRA_PACKAGES`` (music,
  speech in other languages, game sounds and ambiences), and the corpus' synthesised speech, music
  and tones. Files with the same bytes are taken once.
- **Splits by recording**: a recording of the labelled corpus keeps the corpus' split (so the
  corpus' test clips stay unheard); every other recording group goes to train, dev or test by a
  hash of its name (``PoolConfig.shares``).
- **Pieces** of at most 10 s: up to ``pieces_per_source`` stretches spread over each recording
  (a short one-shot is placed over a quiet background), a recording-chain variant of some
  (speed, spectrum tilt or telephone band, room), and mixtures of two or three pieces of one split
  at several levels. A package (or synthesiser) gives at most ``package_minutes`` of plain pieces,
  so no big package crowds out the others.

The encoder costs as much for 2 s as for 30 s, so feature extraction packs three pieces into one
30 s window (``extract_features(pack=True)``) and the teacher labels each piece: extraction cost
follows the hours of audio, not the number of pieces.

Output (the corpus CSV format, so ``earmark label``, ``extract`` and ``train`` read it as is)::

    audio/{train,dev,test}/p-<id>.flac     16 kHz mono pieces
    {train,dev,test}.csv                    path, labels (AudioSet names; empty when unknown), sources, kind, origin
    pool.json, POOL.md                      hours per origin, split and kind; licences

Every piece is a pure function of (seed, its sources), written once: an interrupted build
resumes where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio import SAMPLE_RATE, load_audio, write_flac
from .build import EVENT_SECONDS, SPLITS, Source, at_level, mix, render, trim_silence
from .default_corpus import licence_summary
from .packages import Package, PackageError, fetch_debian
from .sources import MAPPING_TABLE, package_sources, read_rules, rule_packages

PIECE_SECONDS = 10.0
# Debian packages with real recordings beyond the corpus' mapped ones: music, speech in French and
# Spanish, and the sounds and ambiences of more games and desktops
EXTRA_PACKAGES = (
    "asterisk-moh-opsound-wav", "asterisk-core-sounds-fr-wav", "asterisk-core-sounds-es-wav",
    "wesnoth-1.16-music", "warzone2100-music", "fretsonfire-songs-muldjord", "neverball-data",
    "extremetuxracer-data", "bzflag-data", "tuxtype-data", "teeworlds-data", "oxygen-sounds",
    "yaru-theme-sound", "kapman", "xmoto-data",
)


@dataclass(frozen=True)
class PoolConfig:
    seed: int = 0
    pieces_per_source: int = 3  # stretches of one recording, at most
    package_minutes: float = 12.0  # plain pieces one package (or synthesiser) gives, at most
    variants: float = 0.25  # recording-chain variants, as a share of the plain pieces
    mixtures: float = 0.3  # mixtures of two or three pieces, as a share of the plain pieces
    shares: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, dev, test for groups outside the corpus
    workers: int = 2


@dataclass
class Piece:
    name: str
    split: str
    labels: tuple[str, ...]
    sources: tuple[str, ...]
    kind: str  # plain | variant | mixture
    origin: str
    seconds: float


@dataclass
class PoolReport:
    out: Path
    pieces: list[Piece] = field(default_factory=list)
    n_sources: int = 0
    seconds: float = 0.0

    def hours(self, split: str | None = None) -> float:
        return sum(p.seconds for p in self.pieces if split is None or p.split == split) / 3600


# --------------------------------------------------------------------------- sources and splits


def pool_sources(cache: Path | None, seed: int = 0, progress: bool = True, synthesise: bool = True
                 ) -> tuple[list[Source], list[Package]]:
    """Every audio file of the corpus and extra packages (copies dropped), and the synthesised sources."""
    rules = read_rules(MAPPING_TABLE)
    names = list(dict.fromkeys([*rule_packages(rules), *EXTRA_PACKAGES]))
    seen: set[str] = set()
    sources: list[Source] = []
    packages: list[Package] = []
    for name in tqdm(names, desc="packages", unit="package", disable=not progress):
        try:
            package = fetch_debian(name, cache)
        except PackageError as error:
            if name in EXTRA_PACKAGES:  # a distribution without it: the pool is smaller, not broken
                print(f"left out {name}: {error}")
                continue
            raise
        packages.append(package)
        sources += package_sources(package, rules, every_file=True, seen=seen)
    if synthesise:
        from .synthesised import synthesised_sources

        synth, synth_packages = synthesised_sources(cache, "full", seed)
        sources += synth
        packages += synth_packages
    return sources, packages


def corpus_splits(corpus: Path | None) -> dict[str, str]:
    """source id -> split, from a labelled corpus' CSVs (empty without one)."""
    splits: dict[str, str] = {}
    if corpus is None:
        return splits
    for split in SPLITS:
        with open(Path(corpus) / f"{split}.csv", encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                for source_id in row.get("sources", "").split(" | "):
                    if source_id:
                        splits[source_id] = split
    return splits


def assign_splits(sources: list[Source], fixed: dict[str, str], config: PoolConfig) -> dict[str, str]:
    """group -> split: the corpus' split for a group with a corpus recording, else by a hash of the name."""
    assignment: dict[str, str] = {}
    for source in sources:
        if source.source_id in fixed:
            assignment.setdefault(source.group, fixed[source.source_id])
    cut_train, cut_dev = config.shares[0], config.shares[0] + config.shares[1]
    for source in sources:
        if source.group not in assignment:
            digest = hashlib.sha1(f"{config.seed}:{source.group}".encode()).digest()
            u = int.from_bytes(digest[:8], "big") / 2**64
            assignment[source.group] = "train" if u < cut_train else "dev" if u < cut_dev else "test"
    return assignment


# --------------------------------------------------------------------------- pieces


def _rng(config: PoolConfig, *keys: str) -> np.random.Generator:
    return np.random.default_rng([config.seed, *(zlib.crc32(k.encode()) for k in keys)])


def _piece_name(*keys: str) -> str:
    return "p-" + hashlib.sha1("\n".join(keys).encode()).hexdigest()[:14] + ".flac"


def source_pieces(audio: np.ndarray, kind: str, rng: np.random.Generator, count: int, variant: bool
                  ) -> list[tuple[np.ndarray, str]]:
    """Up to ``count`` plain pieces of one recording (stretches spread over it, or a placed one-shot)
    and, if ``variant``, one recording-chain variant."""
    keep_level = kind == "silence"
    out: list[tuple[np.ndarray, str]] = []
    length = int(PIECE_SECONDS * SAMPLE_RATE)
    if len(audio) < EVENT_SECONDS * SAMPLE_RATE:
        out.append((render(audio, rng, False, keep_level), "plain"))
    else:
        n = min(count, math.ceil(len(audio) / length))
        span = min(length, len(audio))
        starts = np.linspace(0, len(audio) - span, n).astype(int) if n > 1 else [int(rng.integers(0, len(audio) - span + 1))]
        for start in starts:
            piece = audio[start : start + span].copy()
            out.append((piece if keep_level else at_level(piece, rng.uniform(-20.0, -1.0)), "plain"))
    if variant:
        out.append((render(audio, rng, True, keep_level)[:length], "variant"))
    return out


def _write(path: Path, samples: np.ndarray) -> None:
    if not path.is_file():
        tmp = path.with_name(path.name + ".tmp")
        write_flac(tmp, samples)
        tmp.replace(path)


def build_pool(sources: list[Source], out: Path, config: PoolConfig | None = None, corpus: Path | None = None,
               progress: bool = True, packages: list[Package] | None = None) -> PoolReport:
    """Render ``sources`` into pieces under ``out`` (resumable); see the module docstring."""
    config = config or PoolConfig()
    started = time.perf_counter()
    out = Path(out)
    for split in SPLITS:
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)
    assignment = assign_splits(sources, corpus_splits(corpus), config)
    budget = config.package_minutes * 60
    by_origin: dict[str, list[Source]] = defaultdict(list)
    for source in sources:
        by_origin[source.origin].append(source)
    for origin, members in by_origin.items():  # the order a capped package's sources are taken in
        order = _rng(config, "order", origin).permutation(len(members))
        by_origin[origin] = [members[i] for i in order]

    report = PoolReport(out, n_sources=len(sources))
    pieces = report.pieces

    def one(source: Source) -> list[Piece]:
        rng = _rng(config, source.source_id)
        try:
            audio = np.asarray(source.load(), dtype=np.float32)
        except Exception:  # noqa: BLE001 - a file that does not decode is left out, never fatal
            return []
        if source.kind != "silence":
            audio = trim_silence(audio)
        if len(audio) < SAMPLE_RATE // 20 or (source.kind != "silence" and not np.any(audio)):
            return []
        made = []
        split = assignment[source.group]
        variant = rng.random() < config.variants
        for number, (samples, kind) in enumerate(source_pieces(audio, source.kind, rng, config.pieces_per_source, variant)):
            name = _piece_name(str(config.seed), source.source_id, str(number))
            _write(out / "audio" / split / name, samples)
            made.append(Piece(name, split, source.labels, (source.source_id,), kind, source.origin,
                              round(len(samples) / SAMPLE_RATE, 3)))
        return made

    with ThreadPoolExecutor(max_workers=max(1, config.workers)) as pool, \
            tqdm(total=len(by_origin), desc="pool sources", unit="origin", disable=not progress) as bar:
        for origin, members in by_origin.items():
            seconds = 0.0
            position = 0
            while position < len(members) and seconds < budget:  # a few at a time, until the budget is spent
                batch = members[position : position + 2 * max(1, config.workers)]
                position += len(batch)
                for made in pool.map(one, batch):
                    pieces += made
                    seconds += sum(p.seconds for p in made if p.kind == "plain")
            bar.update(1)

    pieces += _mixtures(pieces, out, config)
    pieces.sort(key=lambda p: (SPLITS.index(p.split), p.name))
    for split in SPLITS:
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "labels", "sources", "kind", "origin"])
            for p in pieces:
                if p.split == split:
                    writer.writerow([f"audio/{split}/{p.name}", ";".join(p.labels), " | ".join(p.sources), p.kind,
                                     p.origin])
    _remove_unlisted(out, pieces)
    report.seconds = time.perf_counter() - started
    write_pool_card(report, config, packages or [])
    return report


def _remove_unlisted(out: Path, pieces: list[Piece]) -> None:
    """Delete pieces an earlier build of ``out`` wrote that this one does not list (mixtures of a
    pool rebuilt with other settings), so that the folder holds what its CSVs say."""
    listed = {(p.split, p.name) for p in pieces}
    for split in SPLITS:
        for path in (out / "audio" / split).glob("p-*.flac"):
            if (split, path.name) not in listed:
                path.unlink()


def _mixtures(pieces: list[Piece], out: Path, config: PoolConfig) -> list[Piece]:
    """Two or three plain pieces of one split, of different recordings, mixed at several levels."""
    made: list[Piece] = []
    for split in SPLITS:
        plain = sorted((p for p in pieces if p.split == split and p.kind == "plain"), key=lambda p: p.name)
        if len(plain) < 3:
            continue
        for number in range(round(len(plain) * config.mixtures)):
            rng = _rng(config, "mixture", split, str(number))  # its own: a resumed build makes the same mixtures
            count = 3 if rng.random() < 0.3 else 2
            chosen = [plain[i] for i in rng.choice(len(plain), size=count, replace=False)]
            if len({p.sources for p in chosen}) < count:
                continue
            # named by what it mixes: a pool rebuilt with more pieces (``package_minutes``) draws
            # other pieces for a number, and must not take the old mixture's file for the new one
            name = _piece_name(str(config.seed), "mixture", split, str(number), *(p.name for p in chosen))
            path = out / "audio" / split / name
            if path.is_file():
                seconds = len(load_audio(path)) / SAMPLE_RATE
            else:
                audio = load_audio(out / "audio" / split / chosen[0].name)
                for other in chosen[1:]:
                    audio = mix(audio, load_audio(out / "audio" / split / other.name), rng)
                audio = audio[: int(PIECE_SECONDS * SAMPLE_RATE)]
                _write(path, audio)
                seconds = len(audio) / SAMPLE_RATE
            labels = tuple(dict.fromkeys(label for p in chosen for label in p.labels))
            made.append(Piece(name, split, labels, tuple(s for p in chosen for s in p.sources), "mixture",
                              "mixture", round(seconds, 3)))
    return made


# --------------------------------------------------------------------------- the card


def write_pool_card(report: PoolReport, config: PoolConfig, packages: list[Package]) -> Path:
    out = report.out
    hours: dict[str, Counter] = defaultdict(Counter)
    labelled = Counter()
    for p in report.pieces:
        hours[p.origin][p.split] += p.seconds / 3600
        labelled[p.split] += p.seconds / 3600 if p.labels else 0.0
    kinds = Counter()
    for p in report.pieces:
        kinds[p.kind] += p.seconds / 3600
    licences = {p.name: licence_summary(p) for p in packages}
    data = {
        "config": asdict(config),
        "build_seconds": round(report.seconds, 1),
        "sources": report.n_sources,
        "pieces": {split: sum(1 for p in report.pieces if p.split == split) for split in SPLITS},
        "hours": {split: round(report.hours(split), 3) for split in SPLITS},
        "hours_with_labels": {split: round(labelled[split], 3) for split in SPLITS},
        "hours_by_kind": {k: round(v, 3) for k, v in kinds.items()},
        "origins": {origin: {s: round(v, 4) for s, v in row.items()} for origin, row in sorted(hours.items())},
        "licences": licences,
    }
    (out / "pool.json").write_text(json.dumps(data, indent=1) + "\n")
    lines = ["# Earmark distillation pool", "",
             (f"Built by `earmark data build-pool` (seed {config.seed}) in {report.seconds:.0f} s from "
             f"{report.n_sources} source recordings (files with the same bytes taken once). Pieces of at most "
             f"{PIECE_SECONDS:g} s, 16 kHz mono FLAC; no recording is in two splits, and the labelled corpus' "
             "recordings keep its splits."), "",
             "| split | pieces | hours | hours with package labels |", "|---|---|---|---|"]
    lines += [f"| {s} | {data['pieces'][s]} | {data['hours'][s]:.2f} | {data['hours_with_labels'][s]:.2f} |"
              for s in SPLITS]
    lines += [f"| all | {len(report.pieces)} | {report.hours():.2f} | {sum(labelled.values()):.2f} |", "",
              "Hours by kind: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(kinds.items())), "",
              "## Hours per origin", "", "| origin | train | dev | test | licence |", "|---|---|---|---|---|"]
    for origin, row in sorted(hours.items(), key=lambda kv: -sum(kv[1].values())):
        package = origin.split(" ")[0]
        lines.append(f"| {origin} | {row['train']:.3f} | {row['dev']:.3f} | {row['test']:.3f} | "
                     f"{licences.get(package, '')} |")
    path = out / "POOL.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def build_default_pool(out: Path, cache: Path | None = None, corpus: Path | None = None,
                       config: PoolConfig | None = None, progress: bool = True) -> PoolReport:
    config = config or PoolConfig()
    sources, packages = pool_sources(cache, config.seed, progress)
    return build_pool(sources, out, config, corpus, progress, packages)
