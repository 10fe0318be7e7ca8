"""The embedded localisation check: train on the synthetic partial-spoof corpus, find the splices.

``hparams/demo_localization.yaml`` (shortened: 32 training utterances, 6
epochs; the ``localization_demo`` fixture of ``conftest.py``) trains the
frame-level head on CPU; the eval report must show segment and range EERs far
below chance (50%) at every released resolution, and ``nes2net-score
--frames`` on the eval audio must put the spliced stretch of a known file
within one decision segment (0.16 s) of the truth.
"""

import json

import pytest
from test_localization_inference import read_ranges_csv

from data_prep.partialspoof_demo import read_truth
from speechbrain_nes2net.pretrained.score_cli import main

#: The known file: an eval utterance of the seeded corpus with one spliced stretch
#: (0.41-0.84 s of 3.33 s), chosen among the eval files of a first run of this test.
KNOWN = "CON_E_0000005"
#: Decision segments of the shipped rule (localization_shift).
SEGMENT = 0.16


@pytest.mark.slow
def test_segment_and_range_eer_are_far_below_chance_at_every_resolution(localization_demo):
    out, _, stdout = localization_demo
    report = json.loads((out / "scores" / "partialspoof_eval_report.json").read_text())
    block = report["localization"]
    assert block["range_reference"].endswith("truth.json")  # the exact spliced stretches
    figures = {shift: (r["eer"], r["range_eer"]) for shift, r in block["resolutions"].items()}
    print("eval segment / range EER:", {k: tuple(round(v, 3) for v in p) for k, p in figures.items()})
    assert set(figures) == {"0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64"}
    for shift, (segment_eer, range_eer) in figures.items():
        assert segment_eer < 0.25 and range_eer < 0.25, (shift, segment_eer, range_eer)
    assert "partialspoof_eval segments of 0.16 s: segment EER" in stdout
    rule = json.loads((out / "localization.json").read_text())
    assert rule["segment_shift"] == SEGMENT and rule["dev"]["segment_eer"] < 0.25
    assert 'localization: {"segment_shift": 0.16' in (out / "pretrained" / "hyperparams.yaml").read_text()


@pytest.mark.slow
def test_nes2net_score_frames_finds_the_spliced_stretch_of_the_known_file(localization_demo, tmp_path):
    out, database, _ = localization_demo
    output = tmp_path / "ranges.csv"
    code = main(["--model", str(out / "pretrained"), "--frames", "--quiet",
                 "--output", str(output), str(database / "eval" / "con_wav")])  # fmt: skip
    assert code == 0
    ranges, truth = read_ranges_csv(output), read_truth(database)
    assert set(ranges) == {utt for utt, t in truth.items() if t["split"] == "eval"}

    def found(utt):
        """Each true stretch has a predicted spoof range within one segment at both ends."""
        predicted = [(r.start, r.end) for r in ranges[utt] if r.label == "spoof"]
        return len(predicted) == len(truth[utt]["spoof"]) and all(
            abs(start - s) <= SEGMENT and abs(end - e) <= SEGMENT
            for (s, e), (start, end) in zip(truth[utt]["spoof"], predicted)
        )

    spans = [(r.start, r.end, r.label) for r in ranges[KNOWN]]
    assert truth[KNOWN]["spoof"] == [(0.4108, 0.836)] and found(KNOWN), spans
    assert spans[0][0] == 0.0 and spans[-1][1] == round(truth[KNOWN]["duration"], 6)
    spliced = [utt for utt in ranges if truth[utt]["spoof"]]
    print(f"{sum(map(found, spliced))} of {len(spliced)} spliced eval files within one segment")
    assert sum(map(found, spliced)) >= len(spliced) / 3  # measured: 3 of 6
