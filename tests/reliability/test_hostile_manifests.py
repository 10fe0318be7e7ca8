"""Hostile manifests and protocols: each is read the documented way or stopped clearly.

Duplicate IDs, unknown labels, missing columns, wrong delimiters, byte order
marks and CRLF line ends, relative paths, and paths with spaces, commas,
quotes and non-ASCII characters, from data preparation to the audio loader.
"""

import csv
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from corpora import BUILDERS, build_ctrsvdd, build_in_the_wild

from data_prep.common import ProtocolError
from speechbrain_nes2net.audio import load_audio
from speechbrain_nes2net.manifest import ManifestError, read_manifest, write_manifest
from speechbrain_nes2net.training.dataio import audio_pipeline, manifest_dataset

HEADER = "ID,duration,wav,label,attack"
ROWS = ["u1,1.0,/a/u1.wav,bonafide,-", "u2,2.0,/a/u2.wav,spoof,A01"]


def write(path, text, encoding="utf-8", newline="\n"):
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


def manifest_error(path):
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    return info.value


# ------------------------------------------------------------------ manifests


def test_duplicate_id_names_both_lines(tmp_path):
    path = write(tmp_path / "m.csv", "\n".join([HEADER, *ROWS, "u1,3.0,/a/x.wav,spoof,A02"]) + "\n")
    err = manifest_error(path)
    assert (err.path, err.line) == (str(path), 4)
    assert "duplicate ID 'u1' (first on line 2)" in str(err)


@pytest.mark.parametrize("label", ["deepfake", "Spoof", "spof", " spoof", ""])
def test_a_label_other_than_bonafide_or_spoof_is_named_with_its_line(tmp_path, label):
    path = write(
        tmp_path / "m.csv", "\n".join([HEADER, ROWS[0], f"u2,2.0,/a/u2.wav,{label},A01"]) + "\n"
    )
    err = manifest_error(path)
    assert err.line == 3
    assert f"label {label!r} for ID 'u2'" in str(err) and "'bonafide' or 'spoof'" in str(err)


def test_missing_columns_are_listed_and_the_found_names_shown_exactly(tmp_path):
    # A space after the commas makes " duration" another name: the message shows it.
    path = write(tmp_path / "m.csv", "ID, duration, wav, label\nu1, 1.0, /a.wav, spoof\n")
    err = manifest_error(path)
    assert err.line == 1
    assert "missing required column(s) duration, wav, label, attack" in str(err)
    assert "' duration'" in str(err)


@pytest.mark.parametrize(
    "delimiter, name",
    [(";", "';'"), ("\t", "tabs"), ("|", "'|'")],
    ids=["semicolon", "tab", "pipe"],
)
def test_a_manifest_with_another_delimiter_says_so(tmp_path, delimiter, name):
    text = "\n".join(line.replace(",", delimiter) for line in [HEADER, *ROWS]) + "\n"
    err = manifest_error(write(tmp_path / "m.csv", text))
    assert err.line == 1
    assert f"fields are separated by {name}; a manifest is comma-separated" in str(err)
    assert HEADER in str(err)
    assert "missing required column" not in str(err)


def test_rows_with_another_delimiter_under_a_comma_header_are_pointed_out(tmp_path):
    path = write(tmp_path / "m.csv", "\n".join([HEADER, ROWS[0], ROWS[1].replace(",", ";")]) + "\n")
    err = manifest_error(path)
    assert err.line == 3
    assert "1 fields, the header has 5" in str(err) and "separated by ';', not commas?" in str(err)


@pytest.mark.parametrize(
    "encoding, newline",
    [("utf-8-sig", "\n"), ("utf-8", "\r\n"), ("utf-8-sig", "\r\n")],
    ids=["bom", "crlf", "bom+crlf"],
)
def test_byte_order_mark_and_crlf_are_normalised(tmp_path, encoding, newline):
    text = "\n".join([HEADER + ",speaker", *(row + ",Zoë Ünal" for row in ROWS)]) + "\n"
    clean = read_manifest(write(tmp_path / "clean.csv", text))
    odd = read_manifest(write(tmp_path / "odd.csv", text, encoding, newline))
    assert list(odd.columns) == ["ID", "duration", "wav", "label", "attack", "speaker"]
    assert odd.equals(clean)
    assert odd["speaker"].tolist() == ["Zoë Ünal"] * 2  # no stray '\r' in the last column


def test_text_that_is_not_utf8_is_a_manifest_error(tmp_path):
    path = write(
        tmp_path / "m.csv", HEADER + "\nu1,1.0,/a/Zoë.wav,bonafide,-\n", encoding="latin-1"
    )
    assert "not a readable CSV file" in str(manifest_error(path))


def test_ids_with_whitespace_are_rejected(tmp_path):
    # Score files are "ID score" lines: an ID with a space would split in two there.
    path = write(tmp_path / "m.csv", f"{HEADER}\nmy utt,1.0,/a.wav,bonafide,-\n")
    err = manifest_error(path)
    assert err.line == 2 and "ID 'my utt' contains whitespace" in str(err)
    with pytest.raises(ManifestError, match="contains whitespace"):
        write_manifest(
            [{"ID": "a\tb", "duration": 1, "wav": "/a.wav", "label": "spoof", "attack": "A01"}],
            tmp_path / "w.csv",
        )


def test_relative_wav_paths_resolve_against_the_manifest_folder(tmp_path, monkeypatch):
    folder = tmp_path / "lists"
    folder.mkdir()
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    path = write(
        folder / "m.csv",
        "\n".join(
            [
                HEADER,
                "u1,1.0,audio/u1.wav,bonafide,-",
                "u2,1.0,../audio/u2.wav,spoof,A01",
                "u3,1.0,/abs/u3.wav,spoof,A01",
                "u4,1.0,~/u4.wav,spoof,A01",
            ]
        )
        + "\n",
    )
    home.mkdir()
    monkeypatch.chdir(home)
    wavs = read_manifest(path)["wav"].tolist()
    assert wavs == [
        str(folder / "audio" / "u1.wav"),
        str(tmp_path / "audio" / "u2.wav"),
        "/abs/u3.wav",
        str(home / "u4.wav"),
    ]
    # The same from any working directory.
    monkeypatch.chdir("/")
    assert read_manifest(path)["wav"].tolist() == wavs


def test_write_manifest_makes_relative_paths_absolute_against_the_working_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    row = {"ID": "u1", "duration": 1.0, "wav": "audio/u1.wav", "label": "bonafide", "attack": "-"}
    out = tmp_path / "out"
    out.mkdir()
    write_manifest([row], out / "m.csv")
    assert f",{tmp_path / 'audio' / 'u1.wav'}," in (out / "m.csv").read_text()
    assert read_manifest(out / "m.csv")["wav"][0] == str(tmp_path / "audio" / "u1.wav")


HOSTILE_NAME = 'data with spaces, a comma, "quotes" and ünïcødé 数据'


def test_paths_with_spaces_commas_quotes_and_unicode_work_from_protocol_to_audio(tmp_path):
    corpus = build_ctrsvdd(tmp_path / HOSTILE_NAME / "CtrSVDD")
    out = tmp_path / HOSTILE_NAME / "manifests"
    manifest = corpus.prepare(out)["dev"]
    frame = read_manifest(manifest)
    assert dict(zip(frame["ID"], frame["wav"])) == {k: str(v) for k, v in corpus.audio.items()}
    # The file is plain CSV: the csv module reads the same paths back.
    with open(manifest, newline="", encoding="utf-8") as handle:
        assert {r["ID"]: r["wav"] for r in csv.DictReader(handle)} == dict(
            zip(frame["ID"], frame["wav"])
        )
    # Training and evaluation load the same audio through the manifest dataset.
    dataset = manifest_dataset(manifest, audio_pipeline())
    for item in dataset:
        assert item["audio_error"] == ""
        assert torch.equal(item["sig"], load_audio(corpus.audio[item["id"]]))
    assert len(dataset) == len(corpus.audio)


def test_relative_paths_in_a_moved_manifest_still_find_the_audio(tmp_path, monkeypatch):
    # A corpus shipped with a manifest of relative paths, unpacked under another name.
    folder = tmp_path / HOSTILE_NAME
    (folder / "audio").mkdir(parents=True)
    sf.write(folder / "audio" / "ünï 1.flac", np.zeros(1600, dtype="float32"), 16000)
    write(folder / "m.csv", f'{HEADER}\nu1,0.1,"audio/ünï 1.flac",bonafide,-\n')
    monkeypatch.chdir(tmp_path)
    item = manifest_dataset(folder / "m.csv", audio_pipeline())[0]
    assert item["audio_error"] == "" and item["sig"].shape == (1600,)


# ------------------------------------------------------------------ protocols


def _rewrite(path, transform):
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(transform(lines)) + "\n", encoding="utf-8")


def test_duplicate_protocol_id_names_the_line_of_the_repeat(tmp_path):
    corpus = build_ctrsvdd(tmp_path / "c")
    _rewrite(corpus.protocol, lambda lines: lines + [lines[0]])
    with pytest.raises(ProtocolError) as info:
        corpus.prepare(tmp_path / "out")
    n = len(corpus.protocol.read_text().splitlines())
    assert info.value.line == n and "first on line 1" in str(info.value)
    assert not (tmp_path / "out" / "ctrsvdd_dev.csv").exists()


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_an_unknown_protocol_label_names_file_line_and_the_known_labels(tmp_path, name):
    corpus = BUILDERS[name](tmp_path / "c")
    sep = "," if corpus.csv else " "
    first = 2 if corpus.csv else 1  # the CSV protocol has a header

    def relabel(lines):
        fields = lines[first - 1].split(sep)
        fields[corpus.label_field] = "fakeish"
        return lines[: first - 1] + [sep.join(fields)] + lines[first:]

    _rewrite(corpus.protocol, relabel)
    with pytest.raises(ProtocolError) as info:
        corpus.prepare(tmp_path / "out")
    assert (info.value.path, info.value.line) == (str(corpus.protocol), first)
    assert "unknown label 'fakeish'" in str(info.value) and "bonafide" in str(info.value)


def test_a_protocol_line_with_a_missing_column_names_what_was_expected(tmp_path):
    corpus = build_ctrsvdd(tmp_path / "c")
    _rewrite(corpus.protocol, lambda lines: [lines[0], " ".join(lines[1].split()[:-1])] + lines[2:])
    with pytest.raises(ProtocolError) as info:
        corpus.prepare(tmp_path / "out")
    assert info.value.line == 2
    assert (
        "expected 6 space-separated fields (source speaker file unused attack label), found 5"
        in str(info.value)
    )


def test_bom_crlf_tabs_and_padding_in_a_protocol_give_the_clean_manifest(tmp_path):
    clean = build_ctrsvdd(tmp_path / "clean")
    odd = build_ctrsvdd(tmp_path / "odd")
    lines = odd.protocol.read_text().splitlines()
    messy = "\ufeff" + "\r\n".join(
        ("\t" if i % 2 else "  ") + "\t ".join(line.split()) + " \t" + ("\r\n" if i == 3 else "")
        for i, line in enumerate(lines)
    )
    odd.protocol.write_bytes(messy.encode("utf-8") + b"\r\n")
    a = read_manifest(clean.prepare(tmp_path / "out_clean")["dev"])
    b = read_manifest(odd.prepare(tmp_path / "out_odd")["dev"])
    assert b.drop(columns="wav").equals(a.drop(columns="wav"))
    assert [os.path.relpath(w, odd.root) for w in b["wav"]] == [
        os.path.relpath(w, clean.root) for w in a["wav"]
    ]


def test_in_the_wild_meta_with_another_delimiter_says_so(tmp_path):
    corpus = build_in_the_wild(tmp_path / "itw")
    _rewrite(corpus.protocol, lambda lines: [line.replace(",", ";") for line in lines])
    with pytest.raises(ProtocolError) as info:
        corpus.prepare(tmp_path / "out")
    assert info.value.line == 1 and "fields are separated by ';'" in str(info.value)


def test_in_the_wild_quoted_speaker_with_comma_and_bom_crlf_meta(tmp_path):
    corpus = build_in_the_wild(tmp_path / "itw")
    lines = corpus.protocol.read_text().splitlines()
    first = lines[1].split(",")
    lines[1] = f'{first[0]},"Guinness, Alec",{first[2]}'
    corpus.protocol.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    frame = read_manifest(corpus.prepare(tmp_path / "out")["eval"])
    assert (
        frame.loc[frame["ID"] == first[0].removesuffix(".wav"), "speaker"].item()
        == "Guinness, Alec"
    )
    assert len(frame) == len(corpus.audio)


def test_a_protocol_id_with_whitespace_is_rejected_with_its_line(tmp_path):
    corpus = build_in_the_wild(tmp_path / "itw")
    lines = corpus.protocol.read_text().splitlines()
    name = lines[1].split(",")[0]
    os.rename(corpus.root / name, corpus.root / f"my {name}")
    lines[1] = f"my {lines[1]}"
    corpus.protocol.write_text("\n".join(lines) + "\n")
    with pytest.raises(ProtocolError) as info:
        corpus.prepare(tmp_path / "out")
    assert info.value.line == 2 and "contains whitespace" in str(info.value)
