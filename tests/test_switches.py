"""Every switch a user turns on from the command line is a scalar (``--key=value``).

HyperPyYAML cannot replace a ``null`` key by a mapping from the command line
("The structure of the overrides doesn't match the structure of the
document"), so optional components are switched by scalars: docs/TRAINING.md
lists them (section "Switches") and this file runs each one.
"""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_nes2net.codecs import resolve_conditions
from speechbrain_nes2net.lobes.ssl import make_tiny_ssl_model
from speechbrain_nes2net.training.config import (
    RecipeConfigError,
    check_recipe_config,
)
from speechbrain_nes2net.training.recipe import (
    batch_augmentation,
    feature_cache,
    tensorboard_logger,
    waveform_augmentation,
)

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(ROOT / "recipes" / "train.py")]
QUICK = ["--number_of_epochs=1", "--n_train=12", "--n_dev=4", "--n_test=4"]

#: The documented switches: command-line override -> what it turns on.
SWITCHES = {
    "--rawboost_algo=4": "RawBoost algorithm 4 on each training utterance",
    "--codec_augment=True": "codec and channel conditions on training utterances",
    "--feature_cache=True": "the on-disk cache of SSL states (with --freeze_ssl=True)",
    "--tensorboard=True": "TensorBoard logs in output_folder/tensorboard",
    "--noise_csv=musan.csv": "noise on training batches (also --rir_csv=rirs.csv)",
    "--test_manifests=[a.csv,b.csv]": "these manifests scored instead of test_sets",
}


def test_every_switch_is_documented():
    guide = (ROOT / "docs" / "TRAINING.md").read_text(encoding="utf-8")
    missing = [switch for switch in SWITCHES if switch not in guide]
    assert not missing, f"docs/TRAINING.md does not list {missing}"


def top_level_nulls(text):
    """Top-level keys whose value is null."""
    return re.findall(r"^([A-Za-z_]\w*):\s*null\b", text, re.M)


#: null keys whose value is a scalar (a path or a number overrides a null
#: scalar: data locations, valid_epochs_period from the scheduler, the mixture's
#: epoch length), or an official setting (lr_scheduler: null is the release's
#: constant learning rate).
NULL_ALLOWED = {
    "asvspoof2019_folder", "asvspoof2021_la_folder", "asvspoof2021_df_folder",
    "asvspoof5_folder", "ctrsvdd_folder", "in_the_wild_folder",
    "noise_csv", "rir_csv", "lr_scheduler", "valid_epochs_period", "mixture_epoch_length",
    "export_folder", "valid_samples",
}


@pytest.mark.parametrize("yaml_path", sorted((ROOT / "hparams").glob("*.yaml")), ids=lambda p: p.name)
def test_no_yaml_has_a_null_slot_for_an_object(yaml_path):
    nulls = set(top_level_nulls(yaml_path.read_text(encoding="utf-8")))
    assert nulls <= NULL_ALLOWED, f"{yaml_path.name}: null keys {sorted(nulls - NULL_ALLOWED)}"


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory):
    return make_tiny_ssl_model(tmp_path_factory.mktemp("ssl") / "tiny_wavlm")


def load_demo(tmp_path, tiny_wavlm, overrides):
    """The demo YAML loaded with command-line style overrides."""
    with open(ROOT / "hparams" / "demo.yaml", encoding="utf-8") as handle:
        return load_hyperpyyaml(
            handle, {"output_folder": str(tmp_path), "ssl_source": tiny_wavlm, **overrides}
        )


def test_rawboost_switch(tmp_path, tiny_wavlm):
    assert waveform_augmentation(load_demo(tmp_path, tiny_wavlm, {})) is None
    augment = waveform_augmentation(load_demo(tmp_path, tiny_wavlm, {"rawboost_algo": 4}))
    assert augment.algo == 4


def test_codec_augment_switch(tmp_path, tiny_wavlm):
    augment = waveform_augmentation(load_demo(tmp_path, tiny_wavlm, {"codec_augment": True}))
    assert len(augment.conditions) == 15 and augment.prob == 0.5 and augment.sample_rate == 16000
    both = waveform_augmentation(
        load_demo(tmp_path, tiny_wavlm, {"codec_augment": True, "rawboost_algo": 4,
                                         "codec_conditions": ["mp3_8k", "telephone"]})
    )  # fmt: skip
    assert [type(m).__name__ for m in both] == ["RawBoost", "ChannelAugment"]  # the channel last
    assert both[1].conditions == ["mp3_8k", "telephone"]
    hparams = load_demo(
        tmp_path, tiny_wavlm, {"codec_augment": True, "codec_conditions": ["mp3_31k"]}
    )
    with pytest.raises(RecipeConfigError, match="codec_augment: unknown condition.s. mp3_31k; known"):
        check_recipe_config(hparams)


def test_feature_cache_switch(tmp_path, tiny_wavlm):
    assert feature_cache(load_demo(tmp_path, tiny_wavlm, {})) is None
    cache = feature_cache(load_demo(tmp_path, tiny_wavlm, {"feature_cache": True}))
    assert cache.folder.parent == tmp_path / "save" / "ssl_states" and cache.dtype == np.float16


def test_tensorboard_switch(tmp_path, tiny_wavlm):
    assert tensorboard_logger(load_demo(tmp_path, tiny_wavlm, {})) is None
    hparams = load_demo(tmp_path, tiny_wavlm, {"tensorboard": True})
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(RecipeConfigError, match=r"pip install 'speechbrain-nes2net\[tensorboard\]'"):
            tensorboard_logger(hparams)
    else:
        logger = tensorboard_logger(hparams)
        logger.log_stats({"epoch": 1}, train_stats={"loss": 0.5}, valid_stats={"EER": 12.5})
        logger.writer.flush()
        events = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
        assert events and sum(path.stat().st_size for path in events) > 100, events


def test_noise_switch_adds_noise_to_training_batches(tmp_path):
    noise = tmp_path / "noise.wav"
    sf.write(noise, np.random.default_rng(0).normal(0, 0.1, 16000).astype("float32"), 16000)
    csv = tmp_path / "musan.csv"
    csv.write_text(f"ID,duration,wav,wav_format,wav_opts\nn1,1.0,{noise},wav,\n")
    assert batch_augmentation({"noise_csv": None, "rir_csv": None}) is None
    augment = batch_augmentation({"noise_csv": str(csv), "rir_csv": None, "batch_augment_prob": 1.0})
    clean = torch.sin(torch.linspace(0, 200, 16000)).repeat(2, 1) * 0.3
    noisy, lengths = augment(clean, torch.ones(2))
    assert noisy.shape == clean.shape and not torch.allclose(noisy, clean)


def demo_run(out, *args):
    """A short demo training run; returns (train log text, output folder)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        TRAIN + ["hparams/demo.yaml", f"--output_folder={out}"] + QUICK + list(args),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return (out / "train_log.txt").read_text(), (out / "log.txt").read_text()


@pytest.mark.slow
def test_rawboost_and_test_manifests_from_the_command_line(tmp_path):
    plain_train_log, _ = demo_run(tmp_path / "plain")
    mine = tmp_path / "my_test.csv"
    mine.write_text((tmp_path / "plain" / "save" / "manifests" / "test.csv").read_text())
    train_log, log = demo_run(tmp_path / "switched", "--rawboost_algo=4", f"--test_manifests=[{mine}]")
    assert "Training utterances are augmented: RawBoost(algo=4" in log
    # Same seed and data: only the augmentation changed the training loss.
    loss = lambda text: re.search(r"train loss: ([\d.e+-]+)", text).group(1)
    assert loss(train_log) != loss(plain_train_log)
    scores = tmp_path / "switched" / "scores"
    assert (scores / "my_test_scores.txt").is_file() and (scores / "my_test_report.json").is_file()
    assert not (scores / "demo_test_scores.txt").exists()  # test_manifests replaced test_sets


@pytest.mark.slow
def test_codec_augment_trains_the_demo_and_evaluate_scores_every_condition(tmp_path):
    out = tmp_path / "coded"
    _, log = demo_run(out, "--codec_augment=True", "--codec_augment_prob=1.0")
    assert "Training utterances are augmented: ChannelAugment(conditions=mp3_8k,mp3_16k," in log
    assert (out / "scores" / "demo_test_metrics.json").is_file()
    # Robustness evaluation of the run, with a file too short for the telephone filter.
    sf.write(tmp_path / "click.wav", np.full(40, 0.1, dtype=np.float32), 16000)
    manifest = tmp_path / "test.csv"
    with open(out / "save" / "manifests" / "test.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows, fields = list(reader), reader.fieldnames
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        click = dict(rows[0], ID="click", duration=0.0025, wav=tmp_path / "click.wav")
        writer.writerows(rows + [click])
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "recipes/evaluate.py", str(out / "hyperparams.yaml"),
         f"--test_manifest={manifest}", "--test_name=robust", "--conditions=all", "--report=eer"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    scores = out / "scores"
    table = json.loads((scores / "robust_conditions.json").read_text())
    assert [row["condition"] for row in table] == ["none"] + resolve_conditions("all")
    for row in table:
        assert 0 <= row["eer"] <= 1 and row["min_dcf"] >= 0, row
        expected = (8, 1) if row["condition"] == "telephone" else (9, 0)
        assert (row["n_scored"], row["n_failed"]) == expected, row
        name = "robust" if row["condition"] == "none" else f"robust_{row['condition']}"
        metrics = json.loads((scores / f"{name}_metrics.json").read_text())
        assert metrics["eer"] == row["eer"] and metrics["protocol"].get("condition") == (
            None if row["condition"] == "none" else row["condition"]
        )
        assert (scores / f"{name}_report.md").is_file()
    assert "telephone cannot code" in (scores / "robust_telephone_failed.csv").read_text()
    assert "| mp3_8k |" in (scores / "robust_conditions.md").read_text()
    # Coding changes the scores.
    plain = (scores / "robust_scores.txt").read_text()
    assert plain != (scores / "robust_mp3_8k_scores.txt").read_text()
