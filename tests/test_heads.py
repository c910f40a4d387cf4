"""Tagging heads: shapes, batching, saving/loading, official Whisper-AT checkpoints, parameter counts."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from safetensors import safe_open

from tagger.heads import (
    HEAD_TYPES,
    Head,
    HeadCard,
    LoadedHead,
    TLTr,
    TLTr512,
    check_backbone,
    create_head,
    load_head,
    save_head,
)
from tagger.labels import LabelSet, audioset

ALL_TYPES = ["last_mlp", "wa_mlp", "wa_tr", "tl_tr", "tl_tr_512", "linear", "stats"]
L, D = 4, 64  # a small encoder for the generic head tests


# ---------------------------------------------------------------------------------------------
# The published Whisper-AT checkpoint layout: the contract, written out rather than derived
# from our modules. Each transformer block is a whisper ResidualAttentionBlock of width W.


def block_layout(prefix: str, w: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.attn.query.weight": (w, w),
        f"{prefix}.attn.query.bias": (w,),
        f"{prefix}.attn.key.weight": (w, w),  # no key bias
        f"{prefix}.attn.value.weight": (w, w),
        f"{prefix}.attn.value.bias": (w,),
        f"{prefix}.attn.out.weight": (w, w),
        f"{prefix}.attn.out.bias": (w,),
        f"{prefix}.attn_ln.weight": (w,),
        f"{prefix}.attn_ln.bias": (w,),
        f"{prefix}.mlp.0.weight": (4 * w, w),
        f"{prefix}.mlp.0.bias": (4 * w,),
        f"{prefix}.mlp.2.weight": (w, 4 * w),
        f"{prefix}.mlp.2.bias": (w,),
        f"{prefix}.mlp_ln.weight": (w,),
        f"{prefix}.mlp_ln.bias": (w,),
    }


def official_layout(d_model: int, low_dim: bool) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of a released head: ``{name}_ori.pth`` (TL-Tr) or ``{name}_low.pth`` (TL-Tr-512)."""
    w = 512 if low_dim else d_model
    layout = {}
    if low_dim:
        layout.update(
            {
                "at_model.down_layer.0.weight": (d_model,),
                "at_model.down_layer.0.bias": (d_model,),
                "at_model.down_layer.1.weight": (512, d_model),
                "at_model.down_layer.1.bias": (512,),
            }
        )
    layout.update(block_layout("at_model.time_tr", w))
    layout.update(block_layout("at_model.layer_tr", w))
    layout.update(
        {
            "at_model.mlp_layer.0.weight": (w,),
            "at_model.mlp_layer.0.bias": (w,),
            "at_model.mlp_layer.1.weight": (527, w),
            "at_model.mlp_layer.1.bias": (527,),
        }
    )
    return layout


def official_state(d_model: int, low_dim: bool, seed: int = 0) -> OrderedDict:
    gen = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (key, 0.02 * torch.randn(shape, generator=gen)) for key, shape in official_layout(d_model, low_dim).items()
    )


OFFICIAL_CASES = [  # (file name, head type, L, D)
    ("tiny_ori.pth", "tl_tr", 4, 384),
    ("base_ori.pth", "tl_tr", 6, 512),
    ("small_low.pth", "tl_tr_512", 12, 768),
]


@pytest.mark.parametrize("name,head_type,n_layers,d_model", OFFICIAL_CASES)
def test_official_checkpoint_loads_strictly(tmp_path, name, head_type, n_layers, d_model):
    state = official_state(d_model, low_dim=head_type == "tl_tr_512")
    assert len(state) == (34 if head_type == "tl_tr" else 38)
    path = tmp_path / name
    torch.save(state, path)

    loaded = load_head(path, n_layers=n_layers)
    module, card = loaded.module, loaded.card
    assert isinstance(module, TLTr512 if head_type == "tl_tr_512" else TLTr)
    assert (card.head_type, card.n_layers, card.d_model, card.n_classes) == (head_type, n_layers, d_model, 527)
    assert card.labels is audioset() and card.multi_label
    assert card.source == "whisper-at" and card.backbone == name.split("_")[0]
    assert not module.training
    ours = module.state_dict()
    assert {f"at_model.{k}" for k in ours} == set(state)
    for key, value in state.items():
        assert torch.equal(ours[key.removeprefix("at_model.")], value), key

    x = torch.randn(2, n_layers, 25, d_model)
    probs = loaded.probabilities(x)
    assert probs.shape == (2, 527) and probs.dtype == torch.float32
    assert ((probs >= 0) & (probs <= 1)).all()

    # n_layers is not in the weights: without it, it comes from the official Whisper size of that width.
    assert load_head(path).card.n_layers == n_layers


def test_official_checkpoint_prefixes(tmp_path):
    state = official_state(384, low_dim=False)
    torch.save(OrderedDict((f"module.{k}", v) for k, v in state.items()), tmp_path / "a.pth")
    torch.save(OrderedDict((k.removeprefix("at_model."), v) for k, v in state.items()), tmp_path / "b.pt")
    for name in ("a.pth", "b.pt"):
        loaded = load_head(tmp_path / name, n_layers=4)
        assert loaded.card.head_type == "tl_tr" and loaded.card.backbone is None
        assert torch.equal(loaded.module.mlp_layer[1].weight, state["at_model.mlp_layer.1.weight"])


def test_official_checkpoint_errors(tmp_path):
    base = official_state(512, low_dim=False)

    extra = OrderedDict(base)
    extra["at_model.time_tr.attn.key.bias"] = torch.zeros(512)
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"unexpected keys: time_tr\.attn\.key\.bias") as caught:
        load_head(tmp_path / "extra.pth", n_layers=6)
    assert "missing keys: none" in str(caught.value)

    missing = OrderedDict(base)
    del missing["at_model.layer_tr.attn.out.bias"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing keys: layer_tr\.attn\.out\.bias"):
        load_head(tmp_path / "missing.pth", n_layers=6)

    wrong = OrderedDict(base)
    wrong["at_model.time_tr.mlp.0.weight"] = torch.zeros(1024, 512)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(
        ValueError, match=r"shape mismatch: time_tr\.mlp\.0\.weight: expected \[2048, 512\], got \[1024, 512\]"
    ):
        load_head(tmp_path / "wrong.pth", n_layers=6)

    classes = OrderedDict(base)
    classes["at_model.mlp_layer.1.weight"] = torch.zeros(10, 512)
    torch.save(classes, tmp_path / "classes.pth")
    with pytest.raises(ValueError, match="scores 10 classes"):
        load_head(tmp_path / "classes.pth", n_layers=6)

    broken = OrderedDict(base)
    broken["at_model.layer_tr.attn_ln.weight"] = torch.full((512,), float("nan"))
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="NaN or infinity"):
        load_head(tmp_path / "broken.pth", n_layers=6)

    torch.save({"encoder.conv1.weight": torch.zeros(3)}, tmp_path / "whisper.pth")
    with pytest.raises(ValueError, match="not a Whisper-AT TL-Tr head"):
        load_head(tmp_path / "whisper.pth")

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read junk.pth"):
        load_head(tmp_path / "junk.pth")

    odd = official_state(64, low_dim=False)
    torch.save(odd, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="pass n_layers"):
        load_head(tmp_path / "odd.pth")
    assert load_head(tmp_path / "odd.pth", n_layers=3).card.n_layers == 3


def test_unknown_file_type_and_missing_files(tmp_path):
    (tmp_path / "head.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown head file type 'head.onnx'"):
        load_head(tmp_path / "head.onnx")
    with pytest.raises(FileNotFoundError, match="no head checkpoint"):
        load_head(tmp_path / "absent.safetensors")
    path = save_head(create_head("last_mlp", L, D), card_for("last_mlp"), tmp_path / "h.safetensors")
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match=r"need their card h\.json"):
        load_head(path)


# ---------------------------------------------------------------------------------------------
# Every head type


def card_for(head_type: str, n_layers: int = L, d_model: int = D, **kwargs) -> HeadCard:
    return HeadCard(head_type=head_type, n_layers=n_layers, d_model=d_model, labels=audioset(), **kwargs)


@pytest.fixture(scope="module")
def heads() -> dict[str, Head]:
    torch.manual_seed(0)
    made = {}
    for head_type in ALL_TYPES:
        head = create_head(head_type, L, D).eval()
        with torch.no_grad():  # move off the init so layer weights and LayerNorms matter
            for param in head.parameters():
                param.add_(0.05 * torch.randn_like(param))
        made[head_type] = head
    return made


def test_registry():
    assert sorted(HEAD_TYPES) == sorted(ALL_TYPES)
    for head_type, cls in HEAD_TYPES.items():
        assert cls.head_type == head_type
    with pytest.raises(ValueError, match="unknown head type 'tl_trr'; valid types: .*tl_tr_512"):
        create_head("tl_trr", L, D)


@pytest.mark.parametrize("steps", [1, 11, 25, 75])
@pytest.mark.parametrize("head_type", ALL_TYPES)
def test_forward_shapes_and_batching(heads, head_type, steps):
    head = heads[head_type]
    x = torch.randn(3, L, steps, D)
    with torch.no_grad():
        batched = head(x)
        single = torch.cat([head(x[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 527)
    assert torch.isfinite(batched).all()
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head_type", ALL_TYPES)
def test_wrong_input_shape(heads, head_type):
    with pytest.raises(ValueError, match=rf"expects pooled features \[B, {L}, T>=1, {D}\]"):
        heads[head_type](torch.randn(2, L + 1, 5, D))
    with pytest.raises(ValueError, match="got \\[4, 5, 64\\]"):
        heads[head_type](torch.randn(L, 5, D))


@pytest.mark.parametrize("multi_label", [True, False])
@pytest.mark.parametrize("head_type", ALL_TYPES)
def test_probabilities(heads, head_type, multi_label):
    loaded = LoadedHead(heads[head_type], card_for(head_type, multi_label=multi_label))
    x = torch.randn(2, L, 11, D, dtype=torch.float64)  # cast to the head's dtype
    probs = loaded.probabilities(x)
    assert probs.shape == (2, 527) and probs.dtype == torch.float32
    assert ((probs >= 0) & (probs <= 1)).all()
    if not multi_label:
        torch.testing.assert_close(probs.sum(dim=-1), torch.ones(2))
    logits = heads[head_type](x.float()).detach()
    expected = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
    torch.testing.assert_close(probs, expected)
    assert not probs.requires_grad


def test_loaded_head_card_must_match_module(heads):
    with pytest.raises(ValueError, match="does not match its card"):
        LoadedHead(heads["tl_tr"], card_for("tl_tr", n_layers=L + 1))
    with pytest.raises(ValueError, match="does not match its card"):
        LoadedHead(heads["tl_tr"], card_for("wa_tr"))


@pytest.mark.parametrize("head_type", ALL_TYPES)
def test_save_load_round_trip(tmp_path, heads, head_type):
    head = heads[head_type]
    card = card_for(
        head_type,
        backbone="tiny",
        backbone_sha256="ab" * 32,
        source="unit test",
        extra={"epochs": 3, "metrics": {"mAP": 0.25}},
    )
    x = torch.randn(2, L, 25, D)
    with torch.no_grad():
        expected = head(x)

    path = save_head(head, card, tmp_path / f"{head_type}.safetensors")
    assert path == tmp_path / f"{head_type}.safetensors" and path.with_suffix(".json").is_file()
    loaded = load_head(path)
    assert type(loaded.module) is type(head) and not loaded.module.training
    assert loaded.card == card and loaded.card.labels is audioset()
    torch.testing.assert_close(loaded.logits(x), expected, rtol=0, atol=0)

    half = save_head(head, card, tmp_path / f"{head_type}.fp16", dtype=torch.float16)
    assert half.name == f"{head_type}.fp16.safetensors" and half.with_suffix(".json").is_file()
    with safe_open(str(half), framework="pt") as stored:
        names = stored.keys()
        assert {stored.get_slice(name).get_dtype() for name in names} == {"F16"}
    assert half.stat().st_size < 0.6 * path.stat().st_size
    loaded_half = load_head(half)
    assert loaded_half.dtype == torch.float32  # stored in fp16, computed in fp32
    torch.testing.assert_close(loaded_half.logits(x), expected, rtol=0, atol=2e-2)
    torch.testing.assert_close(loaded_half.probabilities(x), torch.sigmoid(expected), rtol=0, atol=5e-3)


def test_save_head_checks(tmp_path, heads):
    with pytest.raises(ValueError, match="saved as .safetensors"):
        save_head(heads["tl_tr"], card_for("tl_tr"), tmp_path / "head.pth")
    with pytest.raises(ValueError, match="does not match its card"):
        save_head(heads["tl_tr"], card_for("tl_tr", d_model=D * 2), tmp_path / "head.safetensors")
    assert not list(tmp_path.iterdir())


def test_card_json_round_trip():
    card = card_for(
        "wa_mlp",
        multi_label=False,
        backbone="base",
        source="train.py",
        extra={"data": {"clips": 1200}, "argv": ["--epochs", "3"]},
    )
    data = card.to_json()
    assert data["head_type"] == "wa_mlp" and data["n_classes"] == 527 and data["label_set"] == "audioset"
    again = HeadCard.from_json(data)
    assert again == card and again.labels is audioset()

    gym = LabelSet.from_json("gym", [{"mid": "squat", "name": "Squat"}, {"mid": "rest", "name": "Rest"}])
    custom = HeadCard(head_type="tl_tr", n_layers=4, d_model=384, labels=gym, multi_label=False)
    assert HeadCard.from_json(custom.to_json()) == custom
    assert HeadCard.from_json({**data, "labels": "audioset"}).labels is audioset()  # a bare reference

    with pytest.raises(ValueError, match="n_classes=3 but lists 2 labels"):
        HeadCard.from_json({**custom.to_json(), "n_classes": 3})
    with pytest.raises(ValueError, match="newer than this Earmark reads"):
        HeadCard.from_json({**custom.to_json(), "format_version": 99})
    with pytest.raises(ValueError, match="unknown head type"):
        HeadCard.from_json({**custom.to_json(), "head_type": "cnn"})
    with pytest.raises(ValueError, match="lacks d_model"):
        HeadCard.from_json({k: v for k, v in custom.to_json().items() if k != "d_model"})


def test_custom_labels_round_trip(tmp_path):
    gym = LabelSet.from_json("gym", [{"mid": "squat", "name": "Squat"}, {"mid": "rest", "name": "Rest"}])
    head = create_head("wa_mlp", L, D, n_classes=2)
    card = HeadCard(head_type="wa_mlp", n_layers=L, d_model=D, labels=gym, multi_label=False)
    loaded = load_head(save_head(head, card, tmp_path / "gym.safetensors"))
    assert loaded.card.labels == gym and loaded.module.n_classes == 2
    torch.testing.assert_close(loaded.probabilities(torch.randn(3, L, 7, D)).sum(-1), torch.ones(3))


def test_check_backbone():
    card = card_for("tl_tr", n_layers=6, d_model=512, backbone="base", backbone_sha256="ab" * 32)
    check_backbone(card, 6, 512)
    check_backbone(card, 6, 512, "AB" * 32)
    with pytest.raises(
        ValueError, match=r"6 blocks of width 512 \(Whisper base\).*4 blocks of width 384 \(Whisper tiny\)"
    ):
        check_backbone(card, 4, 384)
    with pytest.raises(ValueError, match="width 768"):
        check_backbone(card, 6, 768)
    with pytest.raises(ValueError, match="exact encoder weights"):
        check_backbone(card, 6, 512, "cd" * 32)
    check_backbone(card_for("tl_tr", n_layers=6, d_model=512), 6, 512, "cd" * 32)  # no pinned sha: shapes only


def test_safetensors_head_for_another_backbone(tmp_path, heads):
    path = save_head(heads["wa_mlp"], card_for("wa_mlp"), tmp_path / "wa.safetensors")
    assert load_head(path, n_layers=L).card.n_layers == L
    with pytest.raises(ValueError, match="has 6 blocks"):
        load_head(path, n_layers=6)


def test_weighted_average_heads_start_as_plain_means():
    x = torch.randn(2, L, 9, D)
    wa_mlp = create_head("wa_mlp", L, D)
    torch.testing.assert_close(wa_mlp.layer_weight.detach(), torch.full((L,), 1 / L))
    with torch.no_grad():
        torch.testing.assert_close(wa_mlp(x), wa_mlp.mlp_layer(x.mean(dim=(1, 2))))
        wa_mlp.layer_weight.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0]))  # normalised by the sum: all on the last block
        last = create_head("last_mlp", L, D)
        last.mlp_layer.load_state_dict(wa_mlp.mlp_layer.state_dict())
        torch.testing.assert_close(wa_mlp(x), last(x))


def test_linear_probe_is_a_logistic_regression_on_every_blocks_mean():
    torch.manual_seed(0)
    scales = torch.tensor([1.0, 3.0, 10.0, 40.0]).view(1, L, 1, 1)  # blocks of different sizes, as Whisper's are
    x = 2.0 + scales * torch.randn(2, L, 9, D)
    probe = create_head("linear", L, D, 5)
    assert [name for name, _ in probe.named_parameters()] == ["linear.weight", "linear.bias"]
    assert probe.linear.weight.shape == (5, L * D)  # the blocks concatenated, each read by weights of its own
    means = x.mean(dim=2)  # [B, L, D]
    centred = means - means.mean(dim=-1, keepdim=True)
    normalised = centred / (centred.pow(2).mean(dim=-1, keepdim=True) + 1e-5).sqrt()
    expected = normalised.reshape(2, L * D) @ probe.linear.weight.T + probe.linear.bias
    with torch.no_grad():
        torch.testing.assert_close(probe(x), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(probe(x * scales), probe(x), rtol=1e-4, atol=1e-4)  # a block's scale is no weight
        moved = x.clone()
        moved[:, 2] = torch.randn(2, 9, D)
        probe.linear.weight[:, 2 * D : 3 * D] = 0  # block 2 only through its own columns
        torch.testing.assert_close(probe(moved), probe(x))
        assert not torch.allclose(probe(x.flip(1)), probe(x))  # the blocks are not averaged


def test_stats_head_reads_each_blocks_mean_and_maximum():
    """``stats``: the probe's normalised time means of every block and, beside them, the normalised
    time maxima; a short loud step moves the maximum where the mean hardly moves."""
    torch.manual_seed(0)
    x = torch.randn(2, L, 30, D)
    head = create_head("stats", L, D, 5)
    assert head.linear.weight.shape == (5, 2 * L * D)
    pooled = torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)
    centred = pooled - pooled.mean(dim=-1, keepdim=True)
    normalised = centred / (centred.pow(2).mean(dim=-1, keepdim=True) + 1e-5).sqrt()
    with torch.no_grad():
        torch.testing.assert_close(head(x), normalised.reshape(2, 2 * L * D) @ head.linear.weight.T + head.linear.bias,
                                   rtol=1e-4, atol=1e-4)
        head.linear.weight[:, : L * D] = 0  # the maxima only
        burst = x.clone()
        burst[:, :, 7] += 5.0  # one 0.4 s step, loud in every dimension
        assert not torch.allclose(head(burst), head(x), atol=1e-2)
        torch.testing.assert_close(head(x[:, :, torch.randperm(30)]), head(x))  # the order of the steps is no matter


# ---------------------------------------------------------------------------------------------
# Parameter counts against the published head sizes (millions)


@pytest.mark.parametrize(
    "head_type,n_layers,d_model,millions,tolerance",
    [
        ("tl_tr", 4, 384, 3.75, 0.01),  # tiny
        ("tl_tr", 6, 512, 6.58, 0.01),  # base
        ("tl_tr", 12, 768, 14.6, 0.05),  # small
        ("tl_tr_512", 12, 768, 7.0, 0.05),  # small, low-dim
        ("tl_tr", 32, 1280, 40.0, 0.05),  # large
        ("tl_tr_512", 32, 1280, 7.2, 0.05),  # large, low-dim
    ],
)
def test_published_parameter_counts(head_type, n_layers, d_model, millions, tolerance):
    with torch.device("meta"):
        head = create_head(head_type, n_layers, d_model)
    count = sum(p.numel() for p in head.parameters())
    assert abs(count / 1e6 - millions) <= tolerance, count
