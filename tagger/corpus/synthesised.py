"""Sources no package records: espeak-ng speech, General MIDI instruments rendered from FluidR3,
and tones and noises (``synth``). Each rendering is a recording of its own, made on demand from
a seed, so the build stays deterministic."""

from __future__ import annotations

import threading
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np

from .build import Source
from .packages import Package, fetch_debian
from .synth import (
    FLUID_VARIATIONS,
    GM_LEAVES,
    SOUNDFONT_PACKAGE,
    TONES,
    Espeak,
    MusicClip,
    SoundFont,
    fetch_espeak,
    fetch_soundfont,
    random_chords,
    random_drums,
    random_melody,
    random_speech,
    set_level,
    speech_labels,
    with_ancestors,
)

SPEECH_KINDS = {"speech": 80, "whisper": 16, "narration": 16}  # utterances of each kind, half of them female
# Instruments rendered from the soundfont: the common ones (real recordings cover drums and percussion).
INSTRUMENTS = ("Piano", "Electric piano", "Organ", "Hammond organ", "Acoustic guitar", "Electric guitar", "Bass guitar",
               "Violin, fiddle", "Cello", "String section", "Harp", "Trumpet", "Trombone", "French horn", "Saxophone",
               "Clarinet", "Flute", "Accordion", "Harmonica", "Synthesizer", "Choir", "Marimba, xylophone")
# Tones and noises: those people meet (a mains hum or a radio's static are left to real recordings).
TONE_CLASSES = ("Sine wave", "Chirp tone", "White noise", "Pink noise", "Silence", "Beep, bleep", "Dial tone",
                "Busy signal", "Telephone dialing, DTMF", "Ringtone", "Buzzer", "Tick", "Tick-tock")
MUSIC_RENDERS = 8  # renderings per instrument class, cycling through its presets
DRUM_RENDERS = {"groove": 8, "roll": 4}
TONE_RENDERS = 6  # renderings per tone or noise class
SMALL = 0.25  # the small slice's share of all of the above


def _speech(espeak: Espeak, seed: int, kind: str, gender: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sentences = int(rng.integers(3, 5)) if kind == "narration" else int(rng.integers(1, 3))
    return random_speech(espeak, rng, gender=gender, whisper=kind == "whisper", sentences=sentences).audio


class _Renderer:
    """One soundfont synthesiser shared by the loading threads (it is not thread-safe)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.soundfont: SoundFont | None = None

    def instrument(self, seed: int, program: int, bank: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        seconds = float(rng.uniform(6.0, 10.0))
        part = str(rng.choice(["melody", "chords", "arpeggio"]))
        notes = (random_melody(rng, program, seconds) if part == "melody"
                 else random_chords(rng, program, seconds, arpeggio=part == "arpeggio"))
        with self.lock:
            self.soundfont = self.soundfont or SoundFont(self.path)
            audio = self.soundfont.render(notes, program, bank, seconds=seconds)
        return set_level(audio, -20.0)

    def drums(self, seed: int, roll: bool) -> MusicClip:
        rng = np.random.default_rng(seed)
        with self.lock:
            self.soundfont = self.soundfont or SoundFont(self.path)
            return random_drums(self.soundfont, rng, seconds=float(rng.uniform(6.0, 10.0)), roll=roll)


def _tone(name: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return TONES[name](rng, float(rng.uniform(5.0, 10.0)))


def instrument_presets() -> dict[str, list[tuple[int, int]]]:
    """Instrument class (the most specific label) -> the (bank, program) presets that play it."""
    presets: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for program, leaves in GM_LEAVES.items():
        presets[leaves[0]].append((0, program))
    for (bank, program), leaves in FLUID_VARIATIONS.items():
        presets[leaves[0]].append((bank, program))
    return presets


def _scaled(count: int, small: bool) -> int:
    return max(1, round(count * SMALL)) if small else count


def synthesised_sources(cache: Path | None, slice_name: str = "full", seed: int = 0
                        ) -> tuple[list[Source], list[Package]]:
    small = slice_name == "small"
    soundfont = "timgm6mb-soundfont" if small else SOUNDFONT_PACKAGE
    espeak = fetch_espeak(cache)
    renderer = _Renderer(fetch_soundfont(cache, soundfont))
    packages = [fetch_debian(name, cache) for name in ("espeak-ng", "espeak-ng-data", soundfont)]
    sources: list[Source] = []

    def add(source_id: str, labels: tuple[str, ...], origin: str, load) -> None:
        sources.append(Source(source_id=source_id, group=source_id, labels=labels, origin=origin, load=load))

    for number, (kind, count) in enumerate(SPEECH_KINDS.items()):
        for i in range(_scaled(count, small)):
            gender = ("female", "male")[i % 2]
            add(f"espeak-ng:{kind}:{i}", tuple(speech_labels(gender, kind)), "espeak-ng (synthesised)",
                partial(_speech, espeak, seed * 100003 + 10000 + number * 1000 + i, kind, gender))
    presets_of = instrument_presets()
    for number, leaf in enumerate(INSTRUMENTS):
        presets = presets_of[leaf]
        labels = tuple(with_ancestors([leaf]))
        for i in range(_scaled(MUSIC_RENDERS, small)):
            bank, program = presets[i % len(presets)]
            add(f"{soundfont}:{leaf}:{i}", labels, f"{soundfont} (rendered)",
                partial(renderer.instrument, seed * 100003 + number * 100 + i, program, bank))
    for number, (part, count) in enumerate(DRUM_RENDERS.items()):
        for i in range(_scaled(count, small)):  # rendered now: the labels depend on the pattern played
            clip = renderer.drums(seed * 100003 + 90000 + number * 1000 + i, roll=part == "roll")
            add(f"{soundfont}:drums-{part}:{i}", clip.labels, f"{soundfont} (rendered)",
                partial(np.copy, clip.audio))
    for number, name in enumerate(TONE_CLASSES):
        for i in range(_scaled(TONE_RENDERS, small)):
            add(f"synth:{name}:{i}", tuple(with_ancestors([name])), "numpy (synthesised)",
                partial(_tone, name, seed * 100003 + 50000 + number * 100 + i))
    return sources, packages
