"""Shared test set-up."""

import os
import sys

import speechbrain  # noqa: F401  (registers SpeechBrain's lazy modules first)
from speechbrain.utils.importutils import LazyModule

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Hypothesis scans sys.modules for constants and reads each module's __file__;
# SpeechBrain's lazy modules for optional integrations (k2, ...) then try to
# import packages that are not installed and raise. Drop the ones that cannot load.
for _name, _module in list(sys.modules.items()):
    if isinstance(_module, LazyModule):
        try:
            getattr(_module, "__file__", None)
        except ImportError:
            del sys.modules[_name]
