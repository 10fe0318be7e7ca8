"""``AtomicCheckpointer`` and ``RandomState`` in-process (the recipe-level kills are in
``test_interrupted_training.py``)."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from speechbrain.utils.checkpoints import (
    Checkpointer,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from speechbrain_nes2net.training.checkpoints import (
    RANDOM_STATE,
    AtomicCheckpointer,
    RandomState,
)


@register_checkpoint_hooks
class FailingSave:
    """A recoverable whose save fails once ``fail`` is set (a full disk, a kill)."""

    def __init__(self):
        self.fail = False

    @mark_as_saver
    def save(self, path):
        with open(path, "w") as handle:
            handle.write("partial")
            if self.fail:
                raise OSError("No space left on device")
            handle.write(" and complete")

    @mark_as_loader
    def load(self, path, end_of_epoch):
        assert Path(path).read_text() == "partial and complete", f"{path} is half-written"


@register_checkpoint_hooks
class MetaWatcher:
    """A recoverable that notes, when it is saved, whether its folder has CKPT.yaml yet."""

    def __init__(self):
        self.meta_seen = []

    @mark_as_saver
    def save(self, path):
        self.meta_seen.append((Path(path).parent / "CKPT.yaml").exists())
        Path(path).write_text("saved")

    @mark_as_loader
    def load(self, path, end_of_epoch):
        assert Path(path).read_text() == "saved"


def make(folder, **kwargs):
    model = torch.nn.Linear(3, 1)
    flaky = FailingSave()
    # The flaky file is saved between the model and the counter-like tensor.
    recoverables = {"model": model, "flaky": flaky, "after": torch.nn.Linear(1, 1)}
    return AtomicCheckpointer(folder, recoverables=recoverables, **kwargs), model, flaky


def test_an_interrupted_save_is_invisible_and_removed_by_the_next_save(tmp_path):
    checkpointer, model, flaky = make(tmp_path)
    checkpointer.save_and_keep_only(meta={"EER": 5.0, "epoch": 1}, min_keys=["EER"])
    good = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    flaky.fail = True
    with pytest.raises(OSError):
        checkpointer.save_and_keep_only(meta={"EER": 1.0, "epoch": 2}, min_keys=["EER"])
    leftover = checkpointer.incomplete_dirs()
    assert len(leftover) == 1
    assert {p.name for p in leftover[0].iterdir()} == {"model.ckpt", "flaky.ckpt"}

    # A fresh process (restart) sees only epoch 1, though epoch 2's folder is newer
    # and its meta data would make it the best.
    restarted, restarted_model, _ = make(tmp_path)
    assert [c.meta["epoch"] for c in restarted.list_checkpoints()] == [1]
    assert restarted.find_checkpoint(min_key="EER").meta["epoch"] == 1
    restarted.recover_if_possible()
    assert torch.equal(restarted_model.weight, good)
    # Plain SpeechBrain agrees: nothing here depends on reading with our class.
    assert len(Checkpointer(tmp_path).list_checkpoints()) == 1

    restarted.save_and_keep_only(meta={"EER": 2.0, "epoch": 2}, min_keys=["EER"], num_to_keep=2)
    assert restarted.incomplete_dirs() == [] and not leftover[0].exists()
    assert sorted(c.meta["epoch"] for c in restarted.list_checkpoints()) == [1, 2]


def test_meta_data_is_written_after_every_file(tmp_path):
    checkpointer, _, _ = make(tmp_path)
    # Saved last: if CKPT.yaml came before any parameter file, this one would see it
    # (an order check that does not depend on file times sharing a clock tick).
    watcher = MetaWatcher()
    checkpointer.add_recoverable("watcher", watcher)
    saved = checkpointer.save_checkpoint(meta={"epoch": 1})
    assert watcher.meta_seen == [False]
    assert (saved.path / "CKPT.yaml").is_file()
    assert not list(saved.path.glob(".*tmp"))
    assert saved.meta["epoch"] == 1 and set(saved.paramfiles) == {
        "model",
        "flaky",
        "after",
        RANDOM_STATE,
        "watcher",
    }


def test_random_streams_continue_from_the_checkpoint(tmp_path):
    checkpointer = AtomicCheckpointer(tmp_path, recoverables={"m": torch.nn.Linear(1, 1)})
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    checkpointer.save_checkpoint()
    expected = [random.random(), np.random.rand(), torch.rand(2).tolist(), np.random.randn()]
    random.seed(2), np.random.seed(2), torch.manual_seed(2)  # a restarted process
    AtomicCheckpointer(tmp_path, recoverables={"m": torch.nn.Linear(1, 1)}).recover_if_possible()
    assert [
        random.random(),
        np.random.rand(),
        torch.rand(2).tolist(),
        np.random.randn(),
    ] == expected


def test_checkpoints_written_without_random_state_still_load(tmp_path):
    old = AtomicCheckpointer(
        tmp_path, recoverables={"m": torch.nn.Linear(1, 1)}, random_state=False
    )
    old.save_checkpoint()
    model = torch.nn.Linear(1, 1)
    with pytest.warns(UserWarning, match="random_state"):
        loaded = AtomicCheckpointer(tmp_path, recoverables={"m": model}).recover_if_possible()
    assert loaded is not None
    assert torch.equal(model.weight, torch.load(loaded.paramfiles["m"])["weight"])


def test_random_state_file_loads_with_weights_only(tmp_path):
    path = tmp_path / "random_state.ckpt"
    RandomState().save(path)
    state = torch.load(path, weights_only=True)
    assert set(state) >= {"python", "numpy", "torch"}
