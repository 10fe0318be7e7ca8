"""The one manifest schema shared by every corpus (docs/DATA.md).

Every data preparation script writes, and every pipeline reads, a CSV file
whose first columns are :data:`REQUIRED_COLUMNS` (``ID``, ``duration`` in
seconds, the ``wav`` path, ``label`` ``bonafide`` or ``spoof``, and the
``attack``, ``-`` for bona fide), followed by the corpus' :data:`METADATA_COLUMNS`.

Example
-------
>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "demo.csv")
>>> rows = [
...     {"ID": "u1", "duration": 1.5, "wav": "/data/u1.flac",
...      "label": normalize_label("bona-fide"), "attack": "-", "speaker": "s1"},
...     {"ID": "u2", "duration": 2.0, "wav": "/data/u2.flac",
...      "label": normalize_label("deepfake"), "attack": "A01", "speaker": "s1"},
... ]
>>> _ = write_manifest(rows, path)
>>> frame = read_manifest(path)
>>> list(frame.columns)
['ID', 'duration', 'wav', 'label', 'attack', 'speaker']
>>> frame["label"].tolist(), float(frame["duration"].sum())
(['bonafide', 'spoof'], 3.5)
"""

import csv
import math
import os
from pathlib import Path

import pandas as pd

from speechbrain_nes2net.scores import BONAFIDE, LABELS, SPOOF

#: Bump when the meaning or layout of the columns changes: prepared manifests
#: record it, so data preparation redoes manifests written under another version.
SCHEMA_VERSION = 1

#: The columns every manifest starts with, in this order.
REQUIRED_COLUMNS = ("ID", "duration", "wav", "label", "attack")

#: Corpus metadata columns, in the order they follow the required ones.
#: ``source`` is the source corpus (m4singer, kising, asvspoof, vcc2020, ...);
#: ``segment_labels`` is the PartialSpoof segment label path template.
METADATA_COLUMNS = ("speaker", "source", "gender", "codec", "codec_q", "codec_seed", "transmission",
                    "attack_tag", "vocoder", "trim", "subset", "segment_labels")  # fmt: skip

#: The attack of every bona fide row.
NO_ATTACK = "-"

# Spellings found in the corpora (CtrSVDD "deepfake", In-the-Wild "bona-fide")
# and the obvious variants; anything else is an error, never a guess.
_LABEL_ALIASES = {
    **dict.fromkeys(("bonafide", "bona-fide", "bona_fide", "bona fide", "genuine"), BONAFIDE),
    **dict.fromkeys(("spoof", "spoofed", "deepfake", "fake"), SPOOF),
}


class ManifestError(ValueError):
    """A manifest that breaks the schema: its ``path``, the ``reason`` (what is wrong and
    what was expected) and the 1-based ``line`` of the CSV file (the header is line 1)."""

    def __init__(self, path, reason, line=None):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {reason}")


def normalize_label(raw):
    """Maps a corpus label spelling onto ``bonafide`` or ``spoof``.

    Arguments
    ---------
    raw : str
        A label as written in a protocol (case and surrounding spaces ignored).

    Returns
    -------
    str
        ``bonafide`` or ``spoof``; a ValueError for an unknown spelling.

    Example
    -------
    >>> normalize_label("Bona-Fide"), normalize_label("deepfake")
    ('bonafide', 'spoof')
    """
    label = _LABEL_ALIASES.get(str(raw).strip().lower())
    if label is None:
        known = ", ".join(sorted(_LABEL_ALIASES))
        raise ValueError(f"unknown label {raw!r}; expected one of: {known}")
    return label


def order_columns(columns):
    """Column names in schema order: the required ones, the known metadata ones, then the others.

    Example
    -------
    >>> order_columns(["subset", "wav", "note", "ID", "speaker"])
    ['ID', 'wav', 'speaker', 'subset', 'note']
    """
    columns = list(columns)
    known = [c for c in REQUIRED_COLUMNS + METADATA_COLUMNS if c in columns]
    return known + [c for c in columns if c not in known]


def validate_manifest(frame, path):
    """Checks a manifest table against the schema.

    Arguments
    ---------
    frame : pandas.DataFrame
        The table, one row per utterance (row ``i`` is line ``i + 2`` of the file).
    path : str or Path
        The file it was read from or is written to, for the error message.

    Raises
    ------
    ManifestError
        Naming the file, the first offending line and what was expected.

    Example
    -------
    >>> frame = pd.DataFrame({"ID": ["a", "a"], "duration": [1.0, 2.0],
    ...     "wav": ["/a.wav", "/b.wav"], "label": ["spoof", "spoof"],
    ...     "attack": ["A01", "A02"]})
    >>> validate_manifest(frame, "x.csv")
    Traceback (most recent call last):
    ...
    speechbrain_nes2net.manifest.ManifestError: x.csv, line 3: duplicate ID 'a' (first on line 2)
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(
            path,
            f"missing required column(s) {', '.join(missing)}; a manifest starts "
            f"with {', '.join(REQUIRED_COLUMNS)} (found: {', '.join(map(repr, frame.columns))})",
            line=1,
        )

    def fail(mask, reason):
        """Raises for the first row where ``mask`` holds."""
        hits = mask.to_numpy().nonzero()[0]
        if len(hits):
            i = int(hits[0])
            raise ManifestError(path, reason(i), line=i + 2)

    ids = frame["ID"].astype(str)
    fail(ids.str.strip() == "", lambda i: "empty ID")
    fail(
        ids.str.contains(r"\s", regex=True),
        lambda i: (
            f"ID {ids.iloc[i]!r} contains whitespace; IDs are single tokens "
            "(score files are 'ID score' lines)"
        ),
    )
    first = lambda i: int((ids == ids.iloc[i]).to_numpy().argmax()) + 2
    fail(ids.duplicated(), lambda i: f"duplicate ID {ids.iloc[i]!r} (first on line {first(i)})")

    labels = frame["label"].astype(str)
    fail(
        ~labels.isin(LABELS),
        lambda i: (
            f"label {labels.iloc[i]!r} for ID {ids.iloc[i]!r}; expected exactly "
            f"'{BONAFIDE}' or '{SPOOF}' (map corpus spellings with normalize_label)"
        ),
    )

    durations = pd.to_numeric(frame["duration"], errors="coerce")
    bad = durations.isna() | (durations < 0) | durations.isin([math.inf])
    fail(
        bad,
        lambda i: (
            f"duration {frame['duration'].iloc[i]!r} for ID {ids.iloc[i]!r}; "
            "expected a non-negative number of seconds"
        ),
    )

    wavs = frame["wav"].astype(str)
    fail(wavs.str.strip() == "", lambda i: f"empty wav path for ID {ids.iloc[i]!r}")

    attacks = frame["attack"].astype(str)
    fail(attacks.str.strip() == "", lambda i: f"empty attack for ID {ids.iloc[i]!r}")
    fail(
        (labels == BONAFIDE) & (attacks != NO_ATTACK),
        lambda i: (
            f"bona fide ID {ids.iloc[i]!r} has attack {attacks.iloc[i]!r}; expected '{NO_ATTACK}'"
        ),
    )
    fail(
        (labels == SPOOF) & (attacks == NO_ATTACK),
        lambda i: (
            f"spoof ID {ids.iloc[i]!r} has no attack id ('{NO_ATTACK}' is for bona fide rows)"
        ),
    )


def write_manifest(rows, path):
    """Writes a manifest CSV in schema column order, atomically (beside, then renamed).

    A relative ``wav`` path is made absolute against the current directory,
    like any path argument (``~`` is expanded).

    Arguments
    ---------
    rows : iterable of dict, or pandas.DataFrame
        One mapping per utterance with at least the required columns.
    path : str or Path
        Destination; its folder must exist.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ManifestError
        If the rows break the schema (:func:`validate_manifest`).
    """
    path = Path(path)
    if isinstance(rows, pd.DataFrame):
        frame = rows.copy()
    else:
        rows = [dict(r) for r in rows]
        columns = list(dict.fromkeys(key for row in rows for key in row)) or REQUIRED_COLUMNS
        frame = pd.DataFrame(rows, columns=list(columns))
    validate_manifest(frame, path)
    frame["wav"] = [_absolute(str(wav), os.curdir) for wav in frame["wav"]]
    tmp = path.with_name(path.name + ".tmp")
    frame[order_columns(frame.columns)].to_csv(tmp, index=False, encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(path):
    """Reads and validates a manifest CSV.

    Every column is text (IDs such as ``0`` or ``NA`` stay as written) except
    the float ``duration``; a byte order mark and CRLF line ends are accepted;
    a relative ``wav`` path is taken relative to the manifest's folder.

    Arguments
    ---------
    path : str or Path
        A manifest written by any ``data_prep`` script.

    Returns
    -------
    pandas.DataFrame
        One row per utterance, columns as in the file.

    Raises
    ------
    FileNotFoundError, ManifestError
        A missing file; not comma-separated UTF-8 with one field per header
        column on every line, or breaking the schema (:func:`validate_manifest`).

    Example
    -------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "m.csv")
    >>> _ = open(path, "w").write("ID;duration;wav;label;attack\\nu1;1.0;a.wav;spoof;A01\\n")
    >>> read_manifest(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_nes2net.manifest.ManifestError: ...m.csv, line 1: fields are separated by ';'; a manifest is comma-separated, ...
    >>> _ = open(path, "w").write("ID,duration,wav,label,attack\\nu1,1.0,audio/a.wav,spoof,A01\\n")
    >>> read_manifest(path)["wav"][0] == os.path.join(folder, "audio", "a.wav")
    True
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: manifest not found; create it with the data_prep script of its corpus"
        )
    _check_field_counts(path)
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig"
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ManifestError(path, f"not a readable CSV file ({err})") from None
    validate_manifest(frame, path)
    frame["duration"] = pd.to_numeric(frame["duration"]).astype("float64")
    folder = os.path.dirname(os.path.abspath(path))
    frame["wav"] = [_absolute(wav, folder) for wav in frame["wav"]]
    return frame


def _absolute(wav, folder):
    """``wav`` as written if absolute (after ``~``), else joined to ``folder``."""
    wav = os.path.expanduser(wav)
    if os.path.isabs(wav):
        return wav
    return os.path.normpath(os.path.join(os.path.abspath(folder), wav))


#: Separators people write CSV-like files with, for the wrong-delimiter error.
_OTHER_DELIMITERS = {";": "';'", "\t": "tabs", "|": "'|'"}


def _wrong_delimiter(fields):
    """The name of the separator a one-field line seems to use, or None."""
    found = [
        name for sep, name in _OTHER_DELIMITERS.items() if len(fields) == 1 and sep in fields[0]
    ]
    return found[0] if found else None


def _check_field_counts(path):
    """Every line has as many fields as the header, and the header uses commas.

    pandas would take surplus fields as an index or pad short rows, and the
    schema check would complain about the wrong thing.
    """
    expected = ",".join(REQUIRED_COLUMNS)
    try:
        # utf-8-sig: a byte order mark left by a spreadsheet is not part of "ID".
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise ManifestError(path, "empty file; expected a CSV header", line=1)
            delimiter = _wrong_delimiter(header)
            if delimiter:
                raise ManifestError(
                    path,
                    f"fields are separated by {delimiter}; a manifest is comma-separated, "
                    f"with the header {expected},... (write it with write_manifest)",
                    line=1,
                )
            for fields in reader:
                if fields and len(fields) != len(header):
                    hint = ""
                    if _wrong_delimiter(fields):
                        hint = f"; fields separated by {_wrong_delimiter(fields)}, not commas?"
                    raise ManifestError(
                        path,
                        f"{len(fields)} fields, the header has {len(header)} "
                        f"({','.join(header)}){hint}",
                        line=reader.line_num,
                    )
    except (UnicodeDecodeError, csv.Error) as err:
        raise ManifestError(path, f"not a readable CSV file ({err})") from None


def attacks_of(path):
    """The attack IDs of a manifest's spoofed rows.

    Example
    -------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "m.csv")
    >>> _ = write_manifest([{"ID": "a", "duration": 1.0, "wav": "/x.wav", "label": "bonafide", "attack": "-"},
    ...     {"ID": "b", "duration": 1.0, "wav": "/y.wav", "label": "spoof", "attack": "A01"}], path)
    >>> attacks_of(path)
    {'A01'}
    """
    frame = read_manifest(path)
    return set(frame.loc[frame["label"] == SPOOF, "attack"])
