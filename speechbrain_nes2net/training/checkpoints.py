"""Checkpoints that a killed run can always resume from, exactly.

:class:`AtomicCheckpointer` publishes a checkpoint only once all its files are
on disk (SpeechBrain's writes ``CKPT.yaml`` first, so a kill while saving left
a half-written checkpoint that the restart loaded), and :class:`RandomState`
makes a resumed run continue the random streams (crops, dropout, augmentation)
of the run it resumes. One selection rule picks the checkpoints a run is
evaluated or exported with (:func:`select_checkpoints`).

Example
-------
>>> folder = getfixture("tmpdir")
>>> model = torch.nn.Linear(2, 1)
>>> checkpointer = AtomicCheckpointer(folder, recoverables={"model": model})
>>> saved = checkpointer.save_checkpoint(meta={"EER": 3.0})
>>> sorted(p.name for p in saved.path.iterdir())
['CKPT.yaml', 'model.ckpt', 'random_state.ckpt']
>>> before = torch.rand(3)
>>> _ = checkpointer.recover_if_possible()
>>> torch.equal(torch.rand(3), before)  # the random stream continues from the checkpoint
True
"""

import logging
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from speechbrain.utils.checkpoints import (
    CKPT_PREFIX,
    METAFNAME,
    Checkpointer,
    average_checkpoints,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import ddp_barrier, if_main_process

logger = logging.getLogger(__name__)

#: The modules of a model (SSL front-end, layer aggregation, back-end), by the
#: name of their parameter file (``<name>.ckpt``) in checkpoints and exports.
MODEL_MODULES = ("ssl", "aggregator", "backend")
#: Name of the :class:`RandomState` recoverable that :class:`AtomicCheckpointer` adds.
RANDOM_STATE = "random_state"


def _own_file(path):
    """This process's file of a per-process state: ``path`` on rank 0, ``path.rank<N>`` beside it."""
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if initialised else 0
    return Path(path) if rank == 0 else Path(f"{path}.rank{rank}")


def _fsync(path, directory=False):
    """Flushes a file (or a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RandomState:
    """The global random generators of this process, as a checkpoint recoverable.

    Python's :mod:`random`, NumPy's legacy global generator, torch's CPU
    generator, and the CUDA generators when CUDA is in use. Under DDP every
    process saves and loads its own (rank 0's when resumed with more
    processes). Generators a component owns (``RawBoost(seed=...)``) are not
    covered.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "random_state.ckpt")
    >>> state = RandomState()
    >>> state.save(path)
    >>> expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    >>> state.load(path)
    >>> (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    True
    """

    @mark_as_saver
    def save(self, path):
        """Writes this process's generator states, in a form ``weights_only`` loading reads."""
        numpy_state = np.random.get_state(legacy=False)
        state = {
            "python": random.getstate(),
            "numpy": {
                "bit_generator": numpy_state["bit_generator"],
                "key": numpy_state["state"]["key"].tolist(),
                "pos": int(numpy_state["state"]["pos"]),
                "has_gauss": int(numpy_state["has_gauss"]),
                "gauss": float(numpy_state["gauss"]),
            },
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(state, _own_file(path))

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        """Restores this process's generator states (rank 0's if it has none)."""
        del end_of_epoch  # the random stream continues either way
        own = _own_file(path)
        source = own if own.exists() else Path(path)
        if source != own:
            logger.warning("%s: no random state for this process; using process 0's", source.parent)
        state = torch.load(source, map_location="cpu", weights_only=True)
        random.setstate(_as_tuples(state["python"]))
        numpy_state = state["numpy"]
        np.random.set_state({
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": np.asarray(numpy_state["key"], dtype=np.uint32),
                      "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        })  # fmt: skip
        torch.set_rng_state(state["torch"])
        cuda = state.get("cuda")
        if cuda is not None and torch.cuda.is_available():
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
            else:
                logger.warning(
                    "Checkpoint has CUDA random states of %d devices, this machine %d: "
                    "CUDA generators not restored", len(cuda), torch.cuda.device_count(),
                )  # fmt: skip


# Every process saves its own state, so the saver must run on all of them.
register_checkpoint_hooks(RandomState, save_on_main_only=False)


def _as_tuples(value):
    """``random.setstate`` needs tuples where serialisation may give lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


class AtomicCheckpointer(Checkpointer):
    """A SpeechBrain ``Checkpointer`` whose checkpoints are complete or invisible.

    A drop-in replacement (same arguments and methods):

    - saving writes every recoverable's file, flushes them to the disk, then
      renames ``CKPT.yaml`` into place, so a save killed at any point leaves a
      folder that SpeechBrain never lists as a checkpoint;
    - ``save_and_keep_only`` (what training calls) then deletes such leftover
      folders, with a warning naming them;
    - a :class:`RandomState` recoverable named ``random_state`` is added
      (optional on load, so checkpoints written without it still load).

    Arguments
    ---------
    *args, **kwargs
        As for SpeechBrain's ``Checkpointer``.
    random_state : bool
        Checkpoint the global random generators (default True).

    Example
    -------
    >>> folder = getfixture("tmpdir")
    >>> checkpointer = AtomicCheckpointer(folder, recoverables={"model": torch.nn.Linear(2, 1)})
    >>> _ = checkpointer.save_checkpoint(meta={"EER": 2.0})
    >>> leftover = Path(folder) / "CKPT+killed-while-saving"
    >>> leftover.mkdir(); _ = (leftover / "model.ckpt").write_bytes(b"trunc")
    >>> [c.meta["EER"] for c in checkpointer.list_checkpoints()]
    [2.0]
    >>> checkpointer.save_and_keep_only(meta={"EER": 1.0}, min_keys=["EER"])
    >>> leftover.exists(), [c.meta["EER"] for c in checkpointer.list_checkpoints()]
    (False, [1.0])
    """

    def __init__(self, *args, random_state=True, **kwargs):
        super().__init__(*args, **kwargs)
        # SpeechBrain's add_recoverables leaves these unset, and its loader
        # looks them up when a file is missing.
        for name in self.recoverables:
            self.optional_recoverables.setdefault(name, False)
        if random_state and RANDOM_STATE not in self.recoverables:
            self.add_recoverable(RANDOM_STATE, RandomState(), optional_load=True)
        self._pending_meta = None

    def _save_checkpoint_metafile(self, fpath, meta_to_include=None, end_of_epoch=True):
        """Prepares the meta data; :meth:`save_checkpoint` writes it last."""
        meta = {"unixtime": time.time(), "end-of-epoch": end_of_epoch, **(meta_to_include or {})}
        self._pending_meta = (Path(fpath), meta)
        return meta

    def save_checkpoint(self, meta=None, end_of_epoch=True, name=None, verbosity=logging.INFO):
        """Saves a checkpoint that becomes visible only once complete (arguments as SpeechBrain's)."""
        self._pending_meta = None
        checkpoint = super().save_checkpoint(
            meta=meta or {}, end_of_epoch=end_of_epoch, name=name, verbosity=verbosity
        )
        # Every process has written its files before the checkpoint is published.
        ddp_barrier()
        if self._pending_meta is not None:
            path, saved_meta = self._pending_meta
            self._pending_meta = None
            for item in path.parent.iterdir():
                if item.is_file():
                    _fsync(item)
            tmp = path.parent / f".{METAFNAME}.tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write("# yamllint disable\n" + yaml.dump(saved_meta))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync(path.parent, directory=True)
        ddp_barrier()
        return checkpoint

    def save_and_keep_only(self, *args, **kwargs):
        """Saves, deletes the checkpoints not to keep, then any interrupted save's folder.

        Only the main process deletes: a folder being written right now has
        no ``CKPT.yaml`` yet either.
        """
        super().save_and_keep_only(*args, **kwargs)
        if if_main_process():
            for path in self.incomplete_dirs():
                logger.warning("Deleting %s: an interrupted save left it incomplete", path)
                shutil.rmtree(path, ignore_errors=True)
        ddp_barrier()

    def incomplete_dirs(self):
        """Checkpoint folders without ``CKPT.yaml``: left by an interrupted save."""
        return sorted(
            path
            for path in self.checkpoints_dir.iterdir()
            if path.is_dir()
            and path.name.startswith(f"{CKPT_PREFIX}+")
            and not (path / METAFNAME).exists()
        )


class CheckpointSelectionError(ValueError):
    """The checkpoints asked for are not in the folder."""


def select_checkpoints(checkpoints, checkpoint="best", average=1, metric="EER", strict=True):
    """The checkpoint(s) of a run to evaluate or export (one rule for both).

    Arguments
    ---------
    checkpoints : Checkpointer, str or Path
        The run's checkpointer, or its checkpoint folder (``save_folder``).
    checkpoint : str
        'best' (lowest ``metric``), 'last', or the path / name of a ``CKPT+...`` folder.
    average : int
        How many checkpoints to average (the best / last ``average``).
    metric : str
        Validation statistic of 'best' (lower is better).
    strict : bool
        Fewer checkpoints than ``average`` is an error; otherwise the
        available ones are used, with a warning.

    Returns
    -------
    list of speechbrain.utils.checkpoints.Checkpoint

    Example
    -------
    >>> folder = getfixture("tmpdir")
    >>> saver = AtomicCheckpointer(folder, recoverables={"model": torch.nn.Linear(1, 1)})
    >>> for eer in (3.0, 1.0, 2.0):
    ...     _ = saver.save_checkpoint(meta={"EER": eer})
    >>> [ckpt.meta["EER"] for ckpt in select_checkpoints(folder, "best", 2)]
    [1.0, 2.0]
    """
    if average < 1:
        raise CheckpointSelectionError(f"average must be at least 1, got {average}")
    checkpointer = checkpoints if isinstance(checkpoints, Checkpointer) else Checkpointer(checkpoints)
    if checkpoint == "best":
        found = checkpointer.find_checkpoints(min_key=metric, max_num_checkpoints=average)
    elif checkpoint == "last":
        found = checkpointer.find_checkpoints(max_num_checkpoints=average)
    else:
        wanted = Path(checkpoint).name
        found = [ckpt for ckpt in checkpointer.list_checkpoints() if ckpt.path.name == wanted]
        if average != 1:
            raise CheckpointSelectionError("average only applies to checkpoint='best' or 'last'")
    if not found:
        available = [ckpt.path.name for ckpt in checkpointer.list_checkpoints()]
        raise CheckpointSelectionError(
            f"no checkpoint {checkpoint!r} (metric {metric!r}) in {checkpointer.checkpoints_dir}; "
            f"available: {available}"
        )
    if len(found) < average:
        if strict:
            raise CheckpointSelectionError(
                f"asked to average {average} checkpoints but {checkpointer.checkpoints_dir} "
                f"holds {len(found)}"
            )
        logger.warning(
            "Averaging %d checkpoints instead of %d: keep_checkpoints is smaller, or "
            "training saved fewer", len(found), average,
        )  # fmt: skip
    return found


def evaluation_checkpoints(checkpointer, metric, average=1):
    """The checkpoint(s) a run's test evaluation uses (train.py and evaluate.py).

    The best ``average`` by ``metric`` (their parameter average when several);
    the newest, with a warning, when no epoch was validated
    (``valid_start_epoch`` after the last epoch).

    Arguments
    ---------
    checkpointer : Checkpointer
        The run's checkpointer.
    metric : str
        The selection statistic (lower is better).
    average : int
        How many of the best to average (``average_checkpoints``).

    Returns
    -------
    list of speechbrain.utils.checkpoints.Checkpoint
        Empty when the run has no checkpoint.

    Example
    -------
    >>> saver = AtomicCheckpointer(getfixture("tmpdir"), recoverables={"m": torch.nn.Linear(1, 1)})
    >>> _ = saver.save_checkpoint(meta={"epoch": 1})  # not validated
    >>> [ckpt.meta["epoch"] for ckpt in evaluation_checkpoints(saver, "EER", 2)]
    [1]
    """
    if not checkpointer.list_checkpoints():
        return []
    if checkpointer.find_checkpoint(min_key=metric) is None:
        logger.warning(
            "No checkpoint of a validated epoch (none has %s): evaluating the newest "
            "checkpoint (valid_epochs / valid_start_epoch validated no epoch)", metric,
        )  # fmt: skip
        return select_checkpoints(checkpointer, "last", 1, metric)
    return select_checkpoints(checkpointer, "best", average, metric, strict=False)


def load_checkpoint_average(modules, checkpoints, names):
    """Loads each named module from one checkpoint, or the elementwise mean of several.

    Arguments
    ---------
    modules : dict
        Name -> module (unwrapped from DDP).
    checkpoints : list of speechbrain.utils.checkpoints.Checkpoint
        From :func:`select_checkpoints`.
    names : iterable of str
        The modules to load (their parameter file is ``<name>.ckpt``).

    Example
    -------
    >>> folder = getfixture("tmpdir")
    >>> model = torch.nn.Linear(1, 1, bias=False)
    >>> saver = AtomicCheckpointer(folder, recoverables={"model": model})
    >>> for value in (1.0, 3.0):
    ...     _ = model.weight.data.fill_(value)
    ...     _ = saver.save_checkpoint(meta={"EER": value})
    >>> load_checkpoint_average({"model": model}, select_checkpoints(folder, "last", 2), ["model"])
    >>> model.weight.item()
    2.0
    """
    for name in names:
        missing = [str(ckpt.path) for ckpt in checkpoints if name not in ckpt.paramfiles]
        if missing:
            raise CheckpointSelectionError(f"checkpoints {missing} have no {name}.ckpt")
        if len(checkpoints) == 1:
            state = torch.load(checkpoints[0].paramfiles[name], map_location="cpu")
        else:
            state = average_checkpoints(checkpoints, name)
        modules[name].load_state_dict(state, strict=True)
