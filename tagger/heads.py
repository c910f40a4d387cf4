"""Tagging heads over a frozen Whisper encoder, their JSON cards, and loading/saving them.

Every head reads the pooled block outputs ``[B, L, T, D]``: B tag windows, the L encoder blocks'
outputs (before ``ln_post``), T steps of 0.4 s (mean-pooled over 20 encoder frames), width D.
It returns logits ``[B, n_classes]``, one row per window. T may be anything from 1 up: a 10 s
window is 25 steps, 4.4 s is 11, and the last window of a file may be shorter.

Head types (the Whisper-AT paper's names):

- ``last_mlp``: the last block only, mean over time, LayerNorm + Linear.
- ``wa_mlp``: mean over time, a learnable weighted average of the blocks, LayerNorm + Linear.
- ``wa_tr``: a learnable weighted average of the blocks at every step, one transformer block
  over time, mean over time, LayerNorm + Linear.
- ``tl_tr``: TL-Tr, Whisper-AT's released head: a 1-head transformer block over time for each
  block's output, mean over time, an 8-head transformer block over the L blocks, mean over the
  blocks, LayerNorm + Linear.
- ``tl_tr_512``: TL-Tr-512, the same after a LayerNorm + Linear projection down to width 512.
- ``linear``: the linear-probe baseline, a logistic regression on every block's time mean
  (each block's mean normalised on its own, the L blocks concatenated), to see what a head adds.

The TL-Tr parameter names are those of the released Whisper-AT checkpoints (after their
``at_model.`` prefix), so those ``.pth`` files load strictly into ``TLTr`` / ``TLTr512``.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from whisper.model import LayerNorm, Linear, ResidualAttentionBlock

from .labels import LabelSet, audioset

CARD_FORMAT = "earmark-head-card"
CARD_VERSION = 1
AUDIOSET_CLASSES = 527
TL_TR_512_WIDTH = 512

# Encoder (layers, width) of the official Whisper models; the .en models have the same shapes.
WHISPER_ENCODERS: dict[str, tuple[int, int]] = {
    "tiny": (4, 384),
    "base": (6, 512),
    "small": (12, 768),
    "medium": (24, 1024),
    "large": (32, 1280),  # large-v1, -v2, -v3 and turbo alike
}
_LAYERS_BY_WIDTH = {width: layers for layers, width in WHISPER_ENCODERS.values()}
_OFFICIAL_NAME = re.compile(r"^(?P<name>(tiny|base|small|medium)(\.en)?|large(-v[123])?)(_ori|_low)?$")


def _whisper_size(n_layers: int, d_model: int) -> str | None:
    return next((name for name, dims in WHISPER_ENCODERS.items() if dims == (n_layers, d_model)), None)


def _describe_encoder(n_layers: int, d_model: int) -> str:
    size = _whisper_size(n_layers, d_model)
    return f"{n_layers} blocks of width {d_model}" + (f" (Whisper {size})" if size else "")


# ---------------------------------------------------------------------------------------------
# Head modules


class Head(nn.Module):
    """Base class: pooled block outputs ``[B, L, T, D]`` (any T >= 1) -> logits ``[B, n_classes]``."""

    head_type: ClassVar[str]

    def __init__(self, n_layers: int, d_model: int, n_classes: int = AUDIOSET_CLASSES):
        super().__init__()
        if n_layers < 1 or d_model < 1 or n_classes < 1:
            raise ValueError(
                f"{type(self).__name__}: n_layers, d_model and n_classes must be positive; "
                f"got {n_layers}, {d_model}, {n_classes}"
            )
        self.n_layers = n_layers
        self.d_model = d_model
        self.n_classes = n_classes

    def check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.n_layers or x.shape[3] != self.d_model or x.shape[2] < 1:
            raise ValueError(
                f"{self.head_type} head expects pooled features [B, {self.n_layers}, T>=1, "
                f"{self.d_model}] (B windows, {self.n_layers} encoder blocks, T steps of 0.4 s, "
                f"width {self.d_model}); got {list(x.shape)}"
            )

    @property
    def device(self) -> torch.device:
        first = next(self.parameters(), None)  # None: every layer is int8 (``int8_head``), on the CPU
        return torch.device("cpu") if first is None else first.device

    @property
    def dtype(self) -> torch.dtype:
        first = next(self.parameters(), None)
        return torch.float32 if first is None else first.dtype

    def extra_repr(self) -> str:
        return f"n_layers={self.n_layers}, d_model={self.d_model}, n_classes={self.n_classes}"


HEAD_TYPES: dict[str, type[Head]] = {}


def register_head(cls: type[Head]) -> type[Head]:
    HEAD_TYPES[cls.head_type] = cls
    return cls


def _classifier(width: int, n_classes: int) -> nn.Sequential:
    # Whisper's LayerNorm (computed in float32) and Linear (weights cast to the input's dtype);
    # the parameter names are those of nn.LayerNorm / nn.Linear.
    return nn.Sequential(LayerNorm(width), Linear(width, n_classes))


def _attention_heads(width: int, preferred: int = 8) -> int:
    """The largest head count <= ``preferred`` that divides ``width``."""
    return next(h for h in range(preferred, 0, -1) if width % h == 0)


def _layer_average(weights: Tensor, x: Tensor) -> Tensor:
    """Weighted average over dim 1 (the blocks) with weights normalised by their sum."""
    return torch.einsum("bl...,l->b...", x, (weights / weights.sum()).to(x.dtype))


@register_head
class LastMLP(Head):
    """The last block's output, mean over time, LayerNorm + Linear."""

    head_type = "last_mlp"

    def __init__(self, n_layers: int, d_model: int, n_classes: int = AUDIOSET_CLASSES):
        super().__init__(n_layers, d_model, n_classes)
        self.mlp_layer = _classifier(d_model, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.mlp_layer(x[:, -1].mean(dim=1))


@register_head
class WAMLP(Head):
    """Mean over time, learnable weighted average of the blocks (init 1/L), LayerNorm + Linear."""

    head_type = "wa_mlp"

    def __init__(self, n_layers: int, d_model: int, n_classes: int = AUDIOSET_CLASSES):
        super().__init__(n_layers, d_model, n_classes)
        self.layer_weight = nn.Parameter(torch.full((n_layers,), 1.0 / n_layers))
        self.mlp_layer = _classifier(d_model, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.mlp_layer(_layer_average(self.layer_weight, x.mean(dim=2)))


@register_head
class WATr(Head):
    """Learnable weighted average of the blocks at every step, one transformer block over time
    (8 attention heads, or the largest count below 8 that divides D), mean over time, LayerNorm + Linear."""

    head_type = "wa_tr"

    def __init__(self, n_layers: int, d_model: int, n_classes: int = AUDIOSET_CLASSES):
        super().__init__(n_layers, d_model, n_classes)
        self.layer_weight = nn.Parameter(torch.full((n_layers,), 1.0 / n_layers))
        self.time_tr = ResidualAttentionBlock(d_model, _attention_heads(d_model))
        self.mlp_layer = _classifier(d_model, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        steps = _layer_average(self.layer_weight, x)  # [B, T, D]
        return self.mlp_layer(self.time_tr(steps).mean(dim=1))


@register_head
class TLTr(Head):
    """Whisper-AT's TL-Tr (reference mode ``tl_tr_1_8``): time transformer per block (1 head),
    mean over time, layer transformer over the blocks (8 heads), mean over blocks, LayerNorm + Linear."""

    head_type = "tl_tr"
    time_heads: ClassVar[int] = 1
    layer_heads: ClassVar[int] = 8

    def __init__(self, n_layers: int, d_model: int, n_classes: int = AUDIOSET_CLASSES):
        super().__init__(n_layers, d_model, n_classes)
        width = self.width
        if width % self.layer_heads:
            raise ValueError(f"{self.head_type}: width {width} is not divisible by {self.layer_heads} attention heads")
        self.time_tr = ResidualAttentionBlock(width, self.time_heads)
        self.layer_tr = ResidualAttentionBlock(width, self.layer_heads)
        self.mlp_layer = _classifier(width, n_classes)

    @property
    def width(self) -> int:
        return self.d_model

    def project(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        batch, layers, steps, _ = x.shape
        x = self.project(x)
        # One attention batch of B*L sequences over time: [B*L, T, W].
        x = self.time_tr(x.reshape(batch * layers, steps, x.shape[-1])).mean(dim=1)
        x = self.layer_tr(x.reshape(batch, layers, x.shape[-1])).mean(dim=1)  # [B, W]
        return self.mlp_layer(x)


@register_head
class TLTr512(TLTr):
    """Whisper-AT's TL-Tr-512 (reference mode ``tl_down_tr_512_1_8``): LayerNorm + Linear down to
    width 512, then TL-Tr at width 512."""

    head_type = "tl_tr_512"

    def __init__(self, n_layers: int, d_model: int, n_classes: int = AUDIOSET_CLASSES):
        super().__init__(n_layers, d_model, n_classes)
        self.down_layer = nn.Sequential(LayerNorm(d_model), Linear(d_model, TL_TR_512_WIDTH))

    @property
    def width(self) -> int:
        return TL_TR_512_WIDTH

    def project(self, x: Tensor) -> Tensor:
        return self.down_layer(x)


@register_head
class LinearProbe(Head):
    """A logistic regression on the pooled features of every block (the linear-probe baseline):
    mean over time of each block's output, each block's mean normalised on its own (a LayerNorm
    without parameters), the L blocks concatenated (``L * D`` inputs), one Linear layer.

    Concatenated rather than averaged: a learned average of the blocks with LayerNorm + Linear is
    ``wa_mlp`` already, while a probe reads every block through weights of its own. The
    normalisation puts the blocks on one scale (the residual stream grows with depth and a few
    dimensions of the last blocks are large), so no block dominates by its scale alone; a LayerNorm's
    affine parameters would fold into the Linear layer, so the model is a linear function of the
    normalised features either way."""

    head_type = "linear"
    n_statistics = 1  # pooled vectors per block

    def __init__(self, n_layers: int, d_model: int, n_classes: int = AUDIOSET_CLASSES):
        super().__init__(n_layers, d_model, n_classes)
        self.linear = Linear(self.n_statistics * n_layers * d_model, n_classes)

    def statistics(self, x: Tensor) -> Tensor:
        """``[B, L, T, D]`` -> the pooled vectors ``[B, n_statistics * L, D]``: each block's time mean."""
        return x.mean(dim=2)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        pooled = nn.functional.layer_norm(self.statistics(x.float()), (self.d_model,))  # in float32
        return self.linear(pooled.flatten(1).to(x.dtype))


@register_head
class StatsProbe(LinearProbe):
    """The linear probe with the time maximum beside the mean: each block's mean and maximum over
    time, each normalised on its own (a LayerNorm without parameters), the ``2 * L`` vectors
    concatenated, one Linear layer. A short event (a bark, a knock) moves a block's maximum far more
    than its mean over a clip."""

    head_type = "stats"
    n_statistics = 2

    def statistics(self, x: Tensor) -> Tensor:
        return torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)


def create_head(head_type: str, n_layers: int, d_model: int, n_classes: int = AUDIOSET_CLASSES) -> Head:
    """A freshly initialised head of ``head_type`` for an encoder of ``n_layers`` blocks of width ``d_model``."""
    try:
        cls = HEAD_TYPES[head_type]
    except KeyError:
        raise ValueError(f"unknown head type {head_type!r}; valid types: {', '.join(HEAD_TYPES)}") from None
    return cls(n_layers, d_model, n_classes)


# ---------------------------------------------------------------------------------------------
# Cards


@dataclass
class HeadCard:
    """What a head is and what it fits: travels as JSON next to the weights."""

    head_type: str
    n_layers: int
    d_model: int
    labels: LabelSet
    multi_label: bool = True  # sigmoid per class (multi-label) vs softmax over classes (single-label)
    backbone: str | None = None  # e.g. "base"
    backbone_sha256: str | None = None
    source: str | None = None  # where it came from (a file name, "whisper-at", ...)
    extra: dict = field(default_factory=dict)  # training data summary, metrics, command line, ...

    def __post_init__(self) -> None:
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"unknown head type {self.head_type!r}; valid types: {', '.join(HEAD_TYPES)}")
        if not isinstance(self.labels, LabelSet):
            raise TypeError(f"HeadCard.labels must be a LabelSet, not {type(self.labels).__name__}")

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict:
        return {
            "format": CARD_FORMAT,
            "format_version": CARD_VERSION,
            "head_type": self.head_type,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "n_classes": self.n_classes,
            "multi_label": self.multi_label,
            "backbone": self.backbone,
            "backbone_sha256": self.backbone_sha256,
            "source": self.source,
            "label_set": self.labels.name,
            "labels": self.labels.to_json(),
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HeadCard:
        if d.get("format", CARD_FORMAT) != CARD_FORMAT:
            raise ValueError(f"not a head card: format is {d.get('format')!r}, expected {CARD_FORMAT!r}")
        version = d.get("format_version", CARD_VERSION)
        if not isinstance(version, int) or version > CARD_VERSION:
            raise ValueError(
                f"head card format version {version!r} is newer than this Earmark reads ({CARD_VERSION}); "
                "upgrade Earmark"
            )
        missing = [key for key in ("head_type", "n_layers", "d_model", "labels") if key not in d]
        if missing:
            raise ValueError(f"head card lacks {', '.join(missing)}")
        labels = _labels_from_json(d.get("label_set", "custom"), d["labels"])
        if "n_classes" in d and d["n_classes"] != len(labels):
            raise ValueError(f"head card says n_classes={d['n_classes']} but lists {len(labels)} labels")
        return cls(
            head_type=d["head_type"],
            n_layers=int(d["n_layers"]),
            d_model=int(d["d_model"]),
            labels=labels,
            multi_label=bool(d.get("multi_label", True)),
            backbone=d.get("backbone"),
            backbone_sha256=d.get("backbone_sha256"),
            source=d.get("source"),
            extra=dict(d.get("extra") or {}),
        )


def _labels_from_json(name: str, rows: Any) -> LabelSet:
    if isinstance(rows, str):  # a bare reference to a built-in set
        if rows == "audioset":
            return audioset()
        raise ValueError(f"unknown built-in label set {rows!r}; a card lists its labels or says 'audioset'")
    labels = LabelSet.from_json(name, rows)
    return audioset() if name == "audioset" and labels == audioset() else labels


def check_backbone(card: HeadCard, n_layers: int, d_model: int, backbone_sha256: str | None = None) -> None:
    """Raise ValueError if the head described by ``card`` does not fit this encoder."""
    what = f"the {card.head_type} head" + (f" from {card.source}" if card.source else "")
    if (card.n_layers, card.d_model) != (n_layers, d_model):
        raise ValueError(
            f"{what} was made for a Whisper encoder with {_describe_encoder(card.n_layers, card.d_model)}, "
            f"but this model's encoder has {_describe_encoder(n_layers, d_model)}; "
            f"load a head trained for this model"
        )
    if card.backbone_sha256 and backbone_sha256 and card.backbone_sha256.lower() != backbone_sha256.lower():
        trained_on = f"{card.backbone} " if card.backbone else ""
        raise ValueError(
            f"{what} was trained on the Whisper weights {trained_on}(sha256 {card.backbone_sha256[:12]}...), "
            f"but this model's weights have sha256 {backbone_sha256[:12]}...; a head only fits the "
            f"exact encoder weights it was trained on"
        )


# ---------------------------------------------------------------------------------------------
# Loaded heads, saving and loading


@dataclass
class LoadedHead:
    """A head module in eval mode with its card."""

    module: Head
    card: HeadCard

    def __post_init__(self) -> None:
        m, c = self.module, self.card
        if (m.head_type, m.n_layers, m.d_model, m.n_classes) != (c.head_type, c.n_layers, c.d_model, c.n_classes):
            raise ValueError(
                f"head module ({m.head_type}, L={m.n_layers}, D={m.d_model}, {m.n_classes} classes) does not "
                f"match its card ({c.head_type}, L={c.n_layers}, D={c.d_model}, {c.n_classes} classes)"
            )

    @property
    def device(self) -> torch.device:
        return self.module.device

    @property
    def dtype(self) -> torch.dtype:
        return self.module.dtype

    @torch.inference_mode()
    def logits(self, pooled: Tensor) -> Tensor:
        """``[B, L, T, D]`` -> float32 logits ``[B, C]``."""
        return self.module(pooled.to(device=self.device, dtype=self.dtype)).float()

    def probabilities(self, pooled: Tensor) -> Tensor:
        """``[B, L, T, D]`` -> float32 probabilities ``[B, C]``: sigmoid per class if the head is
        multi-label, else softmax over the classes."""
        with torch.inference_mode():
            logits = self.logits(pooled)
            return torch.sigmoid(logits) if self.card.multi_label else torch.softmax(logits, dim=-1)


def int8_head(head: LoadedHead) -> LoadedHead:
    """A copy of ``head`` for CPU inference with its Linear layers in int8 (PyTorch's dynamic
    quantization: int8 weights per output channel, each call's activations quantized on the fly;
    LayerNorms, attention and GELU stay float32), scoring one window per call (``WindowByWindow``).
    Base's TL-Tr then takes about 0.64 of its float32 time per window, and its mAP on held-out
    audio stays within 0.003 (MODEL_CARD.md). The head itself is returned where this torch has no
    dynamic quantization."""
    if isinstance(head.module, WindowByWindow):  # int8 already
        return head
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError:
        return head
    module = copy.deepcopy(head.module).cpu().float()
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear) and type(child) is not nn.Linear:  # whisper's Linear: plain for quantize_dynamic
                plain = nn.Linear(child.in_features, child.out_features, child.bias is not None)
                plain.load_state_dict(child.state_dict())
                setattr(parent, name, plain)
    with warnings.catch_warnings():  # the eager API is marked deprecated; the Makefile and Dockerfile pin torch
        warnings.simplefilter("ignore")
        module = quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig})
    return LoadedHead(module=WindowByWindow(module).eval(), card=head.card)


class WindowByWindow(Head):
    """An int8 head (``int8_head``) that scores each window in a call of its own. Dynamic
    quantization scales all of a call's activations together, so windows scored in one batch would
    move each other's scores (by up to 0.08 on the corpus' test clips); one at a time, a window's
    tags are the same however its request was batched, streamed or cut."""

    def __init__(self, inner: Head):
        super().__init__(inner.n_layers, inner.d_model, inner.n_classes)
        self.inner = inner
        self.head_type = inner.head_type

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        if not x.shape[0]:
            return x.new_zeros(0, self.n_classes)
        return torch.cat([self.inner(x[i : i + 1]) for i in range(x.shape[0])])


class HeadFormatError(ValueError):
    """A head checkpoint that does not match the layout it claims."""


WEIGHTS_SUFFIX = ".safetensors"
OFFICIAL_SUFFIXES = (".pth", ".pt")


def card_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_head(head: Head, card: HeadCard, path: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Write the weights to ``path`` (.safetensors; ``dtype=torch.float16`` halves the file) and
    the card to the same name with ``.json``. Returns the weights' path."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix.lower() in (*OFFICIAL_SUFFIXES, ".json", ".bin", ".ckpt"):
        raise ValueError(f"a head is saved as {WEIGHTS_SUFFIX} (+ a .json card); got {path.name!r}")
    if path.suffix != WEIGHTS_SUFFIX:  # "heads/tiny.en" -> "heads/tiny.en.safetensors"
        path = path.with_name(path.name + WEIGHTS_SUFFIX)
    LoadedHead(head, card)  # checks that the card describes this module
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating point type, got {dtype}")
    tensors = {}
    for name, tensor in head.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous().clone()
    card_json = json.dumps(card.to_json(), indent=2, ensure_ascii=False) + "\n"  # fails before writing anything
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt", "head_type": card.head_type})
    path.chmod(0o644)  # safetensors writes 0600: a head is read by other users (a service, a container)
    card_path(path).write_text(card_json, encoding="utf-8")
    return path


def load_head(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    n_layers: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> LoadedHead:
    """Load a head: an Earmark ``.safetensors`` with its ``.json`` card next to it, or an official
    Whisper-AT ``.pth`` (TL-Tr or TL-Tr-512; strict key and shape match). A ``.pth`` does not say
    how many encoder blocks it reads: pass ``n_layers`` (the backbone's), else it is inferred from
    the width of the official Whisper sizes. The head is returned in eval mode, in ``dtype``
    (float32 by default: heads are small, and CPU LayerNorm needs float32 parameters)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no head checkpoint at {path}")
    suffix = path.suffix.lower()
    if suffix == WEIGHTS_SUFFIX:
        loaded = _load_safetensors(path, n_layers)
    elif suffix in OFFICIAL_SUFFIXES:
        loaded = _load_official(path, n_layers)
    else:
        raise ValueError(
            f"unknown head file type {path.name!r}: expected an Earmark head ({WEIGHTS_SUFFIX} with a "
            f".json card) or an official Whisper-AT checkpoint ({', '.join(OFFICIAL_SUFFIXES)})"
        )
    loaded.module.to(device=device, dtype=dtype).eval()
    return loaded


def _load_safetensors(path: Path, n_layers: int | None) -> LoadedHead:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    card_file = card_path(path)
    if not card_file.is_file():
        raise FileNotFoundError(
            f"head weights {path.name} need their card {card_file.name} next to them "
            f"(written by save_head); it is missing from {card_file.parent}"
        )
    try:
        card = HeadCard.from_json(json.loads(card_file.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValueError, TypeError, KeyError) as error:
        raise HeadFormatError(f"bad head card {card_file}: {error}") from error
    if n_layers is not None and n_layers != card.n_layers:
        raise ValueError(
            f"the head {path.name} reads {_describe_encoder(card.n_layers, card.d_model)} of a Whisper "
            f"encoder, but the model it is loaded for has {n_layers} blocks; load a head trained for this model"
        )
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise HeadFormatError(f"cannot read head weights {path}: {error}") from error
    module = _empty_head(card.head_type, card.n_layers, card.d_model, card.n_classes)
    _load_strict(module, state, path.name)
    return LoadedHead(module=module, card=card)


def _official_state(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle/zip errors come in many types
        raise HeadFormatError(f"cannot read {path.name} as a PyTorch checkpoint: {error}") from error
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise HeadFormatError(f"{path.name} is not a state dict of tensors (an official Whisper-AT head checkpoint)")
    state = {}
    for key, value in obj.items():
        stripped = key
        while stripped.startswith(("at_model.", "module.")):
            stripped = stripped.split(".", 1)[1]
        if stripped in state:
            raise HeadFormatError(
                f"{path.name}: key {key!r} repeats {stripped!r} after removing the at_model./module. prefixes"
            )
        state[stripped] = value
    return state


def _load_official(path: Path, n_layers: int | None) -> LoadedHead:
    state = _official_state(path)
    head_type = "tl_tr_512" if any(k.startswith("down_layer.") for k in state) else "tl_tr"
    width_key = "down_layer.0.weight" if head_type == "tl_tr_512" else "time_tr.attn_ln.weight"
    if width_key not in state or "mlp_layer.1.weight" not in state:
        absent = [k for k in (width_key, "mlp_layer.1.weight") if k not in state]
        raise HeadFormatError(
            f"{path.name} is not a Whisper-AT TL-Tr head: it lacks {', '.join(absent)} "
            f"(keys found: {_summarise(sorted(state))})"
        )
    d_model = int(state[width_key].shape[0])
    n_classes = int(state["mlp_layer.1.weight"].shape[0])
    if n_classes != AUDIOSET_CLASSES:
        raise HeadFormatError(
            f"{path.name} scores {n_classes} classes; official Whisper-AT heads score the "
            f"{AUDIOSET_CLASSES} AudioSet classes"
        )
    if n_layers is None:
        n_layers = _LAYERS_BY_WIDTH.get(d_model)
        if n_layers is None:
            raise ValueError(
                f"{path.name} is a {head_type} head for width {d_model}, which is no official Whisper "
                f"size; pass n_layers= (the number of encoder blocks it reads)"
            )
    module = _empty_head(head_type, n_layers, d_model, n_classes)
    _load_strict(module, state, path.name)
    match = _OFFICIAL_NAME.match(path.stem)
    card = HeadCard(
        head_type=head_type,
        n_layers=n_layers,
        d_model=d_model,
        labels=audioset(),
        multi_label=True,
        backbone=match.group("name") if match else None,
        source="whisper-at",
        extra={
            "file": path.name,
            "format": "whisper-at .pth",
            "reference_mode": "tl_down_tr_512_1_8" if head_type == "tl_tr_512" else "tl_tr_1_8",
        },
    )
    return LoadedHead(module=module, card=card)


def _empty_head(head_type: str, n_layers: int, d_model: int, n_classes: int) -> Head:
    """A head without storage (no random init to pay for); ``_load_strict`` assigns its weights."""
    with torch.device("meta"):
        return create_head(head_type, n_layers, d_model, n_classes)


def _summarise(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "") if keys else "none"


def _load_strict(module: Head, state: Mapping[str, Tensor], source: str) -> None:
    """load_state_dict(strict=True) with errors that name every missing/unexpected key and shape."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise HeadFormatError(
            f"{source} does not match a {module.head_type} head for "
            f"{_describe_encoder(module.n_layers, module.d_model)}: "
            f"missing keys: {_summarise(missing)}; unexpected keys: {_summarise(unexpected)}"
        )
    wrong = [
        f"{k}: expected {list(expected[k].shape)}, got {list(state[k].shape)}"
        for k in expected
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise HeadFormatError(
            f"{source} does not match a {module.head_type} head for "
            f"{_describe_encoder(module.n_layers, module.d_model)}: shape mismatch: " + "; ".join(wrong)
        )
    bad = [k for k, v in state.items() if not v.is_floating_point()]
    if bad:
        raise HeadFormatError(f"{source}: non-floating-point weights: {', '.join(bad)}")
    if any(not torch.isfinite(v.sum(dtype=torch.float64)) for v in state.values()):  # NaN/inf propagate
        raise HeadFormatError(f"{source}: weights contain NaN or infinity")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True, assign=True)
    if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        raise HeadFormatError(f"{source}: the {module.head_type} head has tensors that no checkpoint provides")
