"""Interleaved wall-clock timing for the benchmarks of this folder.

The machines these benchmarks run on are shared: other processes come and go
while a benchmark runs and can slow any single call down several times. The
candidates of one comparison are therefore timed in rounds, each round
calling every candidate once in turn (so that a burst of load hits all of
them), and the speed ratio is taken from the per-candidate minimum (the
least disturbed call, the ``timeit`` convention); the medians are reported
beside it.

Example
-------
>>> timings = interleaved({"a": lambda: sum(range(1000)), "b": lambda: sum(range(10))}, rounds=3)
>>> sorted(timings), len(timings["a"].seconds)
(['a', 'b'], 3)
>>> timings["a"].best >= 0.0
True
"""

import os
import statistics
import time
from dataclasses import dataclass, field


@dataclass
class Timing:
    """Wall-clock seconds of the calls of one candidate, and the process's CPU seconds.

    With one thread, CPU seconds leave out the time other processes held the
    cores: on a loaded machine they show what a call costs when wall-clock
    times do not.
    """

    seconds: list = field(default_factory=list)
    cpu_seconds: list = field(default_factory=list)

    @property
    def best(self):
        """The fastest call (seconds)."""
        return min(self.seconds)

    @property
    def median(self):
        """The median call (seconds)."""
        return statistics.median(self.seconds)


def interleaved(candidates, rounds=5, warmup=1):
    """Times every candidate ``rounds`` times, one call of each per round.

    Arguments
    ---------
    candidates : dict
        name -> function of no arguments.
    rounds : int
        Timed calls per candidate.
    warmup : int
        Untimed calls per candidate first (allocator, kernels, caches).

    Returns
    -------
    dict
        name -> :class:`Timing`.
    """
    for _ in range(warmup):
        for function in candidates.values():
            function()
    timings = {name: Timing() for name in candidates}
    for round_index in range(rounds):
        # Alternate the order so that neither candidate always runs first.
        names = list(candidates)
        if round_index % 2:
            names.reverse()
        for name in names:
            start, cpu = time.perf_counter(), time.process_time()
            candidates[name]()
            timings[name].seconds.append(time.perf_counter() - start)
            timings[name].cpu_seconds.append(time.process_time() - cpu)
    return timings


def speedup(timings, slow, fast):
    """(best-call ratio, median-call ratio) of ``slow`` over ``fast``."""
    return (
        timings[slow].best / timings[fast].best,
        timings[slow].median / timings[fast].median,
    )


def load_average():
    """The 1-minute load average, or NaN where the OS does not report it."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")
