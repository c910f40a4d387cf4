"""The default corpus: real recordings from Debian packages (``sources.csv``) plus synthesised
speech, music and tones, rendered into labeled clips by ``build.build_corpus``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .build import SPLITS, BuildConfig, CorpusReport, Source, build_corpus
from .packages import Package, fetch_debian
from .sources import MAPPING_TABLE, package_sources, read_rules, rule_packages

# A slice builds quickly from a few small packages (tests, trying the builder out).
SLICES: dict[str, tuple[str, ...] | None] = {
    "full": None,
    "small": ("sound-theme-freedesktop", "openttd-opensfx", "gcompris-qt-data", "micropolis-data", "minetest-data"),
}


@dataclass
class CorpusSources:
    sources: list[Source]
    packages: list[Package]


def collect_sources(cache: Path | None, slice_name: str = "full", synthesise: bool = True,
                    progress: bool = True, seed: int = 0) -> CorpusSources:
    """Fetch the packages and list every labeled recording (and the synthesised sources)."""
    rules = read_rules(MAPPING_TABLE)
    wanted = SLICES[slice_name]
    names = [name for name in rule_packages(rules) if wanted is None or name in wanted]
    packages, sources = [], []
    for name in tqdm(names, desc="packages", unit="package", disable=not progress):
        package = fetch_debian(name, cache)
        packages.append(package)
        sources += package_sources(package, rules)
    if synthesise:
        from .synthesised import synthesised_sources

        synth_sources, synth_packages = synthesised_sources(cache, slice_name, seed)
        sources += synth_sources
        packages += synth_packages
    return CorpusSources(sources, packages)


def licence_summary(package: Package) -> str:
    """The first licence named in a package's Debian copyright file."""
    if not package.copyright_file.is_file():
        return "see the package"
    for line in package.copyright_file.read_text(errors="replace").splitlines():
        licence = line.split(":", 1)[1].strip() if line.lower().startswith("license:") else ""
        if licence:
            return licence
    return "see the package's copyright file"


def write_card(report: CorpusReport, packages: list[Package], out: Path) -> Path:
    """A Markdown dataset card next to ``card.json``: splits, classes, sources and licences."""
    card = json.loads((out / "card.json").read_text())
    lines = ["# Earmark default corpus", "",
             (f"Built by `earmark data build-default` (seed {card['seed']}) in {card['build_seconds']:.0f} s. "
             "Clips are 16 kHz mono FLAC, each from one or two source recordings; no recording is used in two splits."),
             "", "| split | clips | minutes |", "|---|---|---|"]
    lines += [f"| {split} | {card['splits'][split]['clips']} | {card['splits'][split]['minutes']:.1f} |" for split in SPLITS]
    lines += ["", f"## Covered classes ({len(card['covered'])})", "",
              "| class | train clips | train min | dev clips | test clips | recordings (train/dev/test) | sources |",
              "|---|---|---|---|---|---|---|"]
    for row in card["classes"]:
        if row["covered"]:
            recordings = "/".join(str(row[split]["recordings"]) for split in SPLITS)
            origins = ", ".join(f"{k} {v}" for k, v in list(row["origins"].items())[:4])
            lines.append(f"| {row['name']} | {row['train']['clips']} | {row['train']['minutes']:.1f} | "
                         f"{row['dev']['clips']} | {row['test']['clips']} | {recordings} | {origins} |")
    lines += ["", f"## Classes present but not covered ({len(card['not_covered'])})", ""]
    lines += [f"- {name}: {why}" for name, why in card["not_covered"].items()]
    lines += ["", "## Source packages and licences", "", "| package | version | licence |", "|---|---|---|"]
    lines += [f"| {p.name} | {p.version} | {licence_summary(p)} |" for p in packages]
    path = out / "CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def build_default(out: Path, cache: Path | None = None, slice_name: str = "full", config: BuildConfig | None = None,
                  synthesise: bool = True, progress: bool = True) -> CorpusReport:
    started = time.perf_counter()
    config = config or BuildConfig()
    collected = collect_sources(cache, slice_name, synthesise, progress, config.seed)
    report = build_corpus(collected.sources, out, config, progress)
    report.seconds = time.perf_counter() - started
    card = json.loads((out / "card.json").read_text())
    card["build_seconds"] = round(report.seconds, 1)
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    write_card(report, collected.packages, out)
    return report
