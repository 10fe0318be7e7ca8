"""Tests of the AASIST baseline back-end (speechbrain_nes2net.lobes.aasist)."""

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from speechbrain_nes2net.lobes.aasist import AASIST
from speechbrain_nes2net.lobes.graph_attention import (
    GraphPool,
    HtrgGraphAttentionLayer,
    masked_batch_norm,
)

# Small configuration for fast behavioural tests (same structure, fewer channels).
SMALL = dict(
    input_size=16,
    dr_size=24,
    filts=((1, 4), (4, 4), (4, 8), (8, 8)),
    gat_dims=(8, 6),
    attention_channels=8,
)


def _randomise_batch_norms(model):
    """Non-trivial running statistics, so eval-mode BN is not the identity."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0.0, 0.5, generator=gen)
                module.running_var.uniform_(0.5, 2.0, generator=gen)
                module.weight.normal_(1.0, 0.2, generator=gen)
                module.bias.normal_(0.0, 0.2, generator=gen)


def _no_dropout(model):
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("n_out", [1, 2])
def test_output_shape(n_out):
    torch.manual_seed(0)
    model = AASIST(n_out=n_out).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 50, 1024))
    assert out.shape == (2, n_out)
    assert torch.isfinite(out).all()


def test_parameter_count_matches_released_model():
    # The released XLS-R + AASIST back-end has 447,242 parameters, 512 of
    # which belong to pre-activation BNs its forward pass never applies.
    full = AASIST(n_out=2, pre_activation=True)
    assert _count(full) == 447_242
    assert _count(AASIST(n_out=2)) == 447_242 - 512
    assert _count(AASIST(n_out=1, pre_activation=True)) == 447_242 - (5 * 32 + 1)
    parts = {name: _count(child) for name, child in full.named_children()}
    expected = {
        "dr": 1024 * 128 + 128,
        "first_bn": 2,
        "encoder": 211_072,
        "encoder_bn": 128,
        "attention": 16_832,
        "gat_spectral": 12_672,
        "gat_temporal": 12_672,
        "pool_spectral": 65,
        "pool_temporal": 65,
        "masters": 2 * 64,
        "branches": 2 * (20_992 + 8_640 + 33 + 33),
        "out_layer": 5 * 32 * 2 + 2,
    }
    for name, count in expected.items():
        assert parts.pop(name) == count, name
    assert parts == {"selu": 0, "branch_drop": 0, "drop": 0}
    assert full.pos_spectral.shape == (1, 42, 64)


def test_macs_at_200_frames():
    """Conv/linear multiply-accumulates at T = 200 give the published ~698 M."""
    model = AASIST().eval()
    macs = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Linear):
            macs.append(module.in_features * output.numel())
        else:
            kernel = module.in_channels // module.groups
            for size in module.kernel_size:
                kernel *= size
            macs.append(kernel * output.numel())

    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.randn(1, 200, 1024))
    assert sum(macs) == 698_206_656


@pytest.mark.parametrize("pre_activation", [False, True])
def test_gradients_reach_every_parameter(pre_activation):
    torch.manual_seed(0)
    model = AASIST(**SMALL, pre_activation=pre_activation).train()
    feats = torch.randn(3, 40, 16, requires_grad=True)
    out = model(feats, lengths=torch.tensor([1.0, 0.7, 0.4]))
    out.sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    # Padded frames must not receive gradient: they never influence the output.
    assert feats.grad[1, 28:].abs().max() == 0
    assert feats.grad[2, 16:].abs().max() == 0
    assert feats.grad[2, :15].abs().max() > 0


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout():
    torch.manual_seed(0)
    model = AASIST(**SMALL)
    feats = torch.randn(2, 30, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(feats), model(feats))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(feats), model(feats))


def test_padded_batch_scores_each_utterance_as_if_alone():
    torch.manual_seed(0)
    model = AASIST(**SMALL).eval()
    _randomise_batch_norms(model)
    n_frames = [61, 47, 32, 9, 3]  # not all multiples of 3 (trailing frames dropped)
    total = 61
    feats = torch.randn(len(n_frames), total, 16)
    for i, n in enumerate(n_frames):
        feats[i, n:] = 1e3 * torch.randn(total - n, 16)  # loud garbage in the padding
    lengths = torch.tensor(n_frames) / total
    with torch.no_grad():
        batch = model(feats, lengths)
        alone = torch.cat([model(feats[i : i + 1, :n]) for i, n in enumerate(n_frames)])
        unmasked = model(feats)
    torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(unmasked[1:], alone[1:], atol=1e-3)
    torch.testing.assert_close(batch[:1], unmasked[:1], rtol=1e-4, atol=1e-5)


def test_padding_does_not_change_training_mode_statistics():
    torch.manual_seed(0)
    model = _no_dropout(AASIST(**SMALL)).train()
    feats = torch.randn(3, 40, 16)
    lengths = torch.tensor([1.0, 0.75, 0.5])
    longer = torch.cat([feats, 50 * torch.randn(3, 17, 16)], dim=1)
    out = model(feats, lengths)
    out_longer = model(longer, lengths * 40 / 57)
    torch.testing.assert_close(out, out_longer, rtol=1e-4, atol=1e-5)


def test_full_lengths_equal_no_lengths():
    torch.manual_seed(0)
    model = AASIST(**SMALL).eval()
    feats = torch.randn(2, 33, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(feats, torch.ones(2)), model(feats))


def test_graph_pool_keeps_a_ratio_of_each_utterances_valid_nodes():
    torch.manual_seed(0)
    pool = GraphPool(4, ratio=0.5, dropout=0.0)
    nodes = torch.randn(3, 9, 4)
    mask = torch.arange(9) < torch.tensor([[9], [5], [1]])
    kept, new_mask = pool(nodes, mask)
    assert kept.shape == (3, 4, 4)
    assert new_mask.sum(dim=1).tolist() == [4, 2, 1]
    # The single valid node of utterance 3 is kept, scaled by its score.
    score = torch.sigmoid(pool.proj(nodes[2, :1]))
    torch.testing.assert_close(kept[2, 0], (nodes[2, 0] * score).squeeze(0))


def test_masked_batch_norm_uses_valid_positions_only():
    norm = nn.BatchNorm1d(3).train()
    x = torch.randn(2, 4, 3)
    x[1, 2:] = 1e4
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    out = masked_batch_norm(norm, x, mask)
    reference = nn.BatchNorm1d(3).train()(x[mask])
    torch.testing.assert_close(out[mask], reference)
    assert out[1, 2:].abs().max() == 0
    torch.testing.assert_close(norm.running_mean, 0.1 * x[mask].mean(dim=0))


def test_heterogeneous_layer_ignores_padded_type1_nodes():
    torch.manual_seed(0)
    layer = HtrgGraphAttentionLayer(8, 4, temperature=100.0).eval()
    _randomise_batch_norms(layer)
    x1, x2, master = torch.randn(1, 6, 8), torch.randn(1, 3, 8), torch.randn(1, 1, 8)
    padded = torch.cat([x1, 1e3 * torch.randn(1, 4, 8)], dim=1)
    mask = torch.arange(10).unsqueeze(0) < 6
    with torch.no_grad():
        t_alone, s_alone, m_alone = layer(x1, x2, master)
        t_pad, s_pad, m_pad = layer(padded, x2, master, mask)
    torch.testing.assert_close(t_pad[:, :6], t_alone)
    torch.testing.assert_close(s_pad, s_alone)
    torch.testing.assert_close(m_pad, m_alone)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_out=0), "n_out=0"),
        (dict(dr_size=2), "dr_size=2"),
        (dict(filts=((1, 32), (16, 32), (32, 64), (64, 64))), r"filts\[1\]"),
        (dict(filts=((2, 32), (32, 32), (32, 64), (64, 64))), r"filts\[0\]"),
        (dict(filts=((1, 32), (32, 32), (32, 64), (64, 128))), r"filts\[3\]"),
        (dict(filts=((1, 32), (32, 64))), "four"),
        (dict(gat_dims=(64,)), "gat_dims"),
        (dict(pool_ratios=(0.5, 0.5, 0.5, 0.5)), "4th value"),
        (dict(pool_ratios=(0.5, 0.0, 0.5)), "pool_ratios"),
        (dict(temperatures=(2.0, -1.0, 100.0)), "temperatures"),
        (dict(dropout=1.0), "dropout=1.0"),
    ],
)
def test_invalid_configuration_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AASIST(**kwargs)


def test_invalid_inputs_are_rejected():
    model = AASIST(**SMALL).eval()
    with pytest.raises(ValueError, match=r"\(batch, time, 16\)"):
        model(torch.randn(2, 30, 17))
    with pytest.raises(ValueError, match="at least 3 frames"):
        model(torch.randn(2, 2, 16))
    with pytest.raises(ValueError, match="2 frame"):
        model(torch.randn(2, 30, 16), lengths=torch.tensor([1.0, 0.05]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        model(torch.randn(2, 30, 16), lengths=torch.ones(3))


# --- Comparison with the official AASIST baseline -----------------------------
# tests/data/official_nes2net/asvspoof_aasist_tiny.pt: the AASIST model of the
# official Nes2Net ASVspoof code (model_scripts/wav2vec2_AASIST.py, which has
# the same Linear(1024, 128) reduction in front as ours), at reduced widths, run
# on random SSL features (see tests/data/README.md).

OFFICIAL_AASIST = (
    Path(__file__).resolve().parent / "data" / "official_nes2net" / "asvspoof_aasist_tiny.pt"
)

# Official key -> ours, by prefix (the first match applies).
_AASIST_KEYS = [
    ("LL.", "dr."),
    ("first_bn1.", "encoder_bn."),
    ("first_bn.", "first_bn."),
    ("attention.0.", "attention.conv1."),
    ("attention.2.", "attention.bn."),
    ("attention.3.", "attention.conv2."),
    ("pos_S", "pos_spectral"),
    ("master1", "masters.0"),
    ("master2", "masters.1"),
    ("GAT_layer_S.", "gat_spectral."),
    ("GAT_layer_T.", "gat_temporal."),
    ("pool_S.", "pool_spectral."),
    ("pool_T.", "pool_temporal."),
    ("HtrgGAT_layer_ST11.", "branches.0.first."),
    ("HtrgGAT_layer_ST12.", "branches.0.second."),
    ("HtrgGAT_layer_ST21.", "branches.1.first."),
    ("HtrgGAT_layer_ST22.", "branches.1.second."),
    ("pool_hS1.", "branches.0.pool_spectral."),
    ("pool_hT1.", "branches.0.pool_temporal."),
    ("pool_hS2.", "branches.1.pool_spectral."),
    ("pool_hT2.", "branches.1.pool_temporal."),
    ("out_layer.", "out_layer."),
]


def _ours_from_official(official):
    """Our state dict for an official AASIST state dict.

    ``encoder.{i}.0.bn1.*`` (blocks 2-6) are dropped: the released residual
    block computes BN + SELU of its input but convolves the input itself, so
    these BNs never reach the output (our ``pre_activation=False``).
    """
    ours = {}
    for key, value in official.items():
        if key.startswith("encoder."):
            _, block, _, rest = key.split(".", 3)
            if not rest.startswith("bn1."):
                ours[f"encoder.{block}.{rest}"] = value
            continue
        for old, new in _AASIST_KEYS:
            if key.startswith(old):
                ours[new + key[len(old):]] = value
                break
        else:
            raise KeyError(f"no mapping for official key {key}")
    return ours


def test_same_logits_as_the_official_aasist():
    fixture = torch.load(OFFICIAL_AASIST, weights_only=True)
    config = fixture["config"]
    model = AASIST(
        input_size=config["input_dim"],
        dr_size=config["LL_out"],
        n_out=config["n_output_logits"],
        filts=config["filts"][1:],
        gat_dims=config["gat_dims"],
        pool_ratios=config["pool_ratios"][:3],
        temperatures=config["temperatures"][:3],
        attention_channels=config["attention_channels"],
    )
    # strict: every parameter and buffer of ours is filled, nothing left over.
    model.load_state_dict(_ours_from_official(fixture["state_dict"]), strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(fixture["input"])
        padded = torch.cat([fixture["input"], torch.zeros(3, 9, config["input_dim"])], 1)
        masked = model(padded, lengths=torch.full((3,), 60 / 69))
    # float32 round-off through the same operations (observed <= 1e-7); the
    # masked path (our padding support) reduces to the same computation.
    assert (logits - fixture["output"]).abs().max().item() <= 1e-5
    assert (masked - fixture["output"]).abs().max().item() <= 1e-5
