"""Score fusion: the library (evaluation/fusion.py) and recipes/fuse.py on two demo runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from speechbrain_nes2net.evaluation.fusion import Fusion, fit_fusion, fuse_score_files
from speechbrain_nes2net.manifest import write_manifest

ROOT = Path(__file__).resolve().parents[1]


def write_set(folder, name, ids, labels, systems):
    """A manifest and one score file per system."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"ID": i, "duration": 1.0, "wav": f"/x/{i}.wav", "label": "bonafide" if b else "spoof",
         "attack": "-" if b else "A01"}
        for i, b in zip(ids, labels)
    ]
    write_manifest(rows, folder / f"{name}.csv")
    paths = []
    for system, scores in systems.items():
        path = folder / f"{system}_{name}_scores.txt"
        path.write_text("".join(f"{i} {s:.6f}\n" for i, s in zip(ids, scores)))
        paths.append(path)
    return folder / f"{name}.csv", paths


def synthetic(tmp_path, n=400, seed=0):
    """Two noisy systems on the same dev and eval trials."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in ("dev", "eval"):
        labels = rng.random(n) < 0.4
        truth = np.where(labels, 1.0, -1.0)
        systems = {"a": truth + rng.normal(0, 1.0, n), "b": 3 * truth + rng.normal(0, 4.0, n) + 5}
        ids = [f"{name}{k}" for k in range(n)]
        out[name] = write_set(tmp_path, name, ids, labels, systems)
    return out


def test_fusion_fits_weights_and_never_loses_cllr_on_dev(tmp_path):
    sets = synthetic(tmp_path)
    (dev_manifest, dev_files), (eval_manifest, eval_files) = sets["dev"], sets["eval"]
    result = fuse_score_files(dev_files, dev_manifest, eval_files, tmp_path / "out",
                              systems=["a", "b"], eval_manifest=eval_manifest)
    dev = result["dev"]
    best_single = min(dev["a (calibrated)"]["cllr"], dev["b (calibrated)"]["cllr"])
    assert dev["fusion"]["cllr"] <= best_single + 1e-9  # it is the Cllr optimum on dev
    assert dev["fusion"]["eer"] < min(dev["a (calibrated)"]["eer"], dev["b (calibrated)"]["eer"])
    assert set(result["eval"]) == {"a (calibrated)", "b (calibrated)", "equal weights", "fusion"}
    fused = (tmp_path / "out" / "fused_eval_scores.txt").read_text().splitlines()
    assert len(fused) == 400
    assert Fusion.from_dict(json.loads((tmp_path / "out" / "fusion.json").read_text())).systems == ("a", "b")


def test_missing_trials_are_listed_or_filled_and_counted(tmp_path):
    sets = synthetic(tmp_path)
    (dev_manifest, dev_files), (_, eval_files) = sets["dev"], sets["eval"]
    lines = eval_files[1].read_text().splitlines()
    eval_files[1].write_text("\n".join(lines[3:]) + "\n")  # system b lost three trials
    with pytest.raises(ValueError, match=r"system b .* has no score for 3 of 400 trials, e.g. eval0, eval1, eval2"):
        fuse_score_files(dev_files, dev_manifest, eval_files, tmp_path / "out", systems=["a", "b"])
    result = fuse_score_files(dev_files, dev_manifest, eval_files, tmp_path / "out",
                              systems=["a", "b"], allow_missing=True)
    assert result["filled_with_dev_mean"] == {"dev": {"a": 0, "b": 0}, "eval": {"a": 0, "b": 3}}


def test_fit_fusion_recovers_the_weights():
    rng = np.random.default_rng(1)
    labels = np.repeat([True, False], 3000)
    llr_a, llr_b = np.where(labels, 1.0, -1.0), np.where(labels, 0.5, -0.5)
    scores = np.stack([llr_a + rng.normal(0, 1.4, 6000), llr_b + rng.normal(0, 1.0, 6000)], axis=1)
    fusion = fit_fusion(scores, labels, ["a", "b"])
    # Independent Gaussian systems: the LLR is sum_i 2 mu_i x_i / sigma_i^2.
    assert fusion.weights == pytest.approx((2 / 1.96, 1.0), rel=0.1)


@pytest.mark.slow
def test_two_seeded_demo_runs_fuse(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    runs = []
    for seed in (11, 12):
        out = tmp_path / f"run{seed}"
        subprocess.run(
            [sys.executable, "recipes/train.py", "hparams/demo.yaml", f"--output_folder={out}",
             f"--seed={seed}", "--number_of_epochs=1", "--n_train=16", "--n_dev=12", "--n_test=8",
             "--noprogressbar", f"--data_folder={tmp_path / 'corpus'}"],
            cwd=ROOT, env=env, check=True, capture_output=True, timeout=600,
        )
        runs.append(out)
    manifests = runs[0] / "save" / "manifests"
    result = subprocess.run(
        [sys.executable, "recipes/fuse.py",
         "--dev", *[str(r / "scores" / "demo_dev_scores.txt") for r in runs],
         "--dev_manifest", str(manifests / "dev.csv"),
         "--eval", *[str(r / "scores" / "demo_test_scores.txt") for r in runs],
         "--eval_manifest", str(manifests / "test.csv"), "--report", "eer",
         "--output_folder", str(tmp_path / "fused"), "--names", "seed11", "seed12"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=300,
    )
    fusion = json.loads((tmp_path / "fused" / "fusion.json").read_text())
    dev = fusion["dev"]
    assert dev["fusion"]["cllr"] <= min(dev["seed11 (calibrated)"]["cllr"], dev["seed12 (calibrated)"]["cllr"]) + 1e-9
    metrics = json.loads((tmp_path / "fused" / "fused_eval_metrics.json").read_text())
    assert metrics["n_bonafide"] == 8 and metrics["n_spoof"] == 8
    assert (tmp_path / "fused" / "fused_eval_report.json").is_file()
    assert "eval fusion: EER" in result.stdout


def test_a_missing_trial_is_filled_with_its_own_systems_dev_mean(tmp_path):
    sets = synthetic(tmp_path)
    (dev_manifest, dev_files), (_, eval_files) = sets["dev"], sets["eval"]
    lines = eval_files[1].read_text().splitlines()
    eval_files[1].write_text("\n".join(lines[1:]) + "\n")  # system b lost eval0
    result = fuse_score_files(dev_files, dev_manifest, eval_files, tmp_path / "out",
                              systems=["a", "b"], allow_missing=True)
    fusion = Fusion.from_dict(result)
    dev_mean_b = np.mean([float(line.split()[1]) for line in dev_files[1].read_text().splitlines()])
    score_a = float(eval_files[0].read_text().splitlines()[0].split()[1])
    # The two systems' dev means differ by about 5: filling from a's would move the score a lot.
    expected = fusion.apply(np.array([[score_a, dev_mean_b]]))[0]
    fused = dict(line.split() for line in (tmp_path / "out" / "fused_eval_scores.txt").read_text().splitlines())
    assert float(fused["eval0"]) == pytest.approx(expected, abs=1e-5)


def test_duplicate_system_names_are_refused(tmp_path):
    sets = synthetic(tmp_path)
    (dev_manifest, dev_files), (_, eval_files) = sets["dev"], sets["eval"]
    with pytest.raises(ValueError, match="system names must differ.*wavlm is given more than once"):
        fuse_score_files(dev_files, dev_manifest, eval_files, tmp_path / "out", systems=["wavlm", "wavlm"])
    assert not (tmp_path / "out" / "fusion.json").exists()
    run = subprocess.run(
        [sys.executable, "recipes/fuse.py", "--dev", *map(str, dev_files), "--dev_manifest", str(dev_manifest),
         "--eval", *map(str, eval_files), "--output_folder", str(tmp_path / "cli"), "--names", "x", "x"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode != 0
    assert "fuse.py: system names must differ" in run.stderr and "Traceback" not in run.stderr
