"""Set-up of the reliability tests.

``tests/conftest.py`` above still applies (SpeechBrain's lazy modules are kept
away from hypothesis); this one makes the helpers of ``tests/`` (``corpora``)
importable from this folder, whatever pytest's import mode, and provides the
reference demo run.
"""

import sys
from pathlib import Path

import pytest

for folder in (Path(__file__).resolve().parents[1], Path(__file__).resolve().parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from recipe_runs import QUICK_DEMO, shared_run


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """One uninterrupted run of the shipped demo YAML (``QUICK_DEMO``), shared by all workers."""
    return shared_run(tmp_path_factory, "reference_demo", ["hparams/demo.yaml"] + QUICK_DEMO)
