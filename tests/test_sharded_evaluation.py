"""``recipes/evaluate.py`` under torchrun (gloo): sharded, killed, resumed, merged once."""

import csv
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from speechbrain_nes2net.evaluation.score_log import iter_records

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
EVALUATE = str(ROOT / "recipes" / "evaluate.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
REPEATS = 8


def run(args, check=True):
    result = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def read_scores(path):
    lines = [line.split() for line in Path(path).read_text().splitlines()]
    ids = [utt_id for utt_id, _ in lines]
    assert len(ids) == len(set(ids)), "an ID is listed twice"
    return {utt_id: float(score) for utt_id, score in lines}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch demo run and a test manifest repeating its test files (128 rows)."""
    out = tmp_path_factory.mktemp("sharded") / "run"
    run([sys.executable, str(ROOT / "recipes" / "train.py"), "hparams/demo.yaml",
         f"--output_folder={out}", "--number_of_epochs=1", "--n_train=16", "--n_dev=8",
         "--n_test=8", "--noprogressbar"])  # fmt: skip
    with open(out / "save" / "manifests" / "test.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows, fields = list(reader), reader.fieldnames
    manifest = out / "repeated.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for copy in range(REPEATS):
            for row in rows:
                writer.writerow(dict(row, ID=f"{row['ID']}_r{copy}"))
    return out, manifest


def expected_scores(out):
    """The training run's test scores, repeated as in the manifest."""
    base = read_scores(out / "scores" / "demo_test_scores.txt")
    return {f"{k}_r{c}": v for c in range(REPEATS) for k, v in base.items()}


def assert_expected_scores(scores, expected):
    """Every ID once, none lost, each with the training run's test score of its file.

    The same checkpoint through the same forward path: only the last printed
    digit (scores are written with 6 decimals) may differ, where a batch of
    another composition changes the float's last bits.
    """
    assert sorted(scores) == sorted(expected)
    for utt_id, score in scores.items():
        assert abs(score - expected[utt_id]) <= 1.01e-6, (utt_id, score, expected[utt_id])


def logged(folder, pattern="big_scores.shard-*.log"):
    return sum(sum(1 for _ in iter_records(p)) for p in Path(folder).glob(pattern))


#: Test-only ``sitecustomize`` that makes a scoring process kill itself at a
#: chosen batch of its score log (``$KILL_AT_LOGGED_RECORD``, ``$KILL_RANK``, ``$KILL_JOB``).
KILLER = ROOT / "tests" / "reliability" / "kill_scoring"
#: Most records one append of the log holds: a batch never crosses a chunk.
CHUNK = 8


def killed_run(command, rank, at, job):
    """Runs ``command``; worker ``rank`` dies in the batch that logs its ``at``-th file.

    ``job``: it kills torchrun and the other worker first (the whole job
    pre-empted); else it dies alone and torchrun stops the other worker.
    """
    env = dict(ENV, PYTHONPATH=os.pathsep.join([str(KILLER), ENV["PYTHONPATH"]]),
               KILL_AT_LOGGED_RECORD=str(at), KILL_RANK=str(rank), KILL_JOB="1" if job else "")  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    expected = -signal.SIGKILL if job else 1  # torchrun killed, or reporting its worker's death
    assert result.returncode == expected, result.stderr[-6000:]


@pytest.mark.slow
def test_two_process_gloo_run_killed_at_random_points_resumes_to_the_same_scores(trained):
    out, manifest = trained
    scores_dir = out / "scores"
    command = TORCHRUN + [
        EVALUATE, str(out / "hyperparams.yaml"), f"--test_manifest={manifest}",
        "--test_name=big", "--chunk_size=8", "--distributed_backend=gloo",
    ]  # fmt: skip
    total = 8 * 2 * REPEATS
    rank1 = lambda: logged(scores_dir, "big_scores.shard-1-of-2.log")
    rng = random.Random(11)
    # The whole job dies while rank 1 logs its file `at` (of total / 2)...
    at = rng.randrange(4, total // 2 - 24)
    killed_run(command, rank=1, at=at, job=True)
    first = rank1()
    assert at - CHUNK <= first < at, (at, first)
    # ... then rank 1 alone, a few batches into its resumed shard.
    at = rng.randrange(CHUNK + 2, 24)
    killed_run(command, rank=1, at=at, job=False)
    assert first + at - CHUNK <= rank1() < first + at, (first, at, rank1())
    assert not (scores_dir / "big_scores.txt").exists()
    run(command)
    assert "resuming" in (out / "log.txt").read_text()  # not scored again from the start
    assert_expected_scores(read_scores(scores_dir / "big_scores.txt"), expected_scores(out))
    assert logged(scores_dir) == total  # each utterance scored into the logs once
    # A rerun does no scoring and says so.
    run(command)
    log = (out / "log.txt").read_text()
    assert log.count("nothing to score, all 64 utterances are in") >= 2


@pytest.mark.slow
def test_a_shard_runs_and_restarts_alone_without_torchrun(trained):
    out, manifest = trained
    base = [
        sys.executable, EVALUATE, str(out / "hyperparams.yaml"), f"--test_manifest={manifest}",
        "--test_name=alone", "--chunk_size=8",
    ]  # fmt: skip
    result = run(base + ["--shard=1/2"])
    assert "shard 1 of 2 done; waiting for shards [0]" in result.stdout
    assert not (out / "scores" / "alone_scores.txt").exists()
    run(base + ["--shard=0/2"])
    scores = read_scores(out / "scores" / "alone_scores.txt")
    assert_expected_scores(scores, expected_scores(out))
    # A changed option is refused, not mixed in.
    result = run(base + ["--shard=0/2", "--eval_samples=16000"], check=False)
    assert result.returncode != 0 and "eval_samples" in result.stderr
