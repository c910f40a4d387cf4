"""Synthetic labeled audio: espeak-ng speech, General MIDI music from a soundfont, numpy tones and noises.

Everything returns float32 mono numpy arrays at 16 kHz (``SAMPLE_RATE``); every random choice
comes from a ``numpy.random.Generator``, so a seed gives the same audio again.

- Speech: the Debian ``espeak-ng`` binary, unpacked into a cache (``fetch_espeak``) and run with
  ``LD_LIBRARY_PATH`` and ``ESPEAK_DATA_PATH`` pointing into it; nothing is installed.
  Sentences in 22 languages come from ``sentences.tsv`` next to this file.
- Music: Debian's ``fluid-soundfont-gm`` (FluidR3_GM.sf2, ``fetch_soundfont``) rendered in-process
  by the ``tinysoundfont`` wheel (install it with ``pip install --no-deps tinysoundfont``: its
  only dependency, pyaudio, is for live playback and needs a compiler and portaudio headers).
- Tones and noises: plain numpy (``TONES``).

Labels are AudioSet display names (``tagger/data/audioset_labels.csv``); ``with_ancestors`` adds
the parent classes of the AudioSet ontology that are among the 527.
"""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from tagger.audio import SAMPLE_RATE

from .packages import fetch_debian

Rng = np.random.Generator

# ================================================================== labels

# Parents in the AudioSet ontology, restricted to the 527 classes (abstract nodes such as
# "Human voice" or "Background noise" are skipped over). Only the classes this module emits.
# "Distortion" (a child of Background noise, so of Noise) is left without a parent here: a
# distorted guitar is not noise.
PARENTS: dict[str, tuple[str, ...]] = {
    # speech
    "Male speech, man speaking": ("Speech",),
    "Female speech, woman speaking": ("Speech",),
    "Conversation": ("Speech",),
    "Narration, monologue": ("Speech",),
    "Speech synthesizer": ("Speech",),
    "Choir": ("Singing", "Musical instrument"),
    # music
    "Musical instrument": ("Music",),
    "Plucked string instrument": ("Musical instrument",),
    "Guitar": ("Plucked string instrument",),
    "Electric guitar": ("Guitar",),
    "Bass guitar": ("Guitar",),
    "Acoustic guitar": ("Guitar",),
    "Steel guitar, slide guitar": ("Guitar",),
    "Strum": ("Guitar",),
    "Banjo": ("Plucked string instrument",),
    "Sitar": ("Plucked string instrument",),
    "Mandolin": ("Plucked string instrument",),
    "Zither": ("Plucked string instrument",),
    "Ukulele": ("Plucked string instrument",),
    "Keyboard (musical)": ("Musical instrument",),
    "Piano": ("Keyboard (musical)",),
    "Electric piano": ("Piano",),
    "Organ": ("Keyboard (musical)",),
    "Electronic organ": ("Organ",),
    "Hammond organ": ("Organ",),
    "Synthesizer": ("Keyboard (musical)",),
    "Harpsichord": ("Keyboard (musical)",),
    "Percussion": ("Musical instrument",),
    "Drum kit": ("Percussion",),
    "Drum machine": ("Drum kit",),
    "Drum": ("Percussion",),
    "Snare drum": ("Drum",),
    "Drum roll": ("Snare drum",),
    "Bass drum": ("Drum",),
    "Timpani": ("Drum",),
    "Cymbal": ("Percussion",),
    "Hi-hat": ("Cymbal",),
    "Wood block": ("Percussion",),
    "Tambourine": ("Percussion",),
    "Rattle (instrument)": ("Percussion",),
    "Maraca": ("Rattle (instrument)",),
    "Cowbell": ("Percussion", "Bell"),
    "Tubular bells": ("Percussion",),
    "Mallet percussion": ("Percussion",),
    "Marimba, xylophone": ("Mallet percussion",),
    "Glockenspiel": ("Mallet percussion",),
    "Vibraphone": ("Mallet percussion",),
    "Steelpan": ("Mallet percussion",),
    "Orchestra": ("Musical instrument",),
    "Brass instrument": ("Musical instrument",),
    "French horn": ("Brass instrument",),
    "Trumpet": ("Brass instrument",),
    "Trombone": ("Brass instrument",),
    "Bowed string instrument": ("Musical instrument",),
    "String section": ("Bowed string instrument",),
    "Violin, fiddle": ("Bowed string instrument",),
    "Pizzicato": ("Violin, fiddle",),
    "Cello": ("Bowed string instrument",),
    "Double bass": ("Bowed string instrument",),
    "Wind instrument, woodwind instrument": ("Musical instrument",),
    "Flute": ("Wind instrument, woodwind instrument",),
    "Saxophone": ("Wind instrument, woodwind instrument",),
    "Clarinet": ("Wind instrument, woodwind instrument",),
    "Harp": ("Musical instrument",),
    "Bell": ("Musical instrument",),
    "Church bell": ("Bell",),
    "Harmonica": ("Musical instrument",),
    "Accordion": ("Musical instrument",),
    "Bagpipes": ("Musical instrument",),
    "Clapping": ("Hands",),
    "Whistle": ("Alarm",),
    # tones and noises
    "Chirp tone": ("Sine wave",),
    "White noise": ("Noise",),
    "Pink noise": ("Noise",),
    "Static": ("Noise",),
    "Mains hum": ("Noise",),
    "Telephone": ("Alarm",),
    "Dial tone": ("Telephone",),
    "Busy signal": ("Telephone",),
    "Ringtone": ("Telephone",),
    "Telephone dialing, DTMF": ("Telephone",),
    "Buzzer": ("Alarm",),
    "Clock": ("Mechanisms",),
    "Tick": ("Clock",),
    "Tick-tock": ("Clock",),
}


def with_ancestors(labels: Iterable[str]) -> list[str]:
    """The labels followed by their ontology ancestors (``PARENTS``), each once, in order."""
    out: list[str] = []
    todo = list(labels)
    while todo:
        label = todo.pop(0)
        if label not in out:
            out.append(label)
            todo.extend(PARENTS.get(label, ()))
    return out


# ================================================================== levels and helpers


def set_level(audio: np.ndarray, dbfs: float, peak: float = 0.99) -> np.ndarray:
    """Scale to an RMS of ``dbfs`` dB full scale, then down again if the peak would pass ``peak``."""
    audio = np.asarray(audio, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    if rms == 0.0:
        return audio.copy()
    gain = 10.0 ** (dbfs / 20.0) / rms
    top = float(np.max(np.abs(audio))) * gain
    if top > peak:
        gain *= peak / top
    return (audio * gain).astype(np.float32)


def fit(audio: np.ndarray, seconds: float) -> np.ndarray:
    """Cut or zero-pad to exactly ``seconds``."""
    n = round(seconds * SAMPLE_RATE)
    out = np.zeros(n, dtype=np.float32)
    m = min(n, audio.size)
    out[:m] = audio[:m]
    return out


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """Band-limited FFT resampling from ``rate`` to 16 kHz (for short clips)."""
    if rate == SAMPLE_RATE or audio.size == 0:
        return audio.astype(np.float32)
    n_out = round(audio.size * SAMPLE_RATE / rate)
    spectrum = np.fft.rfft(audio.astype(np.float64))
    keep = min(spectrum.size, n_out // 2 + 1)
    out = np.fft.irfft(spectrum[:keep], n_out) * (n_out / audio.size)
    return out.astype(np.float32)


def _fade(audio: np.ndarray, ms: float = 5.0) -> np.ndarray:
    n = min(int(ms * SAMPLE_RATE / 1000), audio.size // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        audio[:n] *= ramp
        audio[-n:] *= ramp[::-1]
    return audio


def _t(seconds: float) -> np.ndarray:
    return np.arange(round(seconds * SAMPLE_RATE), dtype=np.float64) / SAMPLE_RATE


# ================================================================== speech: espeak-ng

# soname -> Debian 12 package: espeak-ng's run-time closure beyond libc. fetch_espeak fetches only
# the packages whose libraries the dynamic loader does not find (ldd), so a full system fetches 15
# and a slim image a few more. libpcaudio (audio playback, never used with --stdout) is what pulls
# in libpulse, libsndfile and the codecs.
ESPEAK_SONAMES: dict[str, str] = {
    "libespeak-ng.so.1": "libespeak-ng1",
    "libpcaudio.so.0": "libpcaudio0",
    "libsonic.so.0": "libsonic0",
    "libpulse.so.0": "libpulse0",
    "libpulse-simple.so.0": "libpulse0",
    "libpulsecommon-16.1.so": "libpulse0",
    "libasound.so.2": "libasound2",
    "libasyncns.so.0": "libasyncns0",
    "libsndfile.so.1": "libsndfile1",
    "libFLAC.so.12": "libflac12",
    "libogg.so.0": "libogg0",
    "libopus.so.0": "libopus0",
    "libvorbis.so.0": "libvorbis0a",
    "libvorbisenc.so.2": "libvorbisenc2",
    "libmpg123.so.0": "libmpg123-0",
    "libmp3lame.so.0": "libmp3lame0",
    "libdbus-1.so.3": "libdbus-1-3",
    "libsystemd.so.0": "libsystemd0",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb.so.1": "libxcb1",
    "libXau.so.6": "libxau6",
    "libXdmcp.so.6": "libxdmcp6",
    "libbsd.so.0": "libbsd0",
    "libmd.so.0": "libmd0",
    "libcap.so.2": "libcap2",
    "libgcrypt.so.20": "libgcrypt20",
    "libgpg-error.so.0": "libgpg-error0",
    "liblz4.so.1": "liblz4-1",
    "liblzma.so.5": "liblzma5",
    "libzstd.so.1": "libzstd1",
}

# Language key -> (espeak-ng voice, Whisper language code). Keys are those of sentences.tsv.
LANGUAGES: dict[str, tuple[str, str]] = {
    "en": ("en-us", "en"),
    "de": ("de", "de"),
    "fr": ("fr", "fr"),
    "es": ("es", "es"),
    "it": ("it", "it"),
    "pt": ("pt-br", "pt"),
    "nl": ("nl", "nl"),
    "sv": ("sv", "sv"),
    "da": ("da", "da"),
    "nb": ("nb", "no"),
    "fi": ("fi", "fi"),
    "pl": ("pl", "pl"),
    "cs": ("cs", "cs"),
    "ru": ("ru", "ru"),
    "uk": ("uk", "uk"),
    "tr": ("tr", "tr"),
    "el": ("el", "el"),
    "hu": ("hu", "hu"),
    "ro": ("ro", "ro"),
    "id": ("id", "id"),
    "hi": ("hi", "hi"),
    "cmn": ("cmn-latn-pinyin", "zh"),  # sentences in numbered pinyin
}
# English accents; "en" is British ("en-gb" and "fr-fr" ignore a +variant in espeak-ng 1.51).
ENGLISH_VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")

# espeak-ng 1.51 voice variants (espeak-ng-data/voices/!v) by the gender their files declare,
# leaving out the robotic and effect voices (robosoft*, UniRobot, Demonic, announcer, Tweaky,
# john, pedro, norbert, Mr serious, kaukovalta, ...), those without a gender that sound neither
# (zac, shelby) and any that Whisper could not transcribe reliably.
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "Andrea", "Annie", "anika", "aunty", "linda", "steph", "steph3",
                   "grandma")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Andy", "Denis", "Diogo", "Henrique", "Hugo",
                 "Lee", "Mario", "Michael", "Mike", "antonio", "ed", "gustave", "iven", "iven2", "iven3",
                 "michel", "miguel", "quincy", "rob", "robert", "sandro", "travis", "victor", "grandpa")
WHISPER_VARIANTS = {"male": "whisper", "female": "whisperf"}
GENDER_LABELS = {"male": "Male speech, man speaking", "female": "Female speech, woman speaking"}

SENTENCES_FILE = Path(__file__).resolve().parent / "sentences.tsv"


@cache
def load_sentences(path: Path = SENTENCES_FILE) -> dict[str, tuple[str, ...]]:
    """Sentences by language key from a ``LANG<TAB>TEXT`` file (``#`` starts a comment line)."""
    by_language: dict[str, list[str]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        language, text = line.split("\t", 1)
        by_language.setdefault(language, []).append(text.strip())
    return {language: tuple(texts) for language, texts in by_language.items()}


class EspeakError(RuntimeError):
    """espeak-ng failed or its unpacked tree is incomplete."""


def _library_dirs(roots: Iterable[Path]) -> list[Path]:
    dirs = {so.parent for root in roots for so in root.glob("usr/lib/**/*.so*")}
    dirs |= {so.parent for root in roots for so in root.glob("lib/**/*.so*")}
    return sorted(dirs)


def _missing_libraries(binary: Path, env: dict[str, str]) -> list[str]:
    done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env, check=False)
    return sorted({line.split()[0] for line in done.stdout.splitlines() if "not found" in line})


class Espeak:
    """The espeak-ng command from an unpacked tree: package roots that hold usr/bin/espeak-ng,
    the libraries it loads and espeak-ng-data."""

    def __init__(self, roots: Sequence[Path]):
        roots = [Path(root) for root in roots]
        binaries = [root / "usr" / "bin" / "espeak-ng" for root in roots if (root / "usr/bin/espeak-ng").is_file()]
        data = [p.parent for root in roots for p in root.glob("usr/lib/*/espeak-ng-data/phontab")]
        if not binaries or not data:
            raise EspeakError(f"no usr/bin/espeak-ng or espeak-ng-data/phontab under {[str(r) for r in roots]}")
        self.binary = binaries[0]
        self.data_dir = data[0].parent  # the folder that holds espeak-ng-data
        self.library_dirs = _library_dirs(roots)
        self.env = dict(os.environ)
        self.env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [str(d) for d in self.library_dirs] + ([self.env["LD_LIBRARY_PATH"]] if self.env.get("LD_LIBRARY_PATH") else [])
        )
        self.env["ESPEAK_DATA_PATH"] = str(self.data_dir)

    def missing_libraries(self) -> list[str]:
        """Sonames the dynamic loader cannot find for the binary (empty when it can run)."""
        return _missing_libraries(self.binary, self.env)

    def _run(self, args: list[str], text: str | None = None) -> bytes:
        done = subprocess.run([str(self.binary), *args], input=None if text is None else text.encode("utf-8"),
                              capture_output=True, env=self.env, check=False, timeout=120)
        if done.returncode != 0:
            raise EspeakError(f"espeak-ng {' '.join(args)} failed ({done.returncode}): "
                              f"{done.stderr.decode('utf-8', 'replace').strip()[-500:]}")
        return done.stdout

    def voices(self) -> list[str]:
        """Language voice names (``espeak-ng --voices``), e.g. ``en-us``, ``de``, ``cmn``."""
        lines = self._run(["--voices"]).decode("utf-8", "replace").splitlines()[1:]
        return [line.split()[1] for line in lines if len(line.split()) > 1]

    def variants(self) -> list[str]:
        """Voice variant file names (``espeak-ng-data/voices/!v``), e.g. ``f3``, ``m3``, ``whisper``."""
        return sorted(p.name for p in (self.data_dir / "espeak-ng-data" / "voices" / "!v").iterdir())

    def speak(self, text: str, voice: str = "en-us", variant: str | None = None, speed: int = 175,
              pitch: int = 50, amplitude: int = 100, word_gap: int = 0) -> np.ndarray:
        """Speak ``text`` (UTF-8) with ``voice`` (``+variant``): speed in words a minute (80-450),
        pitch 0-99, amplitude 0-200, word gap in 10 ms units. Returns 16 kHz float32."""
        spec = voice if variant is None else f"{voice}+{variant}"
        args = ["--stdout", "-b", "1", "-v", spec, "-s", str(int(speed)), "-p", str(int(pitch)),
                "-a", str(int(amplitude)), "-g", str(int(word_gap)), "--stdin"]
        return _decode_wav(self._run(args, text))


def _decode_wav(data: bytes) -> np.ndarray:
    """16-bit PCM WAV from espeak-ng --stdout (whose size fields are placeholders) to 16 kHz float32."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise EspeakError("espeak-ng wrote no WAV")
    rate, position = 22050, 12
    while position + 8 <= len(data):
        chunk, size = data[position:position + 4], int.from_bytes(data[position + 4:position + 8], "little")
        body = position + 8
        if chunk == b"fmt ":
            channels = int.from_bytes(data[body + 2:body + 4], "little")
            rate = int.from_bytes(data[body + 4:body + 8], "little")
            bits = int.from_bytes(data[body + 14:body + 16], "little")
            if channels != 1 or bits != 16:
                raise EspeakError(f"unexpected WAV format: {channels} channels, {bits} bits")
        elif chunk == b"data":
            pcm = data[body:]  # size is a placeholder when writing to a pipe: read to the end
            pcm = pcm[: len(pcm) // 2 * 2]
            samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
            return resample(samples, rate)
        position = body + size + (size & 1)
    raise EspeakError("espeak-ng WAV has no data chunk")


def fetch_espeak(cache_dir: Path | None = None) -> Espeak:
    """Download and unpack espeak-ng and the libraries it needs that this system lacks (once)."""
    roots = [fetch_debian(name, cache_dir).root for name in ("espeak-ng", "libespeak-ng1", "espeak-ng-data")]
    for _ in range(8):
        espeak = Espeak(roots)
        missing = espeak.missing_libraries()
        if not missing:
            return espeak
        unknown = [soname for soname in missing if soname not in ESPEAK_SONAMES]
        if unknown:
            raise EspeakError(f"espeak-ng needs {unknown}, which no known Debian package provides")
        for package in sorted({ESPEAK_SONAMES[soname] for soname in missing}):
            roots.append(fetch_debian(package, cache_dir).root)
    raise EspeakError(f"espeak-ng still lacks {espeak.missing_libraries()}")


def speech_labels(gender: str, kind: str = "speech") -> list[str]:
    """AudioSet labels for espeak-ng output, the most specific first: kind is speech, narration
    or whisper, gender male or female; "Speech synthesizer" is always one of them."""
    if kind == "whisper":
        return ["Whispering", "Speech", "Speech synthesizer"]
    return (["Narration, monologue"] if kind == "narration" else []) + [GENDER_LABELS[gender], "Speech",
                                                                         "Speech synthesizer"]


@dataclass(frozen=True)
class Utterance:
    """One synthesized clip with what made it."""

    audio: np.ndarray
    text: str
    language: str  # a LANGUAGES key
    voice: str  # espeak-ng voice+variant
    labels: tuple[str, ...]


def _voice_for(rng: Rng, language: str) -> str:
    voice = LANGUAGES[language][0]
    return str(rng.choice(ENGLISH_VOICES)) if language == "en" else voice


def _variant_for(rng: Rng, gender: str, whisper: bool = False) -> str:
    if whisper:
        return WHISPER_VARIANTS[gender]
    return str(rng.choice(FEMALE_VARIANTS if gender == "female" else MALE_VARIANTS))


def _speak_random(espeak: Espeak, rng: Rng, text: str, voice: str, variant: str) -> np.ndarray:
    return espeak.speak(text, voice, variant, speed=int(rng.integers(130, 211)), pitch=int(rng.integers(30, 71)),
                        word_gap=int(rng.choice([0, 0, 0, 1, 2])))


def random_speech(espeak: Espeak, rng: Rng, language: str | None = None, gender: str | None = None,
                  whisper: bool = False, sentences: int = 1) -> Utterance:
    """One voice speaking ``sentences`` random sentences of a language (random when None)."""
    pool = load_sentences()
    language = language or str(rng.choice(sorted(pool)))
    gender = gender or str(rng.choice(["male", "female"]))
    texts = list(rng.choice(pool[language], size=min(sentences, len(pool[language])), replace=False))
    voice, variant = _voice_for(rng, language), _variant_for(rng, gender, whisper)
    text = " ".join(texts)
    audio = _speak_random(espeak, rng, text, voice, variant)
    kind = "whisper" if whisper else ("narration" if sentences >= 3 else "speech")
    return Utterance(audio, text, language, f"{voice}+{variant}", tuple(speech_labels(gender, kind)))


# ================================================================== music: General MIDI soundfont

# General MIDI soundfonts in Debian: package -> file. FluidR3 (148 MB) for the corpus, TimGM6mb
# (6 MB, fewer and smaller samples) for quick slices.
SOUNDFONTS = {"fluid-soundfont-gm": "FluidR3_GM.sf2", "timgm6mb-soundfont": "TimGM6mb.sf2"}
SOUNDFONT_PACKAGE = "fluid-soundfont-gm"


def fetch_soundfont(cache_dir: Path | None = None, package: str = SOUNDFONT_PACKAGE) -> Path:
    """Download and unpack a soundfont package once; the path of its .sf2 file."""
    root = fetch_debian(package, cache_dir).root
    return root / "usr" / "share" / "sounds" / "sf2" / SOUNDFONTS[package]


_KEYS = ("Keyboard (musical)",)
_PIANO = ("Piano",)
_ORGAN = ("Hammond organ",)
_GUITAR_AC = ("Acoustic guitar",)
_GUITAR_EL = ("Electric guitar",)
_BASS = ("Bass guitar",)
_SYNTH = ("Synthesizer",)
_STRINGS = ("String section",)
_SAX = ("Saxophone",)
_WOODWIND = ("Wind instrument, woodwind instrument",)
_BRASS = ("Brass instrument",)

# General MIDI program (0-based, bank 0) -> AudioSet leaf classes; with_ancestors adds the rest
# (Music, Musical instrument, the family). Programs left out have no fitting class: 10 Music Box,
# 55 Orchestra Hit, 76 Blown Bottle, 78 Whistle, 106 Shamisen, 108 Kalimba, 111 Shanai, 113 Agogo,
# 120-127 (sound effects: fret noise, breath, seashore, bird, telephone, helicopter, applause, gunshot).
GM_LEAVES: dict[int, tuple[str, ...]] = {
    0: _PIANO, 1: _PIANO, 2: _PIANO, 3: _PIANO,
    4: ("Electric piano",), 5: ("Electric piano",), 6: ("Harpsichord",), 7: ("Electric piano",),
    8: _KEYS, 9: ("Glockenspiel",), 11: ("Vibraphone",), 12: ("Marimba, xylophone",),
    13: ("Marimba, xylophone",), 14: ("Tubular bells",), 15: ("Zither",),
    16: _ORGAN, 17: _ORGAN, 18: _ORGAN, 19: ("Organ",), 20: ("Organ",),
    21: ("Accordion",), 22: ("Harmonica",), 23: ("Accordion",),
    24: _GUITAR_AC, 25: _GUITAR_AC, 26: _GUITAR_EL, 27: _GUITAR_EL, 28: _GUITAR_EL,
    29: ("Electric guitar", "Distortion"), 30: ("Electric guitar", "Distortion"), 31: ("Guitar",),
    32: ("Double bass",), 33: _BASS, 34: _BASS, 35: _BASS, 36: _BASS, 37: _BASS, 38: _SYNTH, 39: _SYNTH,
    40: ("Violin, fiddle",), 41: ("Bowed string instrument",), 42: ("Cello",), 43: ("Double bass",),
    44: _STRINGS, 45: ("String section", "Pizzicato"), 46: ("Harp",), 47: ("Timpani",),
    48: _STRINGS, 49: _STRINGS, 50: _SYNTH, 51: _SYNTH, 52: ("Choir",), 53: ("Choir",), 54: _SYNTH,
    56: ("Trumpet",), 57: ("Trombone",), 58: _BRASS, 59: ("Trumpet",), 60: ("French horn",), 61: _BRASS,
    62: _SYNTH, 63: _SYNTH,
    64: _SAX, 65: _SAX, 66: _SAX, 67: _SAX, 68: _WOODWIND, 69: _WOODWIND, 70: _WOODWIND, 71: ("Clarinet",),
    72: ("Flute",), 73: ("Flute",), 74: ("Flute",), 75: ("Flute",), 77: ("Flute",), 79: ("Flute",),
    **{program: _SYNTH for program in range(80, 104)},
    104: ("Sitar",), 105: ("Banjo",), 107: ("Zither",), 109: ("Bagpipes",), 110: ("Violin, fiddle",),
    112: ("Bell",), 114: ("Steelpan",), 115: ("Wood block",), 116: ("Drum",), 117: ("Drum",), 118: ("Drum",),
    119: ("Cymbal",),
}
# FluidR3 variation presets (bank, program) with a class of their own.
FLUID_VARIATIONS: dict[tuple[int, int], tuple[str, ...]] = {
    (8, 14): ("Church bell",), (8, 24): ("Ukulele",), (16, 25): ("Mandolin",),
    (8, 26): ("Steel guitar, slide guitar",), (8, 116): ("Bass drum",), (8, 19): ("Organ",),
}

# GM percussion key map (channel 10), key -> (GM name, AudioSet leaf classes).
_TOM = ("Drum",)
_HAT = ("Hi-hat",)
_CYM = ("Cymbal",)
GM_DRUMS: dict[int, tuple[str, tuple[str, ...]]] = {
    35: ("Acoustic Bass Drum", ("Bass drum",)), 36: ("Bass Drum 1", ("Bass drum",)),
    37: ("Side Stick", ("Snare drum",)), 38: ("Acoustic Snare", ("Snare drum",)), 39: ("Hand Clap", ("Clapping",)),
    40: ("Electric Snare", ("Snare drum",)), 41: ("Low Floor Tom", _TOM), 42: ("Closed Hi-Hat", _HAT),
    43: ("High Floor Tom", _TOM), 44: ("Pedal Hi-Hat", _HAT), 45: ("Low Tom", _TOM), 46: ("Open Hi-Hat", _HAT),
    47: ("Low-Mid Tom", _TOM), 48: ("Hi-Mid Tom", _TOM), 49: ("Crash Cymbal 1", _CYM), 50: ("High Tom", _TOM),
    51: ("Ride Cymbal 1", _CYM), 52: ("Chinese Cymbal", _CYM), 53: ("Ride Bell", _CYM), 54: ("Tambourine", ("Tambourine",)),
    55: ("Splash Cymbal", _CYM), 56: ("Cowbell", ("Cowbell",)), 57: ("Crash Cymbal 2", _CYM),
    58: ("Vibraslap", ("Percussion",)), 59: ("Ride Cymbal 2", _CYM), 60: ("Hi Bongo", _TOM), 61: ("Low Bongo", _TOM),
    62: ("Mute Hi Conga", _TOM), 63: ("Open Hi Conga", _TOM), 64: ("Low Conga", _TOM), 65: ("High Timbale", _TOM),
    66: ("Low Timbale", _TOM), 67: ("High Agogo", ("Percussion",)), 68: ("Low Agogo", ("Percussion",)),
    69: ("Cabasa", ("Rattle (instrument)",)), 70: ("Maracas", ("Maraca",)), 71: ("Short Whistle", ("Whistle",)),
    72: ("Long Whistle", ("Whistle",)), 73: ("Short Guiro", ("Percussion",)), 74: ("Long Guiro", ("Percussion",)),
    75: ("Claves", ("Percussion",)), 76: ("Hi Wood Block", ("Wood block",)), 77: ("Low Wood Block", ("Wood block",)),
    78: ("Mute Cuica", _TOM), 79: ("Open Cuica", _TOM), 80: ("Mute Triangle", ("Percussion",)),
    81: ("Open Triangle", ("Percussion",)),
}
# FluidR3 drum kits (bank 128): preset -> name; the electronic ones are drum machines.
DRUM_KITS: dict[int, str] = {0: "Standard", 8: "Room", 16: "Power", 24: "Electronic", 25: "TR-808", 32: "Jazz",
                             40: "Brush", 48: "Orchestra Kit"}
DRUM_MACHINE_KITS = (24, 25)

# Playable range (MIDI keys) per program: family defaults (program // 8) with overrides.
_FAMILY_RANGE = [(36, 96), (60, 96), (36, 96), (40, 84), (28, 55), (36, 96), (36, 84), (40, 80),
                 (49, 81), (60, 96), (48, 84), (36, 84), (36, 84), (48, 84), (52, 80), (48, 72)]
_RANGE = {9: (72, 105), 14: (60, 77), 40: (55, 100), 41: (48, 84), 42: (36, 72), 43: (28, 55), 46: (24, 96),
          47: (40, 55), 56: (55, 82), 57: (40, 72), 58: (28, 58), 59: (55, 82), 60: (41, 77), 64: (56, 88),
          65: (49, 81), 66: (44, 76), 67: (36, 69), 68: (58, 91), 69: (52, 81), 70: (34, 67), 71: (50, 91),
          72: (74, 105), 110: (55, 96), 112: (72, 96), 116: (36, 60), 117: (40, 64), 118: (40, 64)}


def program_range(program: int) -> tuple[int, int]:
    """The MIDI key range a random part for ``program`` uses."""
    return _RANGE.get(program, _FAMILY_RANGE[program // 8])


@dataclass(frozen=True)
class Note:
    key: int  # MIDI key (drums: the GM percussion key)
    start: float  # seconds
    duration: float  # seconds
    velocity: int = 100


class SoundFont:
    """A loaded SF2 file rendered by tinysoundfont at 16 kHz (loading FluidR3 takes about a second)."""

    def __init__(self, path: Path | str, gain_db: float = 0.0):
        try:
            import tinysoundfont
        except ImportError:
            raise ImportError("music synthesis needs tinysoundfont: pip install --no-deps tinysoundfont") from None
        self.path = Path(path)
        self.synth = tinysoundfont.Synth(gain=gain_db, samplerate=SAMPLE_RATE)
        self.sfid = self.synth.sfload(str(self.path))

    def render(self, notes: Sequence[Note], program: int = 0, bank: int = 0, drums: bool = False,
               seconds: float | None = None, tail: float = 1.0) -> np.ndarray:
        """Play ``notes`` on one channel; length ``seconds``, or the last note's end plus ``tail``.
        The level is the soundfont's own: loud drum parts can pass 1.0 (see ``set_level``)."""
        channel = 9 if drums else 0
        self._reset()
        self.synth.program_select(channel, self.sfid, 128 if drums and bank == 0 else bank, program, is_drums=drums)
        events = sorted([(n.start, 1, n.key, n.velocity) for n in notes]
                        + [(n.start + n.duration, 0, n.key, 0) for n in notes])
        end = seconds if seconds is not None else max((n.start + n.duration for n in notes), default=0.0) + tail
        total = round(end * SAMPLE_RATE)
        out = np.zeros((total, 2), dtype=np.float32)
        done = 0
        for time, on, key, velocity in events:
            at = min(total, round(time * SAMPLE_RATE))
            if at > done:
                out[done:at] = self._generate(at - done)
                done = at
            if at >= total:
                break
            if on:
                self.synth.noteon(channel, key, velocity)
            else:
                self.synth.noteoff(channel, key)
        if total > done:
            out[done:] = self._generate(total - done)
        self._reset()
        return out.mean(axis=1)

    def _reset(self) -> None:
        # tsf_reset ends every voice with a 10 ms release and drops the channel settings; rendering
        # past that release leaves no trace of the last render, so a render repeats exactly
        self.synth.soundfonts[self.sfid].reset()
        self._generate(SAMPLE_RATE // 20)

    def _generate(self, frames: int) -> np.ndarray:
        return np.frombuffer(self.synth.generate(frames), dtype=np.float32).reshape(-1, 2)


SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10), "pentatonic": (0, 2, 4, 7, 9),
          "dorian": (0, 2, 3, 5, 7, 9, 10), "blues": (0, 3, 5, 6, 7, 10)}
PROGRESSIONS = ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 0, 4), (1, 4, 0, 0))  # scale degrees


def _scale_keys(root: int, scale: Sequence[int], low: int, high: int) -> list[int]:
    return [k for k in range(low, high + 1) if (k - root) % 12 in scale]


def random_melody(rng: Rng, program: int, seconds: float = 10.0) -> list[Note]:
    """A random stepwise melody in a random key, scale and tempo, within the program's range."""
    low, high = program_range(program)
    root = int(rng.integers(0, 12))
    keys = _scale_keys(root, SCALES[str(rng.choice(list(SCALES)))], low, high)
    beat = 60.0 / float(rng.uniform(70, 160))
    position = int(rng.integers(len(keys) // 4, max(len(keys) // 4 + 1, 3 * len(keys) // 4)))
    notes, time = [], float(rng.uniform(0.0, 0.3))
    while time < seconds:
        length = beat * float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0]))
        if rng.random() > 0.08:  # otherwise a rest
            velocity = int(np.clip(rng.normal(90, 15), 40, 127))
            notes.append(Note(keys[position], time, length * float(rng.uniform(0.6, 1.0)), velocity))
        position = int(np.clip(position + rng.choice([-3, -2, -1, -1, 1, 1, 2, 3, 0]), 0, len(keys) - 1))
        time += length
    return notes


def random_chords(rng: Rng, program: int, seconds: float = 10.0, strum: bool = False,
                  arpeggio: bool = False) -> list[Note]:
    """A four-chord progression repeated: block chords, strums (strings 10-35 ms apart, alternately
    down and up) or arpeggios."""
    low, high = program_range(program)
    root = int(rng.integers(0, 12))
    scale = SCALES[str(rng.choice(["major", "minor"]))]
    progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    base = low + ((root - low) % 12) + (12 if high - low > 30 else 0)
    bar = 4 * 60.0 / float(rng.uniform(70, 140))
    notes: list[Note] = []
    time, index = 0.0, 0
    while time < seconds:
        degree = progression[index % len(progression)]
        chord = [base + scale[(degree + step) % 7] + 12 * ((degree + step) // 7) for step in (0, 2, 4)]
        chord = [k for k in chord + [chord[0] + 12] if low <= k <= high] or [base]
        if arpeggio:
            step = bar / 8
            for i in range(8):
                notes.append(Note(chord[i % len(chord)], time + i * step, step * 0.95, int(rng.integers(70, 110))))
        elif strum:
            for hit in range(4):
                gap = float(rng.uniform(0.010, 0.035))
                order = chord if hit % 2 == 0 else chord[::-1]
                for i, key in enumerate(order):
                    notes.append(Note(key, time + hit * bar / 4 + i * gap, bar / 4, int(rng.integers(70, 115))))
        else:
            velocity = int(rng.integers(70, 110))
            notes.extend(Note(key, time, bar * 0.98, velocity) for key in chord)
        time += bar
        index += 1
    return notes


def random_drum_pattern(rng: Rng, seconds: float = 10.0, fills: bool = True) -> list[Note]:
    """A rock/pop-style kit groove: kick, snare, hi-hat or ride, a crash on bar one, random fills."""
    beat = 60.0 / float(rng.uniform(80, 160))
    step = beat / 2  # eighth notes
    hat = int(rng.choice([42, 42, 44, 46, 51]))
    kick_steps = {0, 4} | ({int(rng.choice([3, 5, 6, 7]))} if rng.random() < 0.6 else set())
    notes: list[Note] = [Note(49, 0.0, 1.0, 110)]
    bars = math.ceil(seconds / (8 * step))
    for bar in range(bars):
        offset = bar * 8 * step
        fill = fills and bar % 4 == 3 and rng.random() < 0.7
        for i in range(8):
            t = offset + i * step
            notes.append(Note(hat, t, step, int(rng.integers(60, 100))))
            if i in kick_steps:
                notes.append(Note(36, t, step, int(rng.integers(95, 125))))
            if i in (2, 6) and not (fill and i == 6):
                notes.append(Note(38, t, step, int(rng.integers(95, 125))))
        if fill:
            for j, tom in enumerate((50, 48, 47, 45)):
                notes.append(Note(tom, offset + 6 * step + j * step / 2, step / 2, int(rng.integers(90, 120))))
    return [n for n in notes if n.start < seconds]


def drum_roll(rng: Rng, seconds: float = 4.0) -> list[Note]:
    """A snare roll: 12-24 strokes a second, swelling, ending on an accent."""
    rate = float(rng.uniform(12, 24))
    count = int(seconds * rate * 0.8)
    notes = [Note(38, i / rate, 1 / rate, int(50 + 60 * i / max(1, count))) for i in range(count)]
    return notes + [Note(38, count / rate, 0.5, 127), Note(49, count / rate, 1.0, 120)]


def drum_labels(notes: Sequence[Note], kit: int = 0) -> list[str]:
    """AudioSet labels (with ancestors) for a pattern on a FluidR3 kit: the keys' classes plus
    Drum kit (Drum machine for the electronic kits)."""
    leaves: list[str] = ["Drum machine" if kit in DRUM_MACHINE_KITS else "Drum kit"]
    for note in notes:
        leaves.extend(GM_DRUMS.get(note.key, ("", ("Percussion",)))[1])
    return with_ancestors(leaves)


@dataclass(frozen=True)
class MusicClip:
    """One rendered clip with what made it."""

    audio: np.ndarray
    program: int  # GM program, or the bank-128 kit for drums
    bank: int
    drums: bool
    part: str  # melody, chords, strum, arpeggio, groove, roll
    labels: tuple[str, ...]


def random_drums(soundfont: SoundFont, rng: Rng, kit: int | None = None, seconds: float = 10.0,
                 roll: bool = False) -> MusicClip:
    """A kit groove (or a snare roll) on a random FluidR3 kit."""
    kit = int(rng.choice(sorted(DRUM_KITS))) if kit is None else kit
    notes = drum_roll(rng, min(seconds, 6.0)) if roll else random_drum_pattern(rng, seconds)
    labels = drum_labels(notes, kit)
    if roll:
        labels = with_ancestors(["Drum roll"] + labels)
    audio = set_level(soundfont.render(notes, kit, drums=True, seconds=seconds), -20.0)
    return MusicClip(audio, kit, 128, True, "roll" if roll else "groove", tuple(labels))


# ================================================================== tones and noises


def sine_wave(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """One steady sine, 60 Hz-6 kHz (log-uniform)."""
    freq = math.exp(rng.uniform(math.log(60), math.log(6000)))
    return _fade((0.5 * np.sin(2 * np.pi * freq * _t(seconds) + rng.uniform(0, 2 * np.pi))).astype(np.float32))


def chirp_tone(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """Sine sweeps (linear or exponential, up or down, 50 Hz-7 kHz), one or repeated."""
    sweep = float(rng.choice([seconds, rng.uniform(0.1, 2.0)]))
    f0, f1 = (math.exp(rng.uniform(math.log(50), math.log(7000))) for _ in range(2))
    t = _t(sweep)
    if rng.random() < 0.5:
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * sweep))
    else:
        k = math.log(f1 / f0) / sweep if f1 != f0 else 1e-9
        phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    one = _fade((0.5 * np.sin(phase)).astype(np.float32), 3)
    if sweep >= seconds:
        return fit(one, seconds)
    gap = np.zeros(int(rng.uniform(0.0, 0.5) * SAMPLE_RATE), dtype=np.float32)
    reps = math.ceil(seconds / (sweep + gap.size / SAMPLE_RATE))
    return fit(np.concatenate([np.concatenate([one, gap]) for _ in range(reps)]), seconds)


def white_noise(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """Gaussian white noise."""
    return (0.15 * np.clip(rng.standard_normal(round(seconds * SAMPLE_RATE)), -6, 6)).astype(np.float32)


def pink_noise(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """1/f noise: white noise shaped in the frequency domain (-3 dB an octave above 20 Hz)."""
    n = round(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum /= np.sqrt(np.maximum(freqs, 20.0))
    spectrum[0] = 0
    out = np.fft.irfft(spectrum, n)
    return (0.15 * np.clip(out / (out.std() + 1e-12), -6, 6)).astype(np.float32)


def silence(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """Digital silence or a faint noise floor (-90 to -60 dBFS)."""
    n = round(seconds * SAMPLE_RATE)
    if rng.random() < 0.3:
        return np.zeros(n, dtype=np.float32)
    return (10 ** (rng.uniform(-90, -60) / 20) * rng.standard_normal(n)).astype(np.float32)


def _tone(freqs: Sequence[float], seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = _t(seconds)
    out = sum(np.sin(2 * np.pi * f * t) for f in freqs) / max(1, len(freqs))
    return (amplitude * out).astype(np.float32)


def _cadence(tone: np.ndarray, on: Sequence[float], off: Sequence[float], seconds: float, rng: Rng) -> np.ndarray:
    """Switch a continuous tone on and off: on[i] seconds on, off[i] off, repeated, random phase."""
    n = tone.size
    gate = np.zeros(n, dtype=np.float32)
    period = sum(on) + sum(off)
    position = -float(rng.uniform(0, period)) * SAMPLE_RATE
    while position < n:
        for a, b in zip(on, off):
            start, stop = int(position), int(position + a * SAMPLE_RATE)
            if stop > 0 and start < n:
                seg = slice(max(0, start), min(n, stop))
                gate[seg] = _fade(np.ones(stop - start, dtype=np.float32), 4)[seg.start - start:seg.stop - start]
            position += (a + b) * SAMPLE_RATE
    return tone * gate


def beep(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """Short electronic beeps (0.05-0.4 s, 500 Hz-4 kHz, sine or square-ish), in ones, twos or threes."""
    out = np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)
    freq, length = float(rng.uniform(500, 4000)), float(rng.uniform(0.05, 0.4))
    square = rng.random() < 0.3
    one = _fade(_tone([freq] + ([3 * freq] if square and 3 * freq < 7500 else []), length), 3)
    time = float(rng.uniform(0, 1.0))
    while time < seconds - length:
        for _ in range(int(rng.integers(1, 4))):
            at = int(time * SAMPLE_RATE)
            out[at:at + one.size] += one[: max(0, min(one.size, out.size - at))]
            time += length + float(rng.uniform(0.05, 0.2))
        time += float(rng.uniform(0.5, 3.0))
    return out


# Telephone signalling tones: region -> (frequencies, cadence on, cadence off); ITU-T E.180 values.
DIAL_TONES = {"us": (350.0, 440.0), "eu": (425.0,), "uk": (350.0, 450.0)}
BUSY_SIGNALS = {"us": ((480.0, 620.0), (0.5,), (0.5,)), "eu": ((425.0,), (0.5,), (0.5,)),
                "uk": ((400.0,), (0.375,), (0.375,)), "jp": ((400.0,), (0.5,), (0.5,))}
DTMF_LOW = (697.0, 770.0, 852.0, 941.0)
DTMF_HIGH = (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_KEYS = "123A456B789C*0#D"


def dial_tone(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """A continuous dial tone: 350+440 Hz (North America), 425 Hz (Europe) or 350+450 Hz (UK)."""
    return _fade(_tone(DIAL_TONES[str(rng.choice(list(DIAL_TONES)))], seconds))


def busy_signal(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """A busy tone: 480+620 Hz 0.5/0.5 s, 425 Hz 0.5/0.5 s, 400 Hz 0.375/0.375 s, ..."""
    freqs, on, off = BUSY_SIGNALS[str(rng.choice(list(BUSY_SIGNALS)))]
    return _cadence(_tone(freqs, seconds), on, off, seconds, rng)


def dtmf(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """Touch-tone dialling: random keys, 70-200 ms tones with 60-250 ms gaps, in bursts of digits."""
    out = np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)
    time = float(rng.uniform(0, 1.0))
    while time < seconds:
        for _ in range(int(rng.integers(3, 12))):
            row, col = int(rng.integers(0, 4)), int(rng.integers(0, 3 if rng.random() < 0.95 else 4))
            length = float(rng.uniform(0.07, 0.2))
            one = _fade(_tone([DTMF_LOW[row], DTMF_HIGH[col]], length), 3)
            at = int(time * SAMPLE_RATE)
            out[at:at + one.size] += one[: max(0, min(one.size, out.size - at))]
            time += length + float(rng.uniform(0.06, 0.25))
        time += float(rng.uniform(0.5, 2.0))
    return out


def ringtone(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """A synthesized phone ringtone: a short tune (4-8 notes of a pentatonic scale, sine or square
    timbre) or a two-tone trill, repeated with pauses."""
    root = 72 + int(rng.integers(0, 12))
    keys = [root + d + 12 * o for o in (0, 1) for d in SCALES["pentatonic"]]
    note = float(rng.uniform(0.08, 0.2))
    harmonics = [1.0] if rng.random() < 0.5 else [1.0, 1 / 3, 1 / 5]
    if rng.random() < 0.3:  # trill between two notes
        pair = list(rng.choice(keys, 2, replace=False))
        tune = [int(pair[i % 2]) for i in range(int(rng.integers(8, 20)))]
        note = float(rng.uniform(0.03, 0.06))
    else:
        tune = [int(k) for k in rng.choice(keys, int(rng.integers(4, 9)))]
    parts = []
    for key in tune:
        f = 440.0 * 2 ** ((key - 69) / 12)
        t = _t(note)
        wave = sum(a * np.sin(2 * np.pi * f * (2 * i + 1) * t) for i, a in enumerate(harmonics) if f * (2 * i + 1) < 7500)
        parts.append(_fade((0.3 * wave).astype(np.float32), 3))
    phrase = np.concatenate(parts + [np.zeros(int(rng.uniform(0.4, 1.5) * SAMPLE_RATE), dtype=np.float32)])
    lead = np.zeros(int(rng.uniform(0, 0.5) * SAMPLE_RATE), dtype=np.float32)
    return fit(np.concatenate([lead] + [phrase] * math.ceil(seconds * SAMPLE_RATE / phrase.size)), seconds)


def buzzer(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """A harsh buzzer: a band-limited square-saw wave at 100-600 Hz with a rattle, continuous or in bursts."""
    f0 = float(rng.uniform(100, 600))
    t = _t(seconds)
    saw_mix = float(rng.uniform(0, 0.5))
    wave = np.zeros_like(t)
    for k in range(1, int(7500 / f0) + 1):
        amp = (1.0 / k if k % 2 else saw_mix / k)
        wave += amp * np.sin(2 * np.pi * f0 * k * t)
    wave *= 1 + 0.3 * np.sin(2 * np.pi * float(rng.uniform(20, 60)) * t)
    tone = (0.25 * wave / (np.abs(wave).max() + 1e-9)).astype(np.float32)
    if rng.random() < 0.4:
        return _fade(tone)
    on = float(rng.uniform(0.2, 1.5))
    return _cadence(tone, (on,), (float(rng.uniform(0.2, 1.5)),), seconds, rng)


def _click(rng: Rng, freq: float, decay_ms: float) -> np.ndarray:
    n = int(0.03 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    env = np.exp(-t / (decay_ms / 1000))
    return (env * (np.sin(2 * np.pi * freq * t) + 0.5 * rng.standard_normal(n))).astype(np.float32)


def _ticks(rng: Rng, seconds: float, period: float, clicks: Sequence[np.ndarray]) -> np.ndarray:
    out = np.zeros(round(seconds * SAMPLE_RATE) + SAMPLE_RATE, dtype=np.float32)
    time, i = float(rng.uniform(0, period)), 0
    while time < seconds:
        click = clicks[i % len(clicks)] * float(rng.uniform(0.85, 1.0))
        at = int((time + rng.normal(0, 0.002)) * SAMPLE_RATE)
        out[max(0, at):max(0, at) + click.size] += click
        time, i = time + period, i + 1
    return (0.3 * out[: round(seconds * SAMPLE_RATE)]).astype(np.float32)


def tick(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """Clock or watch ticks: one kind of click, 1-5 a second."""
    period = float(rng.choice([1.0, 1.0, 0.5, 0.25, 0.2]))
    return _ticks(rng, seconds, period, [_click(rng, float(rng.uniform(1500, 5000)), float(rng.uniform(1, 4)))])


def tick_tock(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """A pendulum clock: two alternating clicks of different pitch (tick, tock), 0.5-1 s apart."""
    f = float(rng.uniform(1500, 4000))
    clicks = [_click(rng, f, float(rng.uniform(2, 5))), _click(rng, f * float(rng.uniform(0.6, 0.8)), float(rng.uniform(2, 5)))]
    return _ticks(rng, seconds, float(rng.uniform(0.5, 1.0)), clicks)


def static(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """Radio-style static: random crackle impulses (heavy-tailed sizes) over a band-limited hiss."""
    n = round(seconds * SAMPLE_RATE)
    rate = float(rng.uniform(30, 600))
    impulses = np.zeros(n)
    where = rng.integers(0, n, int(rate * seconds))
    impulses[where] = rng.pareto(2.5, where.size) * rng.choice([-1, 1], where.size)
    kernel_length = int(rng.integers(16, 96))
    kernel = np.exp(-np.arange(kernel_length) / (kernel_length / 4)) * rng.standard_normal(kernel_length)
    crackle = np.convolve(impulses, kernel, mode="same")
    hiss = np.diff(rng.standard_normal(n + 1)) * float(rng.uniform(0.05, 0.6))
    hiss *= 1 + 0.5 * np.sin(2 * np.pi * float(rng.uniform(0.1, 2)) * _t(seconds))
    out = crackle / (np.abs(crackle).max() + 1e-9) + hiss * crackle.std() / (hiss.std() + 1e-9)
    return (0.3 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def mains_hum(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """Hum from 50 or 60 Hz mains: the fundamental and harmonics (odd ones buzzier), a little noise."""
    f0 = float(rng.choice([50.0, 60.0])) * float(rng.uniform(0.998, 1.002))
    t = _t(seconds)
    wave = np.zeros_like(t)
    buzz = float(rng.uniform(0.0, 1.0))
    for k in range(1, 16):
        amp = (1.0 / k ** 1.5) * (1 + buzz if k % 2 else 1) * float(rng.uniform(0.5, 1.0))
        wave += amp * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
    wave += 0.01 * rng.standard_normal(t.size)
    return _fade((0.3 * wave / np.abs(wave).max()).astype(np.float32), 50)


def hum(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """A continuous dull low tone (80-250 Hz, a few soft harmonics, slow wobble), like a fridge or motor."""
    f0 = float(rng.uniform(80, 250))
    t = _t(seconds)
    wave = sum((0.5 ** k) * np.sin(2 * np.pi * f0 * (k + 1) * t + rng.uniform(0, 6.3)) for k in range(4))
    wave *= 1 + 0.15 * np.sin(2 * np.pi * float(rng.uniform(0.1, 1.0)) * t)
    wave += 0.02 * np.convolve(rng.standard_normal(t.size), np.ones(32) / 32, mode="same")
    return _fade((0.3 * wave / np.abs(wave).max()).astype(np.float32), 100)


def pulse(rng: Rng, seconds: float = 10.0) -> np.ndarray:
    """Regular short tone bursts about once a second (0.7-1.5 Hz), as in AudioSet's "Pulse"."""
    freq, on = float(rng.uniform(200, 2000)), float(rng.uniform(0.05, 0.3))
    period = 1.0 / float(rng.uniform(0.7, 1.5))
    return _cadence(_tone([freq], seconds), (on,), (period - on,), seconds, rng)


# AudioSet display name -> generator. Labels with ancestors: with_ancestors([name]).
TONES: dict[str, Callable[[Rng, float], np.ndarray]] = {
    "Sine wave": sine_wave,
    "Chirp tone": chirp_tone,
    "White noise": white_noise,
    "Pink noise": pink_noise,
    "Silence": silence,
    "Beep, bleep": beep,
    "Dial tone": dial_tone,
    "Busy signal": busy_signal,
    "Telephone dialing, DTMF": dtmf,
    "Ringtone": ringtone,
    "Buzzer": buzzer,
    "Tick": tick,
    "Tick-tock": tick_tock,
    "Static": static,
    "Mains hum": mains_hum,
    "Hum": hum,
    "Pulse": pulse,
}
