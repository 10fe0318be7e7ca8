"""Determinism: same seed, same data, same machine -> the same scores (CPU).

The output folder records what is needed to redo a run: the seed and every
resolved hyperparameter (``hyperparams.yaml``) and the package versions
(``env.log``).
"""

import json
import sys
from importlib.metadata import version

import pytest
from recipe_runs import QUICK_DEMO, SEED, TRAIN, epoch_lines, run


@pytest.mark.slow
def test_same_seed_same_data_same_machine_gives_identical_outputs(tmp_path, reference_run):
    again = tmp_path / "again"
    run(TRAIN + ["hparams/demo.yaml", f"--output_folder={again}"] + QUICK_DEMO)
    name = "demo_test_scores.txt"
    assert (again / "scores" / name).read_text() == (reference_run / "scores" / name).read_text()
    # The metrics are identical but for the checkpoint folders' names, which carry
    # the time they were saved, and the manifest's path, in each run's folder.
    metrics = [json.loads((folder / "scores" / "demo_test_metrics.json").read_text())
               for folder in (again, reference_run)]
    checkpoints = [m["protocol"].pop("checkpoints") for m in metrics]
    manifests = [m["protocol"]["subset"].pop("manifest") for m in metrics]
    assert manifests == [str(f / "save" / "manifests" / "test.csv") for f in (again, reference_run)]
    assert metrics[0] == metrics[1]
    assert [len(c) for c in checkpoints] == [1, 1]
    assert epoch_lines(again) == epoch_lines(reference_run)
    # The demo corpus is generated from the seed too: the same audio, byte for byte.
    for wav in sorted((reference_run / "corpus").rglob("*.flac"))[:5]:
        assert (again / wav.relative_to(reference_run)).read_bytes() == wav.read_bytes()


@pytest.mark.slow
def test_output_folder_records_seed_resolved_hyperparameters_and_versions(reference_run):
    # Top-level lines, comments dropped.
    hparams = [
        line.split(" #")[0].rstrip()
        for line in (reference_run / "hyperparams.yaml").read_text().splitlines()
        if line and not line[0].isspace() and not line.startswith("#")
    ]
    assert f"seed: {SEED}" in hparams
    assert f"__set_seed: !apply:speechbrain.utils.seed.seed_everything [{SEED}]" in hparams
    # Command-line overrides and references are resolved in the copy.
    for line in (
        "number_of_epochs: 3",
        "n_train: 16",
        f"output_folder: {reference_run}",
        f"train_log: {reference_run}/train_log.txt",
    ):
        assert line in hparams, line
    assert not any("<" in line and "!ref" in line for line in hparams)

    env = (reference_run / "env.log").read_text()
    assert sys.version.split()[0] in env
    # pip freeze spells project names its own way (HyperPyYAML): compare lower-case.
    packages = set(env.split("Installed Python packages:")[1].split("=====")[0].lower().split())
    for name in (
        "torch",
        "torchaudio",
        "speechbrain",
        "transformers",
        "numpy",
        "hyperpyyaml",
        "soundfile",
        "pandas",
    ):
        assert f"{name}=={version(name)}" in packages, name
    assert any("nes2net" in entry for entry in packages)  # this project, as installed
