"""Times the library's Nes2Net-X against the straightforward port.

The lobe is written plainly (channels-first modules, no fused kernels), so
the two are expected to run at about the same speed; this benchmark checks
that the lobe is not the slower one. Both models hold the same weights (the
port loads the lobe's ``state_dict``) and are first checked to compute the
same outputs, gradients and running statistics; then forward and
forward+backward passes are timed in train mode
(batch-norm batch statistics, autograd on, as in training) and eval mode
(running statistics; the forward pass under ``torch.no_grad`` as in scoring),
at the released size (D = 1024, s1 = s2 = 8) and the CtrSVDD training batch
(34 crops of 200 frames = 4 s), called with relative lengths as the training
loop calls it.

Usage::

    python benchmarks/bench_nes2net_x.py [--batch 34] [--frames 200] [--rounds 5]

``run()`` returns the numbers as a dict for ``benchmarks/run.py``.
"""

import argparse
import copy
import sys
from pathlib import Path

import torch

# Benchmark the checkout this file belongs to, whatever is installed.
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from reference_nes2net_x import ReferenceNes2NetX
from timing import interleaved, load_average, speedup

from speechbrain_nes2net.lobes.nes2net import Nes2NetX

#: Largest float32 output difference accepted before timing (the fixture tolerance).
OUTPUT_TOLERANCE = 1e-5
#: Largest float64 gradient difference, relative to each gradient's largest
#: value (see check_same_function). Gradients are compared in float64: through seven train-mode batch
#: norms, float32 summation-order differences grow to ~1e-3 relative for any
#: two correct implementations, while an actual difference would not vanish
#: in float64.
GRADIENT_TOLERANCE = 1e-8


def build_pair(input_size=1024, seed=0, **config):
    """The lobe and the port with identical random weights and BN statistics."""
    torch.manual_seed(seed)
    lobe = Nes2NetX(input_size=input_size, **config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in lobe.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
    port = ReferenceNes2NetX(input_size=input_size, **config)
    port.load_state_dict(lobe.state_dict())
    return lobe, port


def check_same_function(lobe, port, features, lengths):
    """Raises AssertionError unless both models compute the same function.

    Compares float32 outputs (eval and train mode), and in float64 the
    gradients of every parameter and the updated running statistics. Works
    on copies, so the timed models are left as they were.

    Returns
    -------
    dict
        The largest differences found.
    """
    found = {}
    for dtype in (torch.float32, torch.float64):
        pair = [copy.deepcopy(lobe).to(dtype), copy.deepcopy(port).to(dtype)]
        x = features.to(dtype)
        for training in (False, True):
            mode = "train" if training else "eval"
            outputs = []
            for model in pair:
                model.train(training)
                model.zero_grad(set_to_none=True)
                out = model(x, lengths)
                weights = torch.linspace(-1, 1, out.shape[0], dtype=dtype)[:, None]
                (out * weights).sum().backward()
                outputs.append(out.detach())
            if dtype == torch.float32:
                found[f"{mode}_output"] = (outputs[0] - outputs[1]).abs().max().item()
                continue
            reference = dict(pair[1].named_parameters())
            # Relative to each gradient's scale, floored at a millionth of the
            # largest one: a conv bias followed by a train-mode batch norm has
            # an exactly-zero true gradient, made of rounding errors.
            largest = max(p.grad.abs().max().item() for p in reference.values())
            found[f"{mode}_gradient_rel"] = max(
                (param.grad - reference[name].grad).abs().max().item()
                / max(reference[name].grad.abs().max().item(), 1e-6 * largest)
                for name, param in pair[0].named_parameters()
            )
        if dtype == torch.float64:
            reference = pair[1].state_dict()
            found["running_stats"] = max(
                (value.double() - reference[name].double()).abs().max().item()
                for name, value in pair[0].state_dict().items()
            )
    problems = [
        f"{key}={value:.3g}"
        for key, value in found.items()
        if value > (OUTPUT_TOLERANCE if key.endswith("output") else GRADIENT_TOLERANCE)
    ]
    if problems:
        raise AssertionError("the lobe and the port of Nes2Net-X differ: " + ", ".join(problems))
    return found


def _forward(model, features, lengths, training):
    if training:
        return lambda: model(features, lengths)

    def call():
        with torch.no_grad():
            model(features, lengths)

    return call


def _forward_backward(model, features, lengths):
    def call():
        model.zero_grad(set_to_none=True)
        model(features, lengths).sum().backward()

    return call


def run(batch=34, frames=200, input_size=1024, rounds=5, seed=0):
    """Runs the comparison.

    Arguments
    ---------
    batch, frames, input_size : int
        Input shape (batch, frames, input_size).
    rounds : int
        Timed calls per candidate and measurement.
    seed : int
        Seed of the weights and inputs.

    Returns
    -------
    dict
        ``check``: the differences found; for each of ``train_forward``,
        ``train_forward_backward``, ``eval_forward``, ``eval_forward_backward``:
        ``port_ms``, ``lobe_ms`` (best calls), ``*_median_ms``, ``speedup``
        (port / lobe, best-call ratio) and ``speedup_median``; ``threads``,
        ``load_before``, ``load_after``.
    """
    lobe, port = build_pair(input_size, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    features = torch.randn(batch, frames, input_size, generator=generator)
    lengths = torch.ones(batch)
    small = torch.randn(4, 37, input_size, generator=generator)
    small_lengths = torch.tensor([1.0, 0.8, 0.55, 0.3])
    result = {
        "input_size": input_size,
        "threads": torch.get_num_threads(),
        "load_before": load_average(),
        "check": check_same_function(lobe, port, small, small_lengths),
    }
    for training in (True, False):
        mode = "train" if training else "eval"
        for model in (lobe, port):
            model.train(training)
        measurements = {
            f"{mode}_forward": {
                name: _forward(model, features, lengths, training)
                for name, model in (("port", port), ("lobe", lobe))
            },
            f"{mode}_forward_backward": {
                name: _forward_backward(model, features, lengths)
                for name, model in (("port", port), ("lobe", lobe))
            },
        }
        for key, candidates in measurements.items():
            timings = interleaved(candidates, rounds=rounds)
            best, median = speedup(timings, "port", "lobe")
            result[key] = {
                "port_ms": 1e3 * timings["port"].best,
                "lobe_ms": 1e3 * timings["lobe"].best,
                "port_median_ms": 1e3 * timings["port"].median,
                "lobe_median_ms": 1e3 * timings["lobe"].median,
                "speedup": best,
                "speedup_median": median,
            }
    result["load_after"] = load_average()
    return result


def format_result(result, batch, frames):
    """Markdown table of one :func:`run` result."""
    lines = [
        (
            f"Nes2Net-X, batch {batch} x {frames} frames x {result['input_size']}, "
            f"{result['threads']} threads "
            f"(load {result['load_before']:.1f} -> {result['load_after']:.1f})"
        ),
        "",
        "| pass | port ms | lobe ms | port / lobe (best) | port / lobe (median) |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in ("train_forward", "train_forward_backward", "eval_forward", "eval_forward_backward"):
        row = result[key]
        lines.append(
            f"| {key.replace('_', ' ')} | {row['port_ms']:.1f} | {row['lobe_ms']:.1f} "
            f"| {row['speedup']:.2f}x | {row['speedup_median']:.2f}x |"
        )
    check = result["check"]
    lines.append("")
    lines.append(
        "same function: "
        + ", ".join(f"{key} {value:.1e}" for key, value in check.items())
    )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=34)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.batch, args.frames, rounds=args.rounds)
    print(format_result(result, args.batch, args.frames))


if __name__ == "__main__":
    main()
