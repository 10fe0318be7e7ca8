"""Frozen-SSL feature cache: hits, misses, invalidation, and training from it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechbrain_nes2net.lobes.ssl import (
    SSLFrontend,
    make_tiny_ssl_model,
    ssl_frame_lengths,
)
from speechbrain_nes2net.training.feature_cache import FeatureCache, ssl_features_fingerprint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ssl_folder(tmp_path_factory):
    return make_tiny_ssl_model(tmp_path_factory.mktemp("cache") / "tiny")


@pytest.fixture(scope="module")
def frontend(ssl_folder):
    return SSLFrontend(ssl_folder).eval()


def batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(3, 8000, generator=gen), torch.tensor([1.0, 0.7, 0.4])


# float16 keeps 11 significant bits: a state of magnitude m comes back within
# m * 2**-11 (measured here: 9.7e-4 at |m| <= 4.5). 2.5e-3 is that bound on the
# tiny model's states with headroom; a bfloat16 cache (8 bits, measured 7.8e-3)
# would fail it.
@pytest.mark.parametrize("dtype,tolerance", [("float32", 0.0), ("float16", 2.5e-3)])
def test_cached_states_equal_computed_states(tmp_path, frontend, dtype, tolerance):
    cache = FeatureCache(tmp_path, "model", dtype=dtype)
    wavs, lengths = batch()
    with torch.no_grad():
        first, frame_lengths = cache.states(wavs, lengths, frontend)
        second, _ = cache.states(wavs, lengths, frontend)
        direct = frontend(wavs, lengths)
    exact = ssl_frame_lengths(frontend, lengths, wavs.shape[1], direct.shape[2])
    assert (cache.misses, cache.hits) == (3, 3)
    for i, rel in enumerate(frame_lengths.tolist()):
        n = round(rel * first.shape[2])
        assert n == round(exact[i].item() * direct.shape[2])
        assert (second[:, i, :n] - direct[:, i, :n]).abs().max() <= tolerance + 1e-5
        assert torch.equal(first[:, i, :n], direct[:, i, :n])  # the first pass is computed
        assert torch.all(second[:, i, n:] == 0)


def test_a_changed_waveform_is_a_miss_and_a_batch_mix_is_served(tmp_path, frontend):
    cache = FeatureCache(tmp_path, "model", dtype="float32")
    wavs, lengths = batch()
    with torch.no_grad():
        cache.states(wavs, lengths, frontend)
        edited = wavs.clone()
        edited[1, 100] += 0.5  # one sample changed in one file
        mixed, _ = cache.states(edited, lengths, frontend)
        direct = frontend(edited, lengths)
    assert (cache.misses, cache.hits) == (4, 2)
    n = round(0.7 * direct.shape[2])
    assert torch.allclose(mixed[:, 1, :n], direct[:, 1, :n], atol=1e-5)


def test_fingerprint_changes_with_the_model_and_its_input_preparation(tmp_path, ssl_folder):
    base = ssl_features_fingerprint(ssl_folder, True)
    assert ssl_features_fingerprint(ssl_folder, True) == base
    assert ssl_features_fingerprint(ssl_folder, False) != base
    assert ssl_features_fingerprint(ssl_folder, True, dtype="float32") != base
    assert ssl_features_fingerprint("microsoft/wavlm-large", True) != base
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in Path(ssl_folder).iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    config = json.loads((copy / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6  # another model configuration
    (copy / "config.json").write_text(json.dumps(config))
    assert ssl_features_fingerprint(copy, True) != ssl_features_fingerprint(ssl_folder, True)


def test_a_torn_entry_is_recomputed(tmp_path, frontend):
    cache = FeatureCache(tmp_path, "model", dtype="float32")
    wavs, lengths = batch()
    with torch.no_grad():
        cache.states(wavs, lengths, frontend)
        for entry in cache.folder.rglob("*.npy"):
            entry.write_bytes(entry.read_bytes()[:50])  # a write cut short
        again, _ = cache.states(wavs, lengths, frontend)
    assert cache.misses == 6 and torch.isfinite(again).all()


@pytest.mark.slow
def test_frozen_ssl_training_reads_the_cache_from_its_second_epoch(tmp_path):
    # The switches are scalars: the command line turns the cache on.
    common = ["--number_of_epochs=2", "--n_train=12", "--n_dev=4", "--n_test=4",
              "--freeze_ssl=True", "--train_random_crop=False", "--feature_cache_dtype=float32"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    for name, switch in (("cached", "--feature_cache=True"), ("plain", "--feature_cache=False")):
        subprocess.run(
            [sys.executable, "recipes/train.py", "hparams/demo.yaml", switch,
             f"--output_folder={tmp_path / name}"] + common,
            cwd=ROOT, env=env, check=True, capture_output=True, timeout=600,
        )
    entries = list((tmp_path / "cached" / "save" / "ssl_states").rglob("*.npy"))
    assert len(entries) == 24 + 8 + 8  # train, dev and test waveforms, once each
    log = (tmp_path / "cached" / "log.txt").read_text()
    train = re.findall(r"Feature cache, train stage: (\d+) hits, (\d+) misses", log)
    assert train == [("0", "24"), ("24", "0")]  # epoch 1 writes, epoch 2 reads
    cached = (tmp_path / "cached" / "scores" / "demo_test_scores.txt").read_text().split()
    plain = (tmp_path / "plain" / "scores" / "demo_test_scores.txt").read_text().split()
    assert cached[::2] == plain[::2]
    assert max(abs(float(a) - float(b)) for a, b in zip(cached[1::2], plain[1::2])) < 1e-4
