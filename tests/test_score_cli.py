"""``nes2net-score``: files, folders and lists of any format, bad files reported."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ffmpeg_audio import write_with_ffmpeg

from data_prep.demo_prepare import speech_like
from speechbrain_nes2net.lobes.aggregation import build_aggregator
from speechbrain_nes2net.lobes.nes2net import Nes2Net
from speechbrain_nes2net.lobes.ssl import SSLFrontend, make_tiny_ssl_model
from speechbrain_nes2net.pretrained.export import write_export
from speechbrain_nes2net.pretrained.interface import AntiSpoofModel
from speechbrain_nes2net.pretrained.modules import EvalSettings
from speechbrain_nes2net.pretrained.score_cli import collect_inputs, main

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    ssl = SSLFrontend(make_tiny_ssl_model(folder / "tiny_wavlm")).eval()
    backend_kwargs = {"input_size": 64, "outer_ratio": 4, "inner_ratio": 4, "n_out": 2}
    return write_export(
        folder / "export",
        ssl,
        build_aggregator("weighted_sum", 3, 64).eval(),
        Nes2Net(**backend_kwargs).eval(),
        backend_kwargs,
        settings=EvalSettings(eval_min_samples=8000),
    )


@pytest.fixture(scope="module")
def model(export):
    return AntiSpoofModel.from_hparams(source=str(export))


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """8 kHz, 16 kHz, 44.1 kHz and 48 kHz, mono and stereo, FLAC, WAV and M4A, plus two bad files."""
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(3)
    (folder / "sub").mkdir()
    for name, rate, channels in [
        ("a_16k.flac", 16000, 1),
        ("b_8k.wav", 8000, 1),
        ("c_44k_stereo.flac", 44100, 2),
        ("d_22k_stereo.wav", 22050, 2),
        ("sub/e_48k.wav", 48000, 1),
    ]:
        seconds = rng.uniform(0.6, 1.4)
        signal = np.stack([speech_like(rng, seconds, rate) for _ in range(channels)], axis=1)
        sf.write(folder / name, signal.astype(np.float32), rate)
    # A phone's recording: AAC in M4A, read through FFmpeg (PyAV).
    signal = np.stack([speech_like(rng, 1.1, 44100) for _ in range(2)], axis=1)
    write_with_ffmpeg(folder / "f_phone.m4a", signal, 44100)
    (folder / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt " + bytes(range(200)))
    sf.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    (folder / "notes.txt").write_text("not audio\n")
    return folder


GOOD = ["a_16k", "b_8k", "c_44k_stereo", "d_22k_stereo", "f_phone", "sub/e_48k"]
BAD = ["corrupt", "empty"]


def read_lines(path):
    return [line.split() for line in Path(path).read_text().splitlines()]


@pytest.mark.slow
def test_folder_of_mixed_formats_is_scored_and_bad_files_reported(
    export, model, mixed_folder, tmp_path
):
    out = tmp_path / "results" / "scores.txt"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "speechbrain_nes2net.pretrained.score_cli",
            "--model",
            str(export),
            "--output",
            str(out),
            "--labels",
            "--batch-size",
            "3",
            str(mixed_folder),
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    lines = read_lines(out)
    assert [fields[0] for fields in lines] == GOOD  # input order, bad files left out
    for utt_id, score, label in lines:
        path = next(mixed_folder.glob(utt_id + ".*"))
        assert float(score) == pytest.approx(model.score_file(path), abs=1e-5), utt_id
        assert label in ("bonafide", "spoof")
    with open(out.parent / "failed.csv", newline="") as handle:
        failed = list(csv.DictReader(handle))
    assert [row["ID"] for row in failed] == BAD
    assert "not a readable audio file" in failed[0]["reason"]
    assert "no samples" in failed[1]["reason"]
    for name in ("corrupt.wav", "empty.wav"):
        assert name in result.stderr
    assert "scored 6 of 8 files, 2 failed" in result.stderr


def test_list_file_csv_output_and_threshold(export, model, mixed_folder, tmp_path, capsys):
    listing = mixed_folder / "list.txt"
    listing.write_text(
        "# a list\nfirst a_16k.flac\nb_8k.wav\n" + f"{mixed_folder / 'sub' / 'e_48k.wav'}\n"
    )
    out = tmp_path / "scores.csv"
    status = main(
        [
            "--model",
            str(export),
            "--output",
            str(out),
            "--threshold",
            "0.0",
            "--quiet",
            "--batch-size",
            "2",
            str(listing),
        ]
    )
    assert status == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["ID"] for row in rows] == ["first", "b_8k", "e_48k"]
    for row in rows:
        score = float(row["score"])
        assert score == pytest.approx(model.score_file(row["path"]), abs=1e-5)
        assert row["label"] == ("bonafide" if score >= 0.0 else "spoof")
    assert (tmp_path / "failed.csv").read_text() == "ID,path,reason\n"
    # Without --output the lines go to stdout.
    assert main(["--model", str(export), "--quiet", str(mixed_folder / "a_16k.flac")]) == 0
    assert capsys.readouterr().out == f"a_16k {model.score_file(mixed_folder / 'a_16k.flac'):.6f}\n"


def test_usage_errors_exit_with_status_2(export, mixed_folder, tmp_path, capsys):
    assert main(["--model", str(export), str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a_16k.wav").write_bytes(b"")
    assert (
        main(
            [
                "--model",
                str(export),
                str(mixed_folder / "a_16k.flac"),
                str(tmp_path / "x" / "a_16k.wav"),
            ]
        )
        == 2
    )
    assert "IDs name different files" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "no_model"), str(mixed_folder / "a_16k.flac")]) == 2
    assert "cannot load the model" in capsys.readouterr().err


def test_collect_inputs_reads_manifests_and_skips_non_audio(mixed_folder, tmp_path):
    ids = [utt_id for utt_id, _ in collect_inputs([str(mixed_folder)])]
    assert ids == [
        "a_16k", "b_8k", "c_44k_stereo", "corrupt", "d_22k_stereo", "empty", "f_phone", "sub/e_48k",
    ]  # fmt: skip
    manifest = tmp_path / "test.csv"
    manifest.write_text(
        f"ID,duration,wav,label,attack\nu1,1.0,{mixed_folder / 'b_8k.wav'},bonafide,-\n"
    )
    assert collect_inputs([str(manifest)]) == [("u1", mixed_folder / "b_8k.wav")]


def test_on_a_cpu_fp32_files_come_in_pairs_and_bf16_ones_alone_unless_told(export, capsys):
    # Measured on WavLM-Large (docs/DEPLOYING.md): on a CPU, fp32 batches cost
    # 4% less per file than single files, bf16 ones 1-4% more.
    from speechbrain_nes2net.pretrained.score_cli import load_model, parse_args

    def batch_size(*options):
        args = parse_args(["--model", str(export), *options, "x.wav"])
        model = load_model(args)
        return args.batch_size, model.precision

    assert batch_size() == (2, "fp32")
    assert batch_size("--precision", "bf16") == (1, "bf16")
    assert batch_size("--precision", "bf16", "--batch-size", "4") == (4, "bf16")
    with pytest.raises(SystemExit):
        parse_args(["--model", "m.onnx", "--compile", "x.wav"])
    assert "--compile is the torch engine's" in capsys.readouterr().err


def test_condition_codes_every_file_before_scoring_and_reports_what_it_cannot_code(
    export, model, mixed_folder, tmp_path, capsys
):
    from speechbrain_nes2net.codecs import apply_condition
    from speechbrain_nes2net.pretrained.interface import AntiSpoofModel

    sf.write(tmp_path / "click.wav", np.full(40, 0.1, dtype=np.float32), 16000)  # 2.5 ms
    inputs = [str(mixed_folder / name) for name in ("a_16k.flac", "b_8k.wav")]
    inputs.append(str(tmp_path / "click.wav"))
    out = tmp_path / "coded" / "scores.txt"
    options = ["--model", str(export), "--output", str(out), "--quiet"]
    assert main([*options, "--condition", "telephone", *inputs]) == 1
    scores = {utt_id: float(score) for utt_id, score in read_lines(out)}
    assert list(scores) == ["a_16k", "b_8k"]
    with open(out.parent / "failed.csv", newline="") as handle:
        failed = list(csv.DictReader(handle))
    assert [row["ID"] for row in failed] == ["click"]
    assert "telephone cannot code these 0.003 s of audio" in failed[0]["reason"]
    # Each file scored as the model scores its coded waveform (and not as the plain file).
    plain = AntiSpoofModel.from_hparams(source=str(export))
    for utt_id, path in zip(scores, inputs):
        coded = apply_condition(plain.read_audio(path), "telephone")
        assert scores[utt_id] == pytest.approx(float(plain.score_batch(coded[None])[0]), abs=1e-5)
        assert abs(scores[utt_id] - model.score_file(path)) > 1e-4
    # The condition is part of what the score log was made with: another one is refused.
    capsys.readouterr()
    assert main([*options, "--condition", "g711_alaw", *inputs]) == 2
    assert "g711_alaw" in capsys.readouterr().err
    # An unknown condition is a usage error that lists the known ones.
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(export), "--condition", "mp3_31k", *inputs])
    assert exit_info.value.code == 2
    assert "unknown condition(s) mp3_31k; known: mp3_8k, mp3_16k" in capsys.readouterr().err
