"""Running ``recipes/train.py`` in a subprocess, and reading what it left behind."""

import fcntl
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.tag import Tag

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TRAIN = [sys.executable, str(ROOT / "recipes" / "train.py")]
DEMO_YAML = ROOT / "hparams" / "demo.yaml"
#: One thread: the same arithmetic in every run, and two tests side by side on 2 cores.
ENV = dict(
    os.environ,
    HF_HUB_OFFLINE="1",
    OMP_NUM_THREADS="1",
    PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
)
ENV.pop("KILL_DURING_SAVE", None)
ENV.pop("KILL_AT_LOSS_CALL", None)

ATOMIC = "!new:speechbrain_nes2net.training.checkpoints.AtomicCheckpointer"

#: The demo runs of the determinism and interrupted-training tests: 3 epochs of
#: 2 batches (2 x 16 training utterances, batches of 16), 16 dev and test utterances.
SEED = 2024
QUICK_DEMO = ["--number_of_epochs=3", "--n_train=16", "--n_dev=8", "--n_test=8", f"--seed={SEED}"]
BATCHES_PER_EPOCH = 2


def run(args, check=True, timeout=600, env=None):
    """Runs a command from the repository root; fails with its output if it fails."""
    result = subprocess.run(
        args,
        cwd=ROOT,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def shared_run(tmp_path_factory, name, args):
    """Runs the recipe once per test session, whichever pytest-xdist worker asks first.

    Returns the output folder; the other workers wait for it (a file lock in
    the session's temporary folder, which the workers share).
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    out = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (base / f"{name}.done").exists():
            shutil.rmtree(out, ignore_errors=True)
            run(TRAIN + args + [f"--output_folder={out}"])
            (base / f"{name}.done").touch()
    return out


def demo_yaml(folder, killer=False):
    """A copy of ``hparams/demo.yaml`` with the atomic checkpointer (and a save killer).

    The copy goes through ruamel's round trip, so every other key stays as
    shipped. ``killer`` adds ``save_killer.KillDuringSave`` to the
    checkpointer, after the model's recoverables and before the epoch counter.
    The loss is always wrapped in ``save_killer.KillAtLossCall``, which does
    nothing unless ``$KILL_AT_LOSS_CALL`` is set.
    """
    yaml = YAML()
    data = yaml.load(DEMO_YAML.read_text(encoding="utf-8"))
    checkpointer = data["checkpointer"]
    checkpointer.yaml_set_ctag(Tag(suffix=ATOMIC))
    loss = CommentedMap({"loss": data["loss"]})
    loss.yaml_set_ctag(Tag(suffix="!new:save_killer.KillAtLossCall"))
    data["loss"] = loss
    if killer:
        recoverables = checkpointer["recoverables"]
        hook = CommentedMap()
        hook.yaml_set_ctag(Tag(suffix="!new:save_killer.KillDuringSave"))
        recoverables.insert(list(recoverables).index("counter"), "killer", hook)
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    path = Path(folder) / ("demo_killer.yaml" if killer else "demo_atomic.yaml")
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def epoch_lines(output_folder):
    """``{epoch: train-log line}``; a repeated epoch must repeat its line exactly."""
    lines = {}
    for line in (Path(output_folder) / "train_log.txt").read_text().splitlines():
        if line.startswith("epoch: "):
            epoch = int(line.split("epoch: ")[1].split(",")[0])
            assert lines.setdefault(epoch, line) == line, f"epoch {epoch} differs when redone"
    return lines


def logged_epochs(output_folder):
    """Epoch numbers in train-log order, repeats included."""
    path = Path(output_folder) / "train_log.txt"
    if not path.exists():
        return []
    return [
        int(line.split("epoch: ")[1].split(",")[0])
        for line in path.read_text().splitlines()
        if line.startswith("epoch: ")
    ]


def read_text(path):
    return Path(path).read_text(encoding="utf-8") if Path(path).exists() else ""
