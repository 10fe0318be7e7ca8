"""The manifest schema: label normalisation, writer and reader/validator."""

import pandas as pd
import pytest

from speechbrain_nes2net.manifest import (
    METADATA_COLUMNS,
    REQUIRED_COLUMNS,
    ManifestError,
    normalize_label,
    order_columns,
    read_manifest,
    write_manifest,
)

HEADER = "ID,duration,wav,label,attack"


def _row(utt_id, label="spoof", attack="A01", duration=1.25, **extra):
    return {
        "ID": utt_id,
        "duration": duration,
        "wav": f"/data/{utt_id}.flac",
        "label": label,
        "attack": attack,
        **extra,
    }


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("bonafide", "bonafide"),
        ("bona-fide", "bonafide"),
        (" Bona_Fide ", "bonafide"),
        ("spoof", "spoof"),
        ("deepfake", "spoof"),
        ("FAKE", "spoof"),
    ],
)
def test_normalize_label_maps_corpus_spellings(raw, expected):
    assert normalize_label(raw) == expected


@pytest.mark.parametrize("raw", ["", "1", "target", "bonafidee"])
def test_normalize_label_rejects_unknown_spellings(raw):
    with pytest.raises(ValueError, match="unknown label"):
        normalize_label(raw)


def test_order_columns_puts_schema_first_then_metadata_then_extras():
    shuffled = ["vocoder", "extra", "attack", "speaker", "wav", "label", "ID", "duration"]
    assert order_columns(shuffled) == [
        "ID",
        "duration",
        "wav",
        "label",
        "attack",
        "speaker",
        "vocoder",
        "extra",
    ]
    assert order_columns(METADATA_COLUMNS[::-1] + REQUIRED_COLUMNS) == list(
        REQUIRED_COLUMNS + METADATA_COLUMNS
    )


def test_round_trip_keeps_text_ids_and_float_durations(tmp_path):
    path = tmp_path / "m.csv"
    rows = [
        _row("0", "bonafide", "-", 0.5, speaker="NA"),
        _row("NA", duration=3.0625, speaker="Alec Guinness"),
        _row("007", duration=0.0, speaker="s"),
    ]
    # Metadata given before the required columns still lands after them.
    rows = [{"speaker": r.pop("speaker"), **r} for r in rows]
    write_manifest(rows, path)
    assert path.read_text().splitlines()[0] == HEADER + ",speaker"
    frame = read_manifest(path)
    assert frame["ID"].tolist() == ["0", "NA", "007"]
    assert frame["speaker"].tolist() == ["NA", "Alec Guinness", "s"]
    assert frame["duration"].dtype == "float64"
    assert frame["duration"].tolist() == [0.5, 3.0625, 0.0]
    assert not (tmp_path / "m.csv.tmp").exists()


def test_writer_accepts_a_dataframe_and_rejects_bad_rows(tmp_path):
    frame = pd.DataFrame([_row("a"), _row("b", "bonafide", "-")])
    write_manifest(frame, tmp_path / "ok.csv")
    assert len(read_manifest(tmp_path / "ok.csv")) == 2
    with pytest.raises(ManifestError, match=r"bad\.csv, line 3: label 'deepfake'"):
        write_manifest([_row("a"), _row("b", "deepfake")], tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def _write(tmp_path, text):
    path = tmp_path / "manifest.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "body, line, message",
    [
        (
            "u1,1.0,/a.wav,bonafide,-\nu2,1.0,/b.wav,spoof,A01\nu1,2.0,/c.wav,spoof,A02\n",
            4,
            "duplicate ID 'u1' (first on line 2)",
        ),
        ("u1,1.0,/a.wav,bonafide,-\nu2,1.0,/b.wav,deepfake,A01\n", 3, "label 'deepfake'"),
        ("u1,1.0,/a.wav,Bonafide,-\n", 2, "label 'Bonafide'"),
        ("u1,abc,/a.wav,bonafide,-\n", 2, "duration 'abc'"),
        ("u1,-1,/a.wav,bonafide,-\n", 2, "duration '-1'"),
        ("u1,1.0,/a.wav,bonafide,A01\n", 2, "bona fide ID 'u1' has attack 'A01'"),
        ("u1,1.0,/a.wav,spoof,-\n", 2, "spoof ID 'u1' has no attack id"),
        ("u1,1.0,,spoof,A01\n", 2, "empty wav path"),
        (",1.0,/a.wav,spoof,A01\n", 2, "empty ID"),
        ("u1,1.0,/a.wav,spoof,\n", 2, "empty attack"),
    ],
)
def test_reader_names_file_and_line_of_each_violation(tmp_path, body, line, message):
    path = _write(tmp_path, HEADER + "\n" + body)
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}, line {line}: ")
    assert message in str(info.value)


def test_reader_lists_missing_required_columns(tmp_path):
    path = _write(tmp_path, "ID,wav,label\nu1,/a.wav,spoof\n")
    with pytest.raises(
        ManifestError, match=r"line 1: missing required column\(s\) duration, attack"
    ):
        read_manifest(path)


def test_reader_reports_missing_empty_and_ragged_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_prep"):
        read_manifest(tmp_path / "absent.csv")
    with pytest.raises(ManifestError, match="empty file"):
        read_manifest(_write(tmp_path, ""))
    long_row = _write(tmp_path, HEADER + "\nu1,1.0,/a.wav,spoof,A01,extra,more\n")
    with pytest.raises(ManifestError, match="line 2: 7 fields, the header has 5"):
        read_manifest(long_row)
    short_row = _write(tmp_path, HEADER + "\nu1,1.0,/a.wav,spoof,A01\nu2,1.0,/b.wav,spoof\n")
    with pytest.raises(ManifestError, match="line 3: 4 fields, the header has 5"):
        read_manifest(short_row)


def test_header_only_manifest_is_valid_and_empty(tmp_path):
    assert len(read_manifest(_write(tmp_path, HEADER + "\n"))) == 0
