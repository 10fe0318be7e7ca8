"""Times batched variable-length scoring against scoring one utterance at a time.

The official Nes2Net code scores full utterances one at a time (batch size
1). The library scores padded batches of utterances sorted by duration, with
relative lengths, and every score equals the utterance's batch-size-1 score
(checked here before timing, to 1e-4). Two set-ups:

- back-end only: Nes2Net-X at the released size (D = 1024) on random
  features of random lengths, in two mixes (:data:`DURATION_MIXES`):
  ``in_the_wild``, durations like a full-utterance evaluation set (log-normal
  with In-the-Wild's mean of 4.3 s), and ``long``, 2-16 s uniform;
- whole model: a tiny WavLM (:func:`speechbrain_nes2net.lobes.ssl.make_tiny_ssl_model`,
  the demo's SSL model, random weights) through
  :class:`~speechbrain_nes2net.lobes.ssl.SSLFrontend`, SEA aggregation and a
  Nes2Net-X on its 64-dim states (the demo's back-end), on random waveforms
  of 1-6 s; frame lengths come from
  :func:`~speechbrain_nes2net.lobes.ssl.ssl_frame_lengths`, as in training.

Everything runs in eval mode under ``torch.no_grad``. The back-end is also
timed at batch size 1 in the straightforward port
(``reference_nes2net_x.py``), the official code's way of scoring. Sorting
and padding the batches is a data loader's work (in worker processes, beside
the model); it is done once before timing and its duration is reported.

Usage::

    python benchmarks/bench_batched.py [--utterances 64] [--batch-size 16] [--mix long]

``run_backend()`` and ``run_model()`` return dicts for ``benchmarks/run.py``.
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

# Benchmark the checkout this file belongs to, whatever is installed.
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from speechbrain.utils.data_utils import batch_pad_right
from timing import interleaved, load_average

from speechbrain_nes2net.lobes.aggregation import SEA
from speechbrain_nes2net.lobes.nes2net import Nes2NetX

#: Largest accepted difference between a batched score and the batch-1 score.
SCORE_TOLERANCE = 1e-4

#: SSL frames per second (20 ms hop of WavLM / wav2vec 2.0).
FRAMES_PER_SECOND = 50

#: Utterance-duration mixes of the back-end benchmark. Batching saves a fixed
#: cost per call, so its gain depends on the durations. Full utterances are
#: scored (padded batches) in the In-the-Wild and CtrSVDD evaluations; the
#: 2021 and ASVspoof 5 recipes score fixed 4 s crops, where batching is
#: trivial. In-the-Wild holds 37.9 h in 31,779 files: 4.29 s on average; the
#: log-normal shape around it (median 3.8 s, sigma 0.5, clipped to 1-16 s) is
#: an assumption. ``long`` is a harder case: 2-16 s uniform (mean 9 s).
DURATION_MIXES = {
    "in_the_wild": "log-normal, mean 4.3 s (median 3.8 s, sigma 0.5), 1-16 s",
    "long": "uniform 2-16 s",
}


def utterance_frames(mix, count, generator):
    """(count,) frame counts of random utterances from a :data:`DURATION_MIXES` mix.

    Example
    -------
    >>> frames = utterance_frames("in_the_wild", 1000, torch.Generator().manual_seed(0))
    >>> 4.0 < frames.float().mean().item() / FRAMES_PER_SECOND < 4.6
    True
    >>> frames = utterance_frames("long", 1000, torch.Generator().manual_seed(0))
    >>> int(frames.min()) >= 100 and int(frames.max()) <= 800
    True
    """
    if mix == "in_the_wild":
        seconds = torch.exp(math.log(3.8) + 0.5 * torch.randn(count, generator=generator))
        return (seconds.clamp(1.0, 16.0) * FRAMES_PER_SECOND).long()
    if mix == "long":
        return torch.randint(2 * FRAMES_PER_SECOND, 16 * FRAMES_PER_SECOND + 1, (count,), generator=generator)
    raise ValueError(f"unknown duration mix {mix!r}; known: {sorted(DURATION_MIXES)}")


def sorted_batches(sizes, batch_size, max_padded=None):
    """Indices of utterances in batches of similar length, longest first.

    Utterances are sorted by length and cut into batches of ``batch_size``;
    with ``max_padded`` a batch also closes before its padded size (utterances
    x longest length) would exceed that budget, so that batches of long
    utterances hold fewer of them (dynamic batching by duration).

    Arguments
    ---------
    sizes : list of int
        Length of every utterance (frames or samples).
    batch_size : int
        Most utterances per batch.
    max_padded : int, optional
        Most padded frames (or samples) per batch; a longer utterance still
        gets a batch of its own.

    Returns
    -------
    list of list of int

    Example
    -------
    >>> sorted_batches([5, 9, 1, 7], 2)
    [[1, 3], [0, 2]]
    >>> sorted_batches([5, 9, 1, 7], 4, max_padded=16)
    [[1], [3, 0], [2]]
    """
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    batches = []
    for index in order:
        if batches and len(batches[-1]) < batch_size and (
            max_padded is None or (len(batches[-1]) + 1) * sizes[batches[-1][0]] <= max_padded
        ):
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def randomised(module, seed=0):
    """``module`` with random batch-norm statistics (eval mode is not trivial then)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in module.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
    return module.eval()


def score_one_by_one(score, items):
    """Scores (1, ...) batches of one utterance each; returns (n,) scores."""
    with torch.no_grad():
        return torch.cat([score(item.unsqueeze(0), None) for item in items])


def collate(items, batch_size, max_padded=None):
    """Sorted batches: (indices, padded tensor, relative lengths), as a data loader makes them."""
    batches = []
    for index in sorted_batches([len(item) for item in items], batch_size, max_padded):
        padded, lengths = batch_pad_right([items[i] for i in index])
        batches.append((index, padded, lengths))
    return batches


def score_collated(score, batches):
    """Scores collated batches; returns the scores in the original order."""
    scores = torch.empty(sum(len(index) for index, _, _ in batches))
    with torch.no_grad():
        for index, padded, lengths in batches:
            scores[index] = score(padded, lengths)
    return scores


def score_batched(score, items, batch_size, max_padded=None):
    """Scores sorted, padded batches with relative lengths; returns (n,) scores in input order."""
    return score_collated(score, collate(items, batch_size, max_padded))


def _collate_timed(items, batch_size, max_padded):
    """The collated batches and the seconds collation took (reported, not timed in)."""
    start = time.perf_counter()
    batches = collate(items, batch_size, max_padded)
    return batches, time.perf_counter() - start


def _max_difference(a, b):
    return (a - b).abs().max().item()


def _summary(timings, items, frames):
    """Utterances per second and frames per second of each candidate."""
    return {
        name: {
            "seconds": timing.best,
            "median_seconds": timing.median,
            "utterances_per_s": len(items) / timing.best,
            "frames_per_s": frames / timing.best,
        }
        for name, timing in timings.items()
    }


def run_backend(
    utterances=64, mix="in_the_wild", batch_size=16, max_padded=6400,
    input_size=1024, rounds=3, seed=0, max_frames=None,
):  # fmt: skip
    """Back-end only: batch-1 vs sorted batches of at most ``batch_size``
    utterances and ``max_padded`` padded frames (6400 frames = 128 s), on
    utterances of the duration mix ``mix`` (``max_frames`` truncates them,
    for quick runs).

    Returns
    -------
    dict
        ``max_difference`` (batched vs batch-1 scores), per candidate
        (``port_batch1``, ``batch1``, ``batched``) the best/median seconds
        and utterances per second, ``speedup`` (batch-1 / batched, both
        the library's lobe), ``speedup_vs_port`` (the port at batch 1 /
        batched), ``batch1_port_vs_lobe`` (the port / the lobe, both at
        batch 1), their median-call counterparts, ``threads`` and load.
    """
    sys.path.insert(0, str(HERE))
    from reference_nes2net_x import ReferenceNes2NetX

    torch.manual_seed(seed)
    model = randomised(Nes2NetX(input_size=input_size), seed)
    port = ReferenceNes2NetX(input_size=input_size).eval()
    port.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(seed + 1)
    sizes = utterance_frames(mix, utterances, generator)
    if max_frames is not None:
        sizes = sizes.clamp(max=max_frames)
    items = [torch.randn(int(n), input_size, generator=generator) for n in sizes]

    def score(features, lengths):
        return model(features, lengths)[:, 0]

    def score_port(features, lengths):
        return port(features, lengths)[:, 0]

    alone = score_one_by_one(score, items)
    together = score_batched(score, items, batch_size, max_padded)
    difference = _max_difference(alone, together)
    if difference > SCORE_TOLERANCE:
        raise AssertionError(f"batched back-end scores differ from batch-1 scores by {difference:.3g}")
    port_difference = _max_difference(score_one_by_one(score_port, items), alone)
    if port_difference > SCORE_TOLERANCE:
        raise AssertionError(f"the port's scores differ from the lobe's by {port_difference:.3g}")
    result = {"threads": torch.get_num_threads(), "load_before": load_average()}
    batches, result["collate_seconds"] = _collate_timed(items, batch_size, max_padded)
    timings = interleaved(
        {
            "port_batch1": lambda: score_one_by_one(score_port, items),
            "batch1": lambda: score_one_by_one(score, items),
            "batched": lambda: score_collated(score, batches),
        },
        rounds=rounds,
    )
    result.update(_summary(timings, items, int(sizes.sum())))
    result.update(
        max_difference=difference,
        speedup=timings["batch1"].best / timings["batched"].best,
        speedup_median=timings["batch1"].median / timings["batched"].median,
        speedup_vs_port=timings["port_batch1"].best / timings["batched"].best,
        speedup_vs_port_median=timings["port_batch1"].median / timings["batched"].median,
        batch1_port_vs_lobe=timings["port_batch1"].best / timings["batch1"].best,
        batch1_port_vs_lobe_median=timings["port_batch1"].median / timings["batch1"].median,
        load_after=load_average(),
        utterances=utterances,
        batch_size=batch_size,
        max_padded=max_padded,
        batches=len(batches),
        mix=mix,
        mean_seconds=float(sizes.float().mean()) / FRAMES_PER_SECOND,
    )
    return result


def build_tiny_model(folder, seed=0):
    """The demo's model (tiny WavLM, SEA, Nes2Net-X on 64 dims), eval mode.

    Returns (score function of (wavs, wav_lens), frontend, aggregator, back-end).
    """
    from speechbrain_nes2net.lobes.ssl import (
        SSLFrontend,
        make_tiny_ssl_model,
        ssl_frame_lengths,
    )

    torch.manual_seed(seed)
    source = make_tiny_ssl_model(Path(folder) / "tiny_wavlm", hidden_size=64, num_layers=2)
    frontend = SSLFrontend(source, save_path=Path(folder) / "cache", freeze=True).eval()
    aggregator = SEA(num_layers=3).eval()
    backend = randomised(Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4), seed)

    def score(wavs, wav_lens):
        states = frontend(wavs, wav_lens)
        lengths = None
        if wav_lens is not None:
            lengths = ssl_frame_lengths(frontend, wav_lens, wavs.shape[1], states.shape[2])
        return backend(aggregator(states, lengths), lengths)[:, 0]

    return score, frontend, aggregator, backend


def run_model(
    utterances=32, min_seconds=1.0, max_seconds=6.0, batch_size=16, rounds=3, seed=0,
    sample_rate=16000,
):  # fmt: skip
    """Whole model with a tiny SSL: batch-1 vs sorted batches.

    Returns
    -------
    dict
        ``max_difference``, per candidate (``batch1``, ``batched``) seconds and
        utterances per second, ``speedup`` and ``speedup_median``, threads, load.
    """
    generator = torch.Generator().manual_seed(seed + 2)
    seconds = min_seconds + (max_seconds - min_seconds) * torch.rand(utterances, generator=generator)
    items = [0.1 * torch.randn(int(s * sample_rate), generator=generator) for s in seconds]
    with tempfile.TemporaryDirectory() as folder:
        score = build_tiny_model(folder, seed)[0]
        alone = score_one_by_one(score, items)
        together = score_batched(score, items, batch_size)
        difference = _max_difference(alone, together)
        if difference > SCORE_TOLERANCE:
            raise AssertionError(f"batched model scores differ from batch-1 scores by {difference:.3g}")
        result = {"threads": torch.get_num_threads(), "load_before": load_average()}
        batches, result["collate_seconds"] = _collate_timed(items, batch_size, None)
        timings = interleaved(
            {
                "batch1": lambda: score_one_by_one(score, items),
                "batched": lambda: score_collated(score, batches),
            },
            rounds=rounds,
        )
    result.update(_summary(timings, items, int(sum(len(item) for item in items))))
    result.update(
        max_difference=difference,
        speedup=timings["batch1"].best / timings["batched"].best,
        speedup_median=timings["batch1"].median / timings["batched"].median,
        load_after=load_average(),
        utterances=utterances,
        batch_size=batch_size,
        max_padded=None,
        batches=len(batches),
        seconds=(min_seconds, max_seconds),
    )
    return result


def format_result(name, result):
    """Markdown table of a :func:`run_backend` / :func:`run_model` result."""
    budget = "" if result["max_padded"] is None else f" and {result['max_padded']} padded frames"
    if "mix" in result:
        name += f", durations {DURATION_MIXES[result['mix']]} (here {result['mean_seconds']:.1f} s on average)"
    lines = [
        (
            f"{name}: {result['utterances']} utterances in {result['batches']} sorted "
            f"batches of at most {result['batch_size']} utterances{budget}, "
            f"{result['threads']} threads (load {result['load_before']:.1f} -> "
            f"{result['load_after']:.1f}); batched vs batch-1 scores: max |diff| "
            f"{result['max_difference']:.1e}"
        ),
        "",
        "| scoring | seconds (best) | utterances / s |",
        "|---|---:|---:|",
    ]
    labels = {
        "port_batch1": "straightforward port, batch 1",
        "batch1": "library lobe, batch 1",
        "batched": "library lobe, sorted batches",
    }
    for key, label in labels.items():
        if key in result:
            row = result[key]
            lines.append(f"| {label} | {row['seconds']:.2f} | {row['utterances_per_s']:.1f} |")
    lines.append("")
    lines.append(
        f"collation (sorting, padding; a data loader's work, not timed in): "
        f"{result['collate_seconds']:.2f} s"
    )
    lines.append(
        f"batched speed-up: {result['speedup']:.2f}x best call, {result['speedup_median']:.2f}x median"
        + (
            f"; vs the port at batch 1: {result['speedup_vs_port']:.2f}x"
            f"; port / lobe, both at batch 1: {result['batch1_port_vs_lobe']:.2f}x"
            if "speedup_vs_port" in result
            else ""
        )
    )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--mix", choices=sorted(DURATION_MIXES), default="in_the_wild",
                        help="utterance durations of the back-end comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    backend = run_backend(args.utterances, args.mix, batch_size=args.batch_size, rounds=args.rounds)
    print(format_result("Back-end (Nes2Net-X, D = 1024)", backend))
    print()
    model = run_model(max(args.utterances // 2, 2), batch_size=args.batch_size, rounds=args.rounds)
    print(format_result("Whole model (tiny WavLM + SEA + Nes2Net-X)", model))


if __name__ == "__main__":
    main()
