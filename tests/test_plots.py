"""Tests of speechbrain_nes2net.evaluation.plots (skipped where matplotlib is not installed)."""

import sys

import numpy as np
import pytest

from speechbrain_nes2net.evaluation import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """Width and height from the PNG header (IHDR chunk)."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_missing_matplotlib_gives_an_install_hint(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"speechbrain-nes2net\[plots\]"):
        plots.plot_det([1.0, 2.0], [0.0], tmp_path / "det.png")


def test_thinning_keeps_the_ends_and_bounds_the_size():
    x = np.linspace(-3, 3, 100001)
    y = -(x**3)
    tx, ty = plots._thin(x, y, 500)
    assert tx.size <= 500
    assert (tx[0], ty[0], tx[-1], ty[-1]) == (x[0], y[0], x[-1], y[-1])
    assert np.all(np.diff(tx) > 0)
    small = plots._thin(x[:10], y[:10], 500)
    np.testing.assert_array_equal(small[0], x[:10])


def test_plot_det_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    bona, spoof = rng.normal(2, 1, 20000), rng.normal(0, 1, 60000)
    path = plots.plot_det(bona, spoof, tmp_path / "det.png", title="test")
    assert path == tmp_path / "det.png"
    assert png_size(path) == (600, 500)
    # Perfect and hopeless systems have rates of 0 and 1: clipped, still drawn.
    plots.plot_det([5.0, 6.0], [0.0, 1.0], tmp_path / "perfect.png")
    plots.plot_det([0.0, 1.0], [5.0, 6.0], tmp_path / "reversed.png")
    assert png_size(tmp_path / "reversed.png") == (600, 500)


def test_plot_score_histograms_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(1)
    groups = {"bona fide": rng.normal(2, 1, 500)}
    groups.update({f"A{i:02d}": rng.normal(-i / 4, 1, 100) for i in range(9, 22)})
    path = plots.plot_score_histograms(groups, tmp_path / "hist.png", title="per attack")
    assert png_size(path) == (700, 450)
    plots.plot_score_histograms({"only": [1.0, 1.0]}, tmp_path / "constant.png")
    assert (tmp_path / "constant.png").exists()


def test_plots_refuse_bad_scores(tmp_path):
    with pytest.raises(ValueError, match="at least one group"):
        plots.plot_score_histograms({}, tmp_path / "h.png")
    with pytest.raises(ValueError, match="1 of 2 spoof scores are not finite"):
        plots.plot_score_histograms({"spoof": [0.0, np.nan]}, tmp_path / "h.png")
    with pytest.raises(ValueError, match="no spoof scores"):
        plots.plot_det([1.0], [], tmp_path / "d.png")
