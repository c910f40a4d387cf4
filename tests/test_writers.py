"""Output formats, including sound cues in subtitles."""

from __future__ import annotations

import json

import numpy as np

from tagger.results import Segment, TagLabel, TagResult, TagWindow, TranscriptionResult
from tagger.writers import render, sound_cues, timestamp

MUSIC = TagLabel(137, "/m/04rlf", "Music", 0.9)
SPEECH = TagLabel(0, "/m/09x0r", "Speech", 0.95)
BARK = TagLabel(74, "/m/05tny_", "Bark", 0.7)


def segment(i: int, start: float, end: float, text: str) -> Segment:
    return Segment(i, int(start // 30) * 3000, start, end, text, [], 0.0, -0.2, 1.2, 0.01)


def result_with(tags: list[TagWindow], segments: list[Segment]) -> TranscriptionResult:
    return TranscriptionResult(duration=tags[-1].end, tags=tags, scores=np.zeros((len(tags), 527)), tag_resolution=10.0,
                               head="h", labels=[], text=" ".join(s.text for s in segments), language="en",
                               segments=segments)


def test_timestamps():
    assert timestamp(0) == "00:00.000"
    assert timestamp(3661.5, ",", True) == "01:01:01,500"
    assert timestamp(59.9996) == "01:00.000"


def test_confident_non_speech_stretches_become_merged_cues():
    tags = [
        TagWindow(0, 10, [MUSIC, SPEECH]),
        TagWindow(10, 20, [MUSIC]),
        TagWindow(20, 30, [SPEECH, MUSIC]),  # covered by speech: no cue
        TagWindow(30, 40, [BARK, TagLabel(137, "/m/04rlf", "Music", 0.2)]),
        TagWindow(40, 45, [TagLabel(74, "/m/05tny_", "Bark", 0.3)]),  # not confident
    ]
    result = result_with(tags, [segment(0, 20.5, 29.5, " Hello there.")])
    cues = sound_cues(result)
    assert [(c.start, c.end, c.text) for c in cues] == [(0, 20, "[Music]"), (30, 40, "[Bark]")]
    srt = render(result, "srt")
    assert srt.splitlines()[:3] == ["1", "00:00:00,000 --> 00:00:20,000", "[Music]"]
    assert "00:00:20,500 --> 00:00:29,500\nHello there." in srt
    vtt = render(result, "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00.000 --> 00:20.000\n[Music]\n")


def test_text_formats():
    result = result_with([TagWindow(0, 10, [SPEECH])], [segment(0, 0.0, 2.5, " One."), segment(1, 2.5, 4.0, " Two.")])
    assert render(result, "txt") == "One.\nTwo.\n"
    assert render(result, "tsv") == "start\tend\ttext\n0\t2500\tOne.\n2500\t4000\tTwo.\n"
    data = json.loads(render(result, "json"))
    assert data["segments"][1]["text"] == " Two." and data["tags"][0]["labels"][0]["mid"] == "/m/09x0r"


def test_tag_only_formats():
    result = TagResult(duration=12.0, tags=[TagWindow(0, 10, [MUSIC, BARK]), TagWindow(10, 12, [])],
                       scores=np.zeros((2, 527)), tag_resolution=10.0, head="h", labels=[])
    assert render(result, "tsv").splitlines() == [
        "start\tend\tmid\tname\tprobability", "0\t10000\t/m/04rlf\tMusic\t0.9000", "0\t10000\t/m/05tny_\tBark\t0.7000"]
    assert render(result, "txt").splitlines()[0] == "00:00.000-00:10.000\tMusic 0.90, Bark 0.70"
    assert "Music 0.90, Bark 0.70" in render(result, "srt")
