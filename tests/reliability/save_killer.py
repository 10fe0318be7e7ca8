"""A checkpoint recoverable that kills its own process in the middle of a save.

Test-only: the interrupted-training tests add it to a copy of the demo YAML,
between the model's recoverables and the epoch counter, so that the save
numbered ``$KILL_DURING_SAVE`` (1 = the first checkpoint of the process) dies
after some files of the checkpoint are written and before the others, with
its own file truncated: exactly what a SIGKILL or a power cut during a save
leaves. Its loader refuses a truncated file, so loading a half-written
checkpoint fails loudly instead of passing unnoticed.
"""

import os
import signal
from pathlib import Path

from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

PAYLOAD = b"complete checkpoint file\n" * 64


@register_checkpoint_hooks
class KillDuringSave:
    """Saves a fixed payload; dies half-way through save number ``$KILL_DURING_SAVE``."""

    def __init__(self):
        self.saves = 0

    @mark_as_saver
    def save(self, path):
        self.saves += 1
        kill_at = int(os.environ.get("KILL_DURING_SAVE", "0"))
        with open(path, "wb") as handle:
            if self.saves == kill_at:
                handle.write(PAYLOAD[: len(PAYLOAD) // 3])
                handle.flush()
                os.fsync(handle.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            handle.write(PAYLOAD)

    @mark_as_loader
    def load(self, path, end_of_epoch):
        data = Path(path).read_bytes()
        if data != PAYLOAD:
            raise RuntimeError(f"{path}: half-written ({len(data)} bytes): a restart loaded it")


class KillAtLossCall:
    """The recipe's loss, killing its own process at call number ``$KILL_AT_LOSS_CALL``.

    Test-only: the interrupted-training tests wrap the demo's ``loss`` in it, so
    that a run dies at a chosen batch (training, validation or test: the Brain
    computes the loss in every stage) whatever the machine's speed, instead of
    after a chosen delay.
    """

    def __init__(self, loss):
        self.loss = loss
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == int(os.environ.get("KILL_AT_LOSS_CALL", "0")):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.loss(*args, **kwargs)
