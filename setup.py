"""Installs the speechbrain-nes2net toolkit (library + data preparation)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

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
    packages=find_packages(include=["speechbrain_nes2net*", "data_prep*"]),
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
        "test": ["pytest", "pytest-xdist", "hypothesis", "onnx", "onnxruntime"],
        # nes2net-export-onnx and nes2net-score --engine onnxruntime (docs/DEPLOYING.md).
        "onnx": ["onnx", "onnxruntime"],
        "plots": ["matplotlib"],
        "tensorboard": ["tensorboard"],
        "dev": ["pytest", "pytest-xdist", "hypothesis", "matplotlib", "ruff"],
    },
    entry_points={
        "console_scripts": [
            "nes2net-cost=speechbrain_nes2net.cost.backends:main",
            "nes2net-score=speechbrain_nes2net.pretrained.score_cli:main",
            "nes2net-export-onnx=speechbrain_nes2net.pretrained.onnx_export:main",
        ]
    },
)
