"""Performance work, checked for correctness (never for speed).

- batched scoring of utterances of different lengths equals batch-1 scoring,
  for the back-ends and for the whole model (SSL front-end, aggregation,
  back-end);
- the Nes2Net-X lobe computes exactly what the straightforward port in
  ``benchmarks/`` computes: outputs, gradients and running statistics;
- a padded batch scores every utterance as it is scored alone, whatever the
  padding holds;
- ``benchmarks/run.py --quick`` runs and ends with the summary line.
"""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechbrain_nes2net.lobes.nes2net import Nes2Net, Nes2NetX
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


# ------------------------------------------------------ the lobe and the port


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


def _port(model, **config):
    port = ReferenceNes2NetX(input_size=64, outer_ratio=4, inner_ratio=4, **config)
    port.to(next(model.parameters()).dtype).load_state_dict(model.state_dict())
    return port


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
def test_nes2net_x_equals_the_port(config, training, lengths):
    # Outputs, input and parameter gradients, and the updated running
    # statistics, in float64, train mode (batch statistics) and eval mode.
    torch.manual_seed(0)
    model = _randomise(Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4, **config).double())
    port = _port(model, **config)
    x = torch.randn(3, 23, 64, dtype=torch.float64)
    lengths = None if lengths is None else torch.tensor(lengths)
    _assert_same(_run(model, x, lengths, training), _run(port, x, lengths, training), 1e-10)


@pytest.mark.parametrize("scales", ["positive", "mixed_sign"])
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
def test_scoring_equals_the_port_and_batch1(cls, config, scales):
    # Scoring (eval, no autograd) with batch norms of positive or mixed-sign
    # scales: the same scores as the port and as each utterance alone.
    torch.manual_seed(0)
    model = _randomise(cls(input_size=64, outer_ratio=4, inner_ratio=4, **config).double())
    if scales == "positive":
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.weight.abs_().add_(0.1)
    x = torch.randn(4, 29, 64, dtype=torch.float64)
    lengths = torch.tensor([1.0, 0.8, 0.5, 0.2])
    with torch.no_grad():
        scores = model(x, lengths)
        if cls is Nes2NetX:
            assert (scores - _port(model, **config).eval()(x, lengths)).abs().max().item() <= 1e-10
        alone = torch.cat([model(x[i : i + 1, : round(29 * float(lengths[i]))]) for i in range(4)])
        assert (scores - alone).abs().max().item() <= 1e-10


@pytest.mark.parametrize("cls", [Nes2Net, Nes2NetX])
def test_scores_follow_every_change_of_the_parameters(cls):
    # A training step (optimiser and running averages), load_state_dict, an
    # in-place edit and a dtype change must all show in the next scores:
    # each equals the score of a fresh model built from the same state.
    torch.manual_seed(0)
    model = _randomise(cls(input_size=64, outer_ratio=4, inner_ratio=4))
    x = torch.randn(3, 27, 64)
    lengths = torch.tensor([1.0, 0.7, 0.4])

    def check():
        fresh = cls(input_size=64, outer_ratio=4, inner_ratio=4).to(next(model.parameters()).dtype)
        fresh.load_state_dict(model.state_dict())
        with torch.no_grad():
            scores = model.eval()(x.to(fresh.fc.weight.dtype), lengths)
            assert scores.dtype == fresh.fc.weight.dtype
            assert torch.equal(scores, fresh.eval()(x.to(fresh.fc.weight.dtype), lengths))
        return scores

    before = check()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()(torch.randn(4, 31, x.shape[2])).sum().backward()
    optimizer.step()
    after_step = check()
    assert (after_step - before).abs().max().item() > 1e-4
    model.load_state_dict(_randomise(cls(input_size=64, outer_ratio=4, inner_ratio=4), seed=3).state_dict())
    assert (check() - after_step).abs().max().item() > 1e-4
    with torch.no_grad():
        model.blocks[0].bns[0].running_var.mul_(2.0)
    check()
    model.double()
    check()


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
def test_padded_batch_equals_utterances_alone_in_float64(cls, config):
    # Garbage in the padding, wide temporal kernels and a one-frame
    # utterance; scored with and without autograd.
    torch.manual_seed(1)
    model = _randomise(cls(input_size=64, outer_ratio=4, inner_ratio=4, **config).double())
    x = torch.randn(5, 37, 64, dtype=torch.float64)
    lengths = torch.tensor([1.0, 0.9, 0.5, 0.1, 1 / 37], dtype=torch.float64)
    x[frame_mask(lengths, 37).logical_not()] = 1e3
    with torch.no_grad():
        scored = model(x, lengths)
        alone = torch.cat([model(x[i : i + 1, : round(37 * float(lengths[i]))]) for i in range(5)])
    with torch.enable_grad():
        with_graph = model(x, lengths).detach()
    assert (scored - alone).abs().max().item() <= 1e-10
    assert (with_graph - alone).abs().max().item() <= 1e-10


@pytest.mark.parametrize(
    "cls,config",
    [
        (Nes2Net, {}),
        (Nes2NetX, {"kernel_size": 5, "dilation": 3}),
        (Nes2NetX, {"activation": "selu", "se_min_channels": 2}),
        (Nes2NetX, {"pooling": "ASTP", "n_out": 2}),
    ],
    ids=["nes2net", "x_k5_d3", "x_selu", "x_astp"],
)
def test_huge_values_in_the_padding_never_reach_the_scores(cls, config):
    model = _randomise(cls(input_size=64, outer_ratio=4, inner_ratio=4, **config).double())
    x = torch.randn(3, 30, 64, dtype=torch.float64)
    lengths = torch.tensor([1.0, 0.5, 0.2])
    poisoned = x.clone()
    poisoned[1, 15:] = 1e6
    poisoned[2, 6:] = -1e6
    poisoned[2, 20:] = torch.linspace(-1e6, 1e6, 64, dtype=torch.float64)
    with torch.no_grad():
        assert (model(x, lengths) - model(poisoned, lengths)).abs().max().item() <= 1e-10


def test_inference_mode_scores_equal_no_grad_scores():
    model = _randomise(Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4))
    x, lengths = torch.randn(3, 25, 64), torch.tensor([1.0, 0.6, 0.3])
    with torch.no_grad():
        expected = model(x, lengths)
    with torch.inference_mode():
        assert torch.equal(model(x, lengths), expected)
        assert torch.equal(model(x, lengths), expected)


def test_port_check_in_the_benchmark_accepts_the_lobe():
    lobe, port = bench_nes2net_x.build_pair(input_size=128)
    found = bench_nes2net_x.check_same_function(
        lobe, port, torch.randn(3, 21, 128), torch.tensor([1.0, 0.6, 0.3])
    )
    assert found["train_gradient_rel"] <= bench_nes2net_x.GRADIENT_TOLERANCE
    assert found["eval_output"] <= bench_nes2net_x.OUTPUT_TOLERANCE


def test_port_check_in_the_benchmark_catches_a_difference():
    lobe, port = bench_nes2net_x.build_pair(input_size=128)
    with torch.no_grad():
        port.blocks[1].stack_weights[2][0] += 0.01
    with pytest.raises(AssertionError, match="differ"):
        bench_nes2net_x.check_same_function(lobe, port, torch.randn(2, 15, 128), torch.ones(2))


def test_momentum_none_cumulative_average_matches_the_port():
    model = Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4)
    port = _port(model)
    for module in list(model.modules()) + list(port.modules()):
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    for _ in range(3):
        x = torch.randn(4, 17, 64)
        model.train()(x).sum().backward()
        port.train()(x).sum().backward()
    reference = port.state_dict()
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
    assert not any(m._forward_hooks for m in model.modules())  # removed afterwards


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
        r"summary: batched_backend_speedup=\d+\.\d+ nes2net_x_speedup=\d+\.\d+"
        r" whole_model_speedup=\d+\.\d+ bf16_peak_fraction=\d+\.\d+",
        last,
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
