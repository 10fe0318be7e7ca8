"""Training on several corpora: the mixture sampler, the recipe, and a two-process DDP run."""

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpora import BUILDERS, add_training_split
from speechbrain_nes2net.lobes.ssl import make_tiny_ssl_model
from speechbrain_nes2net.training.sampling import CorpusMixtureSampler, parse_data_spec

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def test_data_specs_in_every_form():
    assert parse_data_spec("a/train") == {"a/train": 1.0}
    assert parse_data_spec({"a/train": 2, "b/train": 0.5}) == {"a/train": 2.0, "b/train": 0.5}
    with pytest.raises(ValueError, match="weight of 'b/train' must be a positive number"):
        parse_data_spec("a/train:1,b/train:zero")


def test_the_draw_follows_the_weights_and_the_epoch():
    sampler = CorpusMixtureSampler([100, 30], [1.0, 0.5], epoch_length=90, seed=3)
    sampler.set_epoch(1)
    first = list(sampler)
    corpus = Counter("a" if i < 100 else "b" for i in first)
    assert corpus == {"a": 60, "b": 30} and sampler.counts() == [60, 30]
    assert len(set(first)) == 90  # without replacement: no utterance twice (shares <= sizes)
    assert list(sampler) == first  # the same epoch draws the same, on any process
    sampler.set_epoch(2)
    assert list(sampler) != first
    assert len(CorpusMixtureSampler([10, 10], [1, 1], epoch_length=7, world_size=2)) == 6
    # A share larger than its corpus cycles through it: every utterance before any repeat.
    small = CorpusMixtureSampler([5, 100], [1.0, 1.0], epoch_length=20, seed=0)
    small.set_epoch(1)
    assert sorted(Counter(i for i in small if i < 5).values()) == [2, 2, 2, 2, 2]



@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.floats(0.01, 10.0), min_size=1, max_size=6),
    epoch_length=st.integers(1, 500),
)
def test_epoch_counts_apportion_by_largest_remainder(weights, epoch_length):
    sampler = CorpusMixtureSampler([50] * len(weights), weights, epoch_length=epoch_length)
    counts = sampler.counts()
    exact = np.array(weights) / sum(weights) * epoch_length
    assert sum(counts) == epoch_length
    assert min(counts) >= 0
    assert np.all(np.abs(np.array(counts) - exact) < 1)
    assert len(list(sampler)) == epoch_length


def test_epoch_counts_do_not_load_the_remainder_on_the_last_corpus():
    assert CorpusMixtureSampler([9] * 4, [1, 1, 1, 1], epoch_length=10).counts() == [3, 3, 2, 2]
    small_last = CorpusMixtureSampler([9] * 4, [1, 1, 1, 0.1], epoch_length=5)
    assert small_last.counts() == [2, 2, 1, 0]
    assert len(small_last.draw()) == 5

def two_corpora(tmp_path):
    """CtrSVDD and ASVspoof 2019 LA, small, in their real layouts."""
    ctrsvdd = BUILDERS["ctrsvdd"](tmp_path / "ctrsvdd")
    add_training_split(ctrsvdd, "dev", "train")
    la = BUILDERS["asvspoof2019"](tmp_path / "la")
    return [f"--ctrsvdd_folder={ctrsvdd.root}", f"--asvspoof2019_folder={la.root}"]


def run_multi(tmp_path, launcher, *extra):
    """The multi-corpus recipe on two small corpora with a tiny WavLM."""
    out = tmp_path / "run"
    ssl = make_tiny_ssl_model(tmp_path / "ssl")
    result = subprocess.run(
        launcher + ["recipes/train.py", "hparams/nes2net_x_multi.yaml", f"--output_folder={out}",
                    f"--ssl_source={ssl}", "--number_of_epochs=2", "--batch_size=4",
                    "--num_workers=0", "--valid_epochs=all", "--noprogressbar",
                    "--train_data=asvspoof2019_la/train:1.0,ctrsvdd/train:0.5"]
        + two_corpora(tmp_path) + list(extra),
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return out


def drawn(out, epoch):
    """(ID, corpus, process) rows of an epoch's draw."""
    with open(out / "mixture" / f"epoch_{epoch}.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_multi_corpus_recipe_mixes_validates_per_corpus_and_tests_each(tmp_path):
    out = run_multi(tmp_path, [sys.executable], "--valid_pooling=worst")
    rows = drawn(out, 1)
    counts = Counter(row["corpus"] for row in rows)
    assert set(counts) == {"asvspoof2019_la/train", "ctrsvdd/train"}
    assert counts["asvspoof2019_la/train"] == pytest.approx(2 * counts["ctrsvdd/train"], abs=1)
    log = (out / "log.txt").read_text()
    assert "Epoch 1 trained on" in log and "utterances of ctrsvdd/train" in log
    train_log = (out / "train_log.txt").read_text()
    assert "valid EER_asvspoof2019_la/dev" in train_log and "valid EER_ctrsvdd/dev" in train_log
    assert "EER_pooled" in train_log  # valid_pooling: worst keeps the pooled EER beside
    # Dev scored per corpus after training; one decision rule from both.
    scores = out / "scores"
    assert (scores / "asvspoof2019_la_dev_scores.txt").is_file() and (scores / "ctrsvdd_dev_scores.txt").is_file()
    assert {p.name for p in scores.glob("*_metrics.json")} >= {
        "asvspoof2019_la_eval_metrics.json", "ctrsvdd_test_metrics.json"}
    assert (out / "decision.json").is_file()


@pytest.mark.slow
def test_ddp_gives_each_drawn_utterance_to_one_process(tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    # 12 an epoch: 8 and 4, within both corpora, so that no utterance is drawn twice.
    out = run_multi(tmp_path, launcher, "--distributed_backend=gloo", "--mixture_epoch_length=12")
    for epoch in (1, 2):
        rows = drawn(out, epoch)
        keys = [(row["corpus"], row["ID"]) for row in rows]
        assert len(keys) == 12 and len(set(keys)) == 12, "an utterance trained twice"
        assert {row["process"] for row in rows} == {"0", "1"}
        assert Counter(row["process"] for row in rows)["0"] == Counter(row["process"] for row in rows)["1"]
