"""The web page at ``GET /`` in a real browser: Debian's chromium driven by Playwright, against the real
service (tiny.en with its bundled head) on loopback, with real recordings from tests/fixtures.

Without chromium or Playwright the tests skip and say why; with ``EARMARK_REQUIRE_BROWSER=1`` (CI)
they fail instead. Each test leaves a screenshot of the page in its temporary directory.

    python tests/test_page.py --screenshot docs/page.png    # the README's screenshot, made by this code
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import sys
import threading
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # service_server as a plain module, also as a script

from service_server import ServerProcess, server_process

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # checked by need_browser(): skip, or fail in CI
    sync_playwright = None

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "tests" / "fixtures" / "speech"
SCENES = ROOT / "tests" / "fixtures" / "scenes"
TRANSCRIPTS = dict(line.split("\t", 1) for line in (SPEECH / "transcripts.tsv").read_text().splitlines()[1:])
API_KEY = "page-test-key"
UPLOAD_LIMIT_MB = 1  # the fixtures are smaller; a larger file shows the page's answer to 413
# one request at a time: a second one while another runs shows the page's answer to 503 (queue full)
SERVER_ENV = {"EARMARK_MODEL": "tiny.en", "EARMARK_API_KEYS": API_KEY, "EARMARK_MAX_UPLOAD_MB": str(UPLOAD_LIMIT_MB),
              "EARMARK_QUEUE_SIZE": "1"}
KEY_STORAGE = "earmark-api-key"  # service/static/app.js
WAIT_MS = 180_000  # a transcription on a busy 2-core machine
MIC_CLIP = "asterisk-en-ss-noservice.flac"
MIC_LEAD_IN = 0.5  # seconds of silence before the speech in the fake microphone's file


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def need_browser() -> str:
    """The system chromium's path; skip (or, with EARMARK_REQUIRE_BROWSER=1, fail) without it or Playwright."""
    problem = None
    if sync_playwright is None:
        problem = "Playwright for Python is not installed (pip install -e '.[test]')"
    elif chromium_path() is None:
        problem = "no chromium on PATH (Debian: apt-get install chromium)"
    if problem is None:
        return chromium_path()
    if os.environ.get("EARMARK_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{problem}; EARMARK_REQUIRE_BROWSER=1 requires the browser tests to run", pytrace=False)
    pytest.skip(problem)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def assert_heard(transcript: str, clip: str, share: float = 0.8) -> None:
    """At least ``share`` of the words of the clip's reference transcript are in the page's transcript (tiny.en)."""
    said, expected = set(words(transcript)), set(words(TRANSCRIPTS[clip]))
    assert len(said & expected) >= share * len(expected), (sorted(said), sorted(expected))


def write_wav(flac: Path, path: Path, lead_in: float) -> float:
    """The recording as 16-bit PCM WAV (chromium's fake microphone reads WAV), after ``lead_in`` s of silence."""
    from tagger import load_audio

    samples = load_audio(flac)  # float32, 16 kHz mono
    pcm = np.concatenate([np.zeros(round(16000 * lead_in), np.float32), samples])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
    return len(pcm) / 16000


@contextmanager
def launched(executable: str, fake_microphone: Path | None = None) -> Iterator[Browser]:
    args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required"]
    if fake_microphone is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_microphone}%noloop")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=args)
        try:
            yield browser
        finally:
            browser.close()


class Tab:
    """A page in a fresh browser context, with every console message and page error it produced."""

    def __init__(self, browser: Browser, url: str, api_key: str | None, viewport=(1280, 900)):
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, accept_downloads=True)
        if api_key:
            self.context.add_init_script(f"sessionStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(api_key)})")
        self.page: Page = self.context.new_page()
        self.messages: list[str] = []
        self.page.on("console", lambda m: self.messages.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.messages.append(f"pageerror: {e}"))
        self.url = url

    def open(self) -> Page:
        self.page.goto(self.url + "/")
        return self.page

    def errors(self, allowed: tuple[str, ...] = ()) -> list[str]:
        """Console errors and uncaught exceptions, except those matching an ``allowed`` pattern."""
        return [m for m in self.messages if m.startswith(("error:", "pageerror:"))
                and not any(re.search(pattern, m) for pattern in allowed)]

    def upload(self, path: Path) -> None:
        """Choose a file and wait until the page shows its result (or fail with the page's error)."""
        self.page.set_input_files("#file", str(path))
        self.wait_for_result()

    def wait_for_result(self) -> None:
        page = self.page
        page.wait_for_function("() => document.querySelector('#status-text').textContent.startsWith('Done')"
                               " || !document.querySelector('#error').hidden", timeout=WAIT_MS)
        if page.locator("#error").is_visible():
            pytest.fail(f"the page shows an error: {page.locator('#error').text_content()}")
        expect(page.locator("#results")).to_be_visible()

    def transcript(self) -> str:
        return " ".join(self.page.locator("#segments li.speech .text").all_text_contents())

    def lane(self, name: str):
        return self.page.locator(f'.track[data-name="{name}"]')

    def close(self, screenshot: Path) -> None:
        try:
            self.page.screenshot(path=str(screenshot), full_page=True)
        finally:
            self.context.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with server_process(SERVER_ENV) as running:
        yield running


@pytest.fixture(scope="module")
def microphone_file(tmp_path_factory) -> tuple[Path, float]:
    path = tmp_path_factory.mktemp("microphone") / "microphone.wav"
    return path, write_wav(SPEECH / MIC_CLIP, path, MIC_LEAD_IN)


@pytest.fixture(scope="module")
def browser(microphone_file) -> Iterator[Browser]:
    executable = need_browser()
    with launched(executable, microphone_file[0]) as running:
        yield running


@pytest.fixture
def tab(browser, server, tmp_path) -> Iterator[Tab]:
    """The page, with the API key already given (as after the key prompt); screenshot on the way out."""
    opened = Tab(browser, server.url, API_KEY)
    opened.open()
    expect(opened.page.locator("#server")).to_contain_text("Model tiny.en", timeout=60_000)
    yield opened
    opened.close(tmp_path / "page.png")


def api(server: ServerProcess, path: Path, **fields: str) -> httpx.Response:
    response = httpx.post(f"{server.url}/v1/audio/transcriptions", headers=server.headers(), timeout=300,
                          files={"file": (path.name, path.read_bytes())}, data=fields)
    response.raise_for_status()
    return response


# --- the page and its security ------------------------------------------------------------------


def test_the_page_loads_without_a_key_and_asks_for_one_when_the_api_needs_it(browser, server, tmp_path):
    page_response = httpx.get(server.url + "/")
    assert page_response.status_code == 200 and "text/html" in page_response.headers["content-type"]
    assert "default-src 'self'" in page_response.headers["content-security-policy"]
    for name in ("app.js", "app.css"):
        assert httpx.get(f"{server.url}/static/{name}").status_code == 200
    assert httpx.get(f"{server.url}/static/index.py").status_code == 404
    assert httpx.get(f"{server.url}/v1/models").status_code == 401

    tab = Tab(browser, server.url, api_key=None)
    try:
        page = tab.open()
        expect(page.locator("#key-form")).to_be_visible(timeout=30_000)
        expect(page.locator("#key-message")).to_contain_text("needs an API key")
        expect(page.locator("#key")).to_be_focused()
        page.fill("#key", "wrong-key")
        page.keyboard.press("Enter")
        expect(page.locator("#key-message")).to_contain_text("did not accept")
        page.fill("#key", API_KEY)
        page.click("#key-form button[type=submit]")
        expect(page.locator("#server")).to_contain_text("Model tiny.en", timeout=30_000)
        expect(page.locator("#key-form")).to_be_hidden()
        assert page.evaluate(f"sessionStorage.getItem({json.dumps(KEY_STORAGE)})") == API_KEY
        # tiny.en is English-only: the page says it cannot translate instead of sending a request that fails
        expect(page.locator("#translate")).to_be_disabled()
        expect(page.locator("#translate-note")).to_contain_text("English only")
        # a key that stops working (here: forgotten) is asked for again when a file is sent, which then goes through
        page.evaluate(f"sessionStorage.removeItem({json.dumps(KEY_STORAGE)})")
        page.set_input_files("#file", str(SCENES / "music-macroform-cold_day.flac"))
        expect(page.locator("#key-form")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#status-text")).to_have_text("Waiting for the API key…")
        page.fill("#key", API_KEY)
        page.keyboard.press("Enter")
        tab.wait_for_result()
        expect(tab.lane("Music")).to_be_visible()
        assert tab.errors(allowed=(r"status of 401",)) == []
    finally:
        tab.close(tmp_path / "page.png")


def test_the_package_ships_every_file_of_the_page():
    """pyproject's package data covers service/static, so an installed server has its page."""
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service"]
    files = sorted((ROOT / "service" / "static").iterdir())
    assert {"index.html", "app.js", "app.css"} <= {path.name for path in files}
    for path in files:
        assert any(path.relative_to(ROOT / "service").match(pattern) for pattern in patterns), path.name


# --- uploads ---------------------------------------------------------------------------------------


def test_speech_shows_the_right_text_and_a_speech_lane(tab):
    clip = "asterisk-en-demo-nogo.flac"
    tab.upload(SPEECH / clip)
    page = tab.page
    assert_heard(tab.transcript(), clip)
    # the timeline: a Speech lane, confident somewhere
    expect(tab.lane("Speech")).to_be_visible()
    probabilities = [float(p) for p in tab.lane("Speech").locator(".cell").evaluate_all(
        "cells => cells.map(c => c.dataset.probability)")]
    assert probabilities and max(probabilities) >= 0.5
    # hover: class name and probability
    cell = tab.lane("Speech").locator(".cell").first
    cell.hover()
    expect(page.locator("#tooltip")).to_be_visible()
    expect(page.locator("#tooltip")).to_contain_text(re.compile(r"Speech · .* · \d+ %"))
    # segments carry their times
    expect(page.locator("#segments li.speech .time").first).to_have_text(re.compile(r"\d+:\d\d\.\d – \d+:\d\d\.\d"))
    # a phone-sized window: nothing wider than the screen
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_function("() => document.documentElement.scrollWidth <= 390", timeout=5_000)
    ticks = page.locator("#axis .tick")  # time labels that fit: none overlaps the next
    page.wait_for_function("() => { const t = [...document.querySelectorAll('#axis .tick')].map(e => e.getBoundingClientRect());"
                           " return t.every((r, i) => i === 0 || t[i - 1].right <= r.left); }", timeout=5_000)
    assert ticks.count() >= 2
    assert tab.errors() == []


def test_music_dropped_on_the_page_shows_a_music_lane(tab):
    clip = SCENES / "music-macroform-cold_day.flac"
    # a drop of the file onto the drop zone, as a file manager would deliver it
    transfer = tab.page.evaluate_handle(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "audio/flac"}));
            return transfer;
        }""", [clip.name, base64.b64encode(clip.read_bytes()).decode()])
    tab.page.dispatch_event("#drop", "dragover", {"dataTransfer": transfer})
    expect(tab.page.locator("#drop")).to_have_class(re.compile(r"\bover\b"))
    tab.page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    tab.wait_for_result()
    expect(tab.page.locator("#summary")).to_contain_text(clip.name)
    expect(tab.lane("Music")).to_be_visible()
    probabilities = [float(p) for p in tab.lane("Music").locator(".cell").evaluate_all(
        "cells => cells.map(c => c.dataset.probability)")]
    assert max(probabilities) >= 0.5
    assert tab.errors() == []


def test_a_file_that_is_not_audio_shows_what_was_wrong(tab, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("These are meeting notes, not a recording.\n" * 20)
    tab.page.set_input_files("#file", str(notes))
    error = tab.page.locator("#error")
    expect(error).to_be_visible(timeout=WAIT_MS)
    expect(error).to_contain_text("This file is not audio the server can read")
    expect(error).to_contain_text("Choose an audio or video file")
    expect(tab.page.locator("#results")).to_be_hidden()
    assert tab.errors(allowed=(r"status of 415",)) == []


def test_a_file_over_the_upload_limit_shows_the_limit(tab, tmp_path):
    big = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    with wave.open(str(big), "wb") as out:  # 40 s of quiet noise, 1.28 MB
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((rng.standard_normal(16000 * 40) * 300).astype("<i2").tobytes())
    assert big.stat().st_size > UPLOAD_LIMIT_MB * 1_000_000
    tab.page.set_input_files("#file", str(big))
    error = tab.page.locator("#error")
    expect(error).to_be_visible(timeout=WAIT_MS)
    expect(error).to_contain_text("The file is too big for this server")
    expect(error).to_contain_text(f"limit of {UPLOAD_LIMIT_MB} MB")
    assert tab.errors(allowed=(r"status of 413",)) == []


def test_a_busy_server_says_so_and_when_to_try_again(tab, server):
    clip = SPEECH / "asterisk-en-followme-sorry.flac"
    body = clip.read_bytes()
    stop = threading.Event()

    def keep_busy() -> None:  # other clients' requests, one after another, holding the server's one place
        with httpx.Client(headers=server.headers(), timeout=300) as client:
            while not stop.is_set():
                answer = client.post(f"{server.url}/v1/audio/transcriptions", files={"file": (clip.name, body)})
                if answer.status_code == 503:
                    time.sleep(0.05)

    def busy() -> bool:
        metrics = httpx.get(f"{server.url}/metrics", headers=server.headers()).text
        return re.search(r"^earmark_queue_depth 1(\.0)?$", metrics, re.MULTILINE) is not None

    others = [threading.Thread(target=keep_busy) for _ in range(2)]
    for thread in others:
        thread.start()
    try:
        error = tab.page.locator("#error")
        for _ in range(3):  # the page's request might land in the moment between two others: then again
            deadline = time.monotonic() + 60
            while not busy() and time.monotonic() < deadline:
                time.sleep(0.01)
            tab.page.set_input_files("#file", str(clip))
            tab.page.wait_for_function("() => document.querySelector('#status-text').textContent.startsWith('Done')"
                                       " || !document.querySelector('#error').hidden", timeout=WAIT_MS)
            if error.is_visible():
                break
        expect(error).to_have_text("The server is busy with other requests. Try again in 1 second.")
    finally:
        stop.set()
        for thread in others:
            thread.join(timeout=300)
    assert tab.errors(allowed=(r"status of 503",)) == []


def test_a_running_request_can_be_cancelled(tab):
    page = tab.page
    page.set_input_files("#file", str(SPEECH / "asterisk-en-demo-echotest.flac"))
    expect(page.locator("#status-text")).to_contain_text("Transcribing", timeout=30_000)
    expect(page.locator("#progress")).to_be_visible()
    page.click("#cancel")
    expect(page.locator("#status-text")).to_have_text("Cancelled.")
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#results")).to_be_hidden()
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#run")).to_be_enabled()  # the same audio can run again
    assert tab.errors() == []


def test_every_control_is_reachable_with_the_keyboard(tab):
    page = tab.page
    tab.upload(SPEECH / "asterisk-en-vm-nobox.flac")
    reached = []
    page.locator("body").focus()
    for _ in range(80):  # once round the page
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => { const e = document.activeElement;"
                                     " return e.id || e.dataset.format || e.classList[0] || e.tagName; }"))
        if reached.count(reached[0]) == 2:
            break
    for control in ("file", "record", "language", "tags", "resolution", "gate", "topk", "run", "player", "seg", "cell",
                    "text", "srt", "vtt", "verbose_json"):
        assert control in reached, (control, reached)
    assert reached.count("cell") == 1  # the timeline is one stop; arrow keys move inside it
    # a segment plays with Enter
    page.evaluate("document.querySelector('#player').pause()")
    page.locator("#segments .seg").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_function("() => !document.querySelector('#player').paused || "
                           "document.querySelector('.seg.current') !== null")
    # labels for screen readers: every form control has one, the live regions are marked
    unlabelled = page.evaluate("() => [...document.querySelectorAll('input, select, button, audio')]"
                               ".filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')"
                               " && !e.textContent.trim()).map(e => e.id || e.outerHTML)")
    assert unlabelled == []
    assert page.get_attribute("#status", "role") == "status" and page.get_attribute("#error", "role") == "alert"
    assert tab.errors() == []


def test_selecting_a_segment_or_a_timeline_cell_moves_the_player(tab):
    tab.upload(SPEECH / "asterisk-en-demo-nogo.flac")
    page = tab.page
    segments = page.locator("#segments li.speech .seg")
    assert segments.count() >= 2
    last = segments.last
    start = float(last.get_attribute("data-start"))
    assert start > 1
    page.evaluate("document.querySelector('#player').pause()")
    last.click()
    page.wait_for_function(f"() => document.querySelector('#player').currentTime >= {start - 0.05}")
    assert start - 0.05 <= page.evaluate("document.querySelector('#player').currentTime") < start + 5
    expect(last).to_have_attribute("aria-current", "true")
    playhead = page.evaluate("parseFloat(document.querySelector('#playhead').style.left)")
    assert playhead > 0
    # the keyboard: the first timeline cell takes focus, arrows move, Enter plays from there
    page.evaluate("document.querySelector('#player').pause()")
    first = page.locator(".cell[tabindex='0']")
    first.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    focused = page.locator(".cell:focus")
    target = float(focused.get_attribute("data-start"))
    assert target > 0 and focused.get_attribute("tabindex") == "0"
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => Math.abs(document.querySelector('#player').currentTime - {target}) < 1.5")
    # while it plays, the playhead follows the player
    page.wait_for_function(f"() => document.querySelector('#player').currentTime > {target} + 0.5", timeout=15_000)
    time_now, left = page.evaluate("() => [document.querySelector('#player').currentTime,"
                                   " parseFloat(document.querySelector('#playhead').style.left)]")
    duration = float(page.locator("#summary").text_content().split(": ", 1)[1].split(" s ")[0])
    assert abs(left - 100 * time_now / duration) < 100 * 0.5 / duration  # within half a second
    assert tab.errors() == []


def test_downloads_hold_what_the_api_returns(tab, server, tmp_path):
    clip = SPEECH / "asterisk-en-followme-sorry.flac"
    tab.upload(clip)
    page = tab.page
    fields = {"tags": "true", "top_k": "5", "tag_resolution": "2", "speech_gate": "0.5"}  # the page's defaults
    for fmt, ext in (("verbose_json", "json"), ("text", "txt"), ("srt", "srt"), ("vtt", "vtt")):
        with page.expect_download(timeout=WAIT_MS) as event:
            page.click(f".downloads button[data-format={fmt}]")
        download = event.value
        assert download.suggested_filename == f"asterisk-en-followme-sorry.{ext}"
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        answer = api(server, clip, response_format=fmt, **fields)
        if fmt == "verbose_json":
            got = json.loads(saved.read_text())
            assert got == answer.json()
            assert got["segments"] and got["tags"] and got["tag_resolution"] == 2.0
        else:
            assert saved.read_text() == answer.text and answer.text.strip()
    expect(page.locator("#status-text")).to_contain_text("Saved")
    assert tab.errors() == []


def test_tags_off_leaves_the_timeline_out(tab):
    page = tab.page
    page.uncheck("#tags")
    tab.upload(SPEECH / "asterisk-en-vm-nobox.flac")
    expect(page.locator("#timeline-note")).to_contain_text("Sound tags are off")
    assert page.locator(".track").count() == 0
    assert_heard(tab.transcript(), "asterisk-en-vm-nobox.flac")
    assert tab.errors() == []


def srt_cues(srt: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of every subtitle in an SRT file."""
    def seconds(stamp: str) -> float:
        hours, minutes, rest = stamp.split(":")
        return round(int(hours) * 3600 + int(minutes) * 60 + float(rest.replace(",", ".")), 3)

    cues = []
    for block in srt.strip().split("\n\n"):
        _, times, *text = block.splitlines()
        start, end = times.split(" --> ")
        cues.append((seconds(start), seconds(end), " ".join(text)))
    return cues


def test_segments_below_the_speech_gate_are_shown_as_no_speech(tab, server, tmp_path):
    """Speech over music: its segment is less likely speech than 90 % (about 77 % with tiny.en's head)."""
    from tagger import load_audio

    mixture = tmp_path / "speech-over-music.wav"
    speech, music = load_audio(SPEECH / "asterisk-en-vm-nobox.flac"), load_audio(SCENES / "music-reno_project-system.flac")
    samples = music.copy()
    samples[: len(speech)] += speech
    with wave.open(str(mixture), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    page = tab.page
    page.select_option("#gate", "0.9")
    tab.upload(mixture)
    flagged = page.locator("#segments li.no-speech")
    expect(flagged.first).to_be_visible()
    expect(flagged.first.locator(".badge")).to_have_text(re.compile(r"no speech \(speech \d+ %\)"))
    assert "not speech" in flagged.first.locator(".seg").get_attribute("aria-label")
    assert_heard(flagged.first.locator(".text").text_content(), "asterisk-en-vm-nobox.flac", share=0.5)  # over music
    assert page.locator("#segments li.speech").count() == 0
    expect(page.locator("#status-text")).to_contain_text("Done: 0 segments of speech")
    # the sound cues in the transcript are the API's: its subtitles hold the same ones and no words
    srt = api(server, mixture, response_format="srt", tags="true", top_k="5", tag_resolution="2", speech_gate="0.9").text
    shown = page.locator("#segments li.cue .seg").evaluate_all(
        "items => items.map(b => [Number(b.dataset.start), Number(b.dataset.end), b.querySelector('.text').textContent])")
    assert shown and [tuple(cue) for cue in shown] == srt_cues(srt)
    assert tab.errors() == []


def test_a_multilingual_model_translates_and_takes_a_language(browser, tmp_path):
    """base (multilingual): the Italian prompt in Italian with the language set, then translated into English."""
    clip = SPEECH / "asterisk-it-tt-allbusy.flac"
    with server_process({"EARMARK_MODEL": "base"}) as running:
        tab = Tab(browser, running.url, api_key=None)
        try:
            page = tab.open()
            expect(page.locator("#server")).to_contain_text("Model base", timeout=60_000)
            expect(page.locator("#translate")).to_be_enabled()
            page.select_option("#language", "it")
            tab.upload(clip)
            italian = set(words(tab.transcript()))
            assert len(italian & {"operatori", "ditta", "momento", "impegnati", "clienti", "linea", "chiamata"}) >= 4
            expect(page.locator("#summary")).to_contain_text("in Italian")
            page.check("#translate")
            page.click("#run")
            expect(page.locator("#summary")).to_contain_text("translated from Italian", timeout=WAIT_MS)
            tab.wait_for_result()
            english = set(words(tab.transcript()))
            assert len(english & {"all", "operators", "company", "busy", "customers", "clients", "line", "call",
                                  "answered", "order", "received"}) >= 4, english
            assert tab.errors() == []
        finally:
            tab.close(tmp_path / "page.png")


# --- the microphone ------------------------------------------------------------------------------


def test_the_microphone_records_then_shows_the_text(tab, microphone_file):
    _, seconds = microphone_file
    page = tab.page
    record = page.locator("#record")
    record.click()
    expect(record).to_have_attribute("aria-pressed", "true")
    page.wait_for_function(f"() => document.querySelector('#record-state').textContent.match(/(\\d+) s/)[1] >= {seconds + 1.5}",
                           timeout=60_000)
    record.click()
    tab.wait_for_result()
    expect(record).to_have_attribute("aria-pressed", "false")
    assert_heard(tab.transcript(), MIC_CLIP)
    assert page.locator("#summary").text_content().startswith("recording-")
    assert tab.errors() == []


# --- the README's screenshot ------------------------------------------------------------------------


def screenshot(path: Path, clip: Path = SPEECH / "asterisk-en-demo-echotest.flac") -> None:
    """Serve tiny.en, open the page, upload ``clip`` and save the page as a PNG at ``path``."""
    executable = chromium_path()
    if sync_playwright is None or executable is None:
        raise SystemExit("the screenshot needs Playwright for Python and chromium (apt-get install chromium)")
    with server_process({"EARMARK_MODEL": "tiny.en"}) as running, launched(executable) as browser:
        tab = Tab(browser, running.url, api_key=None, viewport=(1100, 760))
        tab.open()
        tab.page.set_input_files("#file", str(clip))
        tab.page.wait_for_function("() => document.querySelector('#status-text').textContent.startsWith('Done')",
                                   timeout=WAIT_MS)
        tab.page.evaluate("document.querySelector('#player').currentTime = 6.5")
        tab.page.wait_for_function("() => parseFloat(document.querySelector('#playhead').style.left) > 0")
        tab.lane("Speech").locator(".cell").nth(3).hover()
        path.parent.mkdir(parents=True, exist_ok=True)
        tab.page.screenshot(path=str(path))
        tab.context.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshot", type=Path, required=True, help="where to save the PNG")
    screenshot(parser.parse_args().screenshot)
