"""Machinery shared by the corpus preparation scripts.

A corpus module only says where its protocol files and audio live and how one
protocol line becomes an :class:`Utterance`; :func:`prepare_splits` does the
rest the same way for every corpus:

1. splits whose protocol file is absent are skipped with a log line;
2. if the options and the inputs (protocol files and audio folders: size and
   modification time) match the ``<corpus>_prepare.json`` signature of an
   earlier run whose manifests still exist, nothing is redone;
3. every protocol line is parsed strictly (errors name the file and the line);
4. the audio headers are read in parallel, with a progress bar;
5. missing audio is an error (count and first paths) unless ``skip_missing``,
   which leaves those rows out and lists them in ``<corpus>_<split>_skipped.csv``;
6. ``<corpus>_<split>.csv`` is written in the manifest schema
   (:mod:`speechbrain_nes2net.manifest`), then the signature.

Example
-------
>>> import tempfile, numpy as np, soundfile as sf
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> sf.write(root / "u1.wav", np.zeros(8000, dtype="float32"), 16000)
>>> _ = (root / "list.txt").write_text("u1 bonafide\\n")
>>> def read():
...     for line in read_protocol(root / "list.txt", ("utt", "key")):
...         yield make_utterance(line, line["utt"], root / "u1.wav", line["key"], "-")
>>> paths = prepare_splits(
...     "demo", root / "out", {"eval": SplitSource(root / "list.txt", read)}, options={})
>>> Path(paths["eval"]).name
'demo_eval.csv'
>>> print(Path(paths["eval"]).read_text().splitlines()[1].replace(str(root), "<root>"))
u1,0.5,<root>/u1.wav,bonafide,-
"""

import argparse
import csv
import json
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from speechbrain_nes2net.audio import AudioError, audio_info
from speechbrain_nes2net.manifest import (
    BONAFIDE,
    NO_ATTACK,
    SCHEMA_VERSION,
    ManifestError,
    normalize_label,
    write_manifest,
)

logger = logging.getLogger(__name__)

#: How many offending paths an error message lists before "... and N more".
SHOWN_PATHS = 5

# Header reads are I/O bound (and soundfile releases the GIL inside libsndfile),
# so threads scale on local disks and on network file systems alike.
_CHUNK = 256


class DataPrepError(Exception):
    """Base of the errors a user fixes in the data, not in the code."""


class ProtocolError(DataPrepError, ValueError):
    """A malformed protocol line.

    Arguments
    ---------
    path : str or Path
        The protocol file.
    line : int
        1-based line number.
    reason : str
        What is wrong and what was expected.
    """

    def __init__(self, path, line, reason):
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}, line {line}: {reason}")


class MissingInputError(DataPrepError, FileNotFoundError):
    """The data folder or every protocol file of a corpus is missing."""


class MissingAudioError(DataPrepError, FileNotFoundError):
    """Protocol rows whose audio file does not exist.

    Arguments
    ---------
    message : str
        The full explanation.
    paths : list of str
        Every missing file.
    """

    def __init__(self, message, paths):
        self.paths = list(paths)
        super().__init__(message)


class UnreadableAudioError(DataPrepError, ValueError):
    """Audio files that exist but cannot be read (corrupt, truncated, empty)."""


class OptionError(DataPrepError, ValueError):
    """An option value the corpus does not have (unknown split, track, subset)."""


@dataclass(frozen=True)
class ProtocolLine:
    """One parsed protocol line: its fields by column name, and where it came from."""

    path: Path
    number: int
    fields: dict

    def __getitem__(self, column):
        return self.fields[column]

    def error(self, reason):
        """A :class:`ProtocolError` pointing at this line."""
        return ProtocolError(self.path, self.number, reason)


@dataclass(frozen=True)
class Utterance:
    """One protocol row, ready for the manifest except for its duration."""

    ID: str
    wav: Path
    label: str
    attack: str
    metadata: dict
    line: ProtocolLine


@dataclass(frozen=True)
class SplitSource:
    """Where one split comes from.

    Arguments
    ---------
    protocol : Path
        The protocol file; the split is skipped when it is absent.
    read : callable
        ``read()`` yields the split's :class:`Utterance` objects.
    audio_dirs : tuple of Path
        Folders holding the split's audio. Their modification times are part
        of the signature, so audio extracted after a ``skip_missing`` run is
        picked up by the next run.
    """

    protocol: Path
    read: Callable[[], Iterable[Utterance]]
    audio_dirs: tuple = field(default_factory=tuple)


def read_protocol(path, columns):
    """Parses a whitespace-separated protocol file without header.

    Fields are separated by any run of spaces or tabs. Blank lines, leading
    and trailing whitespace, CRLF line ends and a UTF-8 byte order mark are
    ignored; every other line must have exactly one field per column.

    Arguments
    ---------
    path : str or Path
        The protocol file.
    columns : sequence of str
        The column names, in file order.

    Yields
    ------
    ProtocolLine

    Raises
    ------
    ProtocolError
        For a line with another number of fields, naming the file, the line,
        the expected layout and what was found.

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "p.txt")
    >>> _ = open(path, "w").write("LA_0079 LA_T_1 - - bonafide\\nLA_0079 LA_T_2 A01 spoof\\n")
    >>> lines = read_protocol(path, ("speaker", "utt", "env", "system", "key"))
    >>> next(lines)["utt"]
    'LA_T_1'
    >>> next(lines)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    data_prep.common.ProtocolError: ...p.txt, line 2: expected 5 space-separated fields (speaker ...
    """
    path = Path(path)
    for number, text in enumerate(_text_lines(path), start=1):
        text = text.strip()
        if not text:
            continue
        values = text.split()
        if len(values) != len(columns):
            raise ProtocolError(
                path,
                number,
                f"expected {len(columns)} space-separated fields ({' '.join(columns)}), "
                f"found {len(values)}: {text!r}",
            )
        yield ProtocolLine(path, number, dict(zip(columns, values)))


def _text_lines(path):
    """Lines of a UTF-8 text file, decoded one by one so that an error names its line."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                # utf-8-sig: a byte order mark left by an editor is not part of a field.
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise ProtocolError(path, number, f"not UTF-8 text ({err.reason})") from None


def read_csv_protocol(path, columns, delimiter=","):
    """Parses a comma- (or tab-) separated protocol file whose header names the columns.

    Fields may be quoted (``"Last, First"``); header names and values are
    stripped of surrounding whitespace; blank lines, CRLF line ends and a
    UTF-8 byte order mark are ignored.

    Arguments
    ---------
    path : str or Path
        The protocol file (first line: header).
    columns : sequence of str
        Columns that must be in the header; others are kept too.
    delimiter : str
        ``","`` (CSV) or ``"\\t"`` (TSV).

    Yields
    ------
    ProtocolLine
        Fields by header name.

    Raises
    ------
    ProtocolError
        If the header is not comma-separated or lacks a column, or a row has
        another number of fields.

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "meta.csv")
    >>> _ = open(path, "w").write("file,speaker,label\\n0.wav,Alec Guinness,spoof\\n")
    >>> [line["speaker"] for line in read_csv_protocol(path, ("file", "label"))]
    ['Alec Guinness']
    """
    path = Path(path)
    reader = csv.reader(_text_lines(path), delimiter=delimiter)
    what = "comma" if delimiter == "," else "tab"
    header = next(reader, None)
    if header is None:
        raise ProtocolError(path, 1, f"empty file; expected a header with {', '.join(columns)}")
    header = [name.strip() for name in header]
    if len(header) == 1 and len(columns) > 1:
        for other, name in ((";", "';'"), ("\t", "tabs"), (",", "commas"), ("|", "'|'")):
            if other != delimiter and other in header[0]:
                raise ProtocolError(
                    path,
                    1,
                    f"fields are separated by {name}; expected a {what}-separated header "
                    f"with {','.join(columns)}",
                )
    missing = [c for c in columns if c not in header]
    if missing:
        raise ProtocolError(
            path,
            1,
            f"header {','.join(header)!r} lacks column(s) {', '.join(missing)}; "
            f"expected {','.join(columns)}",
        )
    for values in reader:
        number = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise ProtocolError(
                path,
                number,
                f"expected {len(header)} {what}-separated fields ({','.join(header)}), "
                f"found {len(values)}: {','.join(values)!r}",
            )
        yield ProtocolLine(path, number, {k: v.strip() for k, v in zip(header, values)})


def make_utterance(line, utt_id, wav, label, attack, **metadata):
    """Builds an :class:`Utterance` from protocol fields, normalising label and attack.

    Arguments
    ---------
    line : ProtocolLine
        The line the fields come from (for error messages).
    utt_id : str
        Utterance ID.
    wav : str or Path
        Audio file.
    label : str
        Label as spelled in the protocol (``bona-fide``, ``deepfake``, ...).
    attack : str
        Attack id as written; ignored for bona fide rows, which get ``-``.
    **metadata
        Manifest metadata columns (``speaker=...``, ``codec=...``).

    Returns
    -------
    Utterance

    Raises
    ------
    ProtocolError
        For an empty ID or one with whitespace, an unknown label, or a spoof
        row without an attack id.

    Example
    -------
    >>> line = ProtocolLine(Path("dev.txt"), 7, {})
    >>> make_utterance(line, "u1", "/a/u1.flac", "bonafide", "bonafide").attack
    '-'
    >>> make_utterance(line, "u2", "/a/u2.flac", "deepfake", "-")
    Traceback (most recent call last):
    ...
    data_prep.common.ProtocolError: dev.txt, line 7: spoof row 'u2' has no attack id (got '-')
    """
    if not utt_id:
        raise line.error("empty utterance ID")
    if any(character.isspace() for character in utt_id):
        raise line.error(
            f"utterance ID {utt_id!r} contains whitespace; IDs are single tokens "
            "(score files are 'ID score' lines)"
        )
    try:
        label = normalize_label(label)
    except ValueError as err:
        raise line.error(str(err)) from None
    if label == BONAFIDE:
        attack = NO_ATTACK
    elif attack in ("", NO_ATTACK) or attack.lower() == BONAFIDE:
        raise line.error(f"spoof row {utt_id!r} has no attack id (got {attack!r})")
    return Utterance(utt_id, Path(wav), label, attack, metadata, line)


def scan_audio(paths, num_workers=None, desc="reading audio headers"):
    """Reads the header of every file in parallel, with a progress bar.

    Arguments
    ---------
    paths : sequence of str or Path
        Audio files.
    num_workers : int, optional
        Threads; ``None`` picks ``min(32, cpus + 4)``.
    desc : str
        Progress bar label.

    Returns
    -------
    list
        Per path, in order: an ``AudioInfo``; ``None`` if the file does not
        exist; or an ``AudioError`` if it exists but cannot be used (unreadable
        or without samples).

    Example
    -------
    >>> import tempfile, numpy as np, soundfile as sf
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> sf.write(root / "a.flac", np.zeros(4000, dtype="float32"), 16000)
    >>> _ = (root / "b.flac").write_bytes(b"not audio")
    >>> a, b, c = scan_audio([root / "a.flac", root / "b.flac", root / "c.flac"])
    >>> a.duration, type(b).__name__, c
    (0.25, 'AudioError', None)
    """
    paths = list(paths)
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    results = []
    with ThreadPoolExecutor(max_workers=num_workers) as pool, tqdm(
        total=len(paths), desc=desc, unit="file", disable=None
    ) as bar:
        for chunk_results in pool.map(_scan_chunk, chunks):
            results.extend(chunk_results)
            bar.update(len(chunk_results))
    return results


def _scan_chunk(paths):
    return [_scan_one(path) for path in paths]


def _scan_one(path):
    # Existence is checked first so that "missing" never depends on the
    # wording of a decoder error.
    if not os.path.isfile(path):
        return None
    try:
        info = audio_info(path)
    except AudioError as err:
        return err
    if info.frames == 0:
        return AudioError(path, "contains no samples")
    return info


def data_folder_path(data_folder, expected):
    """The absolute data folder, or a clear error if it is not a folder.

    Arguments
    ---------
    data_folder : str or Path
        As given by the user (``~`` is expanded).
    expected : str
        What the folder should be, for the error message.

    Returns
    -------
    Path
    """
    folder = Path(os.path.abspath(os.path.expanduser(str(data_folder))))
    if not folder.is_dir():
        raise MissingInputError(f"data_folder {folder} is not a folder; expected {expected}")
    return folder


def first_existing(*candidates):
    """The first candidate path that exists, else the first one (for messages)."""
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return candidates[0]


def check_choices(name, values, allowed):
    """Returns ``values`` as a tuple after checking each is in ``allowed``.

    Example
    -------
    >>> check_choices("splits", ["dev"], ("train", "dev"))
    ('dev',)
    >>> check_choices("splits", ["test"], ("train", "dev"))
    Traceback (most recent call last):
    ...
    data_prep.common.OptionError: unknown splits 'test'; choose from train, dev
    """
    values = (values,) if isinstance(values, str) else tuple(values)
    for value in values:
        if value not in allowed:
            raise OptionError(f"unknown {name} {value!r}; choose from {', '.join(allowed)}")
    if not values:
        raise OptionError(f"no {name} given; choose from {', '.join(allowed)}")
    return values


def prepare_splits(
    corpus,
    save_folder,
    sources,
    options,
    skip_missing=False,
    num_workers=None,
    expected="the corpus folder",
    log=logger,
):
    """Writes one manifest per split whose protocol exists (see the module doc).

    Arguments
    ---------
    corpus : str
        Tag used in file names: ``<corpus>_<split>.csv``.
    save_folder : str or Path
        Output folder (created if needed).
    sources : dict
        Split name -> :class:`SplitSource`.
    options : dict
        JSON-serialisable options that change the output (data folder, filters);
        with the inputs they decide whether earlier manifests are reused.
    skip_missing : bool
        Leave out rows whose audio is missing instead of raising.
    num_workers : int, optional
        Threads for the header scan.
    expected : str
        What the data folder should be, for the error when no protocol exists.
    log : logging.Logger
        Where progress goes (the corpus module's logger).

    Returns
    -------
    dict
        Split name -> manifest path (str), for the splits that were prepared.

    Raises
    ------
    MissingInputError
        If no split has its protocol file.
    ProtocolError, MissingAudioError, UnreadableAudioError
        See :func:`read_protocol`, ``skip_missing``, :func:`scan_audio`.
    """
    save_folder = Path(os.path.abspath(os.path.expanduser(str(save_folder))))
    save_folder.mkdir(parents=True, exist_ok=True)

    available = {}
    for split, source in sources.items():
        if source.protocol.is_file():
            available[split] = source
        else:
            log.info(
                "%s: skipping split '%s': protocol %s not found", corpus, split, source.protocol
            )
    if not available:
        looked = "\n  ".join(str(s.protocol) for s in sources.values())
        raise MissingInputError(
            f"{corpus}: no protocol file found; looked for:\n  {looked}\n"
            f"data_folder should be {expected}"
        )

    manifests = {split: save_folder / f"{corpus}_{split}.csv" for split in available}
    signature = _signature(
        corpus, save_folder, sources, available, options, skip_missing, manifests
    )
    signature_path = save_folder / f"{corpus}_prepare.json"
    if _read_json(signature_path) == signature and all(p.is_file() for p in manifests.values()):
        log.info(
            "%s: manifests in %s are up to date (same options and inputs as %s), skipping",
            corpus,
            save_folder,
            signature_path.name,
        )
        return {split: str(path) for split, path in manifests.items()}

    # Invalidate first: if this run is interrupted, the next one starts over
    # instead of trusting a mix of old and new manifests.
    signature_path.unlink(missing_ok=True)
    for split, source in available.items():
        _prepare_split(corpus, split, source, manifests[split], skip_missing, num_workers, log)
    _write_json(signature_path, signature)
    return {split: str(path) for split, path in manifests.items()}


def _prepare_split(corpus, split, source, manifest, skip_missing, num_workers, log):
    name = f"{corpus} {split}"
    utterances = list(source.read())
    if not utterances:
        raise DataPrepError(f"{name}: no rows to prepare from {source.protocol} (after filters)")
    _check_unique_ids(utterances)
    log.info("%s: %d protocol rows in %s", name, len(utterances), source.protocol)

    infos = scan_audio([u.wav for u in utterances], num_workers, desc=f"{name}: audio headers")
    missing = [u for u, info in zip(utterances, infos) if info is None]
    skipped_path = manifest.with_name(f"{corpus}_{split}_skipped.csv")
    if missing and (not skip_missing or len(missing) == len(utterances)):
        raise MissingAudioError(
            _missing_message(name, source, missing, utterances, skip_missing),
            [str(u.wav) for u in missing],
        )
    broken = [(u, info) for u, info in zip(utterances, infos) if isinstance(info, AudioError)]
    if broken:
        shown = "\n  ".join(f"{info}" for _, info in broken[:SHOWN_PATHS])
        raise UnreadableAudioError(
            f"{name}: {len(broken)} audio file(s) cannot be used:\n  {shown}{_more(broken)}\n"
            "Re-extract them from the corpus archives, or delete them and rerun with "
            "skip_missing (--skip-missing) to leave them out."
        )

    if missing:
        _write_skipped(skipped_path, missing)
        log.warning(
            "%s: skipped %d of %d rows whose audio is missing; list in %s",
            name,
            len(missing),
            len(utterances),
            skipped_path,
        )
    else:
        skipped_path.unlink(missing_ok=True)

    rows = [
        {
            "ID": u.ID,
            "duration": info.duration,
            "wav": str(u.wav),
            "label": u.label,
            "attack": u.attack,
            **u.metadata,
        }
        for u, info in zip(utterances, infos)
        if info is not None
    ]
    write_manifest(rows, manifest)
    bonafide = sum(1 for r in rows if r["label"] == BONAFIDE)
    hours = sum(r["duration"] for r in rows) / 3600
    log.info(
        "%s: wrote %d rows (%d bonafide, %d spoof, %.2f h) to %s",
        name,
        len(rows),
        bonafide,
        len(rows) - bonafide,
        hours,
        manifest,
    )


def _check_unique_ids(utterances):
    seen = {}
    for u in utterances:
        first = seen.setdefault(u.ID, u)
        if first is not u:
            raise u.line.error(
                f"duplicate utterance ID {u.ID!r} (first on line {first.line.number})"
            )


def _missing_message(name, source, missing, utterances, skip_missing):
    shown = "\n  ".join(str(u.wav) for u in missing[:SHOWN_PATHS])
    message = (
        f"{name}: audio missing for {len(missing)} of {len(utterances)} rows of "
        f"{source.protocol}, e.g.:\n  {shown}{_more(missing)}\n"
    )
    if skip_missing:
        return message + (
            "No audio at all for this split: check data_folder and that the "
            "archives are extracted, or leave the split out (--splits)."
        )
    return message + (
        "Check data_folder and that every archive is extracted, or pass "
        "skip_missing=True (--skip-missing) to leave these rows out."
    )


def _more(items):
    extra = len(items) - SHOWN_PATHS
    return f"\n  ... and {extra} more" if extra > 0 else ""


def _write_skipped(path, missing):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "wav", "protocol", "line"])
        for u in missing:
            writer.writerow([u.ID, str(u.wav), str(u.line.path), u.line.number])
    os.replace(tmp, path)


def _signature(corpus, save_folder, sources, available, options, skip_missing, manifests):
    inputs = {}
    for split, source in available.items():
        # The save folder may sit inside a watched audio folder's parent but
        # must not be watched itself: writing the manifests would change it.
        watched = [source.protocol] + [d for d in source.audio_dirs if Path(d) != save_folder]
        inputs[split] = [_stat(p) for p in watched]
    signature = {
        "corpus": corpus,
        "schema_version": SCHEMA_VERSION,
        "options": {**options, "splits": sorted(sources), "skip_missing": bool(skip_missing)},
        "inputs": inputs,
        "manifests": {split: str(path) for split, path in manifests.items()},
    }
    # Round trip so tuples compare equal to the lists read back from disk.
    return json.loads(json.dumps(signature, default=str))


def _stat(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {"path": str(path), "exists": False}
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(path, data):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)


def build_parser(prepare, data_folder_help, splits=None):
    """The command line shared by every ``python data_prep/<corpus>_prepare.py``.

    Arguments
    ---------
    prepare : callable
        The corpus prepare function (its docstring's first line is the description).
    data_folder_help : str
        What the data folder is.
    splits : sequence of str, optional
        The corpus splits; adds ``--splits`` when given.

    Returns
    -------
    argparse.ArgumentParser
        With ``data_folder``, ``save_folder``, ``--skip-missing``,
        ``--num-workers`` (and ``--splits``); corpus modules add their own.
    """
    summary = (prepare.__doc__ or "").strip().splitlines()[0].replace("``", "")
    # The file name, not the module name: run as a script, the module is ``__main__``.
    script = Path(prepare.__code__.co_filename).name
    parser = argparse.ArgumentParser(
        prog=f"python data_prep/{script}",
        description=f"{summary} Prints '<split> <manifest path>' per prepared split.",
    )
    parser.add_argument("data_folder", help=data_folder_help)
    parser.add_argument("save_folder", help="folder for the CSV manifests (created if needed)")
    if splits:
        parser.add_argument(
            "--splits",
            nargs="+",
            choices=splits,
            default=list(splits),
            help="splits to prepare (default: all: %(default)s)",
        )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        dest="skip_missing",
        help="leave out protocol rows whose audio file is missing (listed in "
        "<corpus>_<split>_skipped.csv) instead of stopping with an error",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=None,
        dest="num_workers",
        help="threads reading audio headers (default: min(32, CPUs + 4))",
    )
    return parser


def run_cli(prepare, parser, argv=None):
    """Parses ``argv``, runs ``prepare`` and prints one ``<split> <path>`` line per manifest.

    Data errors (bad protocol lines, missing audio, ...) end the program with
    their message and exit status 1, without a traceback.
    """
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        manifests = prepare(**vars(args))
    except (DataPrepError, ManifestError) as err:
        parser.exit(1, f"error: {err}\n")
    for split, path in manifests.items():
        print(f"{split} {path}")
