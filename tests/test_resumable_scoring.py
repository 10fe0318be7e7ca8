"""Resumable ``nes2net-score --output``: kills, full disks, changed models and inputs."""

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from data_prep.demo_prepare import speech_like
from speechbrain_nes2net.evaluation.score_log import ScoreLog, iter_records
from speechbrain_nes2net.lobes.aggregation import build_aggregator
from speechbrain_nes2net.lobes.nes2net import Nes2Net
from speechbrain_nes2net.lobes.ssl import SSLFrontend, make_tiny_ssl_model
from speechbrain_nes2net.pretrained.export import write_export
from speechbrain_nes2net.pretrained.modules import EvalSettings
from speechbrain_nes2net.pretrained.score_cli import main

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
N_FILES = 48


pytestmark = pytest.mark.usefixtures("one_thread")


def build_export(folder, seed=0):
    """A tiny exported model (WavLM-like front-end, Nes2Net back-end)."""
    torch.manual_seed(seed)
    ssl = SSLFrontend(make_tiny_ssl_model(folder / "tiny_wavlm")).eval()
    backend_kwargs = {"input_size": 64, "outer_ratio": 4, "inner_ratio": 4, "n_out": 2}
    return write_export(
        folder / "export", ssl, build_aggregator("weighted_sum", 3, 64).eval(),
        Nes2Net(**backend_kwargs).eval(), backend_kwargs,
        settings=EvalSettings(eval_min_samples=8000),
    )  # fmt: skip


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return build_export(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A list file of N_FILES short files of varied lengths, one of them empty."""
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(5)
    lines = []
    for index in range(N_FILES):
        path = folder / f"utt{index:03d}.flac"
        if index == 7:
            sf.write(path, np.zeros(0, dtype=np.float32), 16000)
        else:
            sf.write(path, speech_like(rng, rng.uniform(0.3, 1.2), 16000).astype(np.float32), 16000)
        lines.append(f"utt{index:03d} {path}")
    listing = folder / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def score_args(export, listing, out, *extra):
    return ["--model", str(export), "--output", str(out), "--quiet", "--batch-size", "4",
            "--chunk-size", "10", *extra, str(listing)]  # fmt: skip


@pytest.fixture(scope="module")
def reference(export, corpus, tmp_path_factory):
    """Scores of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "scores.txt"
    assert main(score_args(export, corpus, out)) == 1  # the empty file fails
    return read_scores(out)


def read_scores(path):
    lines = [line.split() for line in Path(path).read_text().splitlines()]
    ids = [fields[0] for fields in lines]
    assert len(ids) == len(set(ids)), "an ID is listed twice"
    return {utt_id: float(score) for utt_id, score, *_ in lines}


def assert_same_scores(scores, reference):
    assert list(scores) == list(reference)  # same IDs, same (input) order
    for utt_id, score in scores.items():
        assert abs(score - reference[utt_id]) <= 1.01e-6, utt_id


def assert_clean_log(log):
    """Each file logged once, every line whole (a torn line would be glued to the next)."""
    lines = log.read_text().splitlines()[1:]
    assert sorted(int(line.split("\t")[0]) for line in lines) == list(range(N_FILES))
    for line in lines:
        assert len(line.split("\t")) == (6 if "\tok\t" in line else 5), line


def test_uninterrupted_run_is_in_input_order_and_failures_are_listed(reference, tmp_path):
    assert list(reference) == [f"utt{i:03d}" for i in range(N_FILES) if i != 7]


def test_rerun_after_completion_does_no_work_and_says_so(export, corpus, tmp_path, capsys):
    out = tmp_path / "scores.txt"
    assert main(score_args(export, corpus, out)) == 1
    log = out.with_name("scores.txt.scorelog")
    size = log.stat().st_size
    capsys.readouterr()
    assert main(score_args(export, corpus, out)) == 1
    err = capsys.readouterr().err
    assert "nothing to score: all 48 files are in" in err
    assert log.stat().st_size == size  # nothing appended
    # --restart scores everything again, into a fresh log.
    assert main(score_args(export, corpus, out, "--restart")) == 1
    assert "nothing to score" not in capsys.readouterr().err
    assert sum(1 for _ in iter_records(log)) == N_FILES


def test_changed_model_options_or_inputs_are_refused(export, corpus, tmp_path, capsys):
    out = tmp_path / "scores.txt"
    assert main(score_args(export, corpus, out)) == 1
    before = out.read_text()
    other = build_export(tmp_path / "other", seed=1)
    capsys.readouterr()
    assert main(score_args(other, corpus, out)) == 2
    assert "model:" in capsys.readouterr().err
    assert main(score_args(export, corpus, out, "--raw")) == 2
    assert "options:" in capsys.readouterr().err
    longer = tmp_path / "longer.txt"
    longer.write_text(corpus.read_text() + f"extra {corpus.parent / 'utt000.flac'}\n")
    assert main(score_args(export, longer, out)) == 2
    err = capsys.readouterr().err
    assert "input list" in err and "--restart" in err
    assert out.read_text() == before  # nothing mixed in
    assert main(score_args(other, corpus, out, "--restart")) == 1



def test_a_model_re_exported_into_the_same_folder_is_refused(corpus, tmp_path, capsys):
    # The log is keyed by what the folder holds, not by its path: a new model written
    # where the old one was must not resume the old model's log.
    folder = tmp_path / "model"
    export = build_export(folder, seed=0)
    out = tmp_path / "scores.txt"
    assert main(score_args(export, corpus, out)) == 1
    shutil.rmtree(export)
    assert build_export(folder, seed=1) == export
    capsys.readouterr()
    assert main(score_args(export, corpus, out)) == 2
    assert "model:" in capsys.readouterr().err


def test_an_id_naming_two_files_is_refused_before_scoring(export, corpus, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    lines = corpus.read_text().splitlines()
    clash = f"{lines[0].split()[0]} {lines[1].split()[1]}"  # utt000 again, for utt001's file
    listing.write_text("\n".join(lines + [clash]) + "\n")
    out = tmp_path / "scores.txt"
    assert main(score_args(export, listing, out)) == 2
    err = capsys.readouterr().err
    assert "1 IDs name different files, e.g. ['utt000']" in err
    assert not out.exists() and not out.with_name("scores.txt.scorelog").exists()

def test_shards_run_alone_and_the_last_one_writes_the_output_in_input_order(
    export, corpus, reference, tmp_path, capsys
):
    out = tmp_path / "scores.txt"
    assert main(score_args(export, corpus, out, "--shard=1/2")) == 0
    assert "shard 1 of 2 done; waiting for shards [0]" in capsys.readouterr().err
    assert not out.exists()
    assert main(score_args(export, corpus, out, "--shard=0/2")) == 1  # utt007 fails
    assert_same_scores(read_scores(out), reference)
    logs = [out.with_name(f"scores.txt.shard-{rank}-of-2.scorelog") for rank in (0, 1)]
    positions = [sorted(record[0] for record in iter_records(log)) for log in logs]
    assert positions == [list(range(0, N_FILES, 2)), list(range(1, N_FILES, 2))]
    assert "utt007" in (tmp_path / "failed.csv").read_text()
    assert main(score_args(export, corpus, out, "--shard=2/2")) == 2
    assert "must be R/N" in capsys.readouterr().err


def test_failed_files_are_final_unless_retried(export, corpus, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    broken = tmp_path / "late.flac"
    sf.write(broken, np.zeros(0, dtype=np.float32), 16000)
    listing.write_text(corpus.read_text() + f"late {broken}\n")
    out = tmp_path / "scores.txt"
    assert main(score_args(export, listing, out)) == 1
    rng = np.random.default_rng(0)
    sf.write(broken, speech_like(rng, 0.8, 16000).astype(np.float32), 16000)  # fixed
    assert main(score_args(export, listing, out)) == 1
    assert "late" not in read_scores(out)
    assert "late" in (tmp_path / "failed.csv").read_text()
    assert main(score_args(export, listing, out, "--retry-failed")) == 1  # utt007 still fails
    scores = read_scores(out)
    assert "late" in scores and list(scores)[-1] == "late"
    assert "late" not in (tmp_path / "failed.csv").read_text()


class FullDisk:
    """A file object that takes ``budget`` characters, then fails like a full disk."""

    def __init__(self, handle, budget):
        self.handle, self.budget = handle, budget

    def write(self, text):
        """Writes what fits (a torn line), then raises ENOSPC.

        At least one character goes in, so that the line is torn wherever the
        budget falls (the lines' lengths follow the temporary paths and the
        scores' digits: a budget ending exactly at a line's end tore nothing).
        """
        if len(text) > self.budget:
            self.handle.write(text[: max(self.budget, 1)])
            self.handle.flush()
            self.budget = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= len(text)
        return self.handle.write(text)

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_full_disk_ends_with_a_clear_error_and_resumes(
    export, corpus, reference, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "scores.txt"
    real_open = ScoreLog._open
    monkeypatch.setattr(ScoreLog, "_open", lambda self: FullDisk(real_open(self), 1500))
    assert main(score_args(export, corpus, out)) == 3
    err = capsys.readouterr().err
    assert "the disk is full" in err and "rerun the same command to resume" in err
    log = out.with_name("scores.txt.scorelog")
    assert not log.read_text().endswith("\n")  # a torn last line
    assert not out.exists()
    monkeypatch.setattr(ScoreLog, "_open", real_open)
    assert main(score_args(export, corpus, out)) == 1
    assert "resuming:" in capsys.readouterr().err
    assert_same_scores(read_scores(out), reference)
    assert_clean_log(log)


#: Test-only ``sitecustomize`` that makes a scoring process kill itself at a
#: chosen batch of its score log (``$KILL_AT_LOGGED_RECORD``).
KILLER = ROOT / "tests" / "reliability" / "kill_scoring"


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_gives_the_uninterrupted_scores(
    export, corpus, reference, tmp_path
):
    # Each run kills itself in the batch that would bring the log to a seeded
    # number of files (the first before anything is logged, then mid-chunk):
    # the same kill points on any machine. The last run completes the log.
    out = tmp_path / "scores.txt"
    log = out.with_name("scores.txt.scorelog")
    command = [sys.executable, "-m", "speechbrain_nes2net.pretrained.score_cli"]
    command += score_args(export, corpus, out)
    logged = lambda: sum(1 for _ in iter_records(log)) if log.exists() else 0
    rng = random.Random(17)
    for target in [1] + sorted(rng.sample(range(3, N_FILES - 3), 2)):
        env = dict(ENV, PYTHONPATH=os.pathsep.join([str(KILLER), ENV["PYTHONPATH"]]),
                   KILL_AT_LOGGED_RECORD=str(target - logged()))  # fmt: skip
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
        # Died in the batch (at most --batch-size 4 files) that reached the target.
        assert target - 4 <= logged() < target, (target, logged())
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "resuming:" in result.stderr
    assert_same_scores(read_scores(out), reference)
    assert_clean_log(log)



def test_score_log_cuts_torn_tails_only_when_writing_and_names_corrupt_lines(tmp_path):
    from speechbrain_nes2net.evaluation.score_log import OK, ScoreLogError

    header = {"model": "m", "n_inputs": 6, "chunk_size": 3, "shard": [0, 1]}
    path = tmp_path / "s.log"
    log = ScoreLog(path, header)
    log.append([(0, "a", OK, ["0.1"]), (2, "c", OK, ["0.3"])])
    log.close()
    with open(path, "a") as handle:
        handle.write("1\tb\tok\t0.")  # torn by a kill
    reader = ScoreLog(path, header, readonly=True)
    assert reader.missing(0) == [1] and path.read_text().endswith("0.")  # left alone
    log = ScoreLog(path, header)
    assert path.read_text().endswith("0.3\n")  # cut before appending
    log.append([(1, "b", OK, ["0.2"])])
    log.close()
    assert ScoreLog(path, header).missing(1) == [3, 4, 5]
    with open(path, "a") as handle:
        handle.write("garbage line\n4\te\tok\t0.5\n")
    with pytest.raises(ScoreLogError, match=r"s\.log:5: expected 'position"):
        ScoreLog(path, header)
