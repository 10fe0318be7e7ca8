"""Property-based tests of the protocol parsers and the manifest round trip (hypothesis).

Generated protocol files vary IDs, labels and attacks (any non-whitespace
Unicode), separators (runs of spaces and tabs), padding, blank lines, CRLF
line ends and a byte order mark. Well-formed files parse to exactly the
fields written, at the right line numbers; a malformed line always raises a
``ProtocolError`` naming that line.
"""

import csv
import io
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from data_prep.common import (
    ProtocolError,
    ProtocolLine,
    make_utterance,
    read_csv_protocol,
    read_protocol,
)
from data_prep.ctrsvdd_prepare import prepare_ctrsvdd
from speechbrain_nes2net.manifest import read_manifest, write_manifest

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A field of a whitespace-separated protocol: no whitespace (str.split() splits
# on Unicode spaces and separators too), no control or format characters
# (a leading U+FEFF on line 1 is a byte order mark).
TOKEN = st.text(alphabet=st.characters(blacklist_categories=("Z", "C")), min_size=1, max_size=12)
SEPARATOR = st.sampled_from([" ", "\t", "  ", " \t ", "\t\t"])
PADDING = st.sampled_from(["", " ", "\t", "  \t"])


def layout(draw, rows):
    """Protocol bytes for ``rows`` (lists of fields) and each row's line number."""
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines, numbers = [], []
    for fields in rows:
        for _ in range(draw(st.integers(0, 2))):  # blank or whitespace-only lines
            lines.append(draw(PADDING))
        text = fields[0]
        for field in fields[1:]:
            text += draw(SEPARATOR) + field
        lines.append(draw(PADDING) + text + draw(PADDING))
        numbers.append(len(lines))
    text = newline.join(lines) + (newline if draw(st.booleans()) else "")
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + text).encode("utf-8"), numbers


@st.composite
def protocols(draw, malformed=False):
    n_columns = draw(st.integers(1, 8))
    rows = draw(st.lists(st.lists(TOKEN, min_size=n_columns, max_size=n_columns), max_size=12))
    bad = None
    if malformed:
        bad = draw(st.integers(0, len(rows)))
        wrong = draw(st.integers(1, 10).filter(lambda n: n != n_columns))
        rows.insert(bad, draw(st.lists(TOKEN, min_size=wrong, max_size=wrong)))
    data, numbers = layout(draw, rows)
    return n_columns, rows, data, numbers, bad


def write_bytes(data, name="protocol.txt"):
    path = Path(tempfile.mkdtemp()) / name
    path.write_bytes(data)
    return path


@SETTINGS
@given(protocols())
def test_read_protocol_returns_every_field_at_its_line(case):
    n_columns, rows, data, numbers, _ = case
    columns = [f"c{i}" for i in range(n_columns)]
    path = write_bytes(data)
    parsed = list(read_protocol(path, columns))
    assert [line.fields for line in parsed] == [dict(zip(columns, row)) for row in rows]
    assert [line.number for line in parsed] == numbers
    assert all(line.path == path for line in parsed)


@SETTINGS
@given(protocols(malformed=True))
def test_read_protocol_names_the_first_malformed_line(case):
    n_columns, rows, data, numbers, bad = case
    path = write_bytes(data)
    try:
        list(read_protocol(path, [f"c{i}" for i in range(n_columns)]))
    except ProtocolError as err:
        assert err.line == numbers[bad]
        assert str(err).startswith(f"{path}, line {numbers[bad]}: expected {n_columns} ")
        assert f"found {len(rows[bad])}" in str(err)
    else:
        raise AssertionError("a malformed line went through")


# CSV protocols: any printable text, commas and quotes included; the reader strips it.
CSV_VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=12
)
CSV_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)


@st.composite
def csv_protocols(draw, malformed=False):
    header = draw(st.lists(CSV_NAME, min_size=1, max_size=6, unique=True))
    rows = draw(
        st.lists(
            st.lists(CSV_VALUE, min_size=len(header), max_size=len(header)).filter(
                lambda values: any(v.strip() for v in values)
            ),
            max_size=10,
        )
    )
    bad = None
    if malformed:
        bad = draw(st.integers(0, len(rows)))
        wrong = draw(st.integers(1, 8).filter(lambda n: n != len(header)))
        rows.insert(
            bad, draw(st.lists(CSV_VALUE.map(lambda v: v + "x"), min_size=wrong, max_size=wrong))
        )
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=newline)
    writer.writerow(header)
    numbers, line = [], 1
    for row in rows:
        for _ in range(draw(st.integers(0, 1))):
            buffer.write(newline)
            line += 1
        writer.writerow(row)
        line += 1
        numbers.append(line)
    bom = "\ufeff" if draw(st.booleans()) else ""
    return header, rows, (bom + buffer.getvalue()).encode("utf-8"), numbers, bad


@SETTINGS
@given(csv_protocols())
def test_read_csv_protocol_returns_stripped_fields_at_their_lines(case):
    header, rows, data, numbers, _ = case
    parsed = list(read_csv_protocol(write_bytes(data, "meta.csv"), header))
    assert [line.fields for line in parsed] == [
        {k: v.strip() for k, v in zip(header, row)} for row in rows
    ]
    assert [line.number for line in parsed] == numbers


@SETTINGS
@given(csv_protocols(malformed=True))
def test_read_csv_protocol_names_the_first_malformed_line(case):
    header, _, data, numbers, bad = case
    path = write_bytes(data, "meta.csv")
    try:
        list(read_csv_protocol(path, header))
    except ProtocolError as err:
        assert err.line == numbers[bad]
        assert f"expected {len(header)} comma-separated fields" in str(err)
    else:
        raise AssertionError("a malformed line went through")


ALIASES = {
    "bonafide": "bonafide",
    "bona-fide": "bonafide",
    "genuine": "bonafide",
    "spoof": "spoof",
    "deepfake": "spoof",
    "fake": "spoof",
}


@SETTINGS
@given(
    st.sampled_from(sorted(ALIASES)),
    st.lists(st.booleans(), min_size=12, max_size=12),
    PADDING,
    st.integers(1, 10**6),
)
def test_label_spellings_normalise_whatever_their_case_and_padding(alias, upper, pad, number):
    spelled = pad + "".join(c.upper() if u else c for c, u in zip(alias, upper)) + pad
    line = ProtocolLine(Path("p.txt"), number, {})
    utterance = make_utterance(line, "u", "/a.flac", spelled, "A01")
    assert utterance.label == ALIASES[alias]
    assert utterance.attack == ("-" if ALIASES[alias] == "bonafide" else "A01")


@SETTINGS
@given(TOKEN, st.integers(1, 10**6))
def test_any_other_label_is_a_protocol_error_at_its_line(label, number):
    assume(label.strip().lower() not in {"bonafide", "bona_fide", "spoofed"} | set(ALIASES))
    line = ProtocolLine(Path("p.txt"), number, {})
    try:
        make_utterance(line, "u", "/a.flac", label, "A01")
    except ProtocolError as err:
        assert err.line == number and f"unknown label {label!r}" in str(err)
    else:
        raise AssertionError(f"label {label!r} was accepted")


# File names: no path separator, not "." or "..", within the 255-byte name limit.
FILE_ID = TOKEN.filter(lambda t: "/" not in t and t not in (".", "..") and "\x00" not in t)


@st.composite
def ctrsvdd_rows(draw):
    ids = draw(st.lists(FILE_ID, min_size=1, max_size=5, unique=True))
    rows = []
    for utt in ids:
        if draw(st.booleans()):
            rows.append([draw(TOKEN), draw(TOKEN), utt, "-", "-", "bonafide"])
        else:
            attack = draw(TOKEN.filter(lambda a: a != "-" and a.lower() != "bonafide"))
            rows.append([draw(TOKEN), draw(TOKEN), utt, "-", attack, "deepfake"])
    return rows, layout(draw, rows)[0]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ctrsvdd_rows())
def test_generated_protocols_round_trip_through_data_prep_to_the_manifest(case):
    rows, data = case
    root = Path(tempfile.mkdtemp()) / "CtrSVDD ünï"
    (root / "dev_set").mkdir(parents=True)
    (root / "dev.txt").write_bytes(data)
    for i, row in enumerate(rows):
        sf.write(
            root / "dev_set" / f"{row[2]}.flac", np.zeros(160 * (i + 1), dtype="float32"), 16000
        )
    frame = read_manifest(prepare_ctrsvdd(root, root / "manifests")["dev"])
    assert frame["ID"].tolist() == [row[2] for row in rows]
    assert frame["wav"].tolist() == [str(root / "dev_set" / f"{row[2]}.flac") for row in rows]
    assert frame["label"].tolist() == ["bonafide" if r[5] == "bonafide" else "spoof" for r in rows]
    assert frame["attack"].tolist() == [row[4] for row in rows]
    assert frame["speaker"].tolist() == [row[1] for row in rows]
    assert frame["source"].tolist() == [row[0] for row in rows]
    assert frame["duration"].tolist() == [160 * (i + 1) / 16000 for i in range(len(rows))]


# Manifest text: anything a CSV file can hold on one line; IDs without whitespace.
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=16
)
MANIFEST_ID = TEXT.filter(lambda t: not any(c.isspace() for c in t))


@SETTINGS
@given(
    st.lists(
        st.tuples(
            MANIFEST_ID,
            st.floats(0, 1e5, allow_nan=False),
            TEXT,
            st.one_of(st.just(None), TEXT.filter(lambda a: a.strip() and a != "-")),
            TEXT,
        ),
        max_size=8,
        unique_by=lambda row: row[0],
    )
)
def test_manifest_round_trip_keeps_every_value(rows):
    records = [
        {
            "ID": utt,
            "duration": duration,
            "wav": "/" + wav,
            "label": "spoof" if attack else "bonafide",
            "attack": attack or "-",
            "speaker": speaker,
        }
        for utt, duration, wav, attack, speaker in rows
    ]
    path = Path(tempfile.mkdtemp()) / "m.csv"
    write_manifest(records, path)
    frame = read_manifest(path)
    assert frame.to_dict(orient="records") == [
        {**r, "duration": float(r["duration"])} for r in records
    ]
