"""Render results as txt, json, srt, vtt, tsv or events. Subtitles carry sound cues such as ``[Music]``."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .results import SoundEvent, TagResult, TagWindow, TranscriptionResult

FORMATS = ("txt", "json", "srt", "vtt", "tsv", "events")

# Speech itself, and silence, are never shown as sound cues: the transcript already says it.
NOT_CUES = {
    "/m/09x0r", "/m/05zppz", "/m/02zsn", "/m/0ytgt", "/m/01h8n0", "/m/02qldy", "/m/0261r1", "/m/0brhx",
    "/m/028v0c",
}
CUE_MAX_SPEECH = 0.5  # a sound event becomes a cue when transcript segments cover less than this share of it


@dataclass
class Cue:
    start: float
    end: float
    text: str


def timestamp(seconds: float, separator: str = ".", always_hours: bool = False) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    hours_part = f"{hours:02d}:" if always_hours or hours else ""
    return f"{hours_part}{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def cue_name(name: str) -> str:
    """AudioSet display names are lists of synonyms ("Bark", "Male speech, man speaking"): take the first."""
    return name.split(",")[0].strip()


def sound_cues(result: TagResult) -> list[Cue]:
    """The result's sound events (not speech, not silence) as cues, where the transcript does not
    already cover them; of events that overlap by more than half, the most probable one."""
    segments = spoken(result) if isinstance(result, TranscriptionResult) else []
    chosen: list[SoundEvent] = []
    for event in sorted(result.events, key=lambda e: -e.probability):
        length = event.end - event.start
        covered = sum(max(0.0, min(s.end, event.end) - max(s.start, event.start)) for s in segments)
        if event.mid in NOT_CUES or length <= 0 or covered / length >= CUE_MAX_SPEECH:
            continue
        if any(min(c.end, event.end) - max(c.start, event.start) > length / 2 for c in chosen):
            continue
        chosen.append(event)
    return [Cue(e.start, e.end, f"[{cue_name(e.name)}]") for e in sorted(chosen, key=lambda e: e.start)]


def spoken(result: TranscriptionResult) -> list:
    """The segments that count as speech: those the speech gate flagged ``no_speech`` are left out."""
    return [s for s in result.segments if not s.no_speech]


def window_text(window: TagWindow) -> str:
    return ", ".join(f"{cue_name(lab.name)} {lab.probability:.2f}" for lab in window.labels)


def subtitle_cues(result: TagResult) -> list[Cue]:
    """What subtitles show: transcript segments plus sound cues, or for tags only every window's tags."""
    if isinstance(result, TranscriptionResult):
        cues = [Cue(s.start, s.end, s.text.strip()) for s in spoken(result)] + sound_cues(result)
    else:
        cues = [Cue(w.start, w.end, window_text(w)) for w in result.tags if w.labels]
    return sorted(cues, key=lambda cue: (cue.start, cue.end))


def render_srt(result: TagResult) -> str:
    blocks = [
        f"{n}\n{timestamp(c.start, ',', True)} --> {timestamp(c.end, ',', True)}\n{c.text}\n"
        for n, c in enumerate(subtitle_cues(result), start=1)
    ]
    return "\n".join(blocks)


def render_vtt(result: TagResult) -> str:
    blocks = [f"{timestamp(c.start)} --> {timestamp(c.end)}\n{c.text}\n" for c in subtitle_cues(result)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render_tsv(result: TagResult) -> str:
    """Milliseconds, like openai-whisper's tsv: start, end, text; for tags: start, end, mid, name, probability."""
    if isinstance(result, TranscriptionResult):
        rows = ["start\tend\ttext"] + [
            f"{round(s.start * 1000)}\t{round(s.end * 1000)}\t{s.text.strip().replace(chr(9), ' ')}" for s in spoken(result)
        ]
    else:
        rows = ["start\tend\tmid\tname\tprobability"] + [
            f"{round(w.start * 1000)}\t{round(w.end * 1000)}\t{lab.mid}\t{lab.name}\t{lab.probability:.4f}"
            for w in result.tags for lab in w.labels
        ]
    return "\n".join(rows) + "\n"


def render_txt(result: TagResult) -> str:
    if isinstance(result, TranscriptionResult):
        return "".join(s.text.strip() + "\n" for s in spoken(result))
    return "".join(f"{timestamp(w.start)}-{timestamp(w.end)}\t{window_text(w)}\n" for w in result.tags)


def render_events(result: TagResult) -> str:
    """One line per sound event: start and end in seconds, class name, peak probability (tab-separated)."""
    return "start\tend\tmid\tname\tprobability\n" + "".join(
        f"{e.start:.1f}\t{e.end:.1f}\t{e.mid}\t{e.name}\t{e.probability:.4f}\n" for e in result.events)


def render(result: TagResult, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n"
    renderers = {"txt": render_txt, "srt": render_srt, "vtt": render_vtt, "tsv": render_tsv, "events": render_events}
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return renderers[fmt](result)
