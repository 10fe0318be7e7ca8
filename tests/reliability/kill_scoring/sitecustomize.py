"""Test-only: a scoring process that kills itself at a chosen batch of its score log.

The resumable-scoring tests put this folder first on the ``PYTHONPATH`` of the
``nes2net-score --output`` and ``recipes/evaluate.py`` processes they kill;
Python imports ``sitecustomize`` at start-up. With ``$KILL_AT_LOGGED_RECORD=N``
set, it wraps :meth:`ScoreLog.append` (what the corpus scoring engine calls
with every finished batch) so that the process SIGKILLs itself in the append
that would bring the records it logged to ``N`` or more, before writing any of
them: the batches before are in the log, that one is scored and lost, as a
kill in the middle of a batch leaves it. The point is the same on any machine,
unlike a kill after a delay or after polling the log. Without the variable
nothing is wrapped.

Under torchrun, ``$KILL_RANK=R`` arms only the worker of rank ``R`` (torchrun
itself has no ``RANK``), and ``$KILL_JOB=1`` makes that worker kill torchrun
and the other workers first: the whole job pre-empted at once.
"""

import os
import signal
from pathlib import Path


def _children(pid):
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]  # fmt: skip


def _die():
    if os.environ.get("KILL_JOB"):
        parent = os.getppid()
        others = [pid for pid in _children(parent) if pid != os.getpid()]
        for pid in [parent] + others:  # torchrun first: it cannot stop the workers itself
            os.kill(pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _install(kill_at):
    from speechbrain_nes2net.evaluation.score_log import ScoreLog

    append = ScoreLog.append
    logged = 0

    def append_or_die(self, records):
        nonlocal logged
        if records and logged + len(records) >= kill_at:
            _die()
        logged += len(records)
        return append(self, records)

    ScoreLog.append = append_or_die


if os.environ.get("KILL_AT_LOGGED_RECORD") and os.environ.get("KILL_RANK") in (None, os.environ.get("RANK")):
    _install(int(os.environ["KILL_AT_LOGGED_RECORD"]))
