"""Localisation for users: time ranges from frame scores, exports that localise, ``--frames``."""

import csv

import numpy as np
import pytest
import soundfile as sf
import torch

from data_prep.demo_prepare import speech_like
from speechbrain_nes2net.evaluation.localization import (
    TimeRange,
    fit_frames_to_duration,
    localize_frames,
)
from speechbrain_nes2net.lobes.aggregation import build_aggregator
from speechbrain_nes2net.lobes.localization import Nes2NetLocalizer
from speechbrain_nes2net.lobes.nes2net import Nes2Net
from speechbrain_nes2net.lobes.ssl import SSLFrontend, make_tiny_ssl_model
from speechbrain_nes2net.pretrained.export import ExportError, write_export
from speechbrain_nes2net.pretrained.interface import AntiSpoofModel
from speechbrain_nes2net.pretrained.modules import EvalSettings
from speechbrain_nes2net.pretrained.score_cli import main


def read_ranges_csv(path):
    """ID -> list of TimeRange of a ``nes2net-score --frames`` CSV."""
    ranges = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            ranges.setdefault(row["ID"], []).append(
                TimeRange(float(row["start"]), float(row["end"]), row["label"], float(row["score"]))
            )
    return ranges


def spans(ranges):
    return [(r.start, r.end, r.label) for r in ranges]


def test_ranges_of_a_bona_fide_file_an_all_spoof_file_and_a_boundary_inside_a_segment():
    # 0.30 s at 20 ms frames: 15 frames, segments of 0.08 s (4 frames), the last one partial.
    bona = localize_frames(np.full(15, 2.0), 0.02, 0.30, 0.08, threshold=0.0)
    assert spans(bona) == [(0.0, 0.3, "bonafide")] and bona[0].score == 2.0
    spoof = localize_frames(np.full(15, -1.0), 0.02, 0.30, 0.08, threshold=0.0)
    assert spans(spoof) == [(0.0, 0.3, "spoof")]
    # Spoofed from 0.10 s (frame 5, inside segment 1 = [0.08, 0.16)) to the end of
    # frame 9 (0.20 s, inside segment 2): min pooling makes both segments spoof,
    # the decision covers the truth and errs by less than one segment at each end.
    frames = np.full(15, 1.0)
    frames[5:10] = -1.0
    ranges = localize_frames(frames, 0.02, 0.30, 0.08, threshold=0.0)
    assert spans(ranges) == [(0.0, 0.08, "bonafide"), (0.08, 0.24, "spoof"), (0.24, 0.3, "bonafide")]
    assert [r.score for r in ranges] == [1.0, -1.0, 1.0]


def test_frames_cover_the_whole_file_and_the_padding_is_cut():
    # WavLM gives floor((samples - 400) / 320) + 1 frames: 2 short of ceil(0.5 / 0.02).
    assert fit_frames_to_duration(np.arange(24.0), 0.02, 0.5).tolist() == list(range(24)) + [23.0]
    assert fit_frames_to_duration(np.arange(40.0), 0.02, 0.5).size == 25  # repeat-padding cut


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A random tiny localisation export (with a rule) and a plain Nes2Net export."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    ssl = SSLFrontend(make_tiny_ssl_model(folder / "tiny_wavlm")).eval()
    localizer = {"variant": "Nes2NetX", "input_size": 64, "outer_ratio": 4, "inner_ratio": 4,
                 "n_out": 1}  # fmt: skip
    plain = {"input_size": 64, "outer_ratio": 4, "inner_ratio": 4, "n_out": 1}
    rule = {
        "segment_shift": 0.08, "frame_shift": 0.02, "pooling": "min",
        "decision": {"threshold": 0.0, "source": "dev_eer", "prior": 0.5, "calibration": None},
    }  # fmt: skip
    settings = EvalSettings(eval_min_samples=8000, eval_window_seconds=1.0)
    agg = build_aggregator("weighted_sum", 3, 64).eval()
    backend = Nes2NetLocalizer(**localizer).eval()
    with pytest.raises(ExportError, match="no frame-level head"):
        write_export(folder / "bad", ssl, agg, Nes2Net(**plain).eval(), plain,
                     settings=settings, localization=rule)  # fmt: skip
    loc = write_export(folder / "loc", ssl, agg, backend, localizer,
                       settings=settings, localization=rule, verify=False)  # fmt: skip
    other = write_export(folder / "plain", ssl, agg, Nes2Net(**plain).eval(), plain,
                         settings=settings, verify=False)  # fmt: skip
    load = lambda path: AntiSpoofModel.from_hparams(source=str(path), savedir=str(path))
    return load(loc), (loc, other), (ssl, agg, backend)


def test_exported_localisation_model_returns_the_ranges_of_its_frames(models, tmp_path):
    model, _, (ssl, agg, backend) = models
    wav = torch.from_numpy(speech_like(np.random.default_rng(1), 2.5)).float()
    ranges = model.localize(wav)
    # Cover the file once, at the shipped resolution (0.08 s), labels at its threshold.
    assert ranges[0].start == 0.0 and ranges[-1].end == 2.5
    assert all(a.end == b.start and a.label != b.label for a, b in zip(ranges, ranges[1:]))
    assert all(round(r.start / 0.08, 6).is_integer() for r in ranges)
    assert all((r.label == "bonafide") == (r.score >= 0.0) for r in ranges)
    # Exactly the live modules' frame logits, by 1 s windows (eval_window_seconds) as the
    # export settings say, each window's frames fitted to its duration.
    expected = []
    with torch.no_grad():
        for piece in wav.split(16000):
            states = ssl(piece[None], torch.ones(1))
            frames = backend.frame_logits(agg(states, torch.ones(1)))[0]
            expected.extend(fit_frames_to_duration(frames, 0.02, piece.shape[0] / 16000))
    assert ranges == localize_frames(expected, 0.02, 2.5, 0.08, 0.0)
    # The caller's resolution and threshold.
    assert spans(model.localize(wav, threshold=1e9)) == [(0.0, 2.5, "spoof")]
    assert {round(r.start / 0.16, 6).is_integer() for r in model.localize(wav, 0.16)} == {True}


def test_nes2net_score_frames_writes_ranges_and_refuses_plain_models(models, tmp_path, capsys):
    model, (folder, plain), _ = models
    audio = tmp_path / "audio"
    audio.mkdir()
    for index, seconds in enumerate((1.3, 0.4)):
        wav = speech_like(np.random.default_rng(index), seconds)
        sf.write(audio / f"f{index}.wav", wav, 16000)
    (audio / "bad.wav").write_bytes(b"not audio")
    out = tmp_path / "ranges.csv"
    code = main(["--model", str(folder), "--frames", "--quiet", "--output", str(out), str(audio)])
    assert code == 1  # bad.wav failed, the others localised
    with open(out, newline="") as handle:
        assert next(csv.reader(handle)) == ["ID", "start", "end", "label", "score"]
    ranges = read_ranges_csv(out)
    assert set(ranges) == {"f0", "f1"}
    assert ranges["f0"][-1].end == 1.3 and ranges["f1"][-1].end == 0.4
    for utt_id in ranges:
        again = model.localize(audio / f"{utt_id}.wav")
        assert [(r.start, r.end, r.label) for r in ranges[utt_id]] == spans(again)
    failed = list(csv.DictReader(open(tmp_path / "failed.csv")))
    assert [row["ID"] for row in failed] == ["bad"]
    capsys.readouterr()
    assert main(["--model", str(plain), "--frames", "--quiet", str(audio / "f0.wav")]) == 2
    assert "no frame-level head" in capsys.readouterr().err
