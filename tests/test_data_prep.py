"""Data preparation: every corpus built small on disk in its real layout.

Protocol lines come from ``tests/data/protocols/`` (real lines of the published
protocols); the audio is short noise written with soundfile (FLAC or WAV as the
corpus uses). Each prepare function is run and its manifests checked; then the
same bad inputs are fed to every corpus.
"""

import csv
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpora import (  # noqa: F401  (corpus builders)
    BUILDERS,
    DF_BONAFIDE_KEY,
    LA_BONAFIDE_KEY,
    PROTOCOLS,
    RATE,
    Corpus,
    asvspoof2019_sections,
    build_asvspoof5,
    build_asvspoof2019,
    build_asvspoof2021,
    build_ctrsvdd,
    build_in_the_wild,
    build_partialspoof,
    protocol_lines,
    write_audio,
)

from data_prep import (
    asvspoof5_prepare,
    asvspoof2019_prepare,
    asvspoof2021_prepare,
    ctrsvdd_prepare,
    in_the_wild_prepare,
    partialspoof_prepare,
)
from data_prep.common import (
    MissingAudioError,
    MissingInputError,
    OptionError,
    ProtocolError,
    UnreadableAudioError,
    scan_audio,
)
from speechbrain_nes2net.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=sorted(BUILDERS))
def corpus(request, tmp_path):
    return BUILDERS[request.param](tmp_path / "data")


def check_durations_and_paths(frame, corpus):
    for utt, wav, duration in zip(frame["ID"], frame["wav"], frame["duration"]):
        assert Path(wav).is_absolute() and Path(wav).is_file()
        assert duration == pytest.approx(corpus.durations[utt], abs=1e-9)


# ---------------------------------------------------------------- corpora


def test_ctrsvdd_dev_and_test_with_absent_train_logged(tmp_path, caplog):
    corpus = build_ctrsvdd(tmp_path / "data")
    caplog.set_level(logging.INFO)
    paths = corpus.prepare(tmp_path / "out")
    assert sorted(paths) == ["dev", "test"]
    assert any("skipping split 'train'" in r.getMessage() for r in caplog.records)

    dev = read_manifest(paths["dev"])
    assert list(dev.columns) == ["ID", "duration", "wav", "label", "attack", "speaker", "source"]
    assert len(dev) == 22
    # 12 bona fide lines in the excerpt; 'deepfake' is written 'spoof'.
    assert (dev["label"] == "bonafide").sum() == 12
    assert sorted(dev.loc[dev["label"] == "spoof", "attack"].unique()) == ["A01", "A06"]
    assert set(dev.loc[dev["label"] == "bonafide", "attack"]) == {"-"}
    row = dev.set_index("ID").loc["CtrSVDD_0097_D_0010993"]
    assert (row["source"], row["speaker"], row["attack"]) == ("jvsmusic", "CtrSVDD_0097", "A06")
    assert Path(row["wav"]).parent.name == "dev_set"
    check_durations_and_paths(dev, corpus)

    test = read_manifest(paths["test"])
    assert test[["ID", "label", "attack", "source"]].values.tolist() == [
        ["CtrSVDD_0125_E_0000001", "spoof", "A10", "kising"]
    ]


def test_asvspoof2019_all_splits(tmp_path):
    corpus = build_asvspoof2019(tmp_path / "data")
    paths = corpus.prepare(tmp_path / "out")
    assert sorted(paths) == ["dev", "eval", "train"]
    train = read_manifest(paths["train"])
    assert list(train.columns) == ["ID", "duration", "wav", "label", "attack", "speaker"]
    assert (len(train), (train["label"] == "bonafide").sum()) == (25, 15)
    assert set(train.loc[train["label"] == "spoof", "attack"]) == {"A01"}
    assert set(train["speaker"]) == {"LA_0079", "LA_0098"}
    dev = read_manifest(paths["dev"])
    assert (len(dev), (dev["label"] == "spoof").sum()) == (12, 5)
    evaluation = read_manifest(paths["eval"])
    assert (len(evaluation), (evaluation["label"] == "bonafide").sum()) == (15, 2)
    assert evaluation["attack"].tolist()[:6] == ["A11", "A14", "A16", "A09", "A13", "-"]
    for frame in (train, dev, evaluation):
        check_durations_and_paths(frame, corpus)

    only_dev = corpus.prepare(tmp_path / "out_dev", splits=("dev",))
    assert list(only_dev) == ["dev"]


def test_asvspoof2021_la_keeps_eval_subset_by_default(tmp_path):
    corpus = build_asvspoof2021(tmp_path / "data", "LA")
    paths = corpus.prepare(tmp_path / "out")
    frame = read_manifest(paths["eval"])
    assert Path(paths["eval"]).name == "asvspoof2021_la_eval.csv"
    assert list(frame.columns) == [
        "ID", "duration", "wav", "label", "attack",
        "speaker", "codec", "transmission", "trim", "subset",
    ]  # fmt: skip
    assert set(frame["subset"]) == {"eval"}
    assert "LA_E_8589971" not in set(frame["ID"])  # the progress row
    assert (len(frame), (frame["label"] == "bonafide").sum()) == (6, 1)
    bonafide = frame.set_index("ID").loc["LA_E_7294490"]
    assert (bonafide["attack"], bonafide["codec"], bonafide["transmission"]) == (
        "-",
        "g722",
        "loc_tx",
    )
    assert set(frame.loc[frame["label"] == "spoof", "attack"]) == {"A07"}
    check_durations_and_paths(frame, corpus)

    more = corpus.prepare(tmp_path / "out", subsets=("eval", "progress"))
    frame = read_manifest(more["eval"])
    assert len(frame) == 7 and set(frame["subset"]) == {"eval", "progress"}


def test_asvspoof2021_df_reads_columns_not_last_field(tmp_path):
    corpus = build_asvspoof2021(tmp_path / "data", "DF")
    frame = read_manifest(corpus.prepare(tmp_path / "out", track="df")["eval"])
    # The last fields of DF keys are VCC metadata ('-', 'E', 'G'), never the key.
    assert list(frame.columns) == [
        "ID", "duration", "wav", "label", "attack",
        "speaker", "source", "codec", "vocoder", "trim", "subset",
    ]  # fmt: skip
    rows = frame.set_index("ID")
    assert list(rows.index) == ["DF_E_2000013", "DF_E_2000024", "DF_E_2000031"]
    assert rows.loc["DF_E_2000013", ["label", "attack", "source", "codec", "vocoder"]].tolist() == [
        "spoof",
        "Task1-team20",
        "vcc2020",
        "low_m4a",
        "neural_vocoder_nonautoregressive",
    ]
    assert rows.loc["DF_E_2000031", ["label", "attack"]].tolist() == ["bonafide", "-"]
    check_durations_and_paths(frame, corpus)

    everything = corpus.prepare(tmp_path / "all", subsets=["eval", "progress", "hidden"])
    assert len(read_manifest(everything["eval"])) == 4
    with pytest.raises(OptionError, match="unknown subsets 'test'"):
        corpus.prepare(tmp_path / "x", subsets=("test",))
    with pytest.raises(OptionError, match="unknown track 'PA'"):
        asvspoof2021_prepare.prepare_asvspoof2021(corpus.root, tmp_path / "x", track="PA")


def test_asvspoof5_all_splits_and_protocol_folder(tmp_path):
    corpus = build_asvspoof5(tmp_path / "data")
    paths = corpus.prepare(tmp_path / "out")
    assert sorted(paths) == ["dev", "eval", "train"]
    dev = read_manifest(paths["dev"])
    assert list(dev.columns) == [
        "ID", "duration", "wav", "label", "attack",
        "speaker", "gender", "codec", "codec_q", "codec_seed", "attack_tag",
    ]  # fmt: skip
    assert (len(dev), (dev["label"] == "bonafide").sum()) == (8, 2)
    bonafide = dev[dev["label"] == "bonafide"]
    assert set(bonafide["attack"]) == {"-"} and set(bonafide["attack_tag"]) == {"-"}
    row = dev.set_index("ID").loc["D_0000000232"]
    assert row[["attack", "attack_tag", "speaker", "gender"]].tolist() == [
        "A10",
        "AC2",
        "D_1045",
        "F",
    ]
    check_durations_and_paths(dev, corpus)

    evaluation = read_manifest(paths["eval"]).iloc[0]
    assert evaluation[["ID", "attack", "codec", "codec_q", "codec_seed"]].tolist() == [
        "E_0009538969",
        "A26",
        "C05",
        "2",
        "E_0009486171",
    ]
    assert Path(evaluation["wav"]).parent.name == "flac_E_eval"
    train = read_manifest(paths["train"])
    assert train[["ID", "label", "attack"]].values.tolist() == [
        ["T_0000000000", "spoof", "A05"],
        ["T_0000000011", "bonafide", "-"],
    ]


def test_partialspoof_manifest_and_segment_labels(tmp_path):
    corpus = build_partialspoof(tmp_path / "data")
    paths = corpus.prepare(tmp_path / "out")
    assert list(paths) == ["train"]
    frame = read_manifest(paths["train"])
    assert list(frame.columns) == [
        "ID", "duration", "wav", "label", "attack", "speaker", "segment_labels",
    ]  # fmt: skip
    assert frame[["ID", "label", "attack"]].values.tolist() == [
        ["CON_T_0000029", "spoof", "CON"],
        ["CON_T_0000069", "spoof", "CON"],
        ["LA_T_9497115", "bonafide", "-"],
        ["LA_T_9557645", "bonafide", "-"],
        ["LA_T_9737995", "bonafide", "-"],
    ]
    check_durations_and_paths(frame, corpus)

    template = frame["segment_labels"].iloc[0]
    assert set(frame["segment_labels"]) == {template}
    assert template == str(corpus.root / "segment_labels" / "train_seglab_{shift}.npy")
    from speechbrain_nes2net.segments import load_segment_labels as load
    for utt, label, seconds in zip(frame["ID"], frame["label"], frame["duration"]):
        for shift in (0.02, "0.16"):
            truth = load(template, utt, shift)
            assert truth.dtype == np.int64
            assert len(truth) == max(1, int(seconds / float(shift)))
            # 1 = bona fide: bona fide utterances are all ones, spoofed ones are not.
            assert truth.all() == (label == "bonafide")
    with pytest.raises(KeyError, match="no segment labels for utterance 'LA_T_0'"):
        load(template, "LA_T_0", 0.02)
    with pytest.raises(FileNotFoundError, match="train_seglab_0.64.npy"):
        load(template, "CON_T_0000029", 0.64)
    with pytest.raises(ValueError, match="shift 0.05 is not published"):
        load(template, "CON_T_0000029", 0.05)


def test_partialspoof_without_segment_label_files_warns(tmp_path, caplog):
    corpus = build_partialspoof(tmp_path / "data")
    for path in (corpus.root / "segment_labels").iterdir():
        path.unlink()
    paths = corpus.prepare(tmp_path / "out")
    assert len(read_manifest(paths["train"])) == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no segment label file" in message for message in warnings)


def test_spoof_row_without_attack_is_an_error(tmp_path):
    corpus = build_asvspoof2019(tmp_path / "data")
    number = _append(corpus, "LA_0079 LA_T_0000001 - - spoof")
    with pytest.raises(
        ProtocolError, match=rf"line {number}: spoof row 'LA_T_0000001' has no attack"
    ):
        corpus.prepare(tmp_path / "out")


def test_non_utf8_line_and_bad_header_are_named(tmp_path):
    corpus = build_asvspoof2019(tmp_path / "data")
    with open(corpus.protocol, "ab") as handle:
        handle.write("LA_0079 LA_T_caf\u00e9 - - bonafide\n".encode("latin-1"))
    number = len(corpus.protocol.read_bytes().splitlines())
    with pytest.raises(ProtocolError, match=rf"line {number}: not UTF-8 text"):
        corpus.prepare(tmp_path / "out")

    wild = build_in_the_wild(tmp_path / "wild")
    wild.protocol.write_text("file,name,label\n0.wav,Alec Guinness,spoof\n")
    with pytest.raises(
        ProtocolError, match=r"meta\.csv, line 1: header .* lacks column\(s\) speaker"
    ):
        wild.prepare(tmp_path / "out")


def test_in_the_wild_labels_and_unknown_attack(tmp_path):
    corpus = build_in_the_wild(tmp_path / "data")
    frame = read_manifest(corpus.prepare(tmp_path / "out")["eval"])
    assert frame[["ID", "label", "attack", "speaker"]].values.tolist() == [
        ["0", "spoof", "unknown", "Alec Guinness"],
        ["1", "spoof", "unknown", "Alec Guinness"],
        ["4", "bonafide", "-", "Christopher Hitchens"],
    ]
    check_durations_and_paths(frame, corpus)

    # A byte order mark (meta.csv saved by a spreadsheet editor) is not part of 'file'.
    corpus.protocol.write_bytes(b"\xef\xbb\xbf" + corpus.protocol.read_bytes())
    assert len(read_manifest(corpus.prepare(tmp_path / "out")["eval"])) == 3


# ------------------------------------------------- bad inputs, every corpus


def test_missing_audio_is_an_error_with_count_and_paths(corpus, tmp_path):
    gone = sorted(corpus.audio)[:2]
    for utt in gone:
        corpus.audio[utt].unlink()
    with pytest.raises(MissingAudioError) as info:
        corpus.prepare(tmp_path / "out")
    message = str(info.value)
    assert f"audio missing for 2 of {len(corpus.audio)} rows of {corpus.protocol}" in message
    assert all(str(corpus.audio[utt]) in message for utt in gone)
    assert "--skip-missing" in message
    assert sorted(info.value.paths) == sorted(str(corpus.audio[utt]) for utt in gone)
    assert not list((tmp_path / "out").glob("*.json"))


def test_skip_missing_leaves_rows_out_and_lists_them(corpus, tmp_path):
    gone = sorted(corpus.audio)[:1]
    corpus.audio[gone[0]].unlink()
    paths = corpus.prepare(tmp_path / "out", skip_missing=True)
    frame = read_manifest(paths[corpus.split])
    assert set(frame["ID"]) == set(corpus.audio) - set(gone)
    skipped_path = Path(paths[corpus.split]).with_name(
        Path(paths[corpus.split]).stem + "_skipped.csv"
    )
    skipped = read_skipped(skipped_path)
    assert [(r["ID"], r["wav"], r["protocol"]) for r in skipped] == [
        (gone[0], str(corpus.audio[gone[0]]), str(corpus.protocol))
    ]
    line = corpus.protocol.read_text(encoding="utf-8-sig").splitlines()[int(skipped[0]["line"]) - 1]
    assert gone[0] in re.split(r"[ ,.]", line)

    # Audio extracted afterwards is picked up: the audio folder changed.
    write_audio(corpus.audio[gone[0]], 0)
    paths = corpus.prepare(tmp_path / "out", skip_missing=True)
    assert set(read_manifest(paths[corpus.split])["ID"]) == set(corpus.audio)
    assert not skipped_path.exists()


def read_skipped(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_all_audio_missing_is_an_error_even_when_skipping(corpus, tmp_path):
    for path in corpus.audio.values():
        path.unlink()
    with pytest.raises(MissingAudioError, match="No audio at all for this split"):
        corpus.prepare(tmp_path / "out", skip_missing=True)


def _append(corpus, line):
    with open(corpus.protocol, "a") as handle:
        handle.write(line + "\n")
    return len(corpus.protocol.read_text().splitlines())


def test_malformed_line_names_file_line_and_layout(corpus, tmp_path):
    number = _append(corpus, "9.wav,spoof" if corpus.csv else "LA_0001 LA_X_1 spoof")
    with pytest.raises(ProtocolError) as info:
        corpus.prepare(tmp_path / "out")
    assert (info.value.path, info.value.line) == (str(corpus.protocol), number)
    assert str(info.value).startswith(f"{corpus.protocol}, line {number}: expected ")
    found = 2 if corpus.csv else 3
    assert re.search(
        rf"expected \d+ (space|comma)-separated fields \(.+\), found {found}:", str(info.value)
    )


def test_unknown_label_names_file_and_line(corpus, tmp_path):
    first = [line for line in corpus.protocol.read_text().splitlines() if line][-1]
    fields = first.split(",") if corpus.csv else first.split()
    fields[corpus.label_field] = "maybe"
    fields[0 if corpus.csv else 1] = "999.wav" if corpus.csv else "NEW_ID_1"
    number = _append(corpus, ("," if corpus.csv else " ").join(fields))
    with pytest.raises(ProtocolError, match=rf"line {number}: unknown label 'maybe'"):
        corpus.prepare(tmp_path / "out")


def test_duplicate_ids_name_both_lines(corpus, tmp_path):
    # A row that is kept (the 2021 subset filter drops some before the check).
    kept = sorted(corpus.audio)[0]
    lines = corpus.protocol.read_text().splitlines()
    first = next(i for i, line in enumerate(lines, 1) if kept in re.split(r"[ ,.]", line))
    number = _append(corpus, lines[first - 1])
    pattern = rf"line {number}: duplicate utterance ID '{kept}' \(first on line {first}\)"
    with pytest.raises(ProtocolError, match=pattern):
        corpus.prepare(tmp_path / "out")


def test_unreadable_audio_is_an_error(corpus, tmp_path):
    broken = corpus.audio[sorted(corpus.audio)[0]]
    broken.write_bytes(b"not audio at all")
    with pytest.raises(UnreadableAudioError, match=re.escape(str(broken))):
        corpus.prepare(tmp_path / "out", skip_missing=True)


def test_rerun_skips_and_changed_options_or_inputs_redo(corpus, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    first = corpus.prepare(out)
    manifest = Path(first[corpus.split])
    signature = list(out.glob("*_prepare.json"))
    assert len(signature) == 1
    inode = manifest.stat().st_ino

    caplog.clear()
    assert corpus.prepare(out) == first
    assert manifest.stat().st_ino == inode  # not rewritten
    assert any("up to date" in r.getMessage() for r in caplog.records)

    assert corpus.prepare(out, skip_missing=True) == first  # another option: redone
    assert manifest.stat().st_ino != inode
    inode = manifest.stat().st_ino
    assert corpus.prepare(out, skip_missing=True) == first
    assert manifest.stat().st_ino == inode

    _append(corpus, "")  # a changed protocol file: redone
    corpus.prepare(out, skip_missing=True)
    assert manifest.stat().st_ino != inode

    manifest.unlink()  # a deleted manifest: redone
    corpus.prepare(out, skip_missing=True)
    assert len(read_manifest(manifest)) == len(corpus.audio)


def test_missing_data_folder_or_protocols(corpus, tmp_path):
    with pytest.raises(MissingInputError, match="is not a folder"):
        corpus.prepare.func(tmp_path / "nowhere", tmp_path / "out", **corpus.prepare.keywords)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingInputError, match="no protocol file found") as info:
        corpus.prepare.func(empty, tmp_path / "out", **corpus.prepare.keywords)
    assert str(empty) in str(info.value) and "data_folder should be" in str(info.value)


# ------------------------------------------------------- machinery and CLI


def test_scan_audio_is_ordered_with_any_worker_count(tmp_path):
    paths = []
    for i in range(40):
        paths.append(tmp_path / f"{i}.flac")
        write_audio(paths[-1], i)
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "silent.wav", np.zeros(0, dtype="float32"), RATE)
    paths += [tmp_path / "none.flac", tmp_path / "empty.wav", tmp_path / "silent.wav"]
    serial = scan_audio(paths, num_workers=1)
    parallel = scan_audio(paths, num_workers=8)
    durations = [getattr(r, "duration", r) for r in serial[:40]]
    assert durations == [getattr(r, "duration", r) for r in parallel[:40]]
    assert durations == [pytest.approx(0.2 + 0.1 * (i % 9)) for i in range(40)]
    assert serial[40] is None
    assert "contains no samples (the file is empty" in str(serial[41])
    assert "contains no samples" in str(serial[42])


def test_cli_prints_manifest_paths(tmp_path, capsys):
    corpus = build_asvspoof2019(tmp_path / "data")
    asvspoof2019_prepare.main([str(corpus.root), str(tmp_path / "out"), "--splits", "dev"])
    out = capsys.readouterr().out.split()
    assert out == ["dev", str(tmp_path / "out" / "asvspoof2019_la_dev.csv")]


def test_cli_reports_data_errors_without_traceback(tmp_path, capsys):
    corpus = build_in_the_wild(tmp_path / "data")
    next(iter(corpus.audio.values())).unlink()
    with pytest.raises(SystemExit) as info:
        in_the_wild_prepare.main([str(corpus.root), str(tmp_path / "out")])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: in_the_wild eval: audio missing for 1 of 3 rows")
    assert "Traceback" not in err
    in_the_wild_prepare.main([str(corpus.root), str(tmp_path / "out"), "--skip-missing"])
    assert capsys.readouterr().out.startswith("eval ")


@pytest.mark.parametrize(
    "module, option",
    [
        (ctrsvdd_prepare, "--splits"),
        (asvspoof2019_prepare, "--splits"),
        (asvspoof2021_prepare, "--subsets"),
        (asvspoof5_prepare, "--splits"),
        (partialspoof_prepare, "--splits"),
        (in_the_wild_prepare, "--skip-missing"),
    ],
)
def test_every_module_has_a_help(module, option, capsys):
    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert f"python data_prep/{module.__name__.split('.')[-1]}.py" in text
    assert "data_folder" in text and option in text and "--num-workers" in text


def test_python_dash_m_runs_the_module(tmp_path):
    corpus = build_partialspoof(tmp_path / "data")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep.partialspoof_prepare",
            str(corpus.root),
            str(tmp_path / "o"),
        ],
        cwd=ROOT,  # python -m finds data_prep in the working directory (it is not installed)
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["train", str(tmp_path / "o" / "partialspoof_train.csv")]
    assert "wrote 5 rows (3 bonafide, 2 spoof" in result.stderr
