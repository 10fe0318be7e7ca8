"""DET curves and score histograms as PNG files, frame scores as SVG (optional matplotlib extra).

matplotlib is imported only when a plot is drawn, and figures use the Agg
canvas directly (no pyplot, no global backend switch): safe on headless servers.

Example
-------
>>> import os, tempfile, numpy as np
>>> import pytest
>>> _ = pytest.importorskip("matplotlib")  # the optional "plots" extra
>>> rng = np.random.default_rng(0)
>>> bona, spoof = rng.normal(2, 1, 500), rng.normal(0, 1, 500)
>>> folder = tempfile.mkdtemp()
>>> plot_det(bona, spoof, os.path.join(folder, "det.png")).name
'det.png'
>>> plot_score_histograms({"bona fide": bona, "spoof": spoof}, os.path.join(folder, "h.png")).name
'h.png'
"""

from pathlib import Path

import numpy as np
from scipy.stats import norm

from speechbrain_nes2net.evaluation.metrics import as_scores, compute_eer, det_curve

# Tick positions of a DET plot, as error rates.
_DET_TICKS = [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6,
              0.8, 0.9, 0.95, 0.98, 0.99]  # fmt: skip


def _new_figure(width=6.0, height=5.0):
    """A matplotlib Figure on an Agg canvas, or an ImportError saying what to install."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plots need matplotlib: pip install 'speechbrain-nes2net[plots]' "
            "(or pip install matplotlib)"
        ) from None
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _thin(x, y, max_points):
    """Keeps at most ``max_points`` points, evenly spaced along the curve."""
    if x.size <= max_points:
        return x, y
    length = np.r_[0.0, np.cumsum(np.hypot(np.diff(x), np.diff(y)))]
    targets = np.linspace(0.0, length[-1], max_points)
    keep = np.unique(np.clip(np.searchsorted(length, targets), 0, x.size - 1))
    return x[keep], y[keep]


def plot_det(bonafide, spoof, path, title=None):
    """Draws the DET curve of :func:`~speechbrain_nes2net.evaluation.metrics.det_curve`
    (normal-deviate axes), the EER point marked.

    Arguments
    ---------
    bonafide, spoof : array-like
        Scores of the bona fide and of the spoofed trials.
    path : str or Path
        Output PNG file; its folder must exist.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        The written file.
    """
    frr, far, _ = det_curve(bonafide, spoof)
    eer, _ = compute_eer(bonafide, spoof)
    n_bona, n_spoof = np.size(bonafide), np.size(spoof)
    # Rates of 0 or 1 sit at infinity on the probit scale: clip just beyond
    # the smallest rate a class can show.
    floor = min(0.01, max(1e-4, 0.5 / max(n_bona, n_spoof)))
    high = min(0.99, max(0.5, 1.5 * eer))
    x = norm.ppf(np.clip(far, floor, 1 - floor))
    y = norm.ppf(np.clip(frr, floor, 1 - floor))
    x, y = _thin(x, y, 4000)  # points drawn at most

    figure = _new_figure()
    axes = figure.add_subplot(1, 1, 1)
    axes.plot(x, y, label=f"n = {n_bona} bona fide / {n_spoof} spoof")
    eer_xy = norm.ppf(min(max(eer, floor), 1 - floor))
    axes.plot([eer_xy], [eer_xy], "o", label=f"EER = {100 * eer:.2f}%")
    limits = norm.ppf([floor, high])
    ticks = [t for t in _DET_TICKS if limits[0] <= norm.ppf(t) <= limits[1]]
    for set_lim, set_ticks, set_labels in (
        (axes.set_xlim, axes.set_xticks, axes.set_xticklabels),
        (axes.set_ylim, axes.set_yticks, axes.set_yticklabels),
    ):
        set_lim(*limits)
        set_ticks(norm.ppf(ticks))
        set_labels([f"{100 * t:g}" for t in ticks])
    axes.plot(limits, limits, ":", color="grey", linewidth=0.8)
    axes.set_xlabel("False acceptance rate: spoof accepted (%)")
    axes.set_ylabel("False rejection rate: bona fide rejected (%)")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower left")
    if title:
        axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    return Path(path)


def plot_score_histograms(scores_by_group, path, title=None):
    """Draws overlaid, normalised score histograms, one per group.

    Arguments
    ---------
    scores_by_group : dict
        Group name (e.g. ``"bona fide"``, ``"spoof"`` or an attack ID) ->
        array-like of scores.
    path : str or Path
        Output PNG file; its folder must exist.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        The written file.
    """
    if not scores_by_group:
        raise ValueError("plot_score_histograms needs at least one group of scores")
    groups = {str(name): as_scores(values, str(name)) for name, values in scores_by_group.items()}
    # Bins shared by all groups: the square root of the smallest group's size, from 10 to 100.
    bins = int(np.clip(np.sqrt(min(values.size for values in groups.values())), 10, 100))
    edges = np.histogram_bin_edges(np.concatenate(list(groups.values())), bins=bins)

    figure = _new_figure(7.0, 4.5)
    axes = figure.add_subplot(1, 1, 1)
    if len(groups) > 10:
        from matplotlib import colormaps

        axes.set_prop_cycle(color=colormaps["tab20"].colors)
    for name, values in groups.items():
        axes.hist(
            values,
            bins=edges,
            density=True,
            histtype="step",
            linewidth=1.2,
            label=f"{name} (n={values.size})",
        )
    axes.set_xlabel("score (higher = more bona fide)")
    axes.set_ylabel("density")
    axes.legend(fontsize=8, ncol=2 if len(groups) > 8 else 1)
    if title:
        axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    return Path(path)


def frame_scores_svg(times, scores, ranges):
    """Frame scores over time, the 'spoof' ``ranges`` shaded, as SVG text for a web page.

    Each shaded range is a group with id ``spoof-START-END`` (seconds, ``%g``),
    so that a page can be checked for it; text is drawn as paths (no fonts to fetch).

    Example
    -------
    >>> from speechbrain_nes2net.evaluation.localization import TimeRange
    >>> svg = frame_scores_svg([0.0, 0.02, 0.04], [1.0, -2.0, 0.5],
    ...                        [TimeRange(0.0, 0.02, "bonafide"), TimeRange(0.02, 0.06, "spoof")])
    >>> svg.startswith("<svg") and 'id="spoof-0.02-0.06"' in svg and "spoof-0-" not in svg
    True
    """
    import io

    figure = _new_figure(8.0, 2.6)
    axes = figure.add_subplot(1, 1, 1)
    for item in ranges:
        if item.label == "spoof":
            axes.axvspan(item.start, item.end, color="tab:red", alpha=0.25, linewidth=0,
                         gid=f"spoof-{item.start:g}-{item.end:g}")  # fmt: skip
    axes.plot(times, scores, linewidth=1.0, drawstyle="steps-post")
    axes.set_xlim(0, max([item.end for item in ranges] + list(times[-1:])))
    axes.set_xlabel("time (s); shaded: decided spoofed")
    axes.set_ylabel("frame score")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]
