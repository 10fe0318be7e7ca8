"""What ``nes2net-score`` scores: PATH arguments expanded to ``(ID, audio path)`` pairs.

A PATH is an audio file, a folder (searched recursively for audio files; IDs
are the paths inside it without extension), a list file (``.txt``, ``.lst``,
``.list``, ``.scp``: one ``path`` or ``ID path`` per line, relative paths
relative to the list file) or a CSV manifest of the toolkit (``ID`` and
``wav`` columns). :func:`iter_inputs` streams them, :func:`items_digest`
counts and hashes them for the score log without holding the list.

Authors
 * speechbrain-nes2net contributors
"""

import csv
import hashlib
import os
from array import array
from pathlib import Path

from speechbrain_nes2net.audio import is_audio_path

#: Suffixes of list files (one ``path`` or ``ID path`` per line).
LIST_SUFFIXES = {".txt", ".lst", ".list", ".scp"}


class InputError(ValueError):
    """A PATH argument that does not name anything scorable."""


def _iter_list_file(path):
    """Yields ``(ID, path)`` of a list file's lines, reading it line by line."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) > 2:
                raise InputError(
                    f"{path}:{number}: expected 'path' or 'ID path', got {len(fields)} fields"
                )
            audio = Path(fields[-1]).expanduser()
            if not audio.is_absolute():
                audio = path.parent / audio
            utt_id = fields[0] if len(fields) == 2 else audio.stem
            yield utt_id, audio


def _iter_manifest(path):
    """Yields ``(ID, wav)`` of a CSV manifest's rows, reading it row by row."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"ID", "wav"} <= set(reader.fieldnames):
            raise InputError(f"{path}: a CSV input needs 'ID' and 'wav' columns (a manifest)")
        for row in reader:
            yield row["ID"], Path(row["wav"])


def _walk_folder(folder, directory=None):
    """Yields ``(ID, path)`` of a folder's audio files, holding one directory listing at a time."""
    directory = folder if directory is None else directory
    with os.scandir(directory) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir():
            yield from _walk_folder(folder, path)
        elif entry.is_file() and is_audio_path(path):
            yield path.relative_to(folder).with_suffix("").as_posix(), path


def iter_inputs(paths):
    """Streams the ``(ID, audio path)`` pairs of PATH arguments, in order.

    Nothing is held but the current list file row or folder listing; the
    duplicate check is :func:`items_digest`'s.

    Arguments
    ---------
    paths : list of str
        Audio files, folders, list files or CSV manifests.

    Yields
    ------
    (str, Path)

    Raises
    ------
    InputError
        For a PATH that does not exist or names nothing scorable.
    """
    for arg in paths:
        path = Path(arg).expanduser()
        if path.is_dir():
            found = False
            for entry in _walk_folder(path):
                found = True
                yield entry
            if not found:
                raise InputError(f"{path}: folder holds no audio files")
        elif path.suffix.lower() == ".csv" and path.is_file():
            yield from _iter_manifest(path)
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            yield from _iter_list_file(path)
        elif path.exists() or is_audio_path(path):
            yield path.stem, path
        else:
            raise InputError(f"{arg}: no such file or folder")


def collect_inputs(paths):
    """Expands PATH arguments into ``(ID, audio path)`` pairs.

    Arguments
    ---------
    paths : list of str
        Audio files, folders, list files or CSV manifests.

    Returns
    -------
    list of (str, Path)

    Raises
    ------
    InputError
        For a PATH that does not exist or names nothing scorable, and for
        duplicate IDs.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "a.flac").write_bytes(b"")
    0
    >>> [utt_id for utt_id, _ in collect_inputs([str(folder)])]
    ['a']
    """
    entries = list(iter_inputs(paths))
    items_digest(lambda: iter(entries))
    return entries


def labelled_inputs(path, root=None):
    """The ``(ID, audio path, label)`` of labelled files: a list file, or ``bonafide/`` + ``spoof/``.

    The layouts of ``data_prep/custom_prepare.py``: a CSV (``.csv``; TSV
    otherwise) whose header names ``path`` and ``label`` (paths relative to
    ``root``, default the list's folder; IDs the paths without extension; an
    :class:`InputError` names the line of an unknown label), or a folder of
    ``bonafide/`` and ``spoof/`` (any depth; IDs the paths inside it;
    ``spoof/`` may be missing, for ``nes2net-calibrate --bonafide-rejection``).

    Arguments
    ---------
    path, root : str or Path
        The list or the folder; where the list's relative paths start.

    Returns
    -------
    list of (str, Path, str)

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "list.csv").write_text("path,label\\na/x.wav,genuine\\nb.wav,fake\\n")
    >>> labelled_inputs(folder / "list.csv")[0][::2]
    ('a/x', 'bonafide')
    """
    from speechbrain_nes2net.manifest import normalize_label

    path, labels = Path(path).expanduser(), ("bonafide", "spoof")
    if path.is_dir():
        others = sorted(d.name + "/" for d in path.iterdir()
                        if d.is_dir() and d.name not in labels and not d.name.startswith("."))  # fmt: skip
        if root is not None or not (path / "bonafide").is_dir() or others:
            found = f"; found {', '.join(others)}" if others else ""
            raise InputError(f"{path}: a folder of labelled files holds bonafide/ (and spoof/){found}")
        return [(utt_id, audio, label) for label in labels if (path / label).is_dir()
                for utt_id, audio in _walk_folder(path, path / label)]  # fmt: skip
    if not path.is_file():
        raise InputError(f"{path}: no such list file or folder")
    items, root = [], path.parent if root is None else Path(root).expanduser()
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = csv.DictReader(handle, delimiter="," if path.suffix.lower() == ".csv" else "\t")
        if not {"path", "label"} <= set(rows.fieldnames or ()):
            raise InputError(f"{path}, line 1: header {rows.fieldnames} lacks path and label")
        for row in rows:
            where = f"{path}, line {rows.line_num}"
            if not (row["path"] or "").strip():
                raise InputError(f"{where}: empty path")
            try:
                label = normalize_label(row["label"])
            except ValueError as err:
                raise InputError(f"{where}: {err}") from None
            audio = Path(row["path"].strip()).expanduser()
            items.append((audio.with_suffix("").as_posix(), root / audio, label))
    return items


def _hash64(text):
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def items_digest(iter_items):
    """Counts and hashes a list of ``(ID, audio path)`` items; refuses IDs naming different files.

    Holds 16 bytes per item (two 64-bit hashes, for the duplicate check),
    not the list itself.

    Arguments
    ---------
    iter_items : callable
        Returns a fresh iterator over the ``(ID, path)`` items, in order
        (called a second time to name the clashing IDs).

    Returns
    -------
    (int, str)
        The number of items and the SHA-256 of their ``ID<TAB>path`` lines.

    Raises
    ------
    InputError
        For IDs that name different files.

    Example
    -------
    >>> items_digest(lambda: iter([("a", "a.flac"), ("b", "b.flac")]))[0]
    2
    >>> items_digest(lambda: iter([("a", "a.flac"), ("a", "b.flac")]))
    Traceback (most recent call last):
    ...
    speechbrain_nes2net.pretrained.inputs.InputError: 1 IDs name different files, e.g. ['a']; score them separately or use a list file with 'ID path' lines
    """
    import numpy as np

    digest, count = hashlib.sha256(), 0
    id_hashes, pair_hashes = array("Q"), array("Q")
    for utt_id, audio in iter_items():
        line = f"{utt_id}\t{audio}\n"
        digest.update(line.encode())
        id_hashes.append(_hash64(utt_id))
        pair_hashes.append(_hash64(line))
        count += 1
    if not count:
        return 0, digest.hexdigest()
    pairs = np.unique(np.stack([np.frombuffer(id_hashes, np.uint64),
                                np.frombuffer(pair_hashes, np.uint64)], axis=1), axis=0)  # fmt: skip
    ids, counts = np.unique(pairs[:, 0], return_counts=True)
    if (counts > 1).any():
        clashing = {int(h) for h in ids[counts > 1]}
        examples = sorted({u for u, _ in iter_items() if _hash64(u) in clashing})
        raise InputError(
            f"{len(clashing)} IDs name different files, e.g. {examples[:5]}; "
            "score them separately or use a list file with 'ID path' lines"
        )
    return count, digest.hexdigest()
