"""Installs the speechbrain-nes2net library.

The corpus scripts (data_prep/) and the recipes (recipes/, hparams/) are not
installed: they run from a checkout of the repository, as SpeechBrain's own
recipes do (a top-level ``data_prep`` package in site-packages would collide
with any other project that installs one).
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

ONNX = ["onnx", "onnxruntime"]
PLOTS = ["matplotlib"]
TENSORBOARD = ["tensorboard"]
# PyAV wheels bundle FFmpeg: the AAC, AMR-NB and G.722 conditions (speechbrain_nes2net.codecs),
# and reading M4A/AAC, WebM, MP4 and AMR files (speechbrain_nes2net.audio), which a web page's
# visitors upload from phones and browsers.
CODECS = ["av"]
APP = ["gradio>=6"] + PLOTS + CODECS
TEST = ["pytest", "pytest-xdist", "hypothesis", "onnxscript", "scikit-learn", "playwright"]
TEST += ONNX + PLOTS + TENSORBOARD + APP + CODECS

setup(
    name="speechbrain-nes2net",
    version="0.1.0",
    description=(
        "SpeechBrain-native Nes2Net back-ends for speech and singing-voice "
        "deepfake detection on speech foundation models"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["speechbrain_nes2net*"]),
    package_data={"speechbrain_nes2net": ["py.typed"]},
    install_requires=[
        "speechbrain>=1.1.2",
        # Unpinned above on purpose: docs/DESIGN.md, pitfalls (torch 2.14 + torchaudio 2.11).
        "torch>=2.7",
        "torchaudio>=2.7",
        "transformers",
        "hyperpyyaml",
        "pandas",
        "sentencepiece",
        "soundfile",
        "numpy",
        "tqdm",
    ],
    extras_require={
        # nes2net-export-onnx and nes2net-score on .onnx files (docs/DEPLOYING.md); the
        # exporter is TorchScript-based, so onnxscript is not needed for it.
        "onnx": ONNX,
        "plots": PLOTS,
        "tensorboard": TENSORBOARD,
        # nes2net-app, the web page (docs/DEPLOYING.md).
        "app": APP,
        "codecs": CODECS,
        # Everything the test suite runs: CI installs only this extra, so a test that needs
        # a package missing here would be skipped, or fail, on a user's fresh machine.
        # onnxscript: torch.onnx's dynamo exporter (tests/test_onnx.py); scikit-learn:
        # the ROC cross-check of the CtrSVDD scorer (tests/test_metrics.py); playwright:
        # drives the system's Chromium in tests/test_app.py (.ci/run installs Chromium).
        "test": TEST,
        "dev": TEST + ["ruff"],
    },
    entry_points={
        "console_scripts": [
            "nes2net-cost=speechbrain_nes2net.cost.backends:main",
            "nes2net-score=speechbrain_nes2net.pretrained.score_cli:main",
            "nes2net-export-onnx=speechbrain_nes2net.pretrained.onnx_export:main",
            "nes2net-calibrate=speechbrain_nes2net.pretrained.recalibrate:main",
            "nes2net-app=speechbrain_nes2net.pretrained.app:main",
        ]
    },
)
