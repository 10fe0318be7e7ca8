"""Times the sort-based EER on 1M trials against SpeechBrain's own EER.

SpeechBrain's ``speechbrain.utils.metric_stats.EER`` loops over every distinct
score (quadratic time), so it is timed on a small set only; our
``compute_eer`` is timed on the same small set and on one million trials.

Usage::

    python benchmarks/bench_metrics.py [--n-trials 1000000] [--n-small 4000]

``run()`` returns the numbers as a dict for the project's benchmark runner.
"""

import argparse
import time

import numpy as np
import torch
from speechbrain.utils.metric_stats import EER as speechbrain_eer

from speechbrain_nes2net.evaluation.metrics import (
    compute_ctrsvdd_eer,
    compute_eer,
    compute_min_dcf,
)


def _scores(n_trials, seed=0, bona_fraction=0.1):
    """Gaussian bona fide / spoof scores (10% bona fide, as in ASVspoof sets)."""
    rng = np.random.default_rng(seed)
    n_bona = max(1, int(n_trials * bona_fraction))
    return rng.normal(2.0, 1.0, n_bona), rng.normal(0.0, 1.0, n_trials - n_bona)


def _best_time(fn, repeats):
    """Best wall time of ``repeats`` calls, and the last result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def run(n_trials=1_000_000, n_small=4000, repeats=3):
    """Runs the benchmark.

    Arguments
    ---------
    n_trials : int
        Trials of the large set (our implementation only).
    n_small : int
        Trials of the small set both implementations score.
    repeats : int
        Calls per timing; the best is kept.

    Returns
    -------
    dict
        Seconds per call and speed ratios (see the keys).
    """
    bona, spoof = _scores(n_trials)
    eer_1m_s, (eer_1m, _) = _best_time(lambda: compute_eer(bona, spoof), repeats)
    min_dcf_1m_s, _ = _best_time(lambda: compute_min_dcf(bona, spoof), repeats)
    ctrsvdd_1m_s, _ = _best_time(lambda: compute_ctrsvdd_eer(bona, spoof), repeats)

    small_bona, small_spoof = _scores(n_small, seed=1)
    ours_small_s, (ours_small_eer, _) = _best_time(
        lambda: compute_eer(small_bona, small_spoof), repeats
    )
    sb_small_s, (sb_small_eer, _) = _best_time(
        lambda: speechbrain_eer(torch.from_numpy(small_bona), torch.from_numpy(small_spoof)),
        1,
    )
    return {
        "n_trials": n_trials,
        "eer_1m_s": eer_1m_s,
        "min_dcf_1m_s": min_dcf_1m_s,
        "ctrsvdd_eer_1m_s": ctrsvdd_1m_s,
        "eer_1m": eer_1m,
        "n_small": n_small,
        "ours_small_s": ours_small_s,
        "speechbrain_small_s": sb_small_s,
        # Same set, same task: how many times faster than SpeechBrain.
        "speedup_same_size": sb_small_s / ours_small_s,
        # SpeechBrain on n_small trials vs ours on n_trials (> 1: we score 1M
        # trials faster than SpeechBrain scores the small set).
        "speechbrain_small_over_ours_1m": sb_small_s / eer_1m_s,
        "eer_small_ours": ours_small_eer,
        "eer_small_speechbrain": sb_small_eer,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=1_000_000)
    parser.add_argument("--n-small", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = run(args.n_trials, args.n_small, args.repeats)
    print(
        f"compute_eer, {result['n_trials']:,} trials: {result['eer_1m_s']:.3f} s "
        f"(minDCF {result['min_dcf_1m_s']:.3f} s, CtrSVDD EER {result['ctrsvdd_eer_1m_s']:.3f} s)"
    )
    print(
        f"{result['n_small']:,} trials: ours {result['ours_small_s'] * 1e3:.2f} ms, "
        f"SpeechBrain EER {result['speechbrain_small_s']:.3f} s "
        f"-> {result['speedup_same_size']:.0f}x faster on the same set"
    )
    print(
        f"SpeechBrain on {result['n_small']:,} trials / ours on {result['n_trials']:,} trials: "
        f"{result['speechbrain_small_over_ours_1m']:.1f}x"
    )
    print(
        f"EER on the small set: ours {100 * result['eer_small_ours']:.3f}%, "
        f"SpeechBrain {100 * result['eer_small_speechbrain']:.3f}% (threshold conventions differ)"
    )


if __name__ == "__main__":
    main()
