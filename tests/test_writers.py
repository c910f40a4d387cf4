"""Output formats, including sound cues in subtitles."""

from __future__ import annotations

import json

import numpy as np

from tagger.labels import audioset
from tagger.results import Segment, SoundEvent, TagLabel, TagResult, TagWindow, TranscriptionResult
from tagger.tagging import TagOptions, sound_events
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


def test_windows_above_a_class_threshold_merge_into_events():
    labels = audioset()
    music, bark, speech = (labels.index_of(n) for n in ("Music", "Bark", "Speech"))
    scores = np.zeros((5, len(labels)), np.float32)
    scores[[0, 1, 2], music] = [0.9, 0.8, 0.6]
    scores[3, music] = 0.2
    scores[[3, 4], bark] = [0.7, 0.3]
    scores[2, speech] = 0.95
    bounds = [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, 40.0), (40.0, 45.0)]
    thresholds = np.full(len(labels), 0.5)
    thresholds[bark] = 0.25  # a calibrated, lower threshold for one class
    events = sound_events(scores, bounds, labels, TagOptions(top_k=None), thresholds)
    assert [(e.name, e.start, e.end, round(e.probability, 2)) for e in events] == [
        ("Music", 0.0, 30.0, 0.9), ("Speech", 20.0, 30.0, 0.95), ("Bark", 30.0, 45.0, 0.7)]
    only = sound_events(scores, bounds, labels, TagOptions(exclude=("Speech",)), thresholds)
    assert [e.name for e in only] == ["Music", "Bark"]


def test_sound_events_become_cues_where_nobody_speaks():
    events = [SoundEvent(137, "/m/04rlf", "Music", 0.0, 20.0, 0.9),
              SoundEvent(0, "/m/09x0r", "Speech", 20.0, 30.0, 0.95),  # speech is never a cue
              SoundEvent(137, "/m/04rlf", "Music", 20.0, 30.0, 0.6),  # covered by the transcript: no cue
              SoundEvent(74, "/m/05tny_", "Bark", 30.0, 40.0, 0.7),
              SoundEvent(75, "/m/0bt9lr", "Dog", 30.0, 40.0, 0.6)]  # the same stretch as Bark, less sure
    result = result_with([TagWindow(0, 45, [])], [segment(0, 20.5, 29.5, " Hello there.")])
    result.events = events
    cues = sound_cues(result)
    assert [(c.start, c.end, c.text) for c in cues] == [(0, 20, "[Music]"), (30, 40, "[Bark]")]
    srt = render(result, "srt")
    assert srt.splitlines()[:3] == ["1", "00:00:00,000 --> 00:00:20,000", "[Music]"]
    assert "00:00:20,500 --> 00:00:29,500\nHello there." in srt
    vtt = render(result, "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00.000 --> 00:20.000\n[Music]\n")
    lines = render(result, "events").splitlines()
    assert lines[0] == "start\tend\tmid\tname\tprobability" and lines[1] == "0.0\t20.0\t/m/04rlf\tMusic\t0.9000"
    assert json.loads(render(result, "json"))["events"][3]["name"] == "Bark"


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
