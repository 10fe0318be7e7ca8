"""Corpus-scale scoring: resumable, by shards, into score logs; the one engine of the toolkit.

``nes2net-score``, ``nes2net-calibrate`` and ``recipes/evaluate.py`` score their
``(ID, audio path)`` items here, with any model that scores files
(:class:`~speechbrain_nes2net.pretrained.scoring.FileScoring`). Each process
scores its shard (the positions ``p`` with ``p % world_size == rank``: torchrun's
rank, else ``--shard=R/N``) chunk by chunk into its own score log
(:mod:`speechbrain_nes2net.evaluation.score_log`), appending every batch; a
rerun scores only what its log lacks. The process that finds every shard
complete merges the logs in input order. A file that cannot be scored is
logged ``failed`` with its reason at its own position: reported and skipped,
never shifted onto another file.

Authors
 * speechbrain-nes2net contributors
"""

import logging
import time
from itertools import islice

import torch

from speechbrain_nes2net.evaluation.score_log import (
    DEFAULT_CHUNK_SIZE,
    FAILED,
    OK,
    ScoreLog,
    merged_records,
)
from speechbrain_nes2net.pretrained.inputs import InputError, items_digest
from speechbrain_nes2net.pretrained.scoring import DEFAULT_MAX_BATCH_SECONDS

logger = logging.getLogger(__name__)


def resolve_shard(option=None):
    """This process's ``(rank, world_size)``: torchrun's, else ``--shard R/N``, else ``(0, 1)``.

    Arguments
    ---------
    option : str, optional
        The ``--shard`` value, ``R/N`` with ``0 <= R < N``.

    Returns
    -------
    (int, int)

    Raises
    ------
    ValueError
        For a malformed ``option``, or ``option`` under torchrun (which
        gives the shards itself).

    Example
    -------
    >>> resolve_shard("1/4"), resolve_shard()
    ((1, 4), (0, 1))
    >>> resolve_shard("4/4")
    Traceback (most recent call last):
    ...
    ValueError: --shard '4/4' must be R/N with 0 <= R < N, e.g. 0/4
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if option:
            raise ValueError("--shard is for runs without torchrun (torchrun gives the shards)")
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if not option:
        return 0, 1
    rank, sep, world = str(option).partition("/")
    if not (sep and rank.isdigit() and world.isdigit() and int(rank) < int(world)):
        raise ValueError(f"--shard {option!r} must be R/N with 0 <= R < N, e.g. 0/4")
    return int(rank), int(world)


def _record(position, utt_id, path, result):
    """The log record of one file's :class:`FileScore`: ``ok`` with score, label (empty
    without a decision rule) and path, or ``failed`` with the reason and path."""
    if result.ok:
        return position, utt_id, OK, [repr(result.score), result.label or "", str(path)]
    return position, utt_id, FAILED, [result.error, str(path)]


class CorpusScoring:
    """Scores ``(ID, path)`` items into this shard's resumable score log; merges the shards.

    Arguments
    ---------
    iter_items : callable
        Returns a fresh iterator over the ``(ID, audio path)`` items, in
        input order (read lazily, one chunk at a time).
    log_path : callable
        ``(rank, world_size)`` -> the score log of that shard.
    header : dict
        What the scores depend on besides the items (``tool``, ``model``,
        ``options``); a log with another header is refused.
    shard : (int, int)
        This process's ``(rank, world_size)`` (:func:`resolve_shard`).
    restart : bool
        Discard this shard's log and score it again.
    chunk_size : int
        Items planned and held at once.

    Raises
    ------
    InputError
        When there is nothing to score, or IDs name different files.
    ScoreLogError
        When this shard's log was written for other scores, or is corrupt.

    Example
    -------
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> items = [("a", folder / "a.flac"), ("b", folder / "b.flac")]
    >>> scoring = CorpusScoring(lambda: iter(items), lambda r, n: folder / f"{r}-{n}.log",
    ...                         {"model": "m"}, shard=(1, 2))
    >>> scoring.log.n_expected, scoring.incomplete_shards()
    (1, [0, 1])
    """

    def __init__(self, iter_items, log_path, header, shard=(0, 1), restart=False,
                 chunk_size=DEFAULT_CHUNK_SIZE):  # fmt: skip
        self.iter_items = iter_items
        self.log_path = log_path
        self.rank, self.world_size = shard
        self.n_inputs, digest = items_digest(iter_items)
        if not self.n_inputs:
            raise InputError("nothing to score")
        self.header = dict(header, inputs=digest, n_inputs=self.n_inputs, chunk_size=int(chunk_size))
        self.log = self.open_log(self.rank, restart=restart)

    def open_log(self, rank, restart=False, readonly=False):
        """The score log of shard ``rank`` (created when missing, unless ``readonly``)."""
        header = dict(self.header, shard=[rank, self.world_size])
        return ScoreLog(self.log_path(rank, self.world_size), header, restart, readonly=readonly)

    @property
    def log_paths(self):
        """The score logs of every shard, by rank."""
        return [self.log_path(rank, self.world_size) for rank in range(self.world_size)]

    def needs_scoring(self, retry_failed=False):
        """Whether this shard has files to score (missing, or failed ones with ``retry_failed``)."""
        log = self.log
        if not log.complete:
            return True
        return bool(retry_failed and log.n_failed and log.failed_to_retry())

    def score(self, model, batch_size, max_batch_seconds=DEFAULT_MAX_BATCH_SECONDS,
              calibrated=True, retry_failed=False, progress=None):  # fmt: skip
        """Scores what this shard's log lacks (and failed files again with ``retry_failed``).

        Arguments
        ---------
        model : FileScoring
            The loaded model.
        batch_size : int
            Most files per batch (:meth:`FileScoring.plan`).
        max_batch_seconds : float, optional
            Most padded audio per batch.
        calibrated : bool
            Log calibrated scores when the model carries a calibration.
        retry_failed : bool
            Score the files whose last result is a failure again.
        progress : callable, optional
            Called with the number of files just finished.

        Returns
        -------
        int
            Files scored by this call (0: the shard was complete).

        Raises
        ------
        ScoreLogError
            When the log cannot be written (what it holds stays).
        """
        log, tick = self.log, progress or (lambda n: None)
        where = f"Shard {self.rank} of {self.world_size}"
        if not self.needs_scoring(retry_failed):
            logger.info("%s: nothing to score, all %d utterances are in %s",
                        where, log.n_expected, log.path)  # fmt: skip
            return 0
        if log.n_done:
            logger.info("%s: resuming, %d of %d utterances already in %s",
                        where, log.n_done, log.n_expected, log.path)  # fmt: skip
        options = (batch_size, max_batch_seconds, calibrated, tick)
        before = log.n_done
        entries = enumerate(self.iter_items())
        for chunk in range(log.n_chunks):
            items = [(p, utt_id, path) for p, (utt_id, path) in islice(entries, log.chunk_size)]
            wanted = set(log.missing(chunk))
            todo = [item for item in items if item[0] in wanted]
            if todo:
                self._score_items(model, todo, log.append, *options)
                log.sync()
        log.close()
        scored = log.n_done - before
        if retry_failed:
            failed = log.failed_to_retry()
            if failed:
                items = [(p, u, path) for p, (u, path) in enumerate(self.iter_items()) if p in failed]
                self._score_items(model, items, log.append_retries, *options)
                scored += len(items)
        return scored

    @staticmethod
    def _score_items(model, items, append, batch_size, max_batch_seconds, calibrated, tick):
        """Scores ``(position, ID, path)`` items batch by batch, appending each batch's records."""
        paths = [path for _, _, path in items]
        for batch, results in model.iter_scored(paths, batch_size, calibrated, max_batch_seconds):
            append([_record(*items[i], result) for i, result in zip(batch, results)])
            tick(len(batch))

    def incomplete_shards(self):
        """Ranks whose logs are missing or incomplete."""
        # Other shards' logs read only: their processes may be appending to them.
        done = [self.log.complete if rank == self.rank else path.exists()
                and self.open_log(rank, readonly=True).complete
                for rank, path in enumerate(self.log_paths)]  # fmt: skip
        return [rank for rank, complete in enumerate(done) if not complete]

    def wait_for_shards(self, poll_seconds=30.0):
        """Waits until every shard is complete, polling the logs: no collective that could time
        out however long a resumed shard takes (torchrun stops the job if a process dies)."""
        pause = 0.2
        while self.incomplete_shards():
            time.sleep(pause)
            pause = min(2 * pause, poll_seconds)

    def merged(self):
        """Streams the records of every shard in input order (retried results replacing failures).

        Yields
        ------
        (position, ID, status, fields)
            ``fields``: ``[score, label, path]`` when ``status`` is ``ok``,
            ``[reason, path]`` when ``failed``.
        """
        return merged_records(self.log_paths)
