"""``earmark convert-head``: an official Whisper-AT ``.pth`` head -> Earmark safetensors + JSON card.

The official files (``{model}_ori.pth`` for TL-Tr, ``{model}_low.pth`` for TL-Tr-512) carry no
metadata; ``tagger.heads.load_head`` reads them strictly (every key and shape). The number of
encoder blocks comes from ``--model`` (else from the file name, else from the width of the official
Whisper sizes), and the card records the backbone name and, with ``--backbone-sha256``, the exact
encoder weights' checksum (``EarmarkModel.backbone.sha256``; left empty otherwise: the official heads were trained on OpenAI's released
weights, not on one particular file of this machine).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from ..heads import WEIGHTS_SUFFIX, WHISPER_ENCODERS, LoadedHead, load_head, save_head
from ..weights import file_sha256

_SIZE = re.compile(r"^(?P<size>tiny|base|small|medium|large)(\.en)?(-v[123])?$")


def encoder_layers(model: str) -> int:
    """Encoder blocks of an official Whisper model name (``base``, ``base.en``, ``large-v2``, ...)."""
    match = _SIZE.match(model.strip().lower().replace("turbo", "large"))
    if not match:
        raise ValueError(f"unknown Whisper model {model!r}; give one of tiny, base, small, medium, large "
                         f"(optionally .en or -v1/-v2/-v3)")
    return WHISPER_ENCODERS[match.group("size")][0]


def convert_official_head(source: str | Path, out: str | Path, *, model: str | None = None,
                          backbone_sha256: str | None = None, fp16: bool = False) -> tuple[Path, LoadedHead]:
    """Convert an official Whisper-AT ``.pth`` to ``out`` (.safetensors + .json); returns (path, head)."""
    source = Path(source)
    n_layers = encoder_layers(model) if model else None
    head = load_head(source, n_layers=n_layers)
    card = head.card
    if model:
        width = WHISPER_ENCODERS[_SIZE.match(model.strip().lower().replace("turbo", "large")).group("size")][1]
        if card.d_model != width:
            raise ValueError(f"{source.name} is a {card.head_type} head for encoder width {card.d_model}, but Whisper "
                             f"{model} has width {width}; pass the --model the head was trained for")
    if model:
        card.backbone = model
    if backbone_sha256:
        card.backbone_sha256 = backbone_sha256.lower()
    card.extra = {**card.extra, "converted_from": source.name, "converted_from_sha256": file_sha256(source),
                  "converter": "earmark convert-head"}
    out = Path(out)
    if out.suffix != WEIGHTS_SUFFIX:
        out = out.with_name(out.name + WEIGHTS_SUFFIX)
    path = save_head(head.module, card, out, dtype=torch.float16 if fp16 else None)
    return path, head


def add_convert_head_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="an official Whisper-AT head (.pth), e.g. base_ori.pth or large-v1_low.pth")
    parser.add_argument("--out", required=True, type=Path, help="the Earmark head to write (.safetensors + .json card)")
    parser.add_argument("--model", default=None,
                        help="the Whisper model the head belongs to (sets the encoder block count and the card's "
                             "backbone; default: from the file name)")
    parser.add_argument("--backbone-sha256", default=None, help="record the encoder weights' sha256 (load_model(NAME).backbone.sha256) in the card")
    parser.add_argument("--fp16", action="store_true", help="save the weights as float16")


def run_convert_head(args: argparse.Namespace) -> int:
    try:
        path, head = convert_official_head(args.source, args.out, model=args.model,
                                           backbone_sha256=args.backbone_sha256, fp16=args.fp16)
    except (FileNotFoundError, ValueError) as error:
        print(f"earmark convert-head: {error}", file=sys.stderr)
        return 2
    card = head.card
    print(f"wrote {path} ({card.head_type}, {card.n_layers} blocks of width {card.d_model}, "
          f"{card.n_classes} classes, backbone {card.backbone or 'unknown'})")
    return 0
