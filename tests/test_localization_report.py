"""The partialspoof report from frame scores: segment and range EER per resolution, by hand."""

import json

import numpy as np
import pytest
from test_reports import bona, spoof, write_set

from data_prep.partialspoof_demo import segment_labels
from speechbrain_nes2net.evaluation.report_writer import write_report
from speechbrain_nes2net.evaluation.reports import build_report

# Three files: no spoofed frame, all spoofed, and spoofed from 0.05 to 0.07 s (a
# boundary inside a 20 ms frame, inside the second 40 ms segment).
TRUTH = {
    "LA_E_1": (0.12, []),
    "CON_E_1": (0.08, [(0.0, 0.08)]),
    "CON_E_2": (0.12, [(0.05, 0.07)]),
}
FRAMES = {  # 20 ms frame scores
    "LA_E_1": [2.0, 2.5, 0.4, 0.9, 1.0, 1.2],
    "CON_E_1": [-1.0, 0.0, 0.5, 0.7],
    "CON_E_2": [1.5, 1.6, 0.8, -0.5, 0.3, 0.4],
}


def localization_set(tmp_path):
    rows = [{"ID": "LA_E_1", **bona(2.0)}, {"ID": "CON_E_1", **spoof(-1.0, "CON")},
            {"ID": "CON_E_2", **spoof(2.5, "CON")}]
    scores, manifest = write_set(tmp_path, rows)
    labels = tmp_path / "segment_labels"
    labels.mkdir()
    for shift in (0.01, 0.02, 0.04):
        table = {utt: segment_labels(d, spans, shift) for utt, (d, spans) in TRUTH.items()}
        np.save(labels / f"eval_seglab_{shift:.2f}.npy", table)
    frames = tmp_path / "frames.npz"
    np.savez(frames, __shift__=0.02, **{k: np.array(v) for k, v in FRAMES.items()})
    # The manifest's durations and label templates, as partialspoof_prepare writes them.
    import pandas as pd

    table = pd.read_csv(manifest)
    table["duration"] = table["ID"].map(lambda u: TRUTH[u][0])
    table["segment_labels"] = str(labels / "eval_seglab_{shift}.npy")
    table.to_csv(manifest, index=False)
    return scores, manifest, frames


def test_segment_and_range_eer_per_resolution_match_the_hand_computed_values(tmp_path):
    scores, manifest, frames = localization_set(tmp_path)
    report = build_report(
        "partialspoof", scores, manifest, frame_scores=frames, resolutions=[0.01, 0.02, 0.04]
    )
    assert report["eer"] == 0.25  # the utterance head: 2.0 vs -1.0 and 2.5
    block = report["localization"]
    assert block["frame_shift"] == 0.02 and block["range_reference"] == "segment labels at 0.01 s"
    at_40ms = block["resolutions"]["0.04"]
    # Segments (min of frame pairs): bona fide 2.0 0.4 1.0 1.5 0.3, spoof -1.0 0.5 -0.5.
    # Rejecting up to 0.4 misses 2/5 and accepts 1/3.
    assert at_40ms["eer"] == pytest.approx(11 / 30, abs=1e-12) and at_40ms["eer_threshold"] == 0.4
    # Range EER against the 10 ms reference: bona fide 0.22 s (segment -0.5 is half
    # bona fide), spoof 0.10 s. Rejecting up to 0.4: bona fide time 0.02 + 0.04 + 0.04
    # = 0.10 s of 0.22 called spoof, spoofed time 0.04 s (0.5) of 0.10 called bona fide.
    assert at_40ms["bonafide_seconds"] == pytest.approx(0.22)
    assert at_40ms["spoof_seconds"] == pytest.approx(0.10)
    assert at_40ms["range_eer"] == pytest.approx((0.10 / 0.22 + 0.4) / 2, abs=1e-12)
    # 10 ms: each frame score repeated for its two segments; 30 labels vs 32 scores.
    assert block["resolutions"]["0.01"]["n_bonafide"] + block["resolutions"]["0.01"]["n_spoof"] == 32
    # Utterance EER of the minimum frame score: bona fide 0.4, spoof -1.0 and -0.5.
    assert block["utterance_from_frames"]["eer"] == 0.0
    written = write_report(report, tmp_path, "ps")
    text = written["markdown"].read_text()
    assert "| 0.04 | 5 | 3 | 36.667 |" in text and "range EER" in text


def test_range_reference_from_exact_ranges_and_missing_frame_scores(tmp_path):
    scores, manifest, frames = localization_set(tmp_path)
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({u: {"spoof": spans} for u, (_, spans) in TRUTH.items()}))
    exact = build_report("partialspoof", scores, manifest, frame_scores=frames,
                         resolutions=[0.04], range_reference=str(truth))
    labelled = build_report("partialspoof", scores, manifest, frame_scores=frames, resolutions=[0.04])
    # The 10 ms labels hold the spans exactly here, so both references agree.
    assert exact["localization"]["resolutions"]["0.04"]["range_eer"] == pytest.approx(
        labelled["localization"]["resolutions"]["0.04"]["range_eer"]
    )
    partial = {k: np.array(v) for k, v in FRAMES.items() if k != "LA_E_1"}
    with pytest.raises(ValueError, match="1 of 3 scored utterances have no frame scores"):
        build_report("partialspoof", scores, manifest, frame_scores=partial)
