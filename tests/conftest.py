"""Shared fixtures: real Whisper weights from the bundled packages, never the network."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("EARMARK_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))  # tests import speech_fixtures as a plain module

from tagger import load_model
from tagger.heads import HeadCard, LoadedHead, create_head
from tagger.labels import audioset


@pytest.fixture(scope="session")
def tiny_en():
    """tiny.en without a tagging head (tests/test_default_heads.py covers the bundled ones)."""
    return load_model("tiny.en", head=None, device="cpu")


@pytest.fixture(scope="session")
def base():
    return load_model("base", head=None, device="cpu")


def seeded_head(head_type: str, n_layers: int, d_model: int, seed: int = 0) -> LoadedHead:
    """A head with seeded random weights. It exercises the tagging machinery (shapes, windows,
    batching, encoder calls); it is never shipped or used as a default, and its tags mean nothing."""
    torch.manual_seed(seed)
    module = create_head(head_type, n_layers, d_model).eval()
    card = HeadCard(head_type=head_type, n_layers=n_layers, d_model=d_model, labels=audioset(), source="test-seeded")
    return LoadedHead(module=module, card=card)


@pytest.fixture(scope="session")
def tiny_en_tagged(tiny_en):
    """tiny.en with a seeded TL-Tr head, sharing the already loaded Whisper weights."""
    from tagger.pipeline import EarmarkModel

    head = seeded_head("tl_tr", tiny_en.backbone.n_layers, tiny_en.backbone.d_model)
    return EarmarkModel(tiny_en.whisper, tiny_en.weights, head)
