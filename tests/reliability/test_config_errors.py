"""Configuration mistakes stop ``recipes/train.py`` before the first batch, saying what to fix.

Each case starts the demo recipe with one wrong key. "Before the first batch"
means the process ends with an error before the epoch loop starts (SpeechBrain
logs ``Going into epoch 1`` right before the first batch; optimiser set-up and
checkpoint recovery come before it): no train-log line, no checkpoint. A case
the recipe does not catch in time is stopped as soon as the epoch loop starts.

The second group are values of the right YAML shape that contradict the loaded
model or other keys, or choices whose wrong value would pass silently, which
``speechbrain_nes2net.training.config.check_recipe_config`` catches by key.
"""

import subprocess
import time

import pytest
from recipe_runs import ENV, ROOT, TRAIN, read_text

TINY = {"number_of_epochs": "1", "n_train": "2", "n_dev": "1", "n_test": "1"}
EPOCH_LOOP = "Going into epoch 1"


def launch(tmp_path, args, timeout=300):
    """Runs the recipe until it exits or reaches the epoch loop; returns (exit status, text, reached)."""
    out = tmp_path / "out"
    console = tmp_path / "console.txt"
    with open(console, "wb") as handle:
        process = subprocess.Popen(
            TRAIN + args + [f"--output_folder={out}"],
            cwd=ROOT,
            env=ENV,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    deadline = time.time() + timeout
    while process.poll() is None:
        if EPOCH_LOOP in read_text(out / "log.txt"):
            process.kill()
            break
        assert time.time() < deadline, f"neither an error nor the epoch loop in {timeout} s"
        time.sleep(0.05)
    status = process.wait()
    text = read_text(console) + read_text(out / "log.txt")
    return status, text, EPOCH_LOOP in text, out


def demo(overrides):
    """Arguments of a tiny demo run with ``overrides`` (which win over the tiny sizes)."""
    keys = {argument[2:].split("=", 1)[0] for argument in overrides}
    tiny = [f"--{key}={value}" for key, value in TINY.items() if key not in keys]
    return ["hparams/demo.yaml"] + tiny + list(overrides)


def assert_stopped_before_the_first_batch(tmp_path, args, fragments):
    status, text, reached, out = launch(tmp_path, args)
    assert not reached, "the recipe started training with this configuration"
    assert status not in (0, -9), f"exit status {status}"
    assert "epoch:" not in read_text(out / "train_log.txt")
    assert not list(out.glob("save/CKPT+*"))
    missing = [fragment for fragment in fragments if fragment not in text]
    assert not missing, f"the error does not say {missing}:\n{text[-3000:]}"


CAUGHT = [
    pytest.param(
        ["--aggregation=SAE"], ["unknown aggregation 'SAE'", "'SEA'"], id="unknown-aggregation"
    ),
    pytest.param(
        ["--ssl_dim=62"],
        ["input_size=62 is not divisible by outer_ratio=4"],
        id="ratio-does-not-divide-ssl-dim",
    ),
    pytest.param(
        ["--test_sets={t: {data: nope/test}}"],
        ["test_sets.t.data='nope/test' names corpus 'nope'", "['demo']"],
        id="test-set-of-unknown-corpus",
    ),
    pytest.param(
        ["--test_sets={t: {data: demo/eval}}"],
        ["test_sets.t.data='demo/eval' has no manifest", "'demo/test'"],
        id="test-set-of-unknown-split",
    ),
    pytest.param(
        ["--test_sets={t: {data: demo/test, eval_sample: 8000}}"],
        ["test_sets.t has unknown keys ['eval_sample']", "eval_samples"],
        id="test-set-key-typo",
    ),
    pytest.param(
        ["--precision=fp16"],
        ["set to fp16", "not yet supported on CPU", "--precision=bf16"],
        id="fp16-on-cpu",
    ),
    pytest.param(
        ["--lr_scheduler=!name:torch.optim.lr_scheduler.CosineAnnealingLR {T_max: null}"],
        ["T_max: null", "needs lr_schedule_interval: step, not 'epoch'"],
        id="whole-run-schedule-per-epoch",
    ),
    pytest.param(["--numer_of_epochs=3"], ["Override 'numer_of_epochs' not found"], id="key-typo"),
    pytest.param(
        ["--number_of_epochs=two"], ["invalid literal for int()", "'two'"], id="epochs-not-a-number"
    ),
    pytest.param(
        ["--train_dataloader_options={batch_size: abc, shuffle: True, num_workers: 0}"],
        ["batch_size should be a positive integer value, but got batch_size=abc"],
        id="batch-size-not-a-number",
    ),
]


@pytest.mark.parametrize("overrides, fragments", CAUGHT)
def test_demo_config_error_stops_before_the_first_batch(tmp_path, overrides, fragments):
    assert_stopped_before_the_first_batch(tmp_path, demo(overrides), fragments)


def test_corpus_recipe_without_data_folder_stops_before_anything(tmp_path):
    assert_stopped_before_the_first_batch(
        tmp_path,
        ["hparams/nes2net_x_ctrsvdd.yaml"],
        ["'data_folder' is a !PLACEHOLDER and must be replaced"],
    )
    assert not (tmp_path / "out").exists()  # nothing written, nothing downloaded


WRONG_VALUES = [
    pytest.param(
        ["--ssl_dim=48"],
        ["ssl_dim", "64"],
        id="ssl-dim-unlike-the-model",
    ),
    pytest.param(
        ["--ssl_layers=5"],
        ["ssl_layers", "3"],
        id="ssl-layers-unlike-the-model",
    ),
    pytest.param(
        ["--selection_metric=EERR"],
        ["selection_metric", "'EER'"],
        id="unknown-selection-metric",
    ),
    pytest.param(
        ["--lr_schedule_interval=epochs"],
        ["lr_schedule_interval", "'epoch'"],
        id="unknown-lr-schedule-interval",
    ),
    pytest.param(
        ["--valid_epochs=minima"],
        ["valid_epochs='minima'", "'cosine_minima'"],
        id="unknown-validation-schedule",
    ),
    pytest.param(
        ["--valid_epochs=cosine_minima", "--lr_schedule_interval=step"],
        ["valid_epochs: cosine_minima", "lr_schedule_interval='step'", "valid_epochs_period"],
        id="cosine-minima-on-a-per-step-schedule",
    ),
]


@pytest.mark.parametrize("overrides, fragments", WRONG_VALUES)
def test_wrong_value_stops_before_the_first_batch_naming_the_key(tmp_path, overrides, fragments):
    assert_stopped_before_the_first_batch(tmp_path, demo(overrides), fragments)
