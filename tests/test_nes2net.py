"""Nes2Net lobes: official parity, parameter counts, padding, configuration errors."""

from pathlib import Path

import pytest
import torch

from speechbrain_nes2net.lobes.aggregation import (
    SEA,
    AttM,
    LastLayer,
    WeightedSum,
    build_aggregator,
)
from speechbrain_nes2net.lobes.nes2net import Nes2Net, Nes2NetX
from speechbrain_nes2net.official.backend import (
    OfficialWeightsError,
    aggregator_from_official,
    backend_from_official,
    official_backend_state_dict,
)

FIXTURES = Path(__file__).resolve().parent / "data" / "official_nes2net"
BACKEND_FIXTURES = [
    "ctrsvdd_nes2net.pt",
    "ctrsvdd_nes2net_x.pt",
    "asvspoof_nes2net_x_2logits.pt",
    # The variants outside the released configurations (mean pooling, ReLU),
    # at width 128: attentive statistics pooling and the SeLU back-end.
    "ctrsvdd_nes2net_astp_tiny.pt",
    "ctrsvdd_nes2net_x_astp_tiny.pt",
    "asvspoof_nes2net_x_astp_2logits_tiny.pt",
    "ctrsvdd_nes2net_x_selu_tiny.pt",
]


def _load(name):
    return torch.load(FIXTURES / name, weights_only=True)


def _randomise(model, seed=0):
    """Random weights and BN statistics so that parity tests are not trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.2)
    return model.eval()


@pytest.mark.parametrize("name", BACKEND_FIXTURES)
def test_official_backend_fixtures_reproduced(name):
    fixture = _load(name)
    model = backend_from_official(fixture["model_name"], fixture["config"], fixture["state_dict"])
    with torch.no_grad():
        logits = model(fixture["input"].transpose(1, 2))
    assert logits.shape == fixture["output"].shape
    # float32 round-off through the same operations (observed <= 6e-8).
    assert (logits - fixture["output"]).abs().max().item() <= 1e-5


def test_official_backend_fixtures_cover_astp_and_selu():
    configs = {name: _load(name) for name in BACKEND_FIXTURES}
    astp = {f["model_name"] for f in configs.values() if f["config"]["pool_func"] == "ASTP"}
    assert astp == {"WavLM_Nes2Net", "WavLM_Nes2Net_X", "wav2vec2_Nes2Net_X"}
    assert any(f["model_name"] == "WavLM_Nes2Net_X_SeLU" for f in configs.values())


def test_official_sea_fixture_reproduced():
    fixture = _load("ctrsvdd_sea_aggregation.pt")
    model = aggregator_from_official(fixture["model_name"], fixture["config"], fixture["state_dict"])
    with torch.no_grad():
        out = model(fixture["input"])
    assert (out - fixture["output"]).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "cls,kwargs,expected",
    [
        (Nes2Net, {}, 510_769),
        (Nes2Net, {"n_out": 2}, 511_794),
        (Nes2NetX, {}, 511_014),
        (Nes2NetX, {"n_out": 2}, 512_039),
        (Nes2NetX, {"pooling": "ASTP"}, 775_334),
    ],
)
def test_parameter_counts_match_the_paper(cls, kwargs, expected):
    assert sum(p.numel() for p in cls(**kwargs).parameters()) == expected


CONFIGS = [
    ("WavLM_Nes2Net", {"Nes_ratio": [4, 4], "input_channel": 64, "dilation": 2, "pool_func": "mean", "SE_ratio": [1]}),
    ("WavLM_Nes2Net", {"Nes_ratio": [2, 8], "input_channel": 64, "dilation": 1, "pool_func": "ASTP", "SE_ratio": [4]}),
    ("WavLM_Nes2Net_X", {"Nes_ratio": [4, 3], "input_channel": 96, "dilation": 3, "pool_func": "ASTP", "SE_ratio": [2]}),
    ("WavLM_Nes2Net_X_SeLU", {"Nes_ratio": [4, 4], "input_channel": 64, "dilation": 1, "pool_func": "mean", "SE_ratio": 32}),
    ("wav2vec2_Nes2Net_X", {"Nes_ratio": [4, 4], "input_channel": 64, "dilation": 2, "pool_func": "mean", "SE_ratio": [1], "n_output_logits": 2}),
]


@pytest.mark.parametrize("model_name,config", CONFIGS)
def test_official_import_round_trip_any_configuration(model_name, config):
    built = backend_from_official(model_name, config, _official_weights(model_name, config))
    exported = official_backend_state_dict(built)
    rebuilt = backend_from_official(model_name, config, exported)
    feats = torch.randn(2, 25, config["input_channel"])
    with torch.no_grad():
        assert torch.equal(built(feats), rebuilt(feats))


def _official_weights(model_name, config, seed=0):
    """Official-layout weights for a configuration, made through the inverse mapping."""
    template = backend_from_official(model_name, config, _zero_state(model_name, config))
    return official_backend_state_dict(_randomise(template, seed))


def _zero_state(model_name, config):
    from speechbrain_nes2net.official.backend import BACKENDS

    cls, activation, se_min, n_out = BACKENDS[model_name]
    se_ratio = config["SE_ratio"][0] if isinstance(config["SE_ratio"], list) else config["SE_ratio"]
    model = cls(
        input_size=config["input_channel"],
        outer_ratio=config["Nes_ratio"][0],
        inner_ratio=config["Nes_ratio"][1],
        dilation=config["dilation"],
        se_ratio=se_ratio,
        se_min_channels=se_min,
        activation=activation,
        pooling=config["pool_func"],
        n_out=config.get("n_output_logits", n_out),
    )
    return official_backend_state_dict(model)


def test_selu_variant_uses_selu_and_a_two_channel_se_floor():
    name, config = CONFIGS[3]
    model = backend_from_official(name, config, _official_weights(name, config))
    assert isinstance(model.activation, torch.nn.SELU)
    # group size 16 // SE ratio 32 = 0 -> floored to 2 channels, as released.
    assert model.blocks[0].se.conv1.conv.out_channels == 2


def test_official_import_rejects_missing_and_unexpected_keys():
    fixture = _load("ctrsvdd_nes2net.pt")
    state = dict(fixture["state_dict"])
    del state["Nested_Res2Net_TDNN.Build_in_Res2Nets.3.bn3.running_var"]
    state["Nested_Res2Net_TDNN.Build_in_Res2Nets.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(OfficialWeightsError) as err:
        backend_from_official(fixture["model_name"], fixture["config"], state)
    assert "Build_in_Res2Nets.0.extra.weight" in str(err.value)


def test_official_import_names_missing_key():
    fixture = _load("ctrsvdd_nes2net.pt")
    state = dict(fixture["state_dict"])
    del state["Nested_Res2Net_TDNN.Build_in_Res2Nets.3.bn3.running_var"]
    with pytest.raises(OfficialWeightsError, match=r"blocks\.3\.bn_out\.running_var"):
        backend_from_official(fixture["model_name"], fixture["config"], state)


def test_official_import_rejects_wrong_configuration_for_weights():
    fixture = _load("ctrsvdd_nes2net.pt")
    config = dict(fixture["config"], pool_func="ASTP")
    with pytest.raises(OfficialWeightsError, match="missing keys"):
        backend_from_official(fixture["model_name"], config, fixture["state_dict"])
    with pytest.raises(ValueError, match="unknown official back-end"):
        backend_from_official("WavLM_AASIST", fixture["config"], fixture["state_dict"])
    with pytest.raises(ValueError, match="unknown official back-end config keys"):
        backend_from_official(fixture["model_name"], dict(fixture["config"], typo=1), fixture["state_dict"])


@pytest.mark.parametrize(
    "model",
    [
        Nes2Net(input_size=64, outer_ratio=4, inner_ratio=4, dilation=2),
        Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4, dilation=3, pooling="ASTP", n_out=2),
        Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4, activation="selu", se_min_channels=2),
    ],
    ids=["nes2net", "nes2net_x_astp", "nes2net_x_selu"],
)
def test_padded_batch_scores_equal_single_utterance_scores(model):
    model = _randomise(model)
    frames = [40, 23, 7, 31]
    utterances = [torch.randn(1, n, 64) for n in frames]
    batch = torch.zeros(len(frames), max(frames), 64)
    for i, utt in enumerate(utterances):
        batch[i, : frames[i]] = utt[0]
        batch[i, frames[i]:] = 1e3  # padding garbage must not leak
    lengths = torch.tensor(frames, dtype=torch.float) / max(frames)
    with torch.no_grad():
        batched = model(batch, lengths)
        alone = torch.cat([model(utt) for utt in utterances])
    # Same function; only float32 summation order differs between the two shapes.
    assert (batched - alone).abs().max().item() < 1e-4


@pytest.mark.parametrize("cls", [Nes2Net, Nes2NetX])
def test_one_frame_utterances_score_as_alone(cls):
    model = _randomise(cls(input_size=64, outer_ratio=4, inner_ratio=4, kernel_size=5, dilation=3))
    x = torch.randn(3, 12, 64)
    x[1:, 1:] = 1e3
    lengths = torch.tensor([1.0, 1 / 12, 0.01])  # 0.12 frames still count as one
    with torch.no_grad():
        batched = model(x, lengths)
        alone = torch.cat([model(x[:1]), model(x[1:2, :1]), model(x[2:, :1])])
    assert (batched - alone).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    "model",
    [
        Nes2Net(input_size=64, outer_ratio=4, inner_ratio=4, dilation=2),
        Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4, pooling="ASTP", n_out=2),
        Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4, activation="selu", se_min_channels=2),
    ],
    ids=["nes2net", "nes2net_x_astp", "nes2net_x_selu"],
)
def test_frames_pool_into_the_embedding(model):
    model = _randomise(model)
    x, lengths = torch.randn(3, 30, 64), torch.tensor([1.0, 0.5, 0.1])
    with torch.no_grad():
        frames = model.frames(x, lengths)
        embedding = model.embed(x, lengths)
        logits = model(x, lengths)
    counts = torch.tensor([30, 15, 3])
    valid = torch.arange(30) < counts[:, None]
    assert frames.shape == (3, 30, 64)
    # After the final batch norm and activation (what inference.frame_scores reads).
    captured = []
    hook = model.norm.register_forward_hook(lambda module, args, out: captured.append(out))
    with torch.no_grad():
        model(x, lengths)
    hook.remove()
    expected = model.activation(captured[0]).transpose(1, 2)
    assert (frames[valid] - expected[valid]).abs().max().item() < 1e-6
    assert all(bool((frames[i, n:] == 0).all()) for i, n in enumerate(counts.tolist()))
    if model.pooling is None:
        pooled = frames.sum(dim=1) / counts[:, None]
    else:
        pooled = model.pooling(frames.transpose(1, 2), valid)
    assert (pooled - embedding).abs().max().item() < 1e-5
    assert (model.fc(embedding) - logits).abs().max().item() < 1e-6


def test_frames_of_a_padded_batch_equal_frames_alone():
    model = _randomise(Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4, dilation=2))
    x = torch.randn(2, 40, 64)
    x[1, 17:] = -1e3
    with torch.no_grad():
        frames = model.frames(x, torch.tensor([1.0, 17 / 40]))
        alone = model.frames(x[1:, :17])
    assert (frames[1, :17] - alone[0]).abs().max().item() < 1e-5


#: Keys and shapes every checkpoint of a one-block back-end (input_size=8,
#: outer_ratio=2, inner_ratio=2) holds, besides the blocks' own.
_BLOCK_STATE = {
    "conv_in.weight": (4, 4, 1), "conv_in.bias": (4,),
    "convs.0.bias": (2,), "conv_out.weight": (4, 4, 1), "conv_out.bias": (4,),
    "se.conv1.conv.weight": (4, 4, 1), "se.conv1.conv.bias": (4,),
    "se.conv2.conv.weight": (4, 4, 1), "se.conv2.conv.bias": (4,),
}  # fmt: skip


def _norm_state(prefix, size):
    names = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    return {f"{prefix}.{name}": () if name == "num_batches_tracked" else (size,) for name in names}


@pytest.mark.parametrize(
    "cls,kwargs,extra",
    [
        (Nes2Net, {}, {"blocks.0.convs.0.weight": (2, 2, 3), "fc.weight": (1, 8), "fc.bias": (1,)}),
        (
            Nes2NetX,
            {"pooling": "ASTP", "n_out": 2, "attention_channels": 3},
            {
                "blocks.0.convs.0.weight": (2, 2, 3, 1), "blocks.0.stack_weights.0": (2,),
                "pooling.attention_in.weight": (3, 8, 1), "pooling.attention_in.bias": (3,),
                "pooling.attention_out.weight": (8, 3, 1), "pooling.attention_out.bias": (8,),
                "fc.weight": (2, 16), "fc.bias": (2,),
            },
        ),
    ],
    ids=["nes2net", "nes2net_x_astp"],
)
def test_checkpoint_layout_is_unchanged(cls, kwargs, extra):
    # Saved checkpoints, exports and the official key mapping rely on these names.
    expected = {f"blocks.0.{key}": shape for key, shape in _BLOCK_STATE.items()}
    for prefix, size in [("blocks.0.bn_in", 4), ("blocks.0.bns.0", 2), ("blocks.0.bn_out", 4),
                         ("block_norms.0", 4), ("norm", 8)]:  # fmt: skip
        expected.update(_norm_state(prefix, size))
    expected.update(extra)
    model = cls(input_size=8, outer_ratio=2, inner_ratio=2, **kwargs)
    assert {key: tuple(value.shape) for key, value in model.state_dict().items()} == expected


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"input_size": 1020}, "input_size=1020 is not divisible by outer_ratio=8"),
        ({"input_size": 64, "outer_ratio": 4, "inner_ratio": 32}, "inner_ratio=32 must be between 2 and the group size"),
        ({"outer_ratio": 1}, "outer_ratio=1 must be at least 2"),
        ({"kernel_size": 4}, "kernel_size=4 must be odd"),
        ({"pooling": "max"}, "pooling='max' must be one of"),
        ({"activation": "gelu"}, "activation='gelu' must be one of"),
        ({"n_out": 3}, "n_out=3 must be 1 or 2"),
        ({"dilation": 0}, "dilation=0 must be a positive integer"),
    ],
)
def test_invalid_configuration_names_the_wrong_values(kwargs, message):
    with pytest.raises(ValueError) as err:
        Nes2NetX(**kwargs)
    assert message in str(err.value)


def test_wrong_feature_size_is_reported():
    with pytest.raises(ValueError, match=r"expected features of shape \(batch, time, 64\)"):
        Nes2Net(input_size=64, outer_ratio=4, inner_ratio=4)(torch.rand(2, 10, 32))


def test_backend_trains_gradients_reach_every_parameter():
    model = Nes2NetX(input_size=32, outer_ratio=4, inner_ratio=2, pooling="ASTP").train()
    model(torch.randn(3, 20, 32), torch.tensor([1.0, 0.7, 0.5])).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# ---------------------------------------------------------------- aggregation


def test_weighted_sum_is_softmax_weighted():
    agg = WeightedSum(3)
    with torch.no_grad():
        agg.layer_weights.copy_(torch.tensor([0.0, 1.0, 2.0]))
    h = torch.randn(3, 2, 5, 4)
    w = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    expected = w[0] * h[0] + w[1] * h[1] + w[2] * h[2]
    assert torch.allclose(agg(h), expected, atol=1e-6)


def _attm_reference(h, W, W1, W2, proj):
    """AttM as described by the Nes2Net release, on (batch, layers, time, dim)."""
    x = h.permute(1, 0, 2, 3)
    gate = torch.nn.functional.silu(x.mean(dim=2, keepdim=True) @ W)
    gate = torch.nn.functional.silu(gate.reshape(x.shape[0], -1) @ W1)
    gate = torch.sigmoid(gate @ W2)[:, :, None, None]
    merged = (gate * x).permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1)
    return proj(merged)


def test_attm_matches_official_layout_and_imports():
    layers, dim = 5, 8
    torch.manual_seed(0)
    W, W1, W2 = torch.randn(dim, 1), torch.randn(layers, 2), torch.randn(2, layers)
    proj = torch.nn.Linear(layers * dim, dim)
    state = {
        "ssl_model.W": W,
        "ssl_model.W1": W1,
        "ssl_model.W2": W2,
        "ssl_model.linear_proj.weight": proj.weight.detach(),
        "ssl_model.linear_proj.bias": proj.bias.detach(),
        "ssl_model.model.encoder.layers.0.weight": torch.zeros(3),  # SSL keys: ignored
    }
    agg = aggregator_from_official("WavLM_AttM", {"agg": "AttM", "n_layers": layers, "dim": dim}, state)
    h = torch.randn(layers, 2, 6, dim)
    with torch.no_grad():
        assert torch.allclose(agg(h), _attm_reference(h, W, W1, W2, proj), atol=1e-5)


def test_weighted_sum_imports_and_rejects_unknown_keys():
    config = {"agg": "WeightedSum", "n_layers": 4, "dim": 8}
    agg = aggregator_from_official("WavLM_WeightedSum", config, {"ssl_model.weight_hidd": torch.arange(4.0)})
    assert torch.equal(agg.layer_weights.detach(), torch.arange(4.0))
    with pytest.raises(OfficialWeightsError, match="surprise"):
        aggregator_from_official(
            "WavLM_WeightedSum", config, {"ssl_model.weight_hidd": torch.ones(4), "ssl_model.surprise": torch.ones(1)}
        )


@pytest.mark.parametrize("name", ["last", "weighted_sum", "SEA", "AttM"])
def test_aggregators_ignore_padding(name):
    agg = build_aggregator(name, 6, 8).eval()
    frames = [12, 5, 9]
    states = [torch.randn(6, 1, n, 8) for n in frames]
    batch = torch.full((6, 3, 12, 8), 50.0)
    for i, s in enumerate(states):
        batch[:, i, : frames[i]] = s[:, 0]
    lengths = torch.tensor(frames, dtype=torch.float) / 12
    with torch.no_grad():
        out = agg(batch, lengths)
        for i, s in enumerate(states):
            assert torch.allclose(out[i, : frames[i]], agg(s)[0], atol=1e-5)


def test_aggregator_errors_say_what_to_fix():
    with pytest.raises(ValueError, match="unknown aggregation 'mean'"):
        build_aggregator("mean", 25, 1024)
    with pytest.raises(ValueError, match="num_layers=25 but received 13"):
        SEA(25)(torch.rand(13, 1, 4, 8))
    with pytest.raises(ValueError, match="output_all_hiddens=True"):
        LastLayer()(torch.rand(1, 4, 8))
    with pytest.raises(ValueError, match="AttM was built for dim=8"):
        AttM(3, 8)(torch.rand(3, 1, 4, 16))
