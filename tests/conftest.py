"""Shared test set-up."""

import os
import sys

import pytest
import speechbrain  # noqa: F401  (registers SpeechBrain's lazy modules first)
from speechbrain.utils.importutils import LazyModule

os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
