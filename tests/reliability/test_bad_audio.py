"""Bad audio through the one loading path: handled, or rejected by name and reason.

Loading (`speechbrain_nes2net.audio.load_audio`) is checked file by file;
then a trained demo run evaluates a manifest mixing good and broken files
(broken ones go to `<name>_failed.csv`, the rest is scored), and training
skips broken files with a warning, or stops when too many fail.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from brains import demo_brain, fit
from ffmpeg_audio import write_with_ffmpeg

from speechbrain_nes2net.audio import AudioError, audio_info, load_audio
from speechbrain_nes2net.lobes.ssl import make_tiny_ssl_model
from speechbrain_nes2net.manifest import write_manifest
from speechbrain_nes2net.training.dataio import audio_pipeline, manifest_dataset

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def tone(seconds, rate, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_sample_rates_are_resampled_to_16k(tmp_path, rate):
    path = tmp_path / f"tone_{rate}.flac"
    sf.write(path, tone(1.5, rate), rate)
    wav = load_audio(path)
    assert wav.dtype == torch.float32 and abs(wav.shape[0] - 24000) <= 1
    # A 220 Hz tone stays a 220 Hz tone: resampled, not reinterpreted.
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    assert abs(np.argmax(spectrum) * 16000 / wav.shape[0] - 220) < 2


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_is_downmixed_by_averaging(tmp_path, channels):
    data = tone(0.5, 16000, channels)
    data[:, 0] = 0.0  # channels differ: the mean is not any single channel
    path = tmp_path / "multi.wav"
    sf.write(path, data, 16000)
    wav = load_audio(path)
    assert wav.shape == (8000,)
    assert np.allclose(wav.numpy(), data.mean(axis=1), atol=1e-4)


@pytest.mark.parametrize("subtype", ["PCM_24", "FLOAT", "PCM_16"])
def test_24_bit_and_float_wav_load_scaled(tmp_path, subtype):
    path = tmp_path / f"x_{subtype}.wav"
    sf.write(path, tone(0.25, 16000), 16000, subtype=subtype)
    wav = load_audio(path)
    assert wav.abs().max().item() == pytest.approx(0.3, abs=1e-3)


def test_all_zero_audio_loads_and_stays_finite_through_the_pipeline(tmp_path):
    path = tmp_path / "silence.flac"
    sf.write(path, np.zeros(4000), 16000)
    sig, error = audio_pipeline(min_samples=8000).func(str(path))
    assert error == "" and sig.shape == (8000,) and torch.all(sig == 0)


@pytest.mark.slow
def test_all_zero_audio_trains_and_scores_finite(tmp_path):
    # Silence reaches the model: the per-waveform normalisation (variance 0),
    # the SSL model, the aggregation and the back-end must stay finite in a
    # training step and in scoring.
    rows = []
    for index, label in enumerate(["bonafide", "spoof"] * 4):
        path = tmp_path / "audio" / f"zero{index}.flac"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, np.zeros(16000), 16000)
        rows.append({"ID": f"zero{index}", "duration": 1.0, "wav": str(path), "label": label,
                     "attack": "-" if label == "bonafide" else "A01"})
    manifest = tmp_path / "zeros.csv"
    write_manifest(rows, manifest)
    brain, hparams, _, _ = demo_brain(
        tmp_path / "run", make_tiny_ssl_model(tmp_path / "ssl"), number_of_epochs=1
    )
    train = manifest_dataset(manifest, audio_pipeline(num_samples=16000, random_crop=True))
    valid = manifest_dataset(manifest, audio_pipeline(min_samples=8000), sort_by_duration=True)
    fit(brain, hparams, train, valid)
    assert np.isfinite(brain.train_loss)
    brain.evaluate(valid, min_key="EER", test_loader_kwargs=hparams["eval_dataloader_options"])
    scores = [record[1] for record in brain.score_records]
    assert len(scores) == 8 and np.isfinite(scores).all()


def test_shorter_than_one_ssl_frame_is_repeat_padded(tmp_path):
    path = tmp_path / "blip.wav"
    sf.write(path, tone(0.01, 16000), 16000)  # 160 samples < one 400-sample frame
    sig, error = audio_pipeline(min_samples=8000).func(str(path))
    assert error == "" and sig.shape == (8000,)
    assert torch.equal(sig[:160], sig[160:320])


def _truncated_flac(path):
    sf.write(path, tone(2.0, 16000), 16000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


BROKEN = {
    "empty": (lambda p: sf.write(p.with_suffix(".wav"), np.zeros(0), 16000) or p.with_suffix(".wav"),
              "contains no samples"),
    "not_audio": (lambda p: p.with_suffix(".wav").write_text("this is not audio\n") and p.with_suffix(".wav"),
                  "not a readable audio file"),
    "truncated": (lambda p: _truncated_flac(p.with_suffix(".flac")), ""),
    "nan": (lambda p: sf.write(p.with_suffix(".wav"), np.array([0.1, np.nan, 0.2] * 400), 16000,
                               subtype="FLOAT") or p.with_suffix(".wav"),
            "NaN or infinite"),
    "inf": (lambda p: sf.write(p.with_suffix(".wav"), np.array([0.1, np.inf, 0.2] * 400), 16000,
                               subtype="FLOAT") or p.with_suffix(".wav"),
            "NaN or infinite"),
    "missing": (lambda p: p.with_suffix(".flac"), "file not found"),
    "m4a_not_audio": (lambda p: p.with_suffix(".m4a").write_text("this is not audio\n") and p.with_suffix(".m4a"),
                      "not a readable audio file"),
    # A phone recording cut off before its index (moov atom, written last) was saved.
    "m4a_truncated": (lambda p: _truncated(write_with_ffmpeg(p.with_suffix(".m4a"), tone(2, 44100), 44100)),
                      "not a readable audio file"),
    # A cut-off browser recording: FFmpeg decodes its first third; the header says 2 s.
    "webm_truncated": (lambda p: _truncated(write_with_ffmpeg(p.with_suffix(".webm"), tone(2, 48000), 48000)),
                       "is truncated or corrupt: its header promises 2.0"),
    "zero_bytes": (lambda p: p.with_suffix(".mp3").write_bytes(b"") or p.with_suffix(".mp3"),
                   "contains no samples (the file is empty, 0 bytes)"),
}  # fmt: skip


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_files_are_rejected_with_file_and_reason(tmp_path, kind):
    make, reason = BROKEN[kind]
    path = make(tmp_path / kind)
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert str(path) in str(err.value) and reason in str(err.value)
    # The data pipeline turns the error into silence plus a reason, not a crash.
    sig, error = audio_pipeline(min_samples=8000).func(str(path))
    assert str(path) in error and torch.all(sig == 0)


@pytest.mark.parametrize(
    "name, rate, channels, tolerance",
    # AMR-NB is a speech codec: it gives a pure tone back a quarter quieter.
    [("phone.m4a", 44100, 2, 0.1), ("browser.webm", 48000, 1, 0.1), ("voice_note.amr", 8000, 1, 0.3)],
)
def test_phone_and_browser_formats_are_decoded_by_ffmpeg(tmp_path, name, rate, channels, tolerance):
    # Left 0.3, right 0.15: the downmix (0.225) is neither channel.
    signal = tone(1.5, rate, channels) * ([1.0, 0.5] if channels == 2 else 1.0)
    path = write_with_ffmpeg(tmp_path / name, signal, rate)
    info = audio_info(path)
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert abs(info.duration - 1.5) < 0.05
    wav = load_audio(path)
    # The codecs add their delay and pad to whole frames: at most ~40 ms here.
    assert wav.dtype == torch.float32 and 24000 <= wav.shape[0] <= 24000 + 650
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    assert abs(np.argmax(spectrum) * 16000 / wav.shape[0] - 220) < 2
    steady = wav[4000:20000].numpy()  # away from the codec's start and end
    amplitude = np.sqrt(2 * np.mean(steady**2))
    assert amplitude == pytest.approx(0.225 if channels == 2 else 0.3, rel=tolerance)
    assert load_audio(path, max_seconds=0.5).shape == (8000,)


def test_a_stream_that_changes_rate_mid_way_is_refused_not_played_at_the_wrong_speed(tmp_path):
    # Two raw AAC recordings joined end to end: 16 kHz, then 22.05 kHz.
    first = write_with_ffmpeg(tmp_path / "first.aac", tone(1.0, 16000), 16000)
    second = write_with_ffmpeg(tmp_path / "second.aac", tone(1.0, 22050), 22050)
    joined = tmp_path / "joined.aac"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    with pytest.raises(AudioError, match=r"joined\.aac: changes from 16000 Hz.* to 22050 Hz"):
        load_audio(joined)
    assert load_audio(joined, max_seconds=0.5).shape == (8000,)  # the first part alone is fine


def test_without_pyav_an_m4a_names_what_to_install(tmp_path, monkeypatch):
    path = write_with_ffmpeg(tmp_path / "phone.m4a", tone(0.5, 16000), 16000)
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(AudioError, match=r"phone\.m4a.*pip install 'speechbrain-nes2net\[codecs\]'"):
        load_audio(path)


def test_truncated_flac_header_still_reads_and_fails_on_decode(tmp_path):
    path = _truncated_flac(tmp_path / "cut.flac")
    assert audio_info(path).frames == 32000  # the header promises 2 s ...
    with pytest.raises(AudioError, match="cut.flac"):
        load_audio(path)  # ... that cannot be decoded


# ---------------------------------------------------------------- end to end


def _run(args, check=True):
    result = subprocess.run(
        [sys.executable] + args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch demo run to evaluate with."""
    out = tmp_path_factory.mktemp("bad_audio") / "run"
    _run([
        "recipes/train.py", "hparams/demo.yaml", f"--output_folder={out}",
        "--number_of_epochs=1", "--n_train=12", "--n_dev=4", "--n_test=6",
    ])
    return out


@pytest.mark.slow
def test_evaluation_lists_broken_files_and_scores_the_rest(trained, tmp_path):
    manifest = pd.read_csv(trained / "save" / "manifests" / "test.csv", dtype=str)
    broken = {}
    for i, kind in enumerate(["empty", "not_audio", "truncated"]):
        path = BROKEN[kind][0](tmp_path / kind)
        row = manifest.iloc[i].copy()
        row["ID"], row["wav"] = f"broken_{kind}", str(path)
        manifest.loc[len(manifest)] = row
        broken[row["ID"]] = str(path)
    long_path = tmp_path / "long.flac"  # longer than the 60 s evaluation window
    sf.write(long_path, tone(75.0, 16000), 16000)
    row = manifest.iloc[0].copy()
    row["ID"], row["wav"], row["duration"] = "long_recording", str(long_path), "75.0"
    manifest.loc[len(manifest)] = row
    mixed = tmp_path / "mixed.csv"
    manifest.to_csv(mixed, index=False)

    _run([
        "recipes/evaluate.py", str(trained / "hyperparams.yaml"),
        f"--test_manifest={mixed}", "--test_name=mixed", "--report=eer",
    ])
    scores = trained / "scores"
    with open(scores / "mixed_failed.csv", newline="") as handle:
        failed = {row["ID"]: row["reason"] for row in csv.DictReader(handle)}
    assert set(failed) == set(broken)
    assert all(broken[i] in failed[i] for i in failed)
    scored = dict(line.split() for line in (scores / "mixed_scores.txt").read_text().splitlines())
    assert len(scored) == len(manifest) - 3 and "long_recording" in scored
    assert all(np.isfinite(float(v)) for v in scored.values())
    metrics = json.loads((scores / "mixed_metrics.json").read_text())
    assert metrics["n_failed"] == 3
    assert metrics["n_bonafide"] + metrics["n_spoof"] == len(manifest) - 3
    report = json.loads((scores / "mixed_report.json").read_text())
    assert report["missing"]["manifest_rows_without_score"] == 3


@pytest.mark.slow
def test_training_skips_broken_files_or_stops_when_too_many_fail(tmp_path):
    out = tmp_path / "run"
    base = ["recipes/train.py", "hparams/demo.yaml", f"--output_folder={out}",
            "--n_train=12", "--n_dev=4", "--n_test=4"]
    _run(base + ["--number_of_epochs=1"])
    train = pd.read_csv(out / "save" / "manifests" / "train.csv")
    Path(train["wav"][0]).write_bytes(b"corrupted")
    # One bad file in 24 (4%): skipped with a warning when tolerated ...
    _run(base + ["--number_of_epochs=2", "--max_failed_fraction=0.1"])
    log = (out / "log.txt").read_text()
    assert f"Skipping {train['ID'][0]}" in log and "1 of 24 training files skipped" in log
    # ... and a clear stop when it is not.
    result = _run(base + ["--number_of_epochs=3", "--max_failed_fraction=0.01"], check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "1 of 24 training files could not be used" in output
    assert "max_failed_fraction=0.01" in output and train["wav"][0] in output
