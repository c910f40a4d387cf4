"""Build a labeled corpus from source recordings: split by recording, render clips, mix, write.

Every source recording (a file of a package, or one synthesised utterance or phrase) goes to
exactly one of train, dev and test, so no recording is heard in two splits. Each split then gets
clips rendered from its own sources only:

- one plain clip per source: a one-shot sound placed one to three times over a quiet background,
  or a stretch of 4-10 s of a longer recording;
- variants (another placement, stretch, level, background and a small speed change) of the
  sources of classes that have too few clips, until each class reaches its target or its sources
  their variant limit;
- mixtures of two sources of different kinds (speech over music, speech over a sound, a sound over
  music, two sounds) at several levels, labeled with both sources' labels.

A class is covered when it has at least ``min_train_clips`` training clips and test clips from a
recording training never saw; labels of classes that are not covered are left out of the CSVs
(their clips stay, as negatives). Given the sources and a seed, the build is deterministic.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio import SAMPLE_RATE, write_flac
from ..labels import Label, LabelSet, audioset

SPLITS = ("train", "dev", "test")
SPLIT_SHARES = {"train": 0.7, "dev": 0.1, "test": 0.2}
MAX_SOURCE_SECONDS = 60.0  # longer recordings are cut: variants take stretches of the first minute
EVENT_SECONDS = 2.5  # sources shorter than this are one-shots, placed over a background
KINDS = ("speech", "music", "silence", "sound")
MIXABLE = (("speech", "music"), ("speech", "sound"), ("music", "sound"), ("sound", "sound"))


@dataclass(frozen=True)
class Source:
    """One recording (or one synthesised utterance) and its AudioSet labels."""

    source_id: str  # unique in the corpus
    group: str  # sources of one recording: they always land in the same split
    labels: tuple[str, ...]  # AudioSet display names, the most specific first
    origin: str  # the package (or synthesiser) it comes from
    load: Callable[[], np.ndarray] = field(compare=False, repr=False)  # 16 kHz mono float32

    @property
    def kind(self) -> str:
        names = set(self.labels)
        if "Silence" in names:
            return "silence"
        if "Speech" in names:
            return "speech"
        if "Music" in names or "Musical instrument" in names:
            return "music"
        return "sound"


@dataclass
class BuildConfig:
    seed: int = 0
    # clips per class (most specific label) each split is filled up to, with mixtures and variants
    clips_per_class: dict[str, int] = field(default_factory=lambda: {"train": 20, "dev": 2, "test": 4})
    # recordings a class needs in a split before it is filled there
    min_groups: dict[str, int] = field(default_factory=lambda: {"train": 3, "dev": 1, "test": 1})
    min_train_clips: int = 20  # a class with fewer training clips is not covered
    max_variants: int = 6  # clips one source appears in, at most (plain, mixtures and variants)
    # the share of each class's target that mixtures fill, at most (the test split tests sounds one at a time)
    mixture_share: dict[str, float] = field(default_factory=lambda: {"train": 0.5, "dev": 0.5, "test": 0.0})
    max_sources: dict[str, int] = field(default_factory=lambda: {"*": 20, "Speech": 40})
    workers: int = 2  # threads loading sources


@dataclass
class CorpusClip:
    name: str  # file name, unique in its split
    split: str
    labels: tuple[str, ...]  # every label of its sources (before coverage is applied)
    sources: tuple[str, ...]
    kind: str  # plain | variant | mixture
    seconds: float


@dataclass
class CorpusReport:
    out: Path
    clips: list[CorpusClip]
    covered: list[str]  # display names, AudioSet order
    not_covered: dict[str, str]  # display name -> why
    seconds: float  # wall time of the build


# --------------------------------------------------------------------------- signal helpers


def _db(value: float) -> float:
    return 10 ** (value / 20)


def trim_silence(audio: np.ndarray, below_peak_db: float = 50.0) -> np.ndarray:
    """Cut leading and trailing 10 ms frames quieter than ``below_peak_db`` under the loudest frame."""
    hop = SAMPLE_RATE // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    if not len(frames):
        return audio
    level = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(level >= level.max() * _db(-below_peak_db))
    if not len(loud) or level.max() == 0:
        return audio[:0]
    return audio[loud[0] * hop : (loud[-1] + 1) * hop]


def active_rms(audio: np.ndarray) -> float:
    """RMS over the louder half of 50 ms frames: the level of what is heard, not of the gaps."""
    hop = SAMPLE_RATE // 20
    frames = audio[: max(hop, len(audio) // hop * hop)].reshape(-1, min(hop, len(audio)) or 1)
    power = np.sort(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return float(np.sqrt(np.mean(power[len(power) // 2 :]))) if len(power) else 0.0


def coloured_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    freqs[0] = freqs[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n).astype(np.float32)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (pitch moves with it, as with tape)."""
    positions = np.arange(0, len(audio) - 1, factor)
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


def background(n: int, rng: np.random.Generator) -> np.ndarray:
    """What a one-shot is placed over: digital silence, or a quiet noise floor (-65 to -45 dBFS RMS)."""
    if rng.random() < 0.3:
        return np.zeros(n, np.float32)
    return coloured_noise(n, rng, float(rng.choice([1.0, 2.0]))) * _db(rng.uniform(-65, -45))


def recording_chain(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What another microphone and room would make of the sound: a random tilt of the spectrum
    (or a telephone band), sometimes a little reverberation."""
    spectrum = np.fft.rfft(audio)
    freqs = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)
    if rng.random() < 0.15:  # telephone: 300-3400 Hz
        spectrum[(freqs < 300) | (freqs > 3400)] *= 0.01
    else:  # up to 6 dB per octave up or down around 1 kHz, highs and lows cut at random corners
        spectrum *= _db(rng.uniform(-6.0, 6.0) * np.log2(np.maximum(freqs, 50.0) / 1000.0))
        low_pass, high_pass = rng.uniform(2500, 8000), rng.uniform(30, 300)  # second-order corners
        spectrum /= np.sqrt((1 + (freqs / low_pass) ** 4) * (1 + (high_pass / np.maximum(freqs, 1.0)) ** 4))
    out = np.fft.irfft(spectrum, len(audio)).astype(np.float32)
    if rng.random() < 0.3:  # a small room: exponentially decaying noise, RT60 0.2-0.7 s
        rt60 = rng.uniform(0.2, 0.7)
        n = int(rt60 * SAMPLE_RATE)
        tail = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
        size = len(out) + n
        wet = np.fft.irfft(np.fft.rfft(out, size) * np.fft.rfft(tail / np.sqrt(np.sum(tail**2)), size), size)[: len(out)]
        out = out + rng.uniform(0.1, 0.5) * wet.astype(np.float32)
    return out


def render(audio: np.ndarray, rng: np.random.Generator, variant: bool, keep_level: bool = False) -> np.ndarray:
    """One clip of a source: a placed one-shot or a stretch of a longer recording, at a random
    level (``keep_level``: as recorded, for silence and room tone). Variants also change speed
    and recording chain."""
    if variant and len(audio) > SAMPLE_RATE // 10:
        audio = change_speed(audio, rng.uniform(0.92, 1.08))
        if not keep_level:
            audio = recording_chain(audio, rng)
    seconds = len(audio) / SAMPLE_RATE
    if seconds < EVENT_SECONDS:
        length = int(rng.uniform(max(2.0, seconds + 0.5), max(6.0, seconds + 1.0)) * SAMPLE_RATE)
        clip = background(length, rng)
        repeats = int(rng.integers(1, 4)) if variant else 1
        for _ in range(repeats):
            start = int(rng.integers(0, max(1, length - len(audio))))
            stop = min(length, start + len(audio))
            clip[start:stop] += audio[: stop - start]
    else:
        length = min(len(audio), int(rng.uniform(4.0, 10.0) * SAMPLE_RATE))
        start = int(rng.integers(0, len(audio) - length + 1)) if variant else 0
        clip = audio[start : start + length].copy()
    return clip if keep_level else at_level(clip, rng.uniform(-20.0, -1.0))


def at_level(audio: np.ndarray, peak_dbfs: float) -> np.ndarray:
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    return audio if peak == 0 else (audio * (_db(peak_dbfs) / peak)).astype(np.float32)


def mix(first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``second`` under ``first`` at 0 to 8 dB less active RMS, over the longer of the two."""
    length = max(len(first), len(second))
    out = np.zeros(length, np.float32)
    out[: len(first)] += first
    gain = active_rms(first) / (active_rms(second) + 1e-9) * _db(-rng.uniform(0.0, 8.0))
    offset = int(rng.integers(0, length - len(second) + 1))
    out[offset : offset + len(second)] += second * gain
    return at_level(out, rng.uniform(-12.0, -1.0))


# --------------------------------------------------------------------------- splitting


def split_groups(sources: Sequence[Source], seed: int) -> dict[str, str]:
    """group -> split. Groups are placed rarest class first, each in the split that lacks most of
    that class against its share; a class with one group stays in train, with two: train and test."""
    labels_of: dict[str, set[str]] = defaultdict(set)
    for source in sources:
        labels_of[source.group].update(source.labels)
    groups_per_label = Counter(label for labels in labels_of.values() for label in labels)
    rng = np.random.default_rng([seed, 1])
    order = list(labels_of)
    rng.shuffle(order)
    order.sort(key=lambda g: min(groups_per_label[label] for label in labels_of[g]) if labels_of[g] else 0)
    placed: dict[str, Counter] = {split: Counter() for split in SPLITS}
    assignment: dict[str, str] = {}
    for group in order:
        labels = labels_of[group]
        rarest = min(labels, key=lambda label: (groups_per_label[label], label)) if labels else None
        total = groups_per_label[rarest] if rarest else 1
        allowed = ("train",) if total == 1 else ("train", "test") if total == 2 else SPLITS
        if rarest is None:
            lack = dict(SPLIT_SHARES)
        else:  # how far each allowed split is below its share of the rarest label's groups
            allowed_share = sum(SPLIT_SHARES[s] for s in allowed)
            lack = {s: SPLIT_SHARES[s] / allowed_share * total - placed[s][rarest] for s in allowed}
        split = max(allowed, key=lambda s: (lack[s], SPLIT_SHARES[s]))
        assignment[group] = split
        placed[split].update(labels)
    return assignment


# --------------------------------------------------------------------------- clips


def select_sources(sources: Sequence[Source], config: BuildConfig) -> list[Source]:
    """At most ``config.max_sources`` sources per class (most specific label), taken in turn from
    each recording group (shuffled by the seed) so that a big package cannot crowd out the others."""
    rng = np.random.default_rng([config.seed, 3])
    by_class: dict[str, dict[str, list[Source]]] = defaultdict(lambda: defaultdict(list))
    for source in sources:
        by_class[source.labels[0]][source.group].append(source)
    chosen: list[Source] = []
    for label, groups in by_class.items():
        limit = config.max_sources.get(label, config.max_sources["*"])
        queues = [groups[g] for g in sorted(groups)]
        rng.shuffle(queues)
        taken = 0
        while taken < limit and any(queues):
            for queue in queues:
                if queue and taken < limit:
                    chosen.append(queue.pop(0))
                    taken += 1
    order = {source.source_id: i for i, source in enumerate(sources)}
    return sorted(chosen, key=lambda source: order[source.source_id])


def _clips_for_split(split: str, sources: list[Source], audio: dict[str, np.ndarray], config: BuildConfig,
                     out: Path) -> list[CorpusClip]:
    """Plain clips of every source, then mixtures, then variants, for the classes short of the target."""
    rng = np.random.default_rng([config.seed, SPLITS.index(split), 2])
    target = config.clips_per_class[split]
    folder = out / "audio" / split
    folder.mkdir(parents=True, exist_ok=True)
    clips: list[CorpusClip] = []
    counts: Counter = Counter()
    uses: Counter = Counter()

    def emit(samples: np.ndarray, used: Sequence[Source], kind: str) -> None:
        name = f"{split}-{len(clips):05d}.flac"
        write_flac(folder / name, samples)
        labels = tuple(dict.fromkeys(label for source in used for label in source.labels))
        clips.append(CorpusClip(name, split, labels, tuple(s.source_id for s in used), kind,
                                round(len(samples) / SAMPLE_RATE, 3)))
        counts.update(labels)
        uses.update(s.source_id for s in used)

    def clip_of(source: Source, variant: bool) -> np.ndarray:
        return render(audio[source.source_id], rng, variant, keep_level=source.kind == "silence")

    for source in sources:
        emit(clip_of(source, variant=False), [source], "plain")
    by_leaf: dict[str, list[Source]] = defaultdict(list)
    for source in sources:
        by_leaf[source.labels[0]].append(source)
    groups = {leaf: len({s.group for s in members}) for leaf, members in by_leaf.items()}
    # classes a split can fill: enough recordings that variants are not all of one or two
    fillable = [leaf for leaf in by_leaf if groups[leaf] >= config.min_groups.get(split, 1)]

    def most_lacking(kinds: Iterable[str], exclude: str | None = None) -> Source | None:
        candidates = [leaf for leaf in fillable if leaf != exclude and counts[leaf] < target
                      and by_leaf[leaf][0].kind in kinds]
        if not candidates:
            return None
        leaf = min(candidates, key=lambda name: (counts[name], rng.random()))
        members = by_leaf[leaf]
        least = min(uses[s.source_id] for s in members)
        pool = [s for s in members if uses[s.source_id] == least]
        return pool[int(rng.integers(len(pool)))]

    mixable_kinds = {kind for pair in MIXABLE for kind in pair}
    for _ in range(int(config.mixture_share[split] * target * len(fillable) / 2)):  # a mixture counts for two
        first = most_lacking(mixable_kinds)
        if first is None:
            break
        partners = {b for a, b in MIXABLE if a == first.kind} | {a for a, b in MIXABLE if b == first.kind}
        second = most_lacking(partners, exclude=first.labels[0])
        if second is None:
            break
        emit(mix(clip_of(first, True), clip_of(second, True), rng), [first, second], "mixture")
    while True:  # variants of the sources of the class furthest from its target
        lacking = [leaf for leaf in fillable if counts[leaf] < target
                   and any(uses[s.source_id] < config.max_variants for s in by_leaf[leaf])]
        if not lacking:
            break
        leaf = min(lacking, key=lambda name: (counts[name], name))
        source = min((s for s in by_leaf[leaf] if uses[s.source_id] < config.max_variants),
                     key=lambda s: (uses[s.source_id], s.source_id))
        emit(clip_of(source, variant=True), [source], "variant")
    return clips


def coverage(clips: Sequence[CorpusClip], min_train_clips: int) -> tuple[list[str], dict[str, str]]:
    """The covered classes (AudioSet order) and, for the others, why not."""
    per_split = {split: Counter() for split in SPLITS}
    for clip in clips:
        per_split[clip.split].update(clip.labels)
    covered, not_covered = [], {}
    for label in sorted(set(per_split["train"]) | set(per_split["test"]) | set(per_split["dev"]),
                        key=audioset().index_of):
        train, test = per_split["train"][label], per_split["test"][label]
        if train < min_train_clips:
            not_covered[label] = f"{train} training clips (< {min_train_clips})"
        elif test == 0:
            not_covered[label] = "no test clip from a recording that training does not use"
        else:
            covered.append(label)
    return covered, not_covered


# --------------------------------------------------------------------------- the build


def load_sources(sources: Sequence[Source], workers: int = 2, progress: bool = True) -> dict[str, np.ndarray]:
    """Decode every source (trimmed, at most ``MAX_SOURCE_SECONDS``); sources that fail or are silent
    are left out."""

    def one(source: Source) -> tuple[str, np.ndarray | None]:
        try:
            samples = trim_silence(np.asarray(source.load(), dtype=np.float32))
        except Exception:  # noqa: BLE001 - a broken file is left out, never fatal
            return source.source_id, None
        if source.kind == "silence":
            samples = np.asarray(source.load(), dtype=np.float32)
        if len(samples) < SAMPLE_RATE // 20 or (source.kind != "silence" and not np.any(samples)):
            return source.source_id, None
        return source.source_id, samples[: int(MAX_SOURCE_SECONDS * SAMPLE_RATE)]

    loaded: dict[str, np.ndarray] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for source_id, samples in tqdm(pool.map(one, sources), total=len(sources), desc="load sources",
                                       unit="source", disable=not progress):
            if samples is not None:
                loaded[source_id] = samples
    return loaded


def build_corpus(sources: Sequence[Source], out: Path, config: BuildConfig | None = None,
                 progress: bool = True) -> CorpusReport:
    """Render ``sources`` into ``out``: audio/{train,dev,test}/*.flac, {split}.csv (path,labels,sources),
    labels.csv (the covered classes) and card.json; see ``write_card`` for the Markdown card."""
    config = config or BuildConfig()
    started = time.perf_counter()
    out = Path(out)
    ids = [source.source_id for source in sources]
    if len(set(ids)) != len(ids):
        raise ValueError("source ids must be unique")
    unknown = sorted({label for source in sources for label in source.labels if label not in audioset().names})
    if unknown:
        raise ValueError(f"labels that are not AudioSet display names: {', '.join(unknown)}")
    sources = select_sources(sources, config)
    audio = load_sources(sources, config.workers, progress)
    usable = [source for source in sources if source.source_id in audio]
    assignment = split_groups(usable, config.seed)
    clips: list[CorpusClip] = []
    for split in SPLITS:
        members = [source for source in usable if assignment[source.group] == split]
        clips += _clips_for_split(split, members, audio, config, out)
    covered, not_covered = coverage(clips, config.min_train_clips)
    keep = set(covered)
    for split in SPLITS:
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "labels", "sources", "kind"])
            for clip in clips:
                if clip.split == split:
                    writer.writerow([f"audio/{split}/{clip.name}", ";".join(lb for lb in clip.labels if lb in keep),
                                     " | ".join(clip.sources), clip.kind])
    label_set = LabelSet("earmark-default", tuple(Label(i, audioset()[audioset().index_of(name)].mid, name)
                                                  for i, name in enumerate(covered)))
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "mid", "display_name"])
        for position, label in enumerate(label_set):
            writer.writerow([position, label.mid, label.name])
    report = CorpusReport(out, clips, covered, not_covered, time.perf_counter() - started)
    (out / "card.json").write_text(json.dumps(card_data(report, usable, assignment, config), indent=1) + "\n")
    return report


def card_data(report: CorpusReport, sources: Iterable[Source], assignment: dict[str, str], config: BuildConfig) -> dict:
    """Clips, minutes and recordings per class and split; the sources by origin."""
    per_class: dict[str, dict] = {}
    for clip in report.clips:
        for label in clip.labels:
            row = per_class.setdefault(label, {s: {"clips": 0, "minutes": 0.0} for s in SPLITS})
            row[clip.split]["clips"] += 1
            row[clip.split]["minutes"] += clip.seconds / 60
    recordings: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    origins: dict[str, Counter] = defaultdict(Counter)
    for source in sources:
        for label in source.labels:
            recordings[label][assignment[source.group]].add(source.group)
            origins[label][source.origin] += 1
    classes = []
    for label, row in sorted(per_class.items(), key=lambda item: audioset().index_of(item[0])):
        classes.append({
            "name": label, "mid": audioset()[audioset().index_of(label)].mid, "covered": label in report.covered,
            **{split: {"clips": row[split]["clips"], "minutes": round(row[split]["minutes"], 2),
                       "recordings": len(recordings[label][split])} for split in SPLITS},
            "origins": dict(origins[label].most_common()),
        })
    return {
        "seed": config.seed,
        "clips_per_class": config.clips_per_class,
        "min_train_clips": config.min_train_clips,
        "splits": {split: {"clips": sum(1 for c in report.clips if c.split == split),
                           "minutes": round(sum(c.seconds for c in report.clips if c.split == split) / 60, 2)}
                   for split in SPLITS},
        "covered": report.covered,
        "not_covered": report.not_covered,
        "classes": classes,
        "build_seconds": round(report.seconds, 1),
    }


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}" if math.isfinite(seconds) else "?"
