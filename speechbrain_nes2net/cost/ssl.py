"""Cost of the whole model: SSL front-end vs aggregation vs back-end.

The SSL models are built from their published architectures (WavLM-Large,
wav2vec 2.0 XLS-R 300M; transformers configurations with the hub's values)
with random weights, so nothing is downloaded. For one utterance of
``seconds`` of 16 kHz audio this reports parameters, multiply-accumulates and
optionally CPU milliseconds per part:

- SSL MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` for the
  convolutions (feature encoder, positional convolution) and the linear
  layers (attention projections, feed-forward, feature projection; WavLM's
  gated position bias), and analytically for the attention matrix products
  (2 x layers x frames^2 x hidden: scores and weighted values), which not
  every attention kernel reports;
- aggregation MACs are those of its matrix products (SEA's excitation MLP and
  layer-weighted sum; none for the last layer);
- back-end MACs follow :mod:`speechbrain_nes2net.cost.backends` (convolution and
  linear weights, forward hooks) at the SSL's frame count.

Run ``python -m speechbrain_nes2net.cost.ssl --help``.

Example
-------
>>> import transformers
>>> config = transformers.Wav2Vec2Config(
...     hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
...     conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
...     feat_extract_norm="layer", do_stable_layer_norm=True)
>>> macs = ssl_macs(transformers.Wav2Vec2Model(config).eval(), 16000)
>>> macs["frames"], macs["attention"] == 2 * 2 * 49 * 49 * 32
(49, True)
"""

import argparse
import math
import time
from dataclasses import dataclass, field
from functools import partial

import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

from speechbrain_nes2net.cost.backends import BACKENDS, measure_cost
from speechbrain_nes2net.lobes.aggregation import build_aggregator

SAMPLE_RATE = 16000

# The published architectures (hub config.json values that shape the compute).
_COMMON = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    conv_dim=(512,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    layerdrop=0.0,
)

#: name -> (transformers model class, config, how the Nes2Net recipes use it).
SSL_MODELS = {
    "WavLM-Large": (
        transformers.WavLMModel,
        lambda: transformers.WavLMConfig(
            conv_bias=False, num_buckets=320, max_bucket_distance=800, **_COMMON
        ),
        dict(aggregation="SEA", backends=("Nes2Net-X", "AASIST+DR"), n_out=1,
             recipe="CtrSVDD: SEA over 25 states, 1 logit"),
    ),
    "XLS-R 300M": (
        transformers.Wav2Vec2Model,
        lambda: transformers.Wav2Vec2Config(conv_bias=True, **_COMMON),
        dict(aggregation="last", backends=("Nes2Net-X", "AASIST+DR"), n_out=2,
             recipe="ASVspoof 2019/2021, ITW: last layer, 2 logits"),
    ),
}


def _flop_counts(run):
    """FLOPs per ATen op of ``run()`` (no grad)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run()
    return {str(op): flops for op, flops in counter.get_flop_counts().get("Global", {}).items()}


def ssl_macs(model, samples):
    """Multiply-accumulates of a transformers SSL encoder on one waveform.

    Arguments
    ---------
    model : transformers.PreTrainedModel
        A ``WavLMModel`` / ``Wav2Vec2Model`` (eval mode).
    samples : int
        Waveform length in samples.

    Returns
    -------
    dict
        ``frames``, ``convolution``, ``linear``, ``attention`` and ``total`` MACs.
    """
    config = model.config
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(samples)))
    counts = _flop_counts(lambda: model(torch.zeros(1, samples), output_hidden_states=True))
    convolution = counts.get("aten.convolution", 0) // 2
    linear = (counts.get("aten.addmm", 0) + counts.get("aten.mm", 0)) // 2
    attention = 2 * config.num_hidden_layers * frames * frames * config.hidden_size
    return {
        "frames": frames,
        "convolution": convolution,
        "linear": linear,
        "attention": attention,
        "total": convolution + linear + attention,
    }


def _best_ms(run, repeats):
    """Fastest of ``repeats`` calls after a warm-up call, in milliseconds.

    The fastest call is the one least disturbed by other processes on a
    shared machine (the ``timeit`` convention).
    """
    times = []
    with torch.no_grad():
        run()
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return 1000 * min(times)


@dataclass
class Part:
    """Cost of one part of the model."""

    name: str
    params: int
    macs: int
    cpu_ms: float = float("nan")
    detail: dict = field(default_factory=dict)


def model_breakdown(name, seconds=4.0, time_repeats=0, seed=0):
    """Parameters, MACs and CPU time of SSL, aggregation and back-ends.

    Arguments
    ---------
    name : str
        A key of :data:`SSL_MODELS`.
    seconds : float
        Utterance duration.
    time_repeats : int
        When > 0, time that many forward passes of each part on the CPU
        (fastest, after a warm-up pass); 0 skips timing.
    seed : int
        Seed of the random weights.

    Returns
    -------
    (list of Part, dict)
        The SSL part, the aggregation part, one part per back-end, and the
        recipe description.
    """
    model_class, make_config, usage = SSL_MODELS[name]
    torch.manual_seed(seed)
    model = model_class(make_config()).eval()
    samples = int(seconds * SAMPLE_RATE)
    macs = ssl_macs(model, samples)
    # The encoder's masked-frame embedding serves pre-training only.
    params = sum(p.numel() for n, p in model.named_parameters() if n != "masked_spec_embed")
    ssl = Part(f"{name} (SSL)", params, macs["total"], detail=macs)
    waveform = torch.randn(1, samples)
    if time_repeats > 0:
        ssl.cpu_ms = _best_ms(lambda: model(waveform, output_hidden_states=True), time_repeats)
    with torch.no_grad():
        states = torch.stack(model(waveform, output_hidden_states=True).hidden_states)
    model = None  # free the encoder's memory before the back-ends are built

    layers, dim, frames = states.shape[0], states.shape[-1], macs["frames"]
    aggregator = build_aggregator(usage["aggregation"], layers, dim).eval()
    aggregation_macs = sum(_flop_counts(lambda: aggregator(states)).values()) // 2
    aggregation = Part(
        f"aggregation ({usage['aggregation']})",
        sum(p.numel() for p in aggregator.parameters()),
        aggregation_macs,
    )
    if time_repeats > 0:
        aggregation.cpu_ms = _best_ms(lambda: aggregator(states), time_repeats)
    parts = [ssl, aggregation]
    features = torch.randn(1, frames, dim)
    for backend in usage["backends"]:
        module = BACKENDS[backend](dim, usage["n_out"]).eval()
        cost = measure_cost(module, dim, frames)
        part = Part(backend, cost.params, cost.macs)
        if time_repeats > 0:
            part.cpu_ms = _best_ms(partial(module, features), time_repeats)
        parts.append(part)
    return parts, usage


def format_breakdown(name, parts, usage, seconds):
    """Markdown table of :func:`model_breakdown`, shares of the full model per back-end."""
    ssl, aggregation, *backends = parts
    frames = ssl.detail["frames"]
    lines = [
        (
            f"**{name}** + {usage['aggregation']} aggregation ({usage['recipe']}); "
            f"{seconds:g} s = {frames} frames"
        ),
        "",
        "| part | parameters | MACs | MAC share | CPU ms |",
        "|---|---:|---:|---:|---:|",
    ]

    def row(part, total_macs):
        """One Markdown table row of a part: parameters, MACs, MAC share, CPU time."""
        ms = "-" if math.isnan(part.cpu_ms) else f"{part.cpu_ms:.1f}"
        return (
            f"| {part.name} | {part.params / 1e6:.2f} M | {part.macs / 1e9:.3f} G "
            f"| {100 * part.macs / total_macs:.2f}% | {ms} |"
        )

    for backend in backends:
        total = ssl.macs + aggregation.macs + backend.macs
        lines.append(f"| *with {backend.name}* | | | | |")
        lines.append(row(ssl, total))
        lines.append(row(aggregation, total))
        lines.append(row(backend, total))
        cpu = ssl.cpu_ms + aggregation.cpu_ms + backend.cpu_ms
        cpu_text = "-" if math.isnan(cpu) else f"{cpu:.1f}"
        lines.append(
            f"| total | {(ssl.params + aggregation.params + backend.params) / 1e6:.2f} M "
            f"| {total / 1e9:.3f} G | 100% | {cpu_text} |"
        )
    detail = ssl.detail
    lines.append("")
    lines.append(
        f"SSL MACs: convolutions {detail['convolution'] / 1e9:.3f} G, linear layers "
        f"{detail['linear'] / 1e9:.3f} G, attention products {detail['attention'] / 1e9:.3f} G."
    )
    return "\n".join(lines)


def main(argv=None):
    """Command line: print the full-model breakdown of each SSL configuration."""
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_nes2net.cost.ssl",
        description=(
            "Parameters, MACs and CPU time of the SSL front-end, the aggregation and "
            "the back-end for WavLM-Large and XLS-R 300M (published architectures, "
            "random weights, nothing downloaded)."
        ),
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="utterance duration (4)")
    parser.add_argument(
        "--time", type=int, default=0, metavar="N",
        help="also time N forward passes per part on the CPU (fastest, ms)",
    )  # fmt: skip
    parser.add_argument(
        "--models", nargs="+", default=list(SSL_MODELS), choices=list(SSL_MODELS),
        help="SSL configurations to report",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive, got {args.seconds}")
    print(f"torch threads: {torch.get_num_threads()}")
    for name in args.models:
        parts, usage = model_breakdown(name, args.seconds, args.time)
        print()
        print(format_breakdown(name, parts, usage, args.seconds))


if __name__ == "__main__":
    main()
