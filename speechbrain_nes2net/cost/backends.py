"""Cost report of the back-ends: trainable parameters and multiply-accumulates.

MACs are those of the convolution and linear weights (output elements times
input elements per output, i.e. ``in_channels / groups * kernel size`` for a
convolution), counted with forward hooks on a single utterance of ``frames``
SSL frames (200 frames = 4 s at the 20 ms hop). This is the convention the
Nes2Net paper uses to compare back-ends; normalisation layers, activations and
the pooling arithmetic are not counted.

Run ``python -m speechbrain_nes2net.cost.backends --help`` (or ``nes2net-cost``).

Example
-------
>>> from speechbrain_nes2net.lobes.nes2net import Nes2Net
>>> cost = measure_cost(Nes2Net(input_size=64, outer_ratio=4, inner_ratio=4), 64, 10)
>>> cost.params, cost.macs
(4285, 21280)
"""

import argparse
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from speechbrain_nes2net.lobes.aasist import AASIST
from speechbrain_nes2net.lobes.nes2net import Nes2Net, Nes2NetX

# name -> builder(input_size, n_out); the first entry is the reference for reductions.
BACKENDS = {
    # The released AASIST builds 512 pre-activation BN parameters it never
    # applies; pre_activation=True uses them, so the count is the released one.
    "AASIST+DR": lambda d, n_out: AASIST(input_size=d, n_out=n_out, pre_activation=True),
    "Nes2Net": lambda d, n_out: Nes2Net(input_size=d, n_out=n_out),
    "Nes2Net-X": lambda d, n_out: Nes2NetX(input_size=d, n_out=n_out),
    "Nes2Net-X-SeLU": lambda d, n_out: Nes2NetX(
        input_size=d, n_out=n_out, activation="selu", se_min_channels=2
    ),
    "Nes2Net-X+ASTP": lambda d, n_out: Nes2NetX(
        input_size=d, n_out=n_out, pooling="ASTP"
    ),
}
REFERENCE = "AASIST+DR"


@dataclass
class Cost:
    """Parameters, MACs and (optionally) CPU time of one back-end."""

    params: int
    macs: int
    cpu_ms: float = float("nan")
    params_two_logits: int = 0


def count_macs(model, features):
    """Counts the conv/linear multiply-accumulates of one forward pass.

    Arguments
    ---------
    model : torch.nn.Module
        The back-end; called as ``model(features)``.
    features : torch.Tensor
        A batch of one utterance, (1, time, channels).

    Returns
    -------
    int
        Multiply-accumulates of the convolution and linear weights.
    """
    total = 0

    def hook(module, _inputs, output):
        """Adds the weight MACs of one convolution or linear layer's call."""
        nonlocal total
        per_output = module.weight[0].numel() if isinstance(
            module, (nn.Conv1d, nn.Conv2d)
        ) else module.in_features
        total += output.numel() // output.shape[0] * per_output

    handles = [
        module.register_forward_hook(hook)
        for module in model.modules()
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            model(features)
    finally:
        for handle in handles:
            handle.remove()
    return total


def measure_cost(model, input_size, frames, time_repeats=0):
    """Measures a back-end on one utterance of ``frames`` frames.

    Arguments
    ---------
    model : torch.nn.Module
        The back-end, taking (batch, time, channels).
    input_size : int
        Feature channels.
    frames : int
        Number of SSL frames of the utterance.
    time_repeats : int
        When > 0, also time that many forward passes on the CPU and report
        the median in milliseconds.

    Returns
    -------
    Cost
    """
    model = model.eval()
    features = torch.randn(1, frames, input_size)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    cost = Cost(params=params, macs=count_macs(model, features))
    if time_repeats > 0:
        timings = []
        with torch.no_grad():
            model(features)  # warm-up
            for _ in range(time_repeats):
                start = time.perf_counter()
                model(features)
                timings.append(time.perf_counter() - start)
        cost.cpu_ms = 1000 * sorted(timings)[len(timings) // 2]
    return cost


def cost_table(frames=200, input_size=1024, time_repeats=0, backends=None):
    """Measures every back-end and returns ``{name: Cost}``.

    MACs and times are those of the one-logit model; parameters are given for
    one and two logits (the CtrSVDD and ASVspoof releases respectively).
    """
    costs = {}
    for name in backends or list(BACKENDS):
        cost = measure_cost(BACKENDS[name](input_size, 1), input_size, frames, time_repeats)
        two = BACKENDS[name](input_size, 2)
        cost.params_two_logits = sum(p.numel() for p in two.parameters() if p.requires_grad)
        costs[name] = cost
    return costs


def format_table(costs, frames):
    """Renders the cost table as Markdown, reductions relative to AASIST+DR."""
    reference = costs.get(REFERENCE)
    timed = any(c.cpu_ms == c.cpu_ms for c in costs.values())
    header = (
        f"| back-end | parameters (1 logit) | parameters (2 logits) "
        f"| MACs ({frames} frames) | MACs vs {REFERENCE} |"
    )
    rule = "|---|---:|---:|---:|---:|"
    if timed:
        header += " CPU ms / utterance |"
        rule += "---:|"
    lines = [header, rule]
    for name, cost in costs.items():
        if reference is None or name == REFERENCE:
            change = "reference" if name == REFERENCE else "n/a"
        else:
            change = f"{100 * (cost.macs / reference.macs - 1):+.1f}%"
        line = (
            f"| {name} | {cost.params:,} | {cost.params_two_logits:,} "
            f"| {cost.macs / 1e6:.2f} M | {change} |"
        )
        if timed:
            line += f" {cost.cpu_ms:.1f} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    """Command line: print the cost table."""
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_nes2net.cost.backends",
        description=(
            "Print trainable parameters and conv/linear multiply-accumulates of "
            "every back-end we ship, and the MAC change relative to AASIST with "
            "its 1024->128 dimensionality-reduction layer."
        ),
    )
    parser.add_argument(
        "--frames", type=int, default=200, help="SSL frames per utterance (200 = 4 s)"
    )
    parser.add_argument(
        "--input-size", type=int, default=1024, help="SSL feature size (1024)"
    )
    parser.add_argument(
        "--time",
        type=int,
        default=0,
        metavar="N",
        help="also time N forward passes per back-end on the CPU (median ms)",
    )
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error(f"--frames must be positive, got {args.frames}")
    costs = cost_table(args.frames, args.input_size, args.time)
    print(format_table(costs, args.frames))
    print(
        "\nMACs: convolution and linear weights only. AASIST+DR counts the released "
        "parameter set, including 512 pre-activation BN parameters that the released "
        "code builds but never applies."
    )


if __name__ == "__main__":
    main()
