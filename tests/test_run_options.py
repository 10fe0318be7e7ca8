"""SpeechBrain's run options work with our Brain (tested once each on the demo).

``--debug`` is tested for every YAML in ``test_recipes.py``, ``--precision`` /
``--eval_precision`` (bf16, and fp16 refused on a CPU) there and in
``reliability/test_config_errors.py``; the others are here.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(ROOT / "recipes" / "train.py")]
DEMO = ["--number_of_epochs=1", "--n_train=24", "--n_dev=8", "--n_test=8"]
# 24 + 24 training utterances in batches of 16: 3 batches an epoch.
BATCHES_PER_EPOCH = 3


def run(args, env_overrides=None):
    """Runs ``recipes/train.py`` with ``args``; returns the completed process."""
    import os

    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **(env_overrides or {}))
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def options_run(tmp_path_factory):
    """One demo epoch with --noprogressbar, --grad_accumulation_factor=2,
    --max_grad_norm=1e-30, --device=cpu and a checkpoint interval of 6 ms.

    ``--ckpt_interval_minutes`` takes whole minutes on the command line; the
    YAML key (read by ``Brain`` like every run option) takes any number.
    """
    folder = tmp_path_factory.mktemp("options")
    yaml_path = folder / "demo.yaml"
    yaml_path.write_text(
        (ROOT / "hparams" / "demo.yaml").read_text() + "\nckpt_interval_minutes: 0.0001\n"
    )
    out = folder / "run"
    result = run(TRAIN + [
        str(yaml_path), f"--output_folder={out}", "--noprogressbar", "--device=cpu",
        "--grad_accumulation_factor=2", "--max_grad_norm=1e-30",
    ] + DEMO)
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result


def checkpoints(out):
    """(meta, folder) of every checkpoint of a run."""
    import yaml

    return [
        (yaml.safe_load((folder / "CKPT.yaml").read_text()), folder)
        for folder in sorted((out / "save").glob("CKPT+*"))
    ]


@pytest.mark.slow
def test_grad_accumulation_factor_steps_every_second_batch(options_run):
    out, _ = options_run
    meta, folder = [c for c in checkpoints(out) if c[0].get("end-of-epoch")][-1]
    state = torch.load(folder / "backend_optimizer.ckpt", weights_only=False)["state"]
    steps = {int(entry["step"]) for entry in state.values()}
    assert steps == {BATCHES_PER_EPOCH // 2}  # not 3 (no accumulation), not 2 (ceil)


@pytest.mark.slow
def test_max_grad_norm_clips_every_optimiser(options_run):
    # Gradients clipped to norm 1e-30 leave AdamW nothing but its weight decay
    # (lr 1e-3 x wd 1e-4): the trained parameters stay the seeded initial ones.
    out, _ = options_run
    with open(out / "hyperparams.yaml", encoding="utf-8") as handle:
        fresh = load_hyperpyyaml(handle)  # same seed: the initial weights
    _, folder = [c for c in checkpoints(out) if c[0].get("end-of-epoch")][-1]
    for name in ("backend", "ssl"):
        trained = torch.load(folder / f"{name}.ckpt", map_location="cpu")
        initial = dict(fresh[name].named_parameters())
        assert initial, name
        for key, value in initial.items():
            assert torch.allclose(trained[key], value.detach(), rtol=1e-5, atol=1e-7), (name, key)


@pytest.mark.slow
def test_ckpt_interval_minutes_saves_inside_the_epoch(options_run):
    out, _ = options_run
    assert any(meta.get("brain_intra_epoch_ckpt") for meta, _ in checkpoints(out))


@pytest.mark.slow
def test_noprogressbar_leaves_no_progress_bar(options_run):
    _, result = options_run
    assert "it/s]" not in result.stderr and "it/s]" not in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("demo_test: EER")


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.is_available(), reason="the check is for machines without a GPU")
def test_cuda_device_without_a_gpu_stops_before_anything_runs(tmp_path):
    result = run(TRAIN + ["hparams/demo.yaml", f"--output_folder={tmp_path / 'out'}", "--device=cuda:0"])
    assert result.returncode != 0
    assert "--device=cuda:0 but torch sees no CUDA device" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.is_available(), reason="the check is for machines without a GPU")
def test_data_parallel_backend_needs_a_gpu(tmp_path):
    # DataParallel splits batches over several GPUs; on a CPU SpeechBrain refuses it.
    result = run(TRAIN + ["hparams/demo.yaml", f"--output_folder={tmp_path / 'out'}",
                          "--data_parallel_backend"] + DEMO)
    assert result.returncode != 0
    assert "You must have at least 1 GPU to use DataParallel" in result.stdout + result.stderr
