"""Performance work, checked for correctness (never for speed).

- batched scoring of utterances of different lengths equals batch-1 scoring,
  for the back-ends and for the whole model (SSL front-end, aggregation,
  back-end);
- the fast Nes2Net-X paths (time-major layout, fused stack steps and tail)
  compute exactly what the module-by-module path and the straightforward port
  in ``benchmarks/`` compute: outputs, gradients and running statistics;
- ``benchmarks/run.py --quick`` runs and ends with the summary line.
"""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechbrain_nes2net.lobes.nes2net import (
    Nes2Net,
    Nes2NetX,
    PointwiseConv1d,
    StackConv2d,
    TemporalConv1d,
)
from speechbrain_nes2net.lobes.pooling import frame_mask

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_batched
import bench_nes2net_x
from reference_nes2net_x import ReferenceNes2NetX


def _randomise(model, seed=0):
    """Random weights and batch-norm statistics, eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
    return model.eval()


# ------------------------------------------------------------- batched scoring


@pytest.mark.parametrize(
    "model",
    [
        Nes2NetX(),
        Nes2Net(input_size=256, outer_ratio=4, inner_ratio=4, dilation=2),
        Nes2NetX(input_size=256, outer_ratio=4, inner_ratio=4, activation="selu", se_min_channels=2),
        Nes2NetX(input_size=256, outer_ratio=4, inner_ratio=4, dilation=3, pooling="ASTP", n_out=2),
    ],
    ids=["nes2net_x_released_size", "nes2net", "nes2net_x_selu", "nes2net_x_astp"],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_backend_scores_equal_batch1_scores(model, seed):
    model = _randomise(model, seed)
    generator = torch.Generator().manual_seed(seed)
    count = int(torch.randint(3, 9, (1,), generator=generator))
    sizes = torch.randint(5, 120, (count,), generator=generator).tolist()
    items = [torch.randn(n, model.input_size, generator=generator) for n in sizes]

    def score(features, lengths):
        return model(features, lengths)[:, -1]

    alone = bench_batched.score_one_by_one(score, items)
    for batch_size in (3, len(items)):
        together = bench_batched.score_batched(score, items, batch_size)
        assert (together - alone).abs().max().item() <= 1e-4


def test_padding_values_never_reach_the_scores():
    model = _randomise(Nes2NetX(input_size=128, outer_ratio=4, inner_ratio=4))
    x = torch.randn(3, 30, 128)
    lengths = torch.tensor([1.0, 0.5, 0.2])
    poisoned = x.clone()
    poisoned[1, 15:] = 1e4
    poisoned[2, 6:] = -3e3
    with torch.no_grad():
        clean_scores = model(x, lengths)
        poisoned_scores = model(poisoned, lengths)
    assert (clean_scores - poisoned_scores).abs().max().item() <= 1e-5


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_whole_model_scores_equal_batch1_scores(tmp_path, seed):
    score = bench_batched.build_tiny_model(tmp_path, seed)[0]
    generator = torch.Generator().manual_seed(seed)
    seconds = 0.4 + 1.4 * torch.rand(5, generator=generator)
    waveforms = [0.1 * torch.randn(int(s * 16000), generator=generator) for s in seconds]
    alone = bench_batched.score_one_by_one(score, waveforms)
    together = bench_batched.score_batched(score, waveforms, batch_size=3)
    assert (together - alone).abs().max().item() <= 1e-4


def test_sorted_batches_cover_every_utterance_once_longest_first():
    sizes = [4, 9, 1, 7, 7, 3, 8]
    batches = bench_batched.sorted_batches(sizes, 3)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(sizes)))
    assert [sizes[i] for i in flat] == sorted(sizes, reverse=True)
    assert [len(b) for b in batches] == [3, 3, 1]
    budgeted = bench_batched.sorted_batches(sizes, 3, max_padded=16)
    assert sorted(i for batch in budgeted for i in batch) == list(range(len(sizes)))
    assert all(len(b) * max(sizes[i] for i in b) <= 16 or len(b) == 1 for b in budgeted)
    assert all(len(b) <= 3 for b in budgeted)


# ------------------------------------------------------------- fast Nes2Net-X


def _run(model, x, lengths, training):
    """Output, input gradient, parameter gradients and state after one pass."""
    model = model.train(training)
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    out = model(x, lengths)
    (out * torch.linspace(-1, 1, out.shape[0], dtype=x.dtype)[:, None]).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return out.detach(), x.grad, grads, copy.deepcopy(model.state_dict())


def _assert_same(a, b, atol):
    out_a, xgrad_a, grads_a, state_a = a
    out_b, xgrad_b, grads_b, state_b = b
    assert (out_a - out_b).abs().max().item() <= atol
    assert (xgrad_a - xgrad_b).abs().max().item() <= atol * max(1.0, xgrad_b.abs().max().item())
    largest = max(g.abs().max().item() for g in grads_b.values())
    for name, grad in grads_a.items():
        assert (grad - grads_b[name]).abs().max().item() <= atol * largest, name
    for name, value in state_a.items():
        assert (value.double() - state_b[name].double()).abs().max().item() <= atol, name


def _hooked(model):
    """A copy whose conv/norm modules carry no-op forward hooks: the module path."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.register_forward_hook(lambda *args: None)
    return model


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"activation": "selu", "se_min_channels": 2, "dilation": 2},
        {"pooling": "ASTP", "dilation": 3, "n_out": 2},
    ],
    ids=["relu", "selu", "astp"],
)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("lengths", [None, [1.0, 0.7, 0.35]], ids=["full", "padded"])
def test_fused_paths_equal_module_path_and_port(config, training, lengths):
    torch.manual_seed(0)
    fast = Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4, **config).double()
    _randomise(fast)
    assert fast.blocks[0].fused_steps() and fast._fused_tail()
    module_path = _hooked(fast)
    assert not module_path.blocks[0].fused_steps() and not module_path._fused_tail()
    port = ReferenceNes2NetX(input_size=64, outer_ratio=4, inner_ratio=4, **config).double()
    port.load_state_dict(fast.state_dict())
    x = torch.randn(3, 23, 64, dtype=torch.float64)
    lengths = None if lengths is None else torch.tensor(lengths)
    result = _run(fast, x, lengths, training)
    _assert_same(result, _run(module_path, x, lengths, training), 1e-10)
    _assert_same(result, _run(port, x, lengths, training), 1e-10)


@pytest.mark.parametrize("positive_scales", [True, False], ids=["positive", "mixed_sign"])
@pytest.mark.parametrize(
    "cls,config",
    [
        (Nes2NetX, {}),
        (Nes2NetX, {"activation": "selu", "se_min_channels": 2, "dilation": 2}),
        (Nes2NetX, {"pooling": "ASTP", "n_out": 2}),
        (Nes2Net, {"dilation": 2}),
    ],
    ids=["x_relu", "x_selu", "x_astp", "nes2net"],
)
def test_scoring_paths_equal_module_path_and_port(cls, config, positive_scales):
    # Under torch.no_grad in eval mode, ReLU followed by a batch norm whose
    # scales are all positive is folded into the preceding product or
    # convolution (a clamp replaces ReLU + affine map); mixed signs, SELU and
    # hooks take the unfolded paths. All must score alike.
    torch.manual_seed(0)
    model = _randomise(cls(input_size=64, outer_ratio=4, inner_ratio=4, **config).double())
    if positive_scales:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.weight.abs_().add_(0.1)
    x = torch.randn(4, 29, 64, dtype=torch.float64)
    lengths = torch.tensor([1.0, 0.8, 0.5, 0.2])
    with torch.no_grad():
        fast = model(x, lengths)
        module_path = _hooked(model)(x, lengths)
        assert (fast - module_path).abs().max().item() <= 1e-10
        if cls is Nes2NetX:
            port = ReferenceNes2NetX(input_size=64, outer_ratio=4, inner_ratio=4, **config).double()
            port.load_state_dict(model.state_dict())
            assert (fast - port.eval()(x, lengths)).abs().max().item() <= 1e-10
        # batch-1 equals batched on the same paths
        alone = torch.cat([model(x[i : i + 1, : round(29 * float(lengths[i]))]) for i in range(4)])
        assert (fast - alone).abs().max().item() <= 1e-10


@pytest.mark.parametrize("cls", [Nes2Net, Nes2NetX])
def test_folded_scoring_weights_follow_every_change_of_the_parameters(cls):
    # Scoring reuses batch norms folded into the weights until a parameter or
    # running statistic changes: a training step (optimiser and running
    # averages), load_state_dict, an in-place edit and a dtype change must
    # all be seen, and each score must equal the module path's.
    torch.manual_seed(0)
    model = _randomise(cls(input_size=64, outer_ratio=4, inner_ratio=4))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.abs_().add_(0.1)  # positive scales: the folded path
    x = torch.randn(3, 27, 64)
    lengths = torch.tensor([1.0, 0.7, 0.4])

    def check():
        with torch.no_grad():
            fast = model.eval()(x, lengths)
            assert (fast - _hooked(model).eval()(x, lengths)).abs().max().item() <= 1e-5
        return fast

    before = check()
    assert check().equal(before)  # cached: the same numbers again
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()(torch.randn(4, 31, x.shape[2])).sum().backward()
    optimizer.step()
    after_step = check()
    assert (after_step - before).abs().max().item() > 1e-4

    other = _randomise(cls(input_size=64, outer_ratio=4, inner_ratio=4), seed=3)
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert (check() - other.eval()(x, lengths)).abs().max().item() <= 1e-5
        model.blocks[0].bns[0].running_var.mul_(2.0)
    check()
    model.double()
    with torch.no_grad():
        fast = model(x.double(), lengths)
        assert fast.dtype == torch.float64
        assert (fast - _hooked(model)(x.double(), lengths)).abs().max().item() <= 1e-10
    assert "_scoring_cache" not in str(list(model.state_dict()))


@pytest.mark.parametrize(
    "cls,config",
    [
        (Nes2NetX, {}),
        (Nes2NetX, {"kernel_size": 5, "dilation": 3}),
        (Nes2NetX, {"activation": "selu", "se_min_channels": 2, "dilation": 2}),
        (Nes2Net, {"kernel_size": 5, "dilation": 2}),
    ],
    ids=["x", "x_k5_d3", "x_selu_d2", "nes2net_k5_d2"],
)
def test_packed_scoring_equals_the_padded_batch(cls, config):
    # Scoring lays the utterances of a padded batch end to end with zero gaps
    # as wide as the widest convolution padding; the padded path (taken when
    # an autograd graph is built) is the reference, with garbage in the padding.
    torch.manual_seed(1)
    model = _randomise(cls(input_size=64, outer_ratio=4, inner_ratio=4, **config).double())
    x = torch.randn(5, 37, 64, dtype=torch.float64)
    lengths = torch.tensor([1.0, 0.9, 0.5, 0.1, 1 / 37], dtype=torch.float64)
    x[frame_mask(lengths, 37).logical_not()] = 1e3
    with torch.no_grad():
        assert model._packs() and model._temporal_padding() == (config.get("kernel_size", 3) // 2) * config.get("dilation", 1)
        packed = model(x, lengths)
    with torch.enable_grad():
        assert not model._packs()
        padded = model(x, lengths).detach()
    assert (packed - padded).abs().max().item() <= 1e-10
    alone = torch.cat([model(x[i : i + 1, : round(37 * float(lengths[i]))]) for i in range(5)])
    assert (packed - alone).abs().max().item() <= 1e-10


def test_packing_only_when_scoring_with_plain_modules():
    model = Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4).eval()
    with torch.no_grad():
        assert model._packs()
        assert not _hooked(model)._packs()  # hooks see the ordinary padded calls
        assert not Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4, pooling="ASTP").eval()._packs()
        model.blocks[1].train()
        assert not model._packs()  # a module in training mode: batch statistics


def test_port_check_in_the_benchmark_accepts_the_lobe():
    fast, baseline = bench_nes2net_x.build_pair(input_size=128)
    found = bench_nes2net_x.check_same_function(
        fast, baseline, torch.randn(3, 21, 128), torch.tensor([1.0, 0.6, 0.3])
    )
    assert found["train_gradient_rel"] <= bench_nes2net_x.GRADIENT_TOLERANCE
    assert found["eval_output"] <= bench_nes2net_x.OUTPUT_TOLERANCE


def test_port_check_in_the_benchmark_catches_a_difference():
    fast, baseline = bench_nes2net_x.build_pair(input_size=128)
    with torch.no_grad():
        baseline.blocks[1].stack_weights[2][0] += 0.01
    with pytest.raises(AssertionError, match="differ"):
        bench_nes2net_x.check_same_function(fast, baseline, torch.randn(2, 15, 128), torch.ones(2))


def test_momentum_none_cumulative_average_matches_the_module_path():
    model = Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    module_path = _hooked(model)
    for _ in range(3):
        x = torch.randn(4, 17, 64)
        model.train()(x).sum().backward()
        module_path.train()(x).sum().backward()
    reference = module_path.state_dict()
    for name, value in model.state_dict().items():
        assert torch.allclose(value.double(), reference[name].double(), atol=1e-5), name


def test_mac_counter_hooks_see_every_module_call():
    from speechbrain_nes2net.cost.backends import count_macs

    model = Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4).eval()
    macs = count_macs(model, torch.randn(1, 10, 64))
    # Hand count: per block conv_in + conv_out 2 * 16 * 16, SE 2 * 16 * 16 / T,
    # stack convs (2 + 3 + 4) entries * 4 * 4 * 3; then the output layer.
    per_block = 10 * (2 * 16 * 16 + (2 + 3 + 4) * 4 * 4 * 3) + 2 * 16 * 16
    assert macs == 3 * per_block + 64
    assert model.blocks[0].fused_steps()  # hooks were removed afterwards


@pytest.mark.parametrize(
    "module,reference",
    [
        (PointwiseConv1d(6, 5), lambda m, x: torch.nn.functional.conv1d(x, m.weight, m.bias)),
        (
            TemporalConv1d(6, 6, 3, padding=2, dilation=2),
            lambda m, x: torch.nn.functional.conv1d(x, m.weight, m.bias, padding=2, dilation=2),
        ),
    ],
    ids=["pointwise", "temporal"],
)
@pytest.mark.parametrize("time_major", [True, False])
def test_layout_modules_compute_the_plain_convolution(module, reference, time_major):
    x = torch.randn(2, 11, 6).transpose(1, 2) if time_major else torch.randn(2, 6, 11)
    assert torch.allclose(module(x), reference(module, x), atol=1e-6)


def test_stack_conv_takes_any_stack_layout():
    conv = StackConv2d(4, 4, (3, 1), padding=(2, 0), dilation=(2, 1))
    stack = torch.randn(2, 4, 9, 3)  # channels-first (batch, width, time, entries)
    expected = torch.nn.functional.conv2d(stack, conv.weight, conv.bias, padding=(2, 0), dilation=(2, 1))
    assert torch.allclose(conv(stack), expected, atol=1e-6)
    entry_major = stack.permute(3, 0, 2, 1).contiguous().permute(1, 3, 2, 0)
    assert torch.allclose(conv(entry_major), expected, atol=1e-6)


# ------------------------------------------------------------- the runner


@pytest.mark.slow
def test_benchmark_runner_quick_run_prints_the_summary_line():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"summary: batched_backend_speedup=\d+\.\d+ nes2net_x_speedup=\d+\.\d+", last
    ), last
    assert "batched vs batch-1 scores: max |diff|" in result.stdout
    assert "same function:" in result.stdout


# ------------------------------------------------------------- full-model cost


def test_full_model_breakdown_counts_every_part(monkeypatch):
    import transformers

    from speechbrain_nes2net.cost import ssl as ssl_cost

    tiny = dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer", do_stable_layer_norm=True, layerdrop=0.0,
    )  # fmt: skip
    usage = dict(aggregation="SEA", backends=("Nes2Net-X", "AASIST+DR"), n_out=1, recipe="tiny")
    monkeypatch.setitem(
        ssl_cost.SSL_MODELS, "tiny", (transformers.WavLMModel, lambda: transformers.WavLMConfig(**tiny), usage)
    )
    parts, _ = ssl_cost.model_breakdown("tiny", seconds=1.0, time_repeats=1)
    ssl, aggregation, nes2net_x, aasist = parts
    detail = ssl.detail
    assert detail["frames"] == 49
    # The analytic attention count equals what the flop counter sees in WavLM's
    # batched attention products (scores and weighted values).
    model = transformers.WavLMModel(transformers.WavLMConfig(**tiny)).eval()
    counts = ssl_cost._flop_counts(lambda: model(torch.zeros(1, 16000)))
    assert detail["attention"] == (counts["aten.bmm"] + counts["aten.baddbmm"]) // 2
    assert detail["total"] == detail["convolution"] + detail["linear"] + detail["attention"]
    assert ssl.params == sum(p.numel() for p in model.parameters()) - 64  # masked_spec_embed
    assert aggregation.macs > 0 and nes2net_x.macs > 0 and aasist.macs > nes2net_x.macs
    assert all(part.cpu_ms > 0 for part in parts)
    table = ssl_cost.format_breakdown("tiny", parts, usage, 1.0)
    assert "| *with Nes2Net-X* |" in table and "| total |" in table
