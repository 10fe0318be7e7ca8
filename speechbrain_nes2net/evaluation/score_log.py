"""Resumable score logs: corpus-scale scoring that survives kills, pre-emption and full disks.

``nes2net-score --output`` and ``recipes/evaluate.py`` append every finished
batch to a score log and build the score file from it at the end, so that a
rerun of the same command scores only what is missing (docs/SCALE.md). The
first line, ``#nes2net-score-log {JSON}``, records what the scores depend on
(a rerun with another header is refused: :class:`ScoreLogMismatch`); every
further line is one input::

    position <TAB> ID <TAB> ok <TAB> score [<TAB> field ...]
    position <TAB> ID <TAB> failed <TAB> reason

``position`` is the 0-based place in the input list. Inputs are scored by
chunks of ``chunk_size`` positions (shard ``rank`` of ``world_size`` takes the
positions ``p % world_size == rank``), chunk after chunk, so only the last
chunk of a log can be incomplete and resuming holds one chunk in memory. A
line torn by a kill (no newline) is cut off when the log is reopened. Retried
failures go to ``<log>.retry`` and replace the failures in
:func:`merged_records`, which streams the records of the shard logs in input
order.
"""

import errno
import heapq
import json
import os
import time
from pathlib import Path

#: First characters of a score log's header line.
HEADER_PREFIX = "#nes2net-score-log "
#: Inputs per chunk unless the caller says otherwise: bounds memory and the
#: work a kill can lose to at most one chunk's unfsynced batches.
DEFAULT_CHUNK_SIZE = 2048
#: Most seconds between two fsyncs of a log that is being appended to.
DEFAULT_FSYNC_SECONDS = 10.0
OK, FAILED = "ok", "failed"


class ScoreLogError(RuntimeError):
    """A score log that cannot be used: unreadable, corrupt, or not writable."""


class ScoreLogMismatch(ScoreLogError):
    """A score log written for another model, other options or another input list."""


def _lines(records):
    """The log lines of ``(position, ID, status, fields)`` records (tabs and line breaks as spaces)."""
    clean = lambda text: " ".join(str(text).replace("\t", " ").splitlines())
    return "".join(
        "\t".join([str(position), clean(utt_id), status, *map(clean, fields)]) + "\n"
        for position, utt_id, status, fields in records
    )


def _header_line(header):
    """The first line of a log."""
    return HEADER_PREFIX + json.dumps(header, sort_keys=True) + "\n"


def _describe_mismatch(old, new):
    """Names the header entries that differ between a log and the current run."""
    names = {"inputs": "input list (IDs and paths)", "n_inputs": "number of inputs"}
    return "; ".join(
        f"{names.get(key, key)}: {old.get(key)!r} in the log, {new.get(key)!r} now"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    )


def _chunk_positions(chunk, chunk_size, n_inputs, rank, world_size):
    """The positions of one chunk that a shard scores."""
    start = chunk * chunk_size
    stop = min(start + chunk_size, n_inputs)
    first = start + (rank - start) % world_size
    return list(range(first, stop, world_size))


def _parse_line(line, path, number):
    """``(position, ID, status, fields)`` of one log line, or an error naming the file and line."""
    parts = line.split("\t")
    if len(parts) < 4 or parts[2] not in (OK, FAILED) or not parts[0].isdigit():
        raise ScoreLogError(
            f"{path}:{number}: expected 'position<TAB>ID<TAB>ok|failed<TAB>...', got {line[:80]!r}"
        )
    return int(parts[0]), parts[1], parts[2], parts[3:]


def _read_header(path):
    """The header of a log."""
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    if not first.startswith(HEADER_PREFIX) or not first.endswith("\n"):
        raise ScoreLogError(
            f"{path}: not a score log (the first line should start with {HEADER_PREFIX!r}); "
            "move it away or rerun with --restart"
        )
    return json.loads(first[len(HEADER_PREFIX) :])


def _cut_torn_tail(path):
    """Cuts a last line without newline (torn by a kill or a full disk) off the file."""
    size = os.path.getsize(path)
    with open(path, "rb+") as handle:
        start = max(0, size - (1 << 20))  # a log line is far shorter than 1 MiB
        handle.seek(start)
        tail = handle.read()
        if not tail or tail.endswith(b"\n"):
            return
        handle.truncate(start + tail.rfind(b"\n") + 1)
        handle.flush()
        os.fsync(handle.fileno())


def iter_records(path):
    """Yields ``(position, ID, status, fields)`` of a log's records, in file order."""
    with open(path, encoding="utf-8") as handle:
        handle.readline()
        for number, line in enumerate(handle, start=2):
            if not line.endswith("\n"):
                return  # torn tail, cut off when the log is reopened for writing
            yield _parse_line(line[:-1], path, number)


class ScoreLog:
    """One shard's append-only score log (see the module docstring).

    Arguments
    ---------
    path : str or Path
        The log file.
    header : dict
        What the scores depend on (JSON-serialisable); must hold
        ``n_inputs``, ``chunk_size`` and ``shard`` (``[rank, world_size]``).
    restart : bool
        Delete an existing log (and its retries) and start fresh.
    fsync_seconds : float
        Most seconds between two fsyncs while appending.
    readonly : bool
        Only read the log's state (another process may be appending to it):
        a torn last line is skipped, not cut off.

    Raises
    ------
    ScoreLogError
        :class:`ScoreLogMismatch` for a log written with another header; a
        corrupt log (records out of chunk order, a malformed line other than a torn last one).

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "scores.log"
    >>> header = {"model": "m", "n_inputs": 3, "chunk_size": 2, "shard": [0, 1]}
    >>> log = ScoreLog(path, header)
    >>> log.append([(1, "b", OK, ["0.5"]), (0, "a", FAILED, ["bad\\theader\\nline"])])
    >>> log.close()
    >>> log = ScoreLog(path, header)
    >>> log.missing(1), log.n_done
    ([2], 2)
    >>> list(iter_records(path))[1]
    (0, 'a', 'failed', ['bad header line'])
    """

    def __init__(
        self, path, header, restart=False, fsync_seconds=DEFAULT_FSYNC_SECONDS, readonly=False
    ):
        self.path = Path(path)
        self.retry_path = self.path.with_name(self.path.name + ".retry")
        self.header = header
        self.n_inputs = int(header["n_inputs"])
        self.chunk_size = int(header["chunk_size"])
        self.rank, self.world_size = header["shard"]
        self.fsync_seconds = fsync_seconds
        self.n_chunks = -(-self.n_inputs // self.chunk_size)
        #: The first chunk not (fully) in the log, and the positions of it already there.
        self.next_chunk, self.done_in_next = 0, set()
        self.n_done = self.n_failed = 0
        self.resumed = False
        self.readonly = readonly
        if restart:
            for stale in (self.path, self.retry_path):
                if stale.exists():
                    stale.unlink()
        if self.path.exists():
            self._resume()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(_header_line(header))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            if self.retry_path.exists():
                self.retry_path.unlink()
        self._handle = None
        self._last_sync = time.monotonic()

    def _positions(self, chunk):
        """The positions of ``chunk`` that this shard scores."""
        return _chunk_positions(chunk, self.chunk_size, self.n_inputs, self.rank, self.world_size)

    def _expected(self, chunk):
        """How many positions of ``chunk`` this shard scores."""
        return len(self._positions(chunk))

    def _resume(self):
        """Checks the log's header and finds where it stops."""
        old = _read_header(self.path)
        if old != json.loads(json.dumps(self.header, sort_keys=True)):
            raise ScoreLogMismatch(
                f"{self.path} was written for other scores ({_describe_mismatch(old, self.header)}); "
                "refusing to mix them: rerun with --restart to score everything again, "
                "or choose another output"
            )
        if not self.readonly:
            _cut_torn_tail(self.path)
        self.resumed = True
        chunk, done = 0, set()
        for position, utt_id, status, _ in iter_records(self.path):
            this = position // self.chunk_size
            if this != chunk:
                if this < chunk or len(done) != self._expected(chunk):
                    raise ScoreLogError(
                        f"{self.path}: record of position {position} ({utt_id}) after an "
                        f"incomplete or later chunk; the log is corrupt: rerun with --restart"
                    )
                chunk += 1
                while chunk < this:  # chunks without positions of this shard
                    if self._expected(chunk):
                        raise ScoreLogError(
                            f"{self.path}: chunk {chunk} is missing; rerun with --restart"
                        )
                    chunk += 1
                done = set()
            if (
                position in done
                or position % self.world_size != self.rank
                or position >= self.n_inputs
            ):
                raise ScoreLogError(
                    f"{self.path}: position {position} ({utt_id}) repeated or not of this shard; "
                    "the log is corrupt: rerun with --restart"
                )
            done.add(position)
            self.n_done += 1
            self.n_failed += status == FAILED
        if self.n_done and len(done) == self._expected(chunk):
            chunk, done = chunk + 1, set()
        self.next_chunk, self.done_in_next = chunk, done

    @property
    def n_expected(self):
        """How many inputs this shard scores."""
        return len(range(self.rank, self.n_inputs, self.world_size))

    @property
    def complete(self):
        """Whether every input of this shard is in the log."""
        return self.n_done >= self.n_expected

    def missing(self, chunk):
        """Positions of ``chunk`` this shard still has to score (in input order)."""
        positions = self._positions(chunk)
        if chunk < self.next_chunk:
            return []
        if chunk == self.next_chunk:
            return [p for p in positions if p not in self.done_in_next]
        return positions

    def _open(self):
        """The file object records are appended to (opened on first use)."""
        if self.readonly:
            raise ScoreLogError(f"{self.path} was opened read-only")
        return open(self.path, "a", encoding="utf-8")

    def append(self, records):
        """Appends ``(position, ID, status, fields)`` records, flushed; fsynced at intervals.

        Raises
        ------
        ScoreLogError
            When the log cannot be written (e.g. a full disk), naming the
            file; the records written so far stay valid and a rerun resumes.
        """
        if not records:
            return
        try:
            if self._handle is None:
                self._handle = self._open()
            self._handle.write(_lines(records))
            self._handle.flush()
            if time.monotonic() - self._last_sync >= self.fsync_seconds:
                self.sync()
        except OSError as err:
            self._abandon()
            raise ScoreLogError(_write_error(self.path, err)) from err
        self.n_done += len(records)
        self.n_failed += sum(status == FAILED for _, _, status, _ in records)

    def sync(self):
        """Flushes and fsyncs what was appended."""
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        self._last_sync = time.monotonic()

    def _abandon(self):
        """Closes the file after a failed write, ignoring further errors."""
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass

    def close(self):
        """Syncs and closes the log."""
        try:
            self.sync()
        except OSError as err:
            self._abandon()
            raise ScoreLogError(_write_error(self.path, err)) from err
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def failed_to_retry(self):
        """Positions whose last result is a failure (main log, then retries)."""
        failed = {
            position for position, _, status, _ in iter_records(self.path) if status == FAILED
        }
        for position, _, status, _ in (
            iter_records(self.retry_path) if self.retry_path.exists() else ()
        ):
            if status == OK:
                failed.discard(position)
        return failed

    def append_retries(self, records):
        """Appends retried results to ``<log>.retry`` (flushed and fsynced)."""
        try:
            new = not self.retry_path.exists()
            with open(self.retry_path, "a", encoding="utf-8") as handle:
                handle.write((_header_line(self.header) if new else "") + _lines(records))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise ScoreLogError(_write_error(self.retry_path, err)) from err


def _write_error(path, err):
    """The message of a failed write."""
    reason = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
    return (
        f"cannot write the score log {path}: {reason}; the scores logged so far are kept: "
        "fix this and rerun the same command to resume"
    )


def _sorted_groups(path):
    """Records of one log in position order: each chunk group sorted, groups in order."""
    group, chunk = [], None
    chunk_size = int(_read_header(path)["chunk_size"])
    for record in iter_records(path):
        this = record[0] // chunk_size
        if this != chunk and group:
            group.sort()
            yield from group
            group = []
        chunk = this
        group.append(record)
    group.sort()
    yield from group


def merged_records(paths):
    """Streams the records of shard logs in input order, retried results replacing failures.

    Arguments
    ---------
    paths : list of str or Path
        The logs of all shards of one scoring run (complete).

    Yields
    ------
    (position, ID, status, fields)
    """
    retried = {}
    for path in paths:
        retry = Path(path).with_name(Path(path).name + ".retry")
        if retry.exists():
            for record in iter_records(retry):
                if record[2] == OK or record[0] not in retried:
                    retried[record[0]] = record
    for record in heapq.merge(*(_sorted_groups(path) for path in paths)):
        if record[2] == FAILED and record[0] in retried:
            record = retried[record[0]]
        yield record
