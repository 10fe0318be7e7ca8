"""Shared test set-up."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import speechbrain  # noqa: F401  (registers SpeechBrain's lazy modules first)
import torch
from speechbrain.utils.importutils import LazyModule

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")

# tests/data holds fixtures and the scripts that made them (run by hand with
# the packages they name, e.g. s3prl), not tests: --doctest-modules must not import them.
collect_ignore_glob = ["data/*"]

# Hypothesis scans sys.modules for constants and reads each module's __file__;
# SpeechBrain's lazy modules for optional integrations (k2, ...) then try to
# import packages that are not installed and raise. Drop the ones that cannot load.
for _name, _module in list(sys.modules.items()):
    if isinstance(_module, LazyModule):
        try:
            getattr(_module, "__file__", None)
        except ImportError:
            del sys.modules[_name]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI (``CI=true``) a skipped test fails, unless it is marked ``gpu``.

    A skip in CI is code that never runs: the ``test`` extra installs every
    package the suite needs, so only tests that need a GPU may skip there.
    """
    outcome = yield
    report = outcome.get_result()
    ci = os.environ.get("CI", "").lower() == "true"
    if ci and report.skipped and not hasattr(report, "wasxfail") and not item.get_closest_marker("gpu"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI=true ({reason}): install what it needs in the test extra, "
            "or mark it gpu if it needs a GPU"
        )


@pytest.fixture(scope="session")
def full_demo(tmp_path_factory):
    """The demo as a newcomer runs it (``hparams/demo.yaml``, all its defaults): (run folder, stdout).

    A model that learned (the quick runs of other tests barely do), shared by
    the tests that need one: tests/test_recipes.py and tests/test_calibrate.py.
    """
    out = tmp_path_factory.mktemp("full_demo") / "demo"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "recipes" / "train.py"), "hparams/demo.yaml",
         f"--output_folder={out}", "--noprogressbar"],
        cwd=root, env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"),
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return out, result.stdout


# Trained demo models shared by the test files that need them (one run per session).


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """(exported model folder, test files) of a short demo run with the full test split."""
    out = tmp_path_factory.mktemp("demo") / "run"
    command = [sys.executable, str(ROOT / "recipes" / "train.py"), "hparams/demo.yaml",
               f"--output_folder={out}", "--number_of_epochs=2", "--n_train=24", "--n_dev=8",
               "--noprogressbar"]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with open(out / "save" / "manifests" / "test.csv", newline="", encoding="utf-8") as handle:
        files = [Path(row["wav"]) for row in csv.DictReader(handle)]
    assert len(files) == 120
    return out / "pretrained", files


@pytest.fixture(scope="session")
def localization_demo(tmp_path_factory):
    """A short run of the localisation demo: (run folder, corpus folder, stdout)."""
    folder = tmp_path_factory.mktemp("localization_demo")
    out, database = folder / "run", folder / "database"
    short = ["--n_train=32", "--n_dev=8", "--n_eval=8", "--number_of_epochs=6", "--noprogressbar"]
    result = subprocess.run(
        [sys.executable, "recipes/train_localization.py", "hparams/demo_localization.yaml",
         f"--output_folder={out}", f"--data_folder={database}"] + short,
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return out, database, result.stdout


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (``pytest.mark.usefixtures("one_thread")``):
    tiny models on a shared 2-core runner are much faster that way."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
