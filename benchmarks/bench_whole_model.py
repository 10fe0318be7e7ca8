"""Times the whole model (SSL front-end + aggregation + Nes2Net-X) the official way and ours.

The SSL front-end is over 98% of the CPU time, so this is the benchmark a user's
wall-clock follows. For each architecture (WavLM-Large with SEA and a
one-logit Nes2Net-X, the CtrSVDD release; XLS-R 300M with the last layer and a
two-logit Nes2Net-X with dilation 2, the ASVspoof release), a model with random
weights is built from the published configuration (``speechbrain_nes2net.cost.ssl``;
nothing is downloaded), written as an export folder (``write_export``) and
loaded back as a user would, then 32 WAV files of In-the-Wild-like durations
(log-normal, mean 4.3 s, 1-16 s) are scored by:

- ``official``: the official pipeline's way: fp32, one file at a time (batch
  1), full utterances, the SSL model (transformers; the releases use s3prl /
  fairseq, which compute the same function), the aggregation, and the
  straightforward port of Nes2Net-X (``reference_nes2net_x.py``);
- ``ours fp32``: ``AntiSpoofModel.score_files``: sorted, length-bucketed
  batches of 2 (``nes2net-score``'s fp32 default on a CPU) with the SSL
  attention mask and exact frame lengths; ``ours fp32 batch 1``: one file at a time;
- ``ours bf16``: the same batches with ``precision="bf16"`` (the SSL front-end in
  bfloat16; only where the CPU computes bf16 natively, see
  :mod:`speechbrain_nes2net.precision`); ``ours bf16 batch 1``: the same one
  file at a time (``nes2net-score``'s bf16 default on a CPU);
  ``ours bf16 compiled batch 1``: that,
  after ``compile_frontend`` (``--compile``; its compile time is printed);
- ``onnxruntime fp32`` / ``onnxruntime int8``: ``nes2net-export-onnx`` of the
  folder (plain, and ``--quantize int8``), scored by ``OnnxAntiSpoofModel.score_files``
  with the same batches.

Before anything is timed, the scores are compared on the first files: ours
fp32 and onnxruntime fp32 must equal the official way's to 1e-4 (relative to
the score's magnitude, at least 1e-4 absolute); bf16 and int8 differences are
printed. Candidates are then timed in interleaved rounds (``timing.py``;
best call). Reported per path: seconds, utterances per second, real-time
factor (seconds of compute per second of audio), achieved GMAC/s (the
model's multiply-accumulates on the valid audio, counted as in
``speechbrain_nes2net.cost.ssl``, over the time), its fraction of the
machine's matrix-product peak in the path's precision (fp32 or bf16
``torch.matmul`` of 2048 x 2048 matrices, measured in the same run, before
and after the paths; the faster call counts) and the ratio to the official
way. The "best supported path" is the fastest of ours fp32, ours bf16 (when
native) and onnxruntime fp32, batched or not, the paths that reproduce the
fp32 scores (bf16 within its documented tolerance); int8 changes scores more
and is an option. ``bf16_peak_fraction`` is the fastest bf16 path at batch 1
over the bf16 peak.

Usage::

    python benchmarks/bench_whole_model.py [--quick] [--models WavLM-Large] [--rounds 2]
    python benchmarks/bench_whole_model.py --threads 1 --cpu-time   # a loaded machine

``run()`` returns a dict per architecture for ``benchmarks/run.py``.
"""

import argparse
import gc
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

# Benchmark the checkout this file belongs to, whatever is installed.
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_batched import FRAMES_PER_SECOND, randomised, utterance_frames
from reference_nes2net_x import ReferenceNes2NetX
from timing import interleaved, load_average

from speechbrain_nes2net.cost.backends import measure_cost
from speechbrain_nes2net.cost.ssl import SSL_MODELS, ssl_macs
from speechbrain_nes2net.evaluation.calibration import DecisionRule
from speechbrain_nes2net.lobes.aggregation import build_aggregator
from speechbrain_nes2net.lobes.nes2net import Nes2NetX
from speechbrain_nes2net.lobes.ssl import SSLFrontendFromConfig
from speechbrain_nes2net.precision import resolve_precision
from speechbrain_nes2net.pretrained.export import write_export
from speechbrain_nes2net.pretrained.interface import AntiSpoofModel
from speechbrain_nes2net.pretrained.modules import EvalSettings
from speechbrain_nes2net.pretrained.onnx_export import export_onnx, quantize_int8
from speechbrain_nes2net.pretrained.onnx_model import OnnxAntiSpoofModel
from speechbrain_nes2net.pretrained.scoring import BatchStats

SAMPLE_RATE = 16000
#: Files per batch of the batched paths: nes2net-score's fp32 default on a CPU
#: (its bf16 default is 1, as the bf16 rows here measure).
BATCH_SIZE = 2
#: Largest accepted |score difference| (relative to max(1, |score|)) of the exact paths.
TOLERANCE = 1e-4

#: How each architecture is used by its official release.
ARCHITECTURES = {
    "WavLM-Large": dict(
        model_type="wavlm", normalize=True, aggregation="SEA", n_out=1, dilation=1,
        release="CtrSVDD release: WavLM-Large, SEA over 25 states, Nes2Net-X, 1 logit",
    ),
    "XLS-R 300M": dict(
        model_type="wav2vec2", normalize=False, aggregation="last", n_out=2, dilation=2,
        release="ASVspoof release: XLS-R 300M, last layer, Nes2Net-X (dilation 2), 2 logits",
    ),
}  # fmt: skip

#: Paths in the order of the tables; ``official`` first.
PATHS = (
    "official", "ours fp32", "ours fp32 batch 1", "ours bf16", "ours bf16 batch 1",
    "ours bf16 compiled batch 1", "onnxruntime fp32", "onnxruntime int8",
)  # fmt: skip
#: The paths that reproduce the fp32 scores (bf16 within its tolerance).
SUPPORTED = PATHS[1:-1]
#: The bf16 paths at batch 1 (``bf16_peak_fraction``).
BF16_BATCH_1 = ("ours bf16 batch 1", "ours bf16 compiled batch 1")


def matmul_peak(dtype, size=2048, calls=8, cpu_time=False):
    """GMAC/s of the fastest of ``calls`` products of two ``size`` x ``size`` matrices."""
    a, b = (torch.randn(size, size).to(dtype) for _ in range(2))
    clock = time.process_time if cpu_time else time.perf_counter
    best = math.inf
    for _ in range(calls):
        started = clock()
        torch.matmul(a, b)
        best = min(best, clock() - started)
    return size**3 / best / 1e9


def matmul_peaks(cpu_time=False):
    """{'fp32': GMAC/s, 'bf16': GMAC/s} of this machine's matrix products now."""
    return {key: matmul_peak(dtype, cpu_time=cpu_time)
            for key, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}  # fmt: skip


def ssl_config(name, quick):
    """The transformers configuration dict of an architecture (tiny in quick runs)."""
    config = SSL_MODELS[name][1]().to_dict()
    config.pop("model_type", None)
    if quick:  # same structure, tiny sizes (as make_tiny_ssl_model)
        config.update(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            conv_dim=[32] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        )  # fmt: skip
        if "num_buckets" in config:
            config.update(num_buckets=32, max_bucket_distance=80)
    return config


def build_export(name, folder, quick=False, seed=0):
    """Writes a random-weight model of architecture ``name`` as an export folder; returns its path."""
    spec = ARCHITECTURES[name]
    config = ssl_config(name, quick)
    torch.manual_seed(seed)
    ssl = SSLFrontendFromConfig(spec["model_type"], config, normalize=spec["normalize"]).eval()
    dim, states = config["hidden_size"], config["num_hidden_layers"] + 1
    ratios = {"outer_ratio": 4, "inner_ratio": 4} if quick else {}
    backend_kwargs = {
        "input_size": dim, "n_out": spec["n_out"], "dilation": spec["dilation"], **ratios,
    }  # fmt: skip
    aggregator = build_aggregator(spec["aggregation"], states, dim).eval()
    backend = randomised(Nes2NetX(**backend_kwargs), seed)
    return write_export(
        folder, ssl, aggregator, backend, backend_kwargs,
        settings=EvalSettings(eval_window_seconds=60.0),
        decision=DecisionRule(0.0, source="dev_eer"), card={"title": f"random {name}"},
        verify=False,
    )  # fmt: skip


def write_utterances(folder, count, seed=0, max_seconds=None):
    """``count`` 16 kHz WAV files of In-the-Wild-like durations; returns (paths, seconds)."""
    generator = torch.Generator().manual_seed(seed + 1)
    seconds = utterance_frames("in_the_wild", count, generator).double() / FRAMES_PER_SECOND
    if max_seconds is not None:
        seconds = seconds.clamp(max=max_seconds)
    rng = np.random.default_rng(seed)
    paths = []
    for index, duration in enumerate(seconds.tolist()):
        path = Path(folder) / f"utt{index:03d}.wav"
        samples = int(round(duration * SAMPLE_RATE))
        soundfile.write(path, (0.1 * rng.standard_normal(samples)).astype(np.float32), SAMPLE_RATE)
        paths.append(path)
    return paths, seconds.tolist()


class Official:
    """The official pipeline's scoring: fp32, batch 1, full utterance, the port back-end."""

    def __init__(self, model, name, quick):
        spec = ARCHITECTURES[name]
        encoder = model.encoder
        self.ssl, self.aggregator = encoder.ssl, encoder.aggregator
        ratios = {"outer_ratio": 4, "inner_ratio": 4} if quick else {}
        self.backend = ReferenceNes2NetX(
            input_size=encoder.backend.fc.in_features, n_out=spec["n_out"],
            dilation=spec["dilation"], **ratios,
        ).eval()  # fmt: skip
        self.backend.load_state_dict(encoder.backend.state_dict())

    def score_file(self, path):
        """The raw bona fide score of one file."""
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        assert rate == SAMPLE_RATE
        wav = torch.from_numpy(data.mean(axis=1))[None]
        with torch.no_grad():
            features = self.aggregator(self.ssl(wav))
            return float(self.backend(features)[0, -1])

    def score_files(self, paths):
        """Raw scores of files, one at a time."""
        return [self.score_file(path) for path in paths]


def _scores(results):
    return [result.score for result in results]


def utterance_macs(model, lengths):
    """Multiply-accumulates of the whole model on each waveform length (samples).

    The SSL model is counted by :func:`speechbrain_nes2net.cost.ssl.ssl_macs` at 1 s and
    2 s, its convolution + linear part fitted as a line in the length (attention
    products analytic: 2 x layers x frames^2 x hidden); aggregation and back-end
    MACs by ``measure_cost`` at two frame counts, fitted the same way.
    """
    hf = model.encoder.ssl.ssl.model
    config = hf.config
    one, two = (ssl_macs(hf, seconds * SAMPLE_RATE) for seconds in (1, 2))
    line = lambda m: m["convolution"] + m["linear"]  # noqa: E731
    slope = (line(two) - line(one)) / SAMPLE_RATE
    offset = line(one) - slope * SAMPLE_RATE
    dim = config.hidden_size
    backend = model.encoder.backend
    b1, b2 = (measure_cost(backend, dim, frames).macs for frames in (50, 100))
    b_slope = (b2 - b1) / 50
    totals = []
    for samples in lengths:
        frames = int(hf._get_feat_extract_output_lengths(torch.tensor(samples)))
        attention = 2 * config.num_hidden_layers * frames * frames * dim
        totals.append(offset + slope * samples + attention + b1 + b_slope * (frames - 50))
    return totals


def run_architecture(
    name, work, utterances=32, rounds=2, quick=False, seed=0, threads=None, cpu_time=False
):
    """Builds, checks and times every path for one architecture; returns a result dict.

    ``cpu_time``: rank the paths by the process's CPU seconds instead of
    wall-clock seconds (one thread, on a loaded machine; the matmul peaks too).
    """
    threads = threads or torch.get_num_threads()
    folder = Path(work) / name.replace(" ", "_")
    audio = folder / "audio"
    audio.mkdir(parents=True)
    result = {"name": name, "release": ARCHITECTURES[name]["release"], "threads": threads,
              "clock": "CPU seconds" if cpu_time else "seconds"}  # fmt: skip
    started = time.perf_counter()
    export = build_export(name, folder / "export", quick, seed)
    paths, seconds = write_utterances(audio, utterances, seed, max_seconds=2.0 if quick else None)
    load = lambda: AntiSpoofModel.from_hparams(  # noqa: E731
        source=str(export), savedir=str(folder / "savedir"), run_opts={"device": "cpu"}
    )
    fp32 = load()
    onnx_fp32 = folder / "model.onnx"
    export_onnx(fp32, onnx_fp32, check=False)  # checked below, on the benchmark's files
    onnx_int8 = quantize_int8(onnx_fp32, folder / "model_int8.onnx")
    result["prepare_seconds"] = time.perf_counter() - started

    bf16_native = resolve_precision("auto", "cpu") == "bf16"
    bf16, compiled = load(), load()
    bf16.set_precision("bf16")
    compiled.set_precision("bf16")
    # A quick run (tiny models, a smoke test) compiles without Inductor's code generation.
    result["compile_seconds"] = compiled.compile_frontend(1, backend="eager" if quick else "inductor")
    runners = {"official": Official(fp32, name, quick).score_files}
    for label, model, batch in (
        ("ours fp32", fp32, BATCH_SIZE), ("ours fp32 batch 1", fp32, 1),
        ("ours bf16", bf16, BATCH_SIZE), ("ours bf16 batch 1", bf16, 1),
        ("ours bf16 compiled batch 1", compiled, 1),
    ):  # fmt: skip
        runners[label] = lambda p, model=model, batch=batch: _scores(
            model.score_files(p, batch, calibrated=False)
        )
    for label, path in (("onnxruntime fp32", onnx_fp32), ("onnxruntime int8", onnx_int8)):
        engine = OnnxAntiSpoofModel(path, threads=threads)
        runners[label] = lambda p, engine=engine: _scores(
            engine.score_files(p, BATCH_SIZE, calibrated=False)
        )

    # Check before timing: the exact paths reproduce the official scores.
    check = paths[: min(len(paths), 4 if not quick else len(paths))]
    reference = np.array(runners["official"](check))
    differences = {}
    for label, runner in runners.items():
        got = np.array(runner(check))
        differences[label] = float(np.max(np.abs(got - reference) / np.maximum(1.0, np.abs(reference))))
        if label in ("ours fp32", "onnxruntime fp32") and not differences[label] <= TOLERANCE:
            raise AssertionError(
                f"{name}: {label} scores differ from the official way's by {differences[label]:.3g} "
                f"(relative), more than {TOLERANCE:g}; nothing was timed"
            )
    result["check_files"] = len(check)
    result["differences"] = differences

    result["load_before"] = load_average()
    peaks = matmul_peaks(cpu_time)
    timed = {label: (lambda runner=runner: runner(paths)) for label, runner in runners.items()}
    timings = interleaved(timed, rounds=rounds, warmup=0)
    peaks = {key: max(value, matmul_peaks(cpu_time)[key]) for key, value in peaks.items()}
    if cpu_time:
        for timing in timings.values():
            timing.seconds = timing.cpu_seconds
    result["load_after"] = load_average()
    audio_seconds = float(sum(seconds))
    lengths = [int(round(s * SAMPLE_RATE)) for s in seconds]
    macs = float(sum(utterance_macs(fp32, lengths)))
    stats = BatchStats()
    for batch in fp32.plan(lengths, BATCH_SIZE):
        stats.add(lengths[i] for i in batch)
    official = timings["official"].best
    rows = {}
    for label in PATHS:
        best = timings[label].best
        rows[label] = {
            "seconds": best,
            "median_seconds": timings[label].median,
            "utterances_per_s": len(paths) / best,
            "rtf": best / audio_seconds,
            "gmac_per_s": macs / best / 1e9,
            # int8 has a peak of its own, not measured here.
            "peak_fraction": macs / best / 1e9 / peaks["bf16" if "bf16" in label else "fp32"]
            if "int8" not in label else math.nan,
            "speedup": official / best,
            "difference": differences[label],
        }
    supported = [label for label in SUPPORTED if "bf16" not in label or bf16_native]
    best_label = max(supported, key=lambda label: rows[label]["speedup"])
    result.update(
        peaks=peaks, bf16_peak_fraction=max(rows[label]["peak_fraction"] for label in BF16_BATCH_1),
        rows=rows, utterances=len(paths), audio_seconds=audio_seconds,
        mean_seconds=audio_seconds / len(paths), gmacs=macs / 1e9,
        padding_fraction=stats.padding_fraction, batches=stats.batches,
        bf16_native=bf16_native, best=best_label, best_speedup=rows[best_label]["speedup"],
        onnx_mb=onnx_fp32.stat().st_size / 1e6, onnx_int8_mb=onnx_int8.stat().st_size / 1e6,
    )  # fmt: skip
    del fp32, bf16, compiled, runners, timed
    gc.collect()
    return result


def run(
    models=tuple(ARCHITECTURES), utterances=32, rounds=2, quick=False, seed=0, threads=None,
    cpu_time=False,
):  # fmt: skip
    """Every architecture of ``models``; returns {name: result}."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="nes2net_whole_model_") as work:
        for name in models:
            results[name] = run_architecture(
                name, work, utterances, rounds, quick, seed, threads, cpu_time
            )
            gc.collect()
    return results


def format_result(result, quick=False):
    """Markdown table of one :func:`run_architecture` result."""
    size = "tiny (quick run)" if quick else "published architecture"
    lines = [
        (
            f"Whole model, {result['name']} ({size}, random weights; {result['release']}): "
            f"{result['utterances']} files, {result['audio_seconds']:.1f} s of audio "
            f"(mean {result['mean_seconds']:.1f} s), {result['gmacs']:.1f} GMAC; "
            f"{result['threads']} threads; load {result['load_before']:.2f} -> "
            f"{result['load_after']:.2f}; batched paths: {result['batches']} sorted batches of "
            f"at most {BATCH_SIZE}, {100 * result['padding_fraction']:.1f}% of the computed "
            f"audio is padding; checked on {result['check_files']} files first; matmul peaks "
            f"fp32 {result['peaks']['fp32']:.1f}, bf16 {result['peaks']['bf16']:.1f} GMAC/s; "
            f"compiling took {result['compile_seconds']:.0f} s"
        ),
        "",
        f"| path | {result['clock']} (best) | utterances / s | real-time factor | GMAC/s | of peak | x official | max rel. score diff vs official |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label in PATHS:
        row = result["rows"][label]
        note = ""
        peak = "-" if math.isnan(row["peak_fraction"]) else f"{100 * row['peak_fraction']:.0f}%"
        if "bf16" in label and not result["bf16_native"]:
            note = " (bf16 not native here)"
        if label == result["best"]:
            note += " **best supported**"
        lines.append(
            f"| {label}{note} | {row['seconds']:.2f} | {row['utterances_per_s']:.2f} "
            f"| {row['rtf']:.3f} | {row['gmac_per_s']:.1f} | {peak} "
            f"| {row['speedup']:.2f}x "
            f"| {row['difference']:.1e} |"
        )
    lines.append("")
    lines.append(
        f"ONNX files: fp32 {result['onnx_mb']:.0f} MB, int8 {result['onnx_int8_mb']:.0f} MB; "
        f"building, exporting and quantising took {result['prepare_seconds']:.0f} s (not timed in)"
    )
    return "\n".join(lines)


def whole_model_speedup(results):
    """The summary figure: the smaller, over architectures, of best supported path / official."""
    if not results:
        return float("nan")
    return min(result["best_speedup"] for result in results.values())


def bf16_peak_fraction(results):
    """The smaller, over architectures, of the fastest bf16 batch-1 path's fraction of the bf16 peak."""
    return min((result["bf16_peak_fraction"] for result in results.values()), default=math.nan)


def summary(results):
    """``whole_model_speedup=<ratio> bf16_peak_fraction=<fraction>``."""
    return (
        f"whole_model_speedup={whole_model_speedup(results):.2f} "
        f"bf16_peak_fraction={bf16_peak_fraction(results):.2f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, 4 files")
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--utterances", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--cpu-time", action="store_true",
        help="time by the process's CPU seconds (use with --threads 1 on a loaded machine)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time and torch.get_num_threads() != 1:
        parser.error("--cpu-time needs one thread (--threads 1): spinning threads count as CPU time")
    utterances = 4 if args.quick else args.utterances
    rounds = 1 if args.quick else args.rounds
    results = run(args.models, utterances, rounds, args.quick, threads=args.threads, cpu_time=args.cpu_time)
    for result in results.values():
        print(format_result(result, args.quick))
        print()
    print(summary(results))


if __name__ == "__main__":
    main()
