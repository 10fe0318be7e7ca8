"""Runs every benchmark of this folder in one process and prints the ratios.

- batched variable-length scoring vs batch-1 scoring (``bench_batched.py``):
  the Nes2Net-X back-end on In-the-Wild-like durations (mean 4.3 s; target
  >= 3x on CPU) and on long utterances (2-16 s), and the whole model with a
  tiny SSL model;
- the library's Nes2Net-X vs the straightforward port
  (``bench_nes2net_x.py``): forward and forward+backward, train and eval
  mode, batch 34 x 200 frames. The lobe is plain PyTorch now, as the port
  is: the ratios should be about 1x and never below it. The former target
  (>= 1.5x for train-mode forward+backward, met with fused autograd kernels
  over private ATen operators) was dropped with those kernels; the ratio is
  still printed, in the summary line too;
- the sort-based metrics vs SpeechBrain's (``bench_metrics.py``);
- the whole model (SSL front-end + aggregation + Nes2Net-X) on the WavLM-Large
  and XLS-R 300M architectures, random weights (``bench_whole_model.py``):
  the official way (fp32, batch 1, the port) vs ours in fp32 and bf16,
  batched and at batch 1, bf16 compiled at batch 1, onnxruntime fp32 and
  onnxruntime int8, 32 files of In-the-Wild-like durations (mean 4.3 s).
  ``whole_model_speedup`` is the best supported path (ours fp32, ours bf16
  where native, onnxruntime fp32) over the official way, the smaller of the
  two architectures; ``bf16_peak_fraction`` the fastest bf16 path at batch 1
  over the bf16 matmul peak measured in the same run.

Every comparison first checks that both sides compute the same scores, then
times them in interleaved rounds and takes the best call of each (medians are
printed too; see ``timing.py``). The last line is::

    summary: batched_backend_speedup=<ratio> nes2net_x_speedup=<ratio> whole_model_speedup=<ratio> bf16_peak_fraction=<fraction>

Usage::

    python benchmarks/run.py            # full run: the whole models take most of it (minutes)
    python benchmarks/run.py --no-whole-model   # the former run, about 80 s on 2 idle cores
    python benchmarks/run.py --quick    # smoke run of every benchmark (small sizes)
"""

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

# Benchmark the checkout this file belongs to, whatever is installed.
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import bench_batched
import bench_metrics
import bench_nes2net_x
import bench_whole_model
from timing import load_average

#: (full, quick) sizes of every benchmark.
SIZES = {
    "backend": (dict(utterances=64, batch_size=16, rounds=5), dict(utterances=6, batch_size=4, rounds=1, input_size=128, max_frames=120)),
    "model": (dict(utterances=32, batch_size=16, rounds=3), dict(utterances=4, batch_size=2, rounds=1, max_seconds=1.5)),
    "nes2net_x": (dict(batch=34, frames=200, rounds=7), dict(batch=4, frames=40, input_size=128, rounds=1)),
    "metrics": (dict(n_trials=1_000_000, n_small=4000, repeats=3), dict(n_trials=20_000, n_small=500, repeats=1)),
    "whole_model": (dict(utterances=32, rounds=2), dict(utterances=4, rounds=1, quick=True)),
}


def machine():
    """One line naming the machine and the torch build."""
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the script runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--no-whole-model", action="store_true",
        help="leave out the WavLM-Large / XLS-R 300M whole-model comparison (minutes)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    which = 1 if args.quick else 0
    sizes = {name: pair[which] for name, pair in SIZES.items()}
    started = time.perf_counter()
    print(f"machine: {machine()}; load average {load_average():.2f}")
    print()

    backend = bench_batched.run_backend(**sizes["backend"])
    print(bench_batched.format_result("Batched scoring, back-end (Nes2Net-X)", backend))
    print()
    backend_long = bench_batched.run_backend(mix="long", **sizes["backend"])
    print(bench_batched.format_result("Batched scoring, back-end (Nes2Net-X)", backend_long))
    print()
    model = bench_batched.run_model(**sizes["model"])
    print(bench_batched.format_result("Batched scoring, whole model (tiny WavLM + SEA + Nes2Net-X)", model))
    print()
    nes2net_x = bench_nes2net_x.run(**sizes["nes2net_x"])
    print(bench_nes2net_x.format_result(nes2net_x, sizes["nes2net_x"]["batch"], sizes["nes2net_x"]["frames"]))
    print()
    metrics = bench_metrics.run(**sizes["metrics"])
    print(
        f"Metrics: compute_eer on {metrics['n_trials']:,} trials {metrics['eer_1m_s']:.3f} s; "
        f"{metrics['n_small']:,} trials: SpeechBrain EER {metrics['speechbrain_small_s']:.3f} s, "
        f"ours {1e3 * metrics['ours_small_s']:.2f} ms"
    )
    print()
    whole = {}
    if not args.no_whole_model:
        whole = bench_whole_model.run(threads=args.threads, **sizes["whole_model"])
        for result in whole.values():
            print(bench_whole_model.format_result(result, args.quick))
            print()

    rows = [
        ("batched back-end scoring vs batch 1, In-the-Wild durations (target >= 3x)", backend["speedup"], backend["speedup_median"]),
        ("batched back-end vs the port at batch 1, In-the-Wild durations", backend["speedup_vs_port"], backend["speedup_vs_port_median"]),
        ("back-end at batch 1, port / lobe, In-the-Wild durations", backend["batch1_port_vs_lobe"], backend["batch1_port_vs_lobe_median"]),
        ("batched back-end scoring vs batch 1, long utterances (2-16 s)", backend_long["speedup"], backend_long["speedup_median"]),
        ("batched back-end vs the port at batch 1, long utterances", backend_long["speedup_vs_port"], backend_long["speedup_vs_port_median"]),
        ("back-end at batch 1, port / lobe, long utterances", backend_long["batch1_port_vs_lobe"], backend_long["batch1_port_vs_lobe_median"]),
        ("batched whole-model scoring vs batch 1", model["speedup"], model["speedup_median"]),
        ("Nes2Net-X train forward, port / lobe", nes2net_x["train_forward"]["speedup"], nes2net_x["train_forward"]["speedup_median"]),
        ("Nes2Net-X train forward+backward, port / lobe (former target >= 1.5x, dropped)", nes2net_x["train_forward_backward"]["speedup"], nes2net_x["train_forward_backward"]["speedup_median"]),
        ("Nes2Net-X eval forward, port / lobe", nes2net_x["eval_forward"]["speedup"], nes2net_x["eval_forward"]["speedup_median"]),
        ("Nes2Net-X eval forward+backward, port / lobe", nes2net_x["eval_forward_backward"]["speedup"], nes2net_x["eval_forward_backward"]["speedup_median"]),
        ("EER: SpeechBrain / ours, same trials", metrics["speedup_same_size"], float("nan")),
    ]
    for name, result in whole.items():
        for label in bench_whole_model.PATHS[1:]:
            row = result["rows"][label]
            rows.append(
                (f"whole model {name}: {label} vs the official way (fp32, batch 1)",
                 row["speedup"], result["rows"]["official"]["median_seconds"] / row["median_seconds"])
            )  # fmt: skip
    print("| ratio | best call | median call |")
    print("|---|---:|---:|")
    for label, best, median in rows:
        median_text = "-" if math.isnan(median) else f"{median:.2f}x"
        print(f"| {label} | {best:.2f}x | {median_text} |")
    print()
    load = load_average()
    print(
        f"{'quick' if args.quick else 'full'} run: {time.perf_counter() - started:.0f} s; "
        f"load average {load:.2f}"
    )
    cores = os.cpu_count() or 1
    if load > cores:
        print(
            f"warning: the load average ({load:.1f}) exceeded the {cores} cores: other "
            "processes competed for the CPUs, so the timings (batch-1 scoring most) are "
            "unreliable; run again on a quieter machine"
        )
    print(
        f"summary: batched_backend_speedup={backend['speedup']:.2f} "
        f"nes2net_x_speedup={nes2net_x['train_forward_backward']['speedup']:.2f}"
        + (f" {bench_whole_model.summary(whole)}" if whole else "")
    )


if __name__ == "__main__":
    main()
