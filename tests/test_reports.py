"""Tests of speechbrain_nes2net.evaluation.reports on small synthetic score files.

Every corpus rule is checked on a set built so that getting the rule wrong
changes the number: attacks that must be excluded score as bona fide, rows of
other subsets are reversed, ACESinger bona fide trials score below all spoofs.
"""

import json
import sys

import numpy as np
import pandas as pd
import pytest

from speechbrain_nes2net.evaluation import metrics
from speechbrain_nes2net.evaluation.calibration import ScoreCalibration
from speechbrain_nes2net.evaluation.files import load_asv_error_rates, read_scores
from speechbrain_nes2net.evaluation.report_writer import write_report
from speechbrain_nes2net.evaluation.reports import build_report
from speechbrain_nes2net.manifest import read_manifest


def write_set(folder, rows, scores=None, name="set"):
    """Writes a manifest (rows: dicts with label/attack/... and 'score') and a score file."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    lines = []
    for i, row in enumerate(rows):
        row = dict(row)
        utt = row.pop("ID", f"utt{i:04d}")
        score = row.pop("score", None)
        records.append(
            {"ID": utt, "duration": 1.0, "wav": f"/data/{utt}.flac", "attack": "-", **row}
        )
        if score is not None:
            lines.append(f"{utt} {score!r}\n")
    manifest = folder / f"{name}.csv"
    pd.DataFrame(records).to_csv(manifest, index=False)
    score_file = folder / f"{name}_scores.txt"
    score_file.write_text("".join(lines) if scores is None else scores)
    return score_file, manifest


def bona(score, **meta):
    return {"label": "bonafide", "attack": "-", "score": score, **meta}


def spoof(score, attack, **meta):
    return {"label": "spoof", "attack": attack, "score": score, **meta}


# ---------------------------------------------------------------------------
# CtrSVDD
# ---------------------------------------------------------------------------


def ctrsvdd_rows():
    rows = [bona(10.0 + i, source="m4singer") for i in range(2)]
    rows += [bona(12.0 + i, source="kising") for i in range(2)]
    # ACESinger bona fide trials score below every spoof.
    rows += [bona(-5.0, source="AceSinger"), bona(-4.0, source="acesinger")]
    for attack in ("A09", "A10", "A11", "A12", "A13"):
        rows += [spoof(0.0, attack, source="m4singer"), spoof(1.0, attack, source="kising")]
    # A14 scores above every bona fide trial: including it would raise the EER.
    rows += [spoof(100.0, "A14", source="m4singer") for _ in range(3)]
    return rows


def test_ctrsvdd_excludes_a14_and_switches_acesinger(tmp_path):
    scores, manifest = write_set(tmp_path, ctrsvdd_rows())
    report = build_report("ctrsvdd", scores, manifest)
    # Headline: A14 out, ACESinger bona fide out -> classes separate perfectly.
    assert report["eer"] == 0.0
    assert (report["n_bonafide"], report["n_spoof"]) == (4, 10)
    assert report["n_acesinger_bonafide"] == 2
    assert "A14" not in report["breakdowns"]["attack"]
    assert report["missing"]["scores_outside_selection"] == 3

    # With the two ACESinger bona fide trials (1/3 of 6) below all spoofs, the
    # scorer's ROC keeps the corner (FPR 0, FNR 1/3): EER = (0 + 1/3) / 2.
    with_ace = report["conditions"]["with_acesinger_bonafide"]
    assert with_ace["n_bonafide"] == 6
    assert with_ace["eer"] == pytest.approx(1 / 6, abs=1e-12)
    assert report["conditions"]["without_acesinger_bonafide"]["eer"] == 0.0

    # Per attack: each attack (2 trials) against all kept bona fide trials.
    for attack in ("A09", "A10", "A11", "A12", "A13"):
        block = with_ace["attack"][attack]
        assert (block["n_bonafide"], block["n_spoof"]) == (6, 2)
        assert block["eer"] == pytest.approx(1 / 6, abs=1e-12)
        assert report["breakdowns"]["attack"][attack] == {
            "n_bonafide": 4,
            "n_spoof": 2,
            "eer": 0.0,
            "eer_threshold": 10.0,
            "ctrsvdd_min_dcf": 0.0,
        }

    switched = build_report("ctrsvdd", scores, manifest, include_acesinger_bonafide=True)
    assert switched["eer"] == pytest.approx(1 / 6, abs=1e-12)
    assert switched["n_bonafide"] == 6
    assert switched["breakdowns"]["attack"]["A09"]["n_bonafide"] == 6


def test_ctrsvdd_without_a14_exclusion_counts_a14(tmp_path):
    scores, manifest = write_set(tmp_path, ctrsvdd_rows())
    report = build_report("ctrsvdd", scores, manifest, exclude_attacks=())
    assert report["n_spoof"] == 13
    assert report["eer"] > 0.1
    assert report["breakdowns"]["attack"]["A14"]["eer"] == 1.0


def test_ctrsvdd_per_source_breakdown(tmp_path):
    scores, manifest = write_set(tmp_path, ctrsvdd_rows())
    sources = build_report("ctrsvdd", scores, manifest)["breakdowns"]["source"]
    # Sources as written (AceSinger and acesinger are different values), one class only -> skipped.
    assert sources["acesinger"] == {"n_bonafide": 1, "n_spoof": 0, "skipped": "no spoof trials"}
    assert sources["m4singer"]["n_bonafide"] == 2 and sources["m4singer"]["n_spoof"] == 5
    assert sources["kising"]["eer"] == 0.0


def test_ctrsvdd_uses_the_scorer_definition_not_asvspoof(tmp_path):
    # Bona fide 10, 11, -5 vs spoof 0, 1: the scorer's ROC drops the point
    # between the two spoofs and keeps the corner (FPR 0, FNR 1/3) -> 1/6; the
    # ASVspoof DET curve stops between the spoofs -> (1/3 + 1/2) / 2.
    rows = [
        bona(10.0, source="m4singer"),
        bona(11.0, source="m4singer"),
        bona(-5.0, source="m4singer"),
    ]
    rows += [spoof(0.0, "A09", source="m4singer"), spoof(1.0, "A10", source="m4singer")]
    scores, manifest = write_set(tmp_path, rows)
    report = build_report("ctrsvdd", scores, manifest)
    assert report["eer"] == pytest.approx(1 / 6, abs=1e-12)
    assert metrics.compute_eer([10.0, 11.0, -5.0], [0.0, 1.0])[0] == pytest.approx(5 / 12)
    assert report["ctrsvdd_min_dcf"] == pytest.approx(1 / 6, abs=1e-12)


def test_ctrsvdd_needs_a_source_column(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "source"} for r in ctrsvdd_rows()]
    scores, manifest = write_set(tmp_path, rows)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['source'\]"):
        build_report("ctrsvdd", scores, manifest)


# ---------------------------------------------------------------------------
# ASVspoof 2021 LA / DF
# ---------------------------------------------------------------------------


def la_rows():
    rows = [bona(5.0 + i, codec="none", subset="eval") for i in range(4)]
    rows += [spoof(float(i), "A07", codec="alaw", subset="eval") for i in range(2)]
    rows += [spoof(2.0 + i, "A08", codec="none", subset="eval") for i in range(2)]
    # Progress trials are reversed: keeping them would break the EER.
    rows += [
        bona(-50.0, subset="progress", codec="none"),
        spoof(50.0, "A07", subset="progress", codec="none"),
    ]
    return rows


def write_asv_keys(root):
    folder = root / "LA" / "ASV"
    (folder / "ASVTorch_Kaldi").mkdir(parents=True)
    trials = [  # (key, score, subset)
        ("target", 5, "eval"),
        ("target", 6, "eval"),
        ("target", 7, "eval"),
        ("target", 8, "eval"),
        ("nontarget", 0, "eval"),
        ("nontarget", 1, "eval"),
        ("nontarget", 2, "eval"),
        ("nontarget", 9, "eval"),
        ("spoof", 3, "eval"),
        ("spoof", 6, "eval"),
        ("nontarget", 100, "progress"),
    ]
    meta = [
        f"LA_00{i % 3} E_{i:04d} alaw ita_tx - {key} notrim {subset}\n"
        for i, (key, _, subset) in enumerate(trials)
    ]
    scores = [f"LA_00{i % 3} E_{i:04d} {score}\n" for i, (_, score, _) in enumerate(trials)]
    (folder / "trial_metadata.txt").write_text("".join(meta))
    (folder / "ASVTorch_Kaldi" / "score.txt").write_text("".join(scores))
    return root


def test_asvspoof2021_la_subset_filter_and_tdcf(tmp_path):
    scores, manifest = write_set(tmp_path, la_rows())
    rates = {"pfa_asv": 0.01, "pmiss_asv": 0.02, "pfa_spoof_asv": 0.4}
    report = build_report("asvspoof2021_la", scores, manifest, asv_rates=rates)
    assert (report["n_bonafide"], report["n_spoof"]) == (4, 4)
    assert report["eer"] == 0.0
    assert report["missing"]["scores_outside_selection"] == 2
    bona_scores, spoof_scores = [5.0, 6.0, 7.0, 8.0], [0.0, 1.0, 2.0, 3.0]
    assert report["min_tdcf"] == pytest.approx(
        metrics.compute_min_tdcf(bona_scores, spoof_scores, 0.01, 0.02, 0.4), abs=1e-12
    )
    assert report["breakdowns"]["attack"]["A07"]["n_bonafide"] == 4
    # Codec is a factor of both classes: alaw has spoofs only.
    assert report["breakdowns"]["codec"]["alaw"]["skipped"] == "no bona fide trials"
    assert report["breakdowns"]["codec"]["none"]["n_spoof"] == 2

    everything = build_report("asvspoof2021_la", scores, manifest, subset=None)
    assert everything["n_bonafide"] == 5 and everything["eer"] > 0.1
    assert "min_tdcf" not in everything and "min_tdcf_note" in everything


def test_asvspoof2021_la_rates_from_organiser_files(tmp_path):
    scores, manifest = write_set(tmp_path, la_rows())
    keys = write_asv_keys(tmp_path / "keys")
    # ASV: targets 5..8, non-targets 0, 1, 2, 9 -> EER threshold 5 (accept >= 5);
    # the progress non-target at 100 must be ignored.
    expected = {"pfa_asv": 0.25, "pmiss_asv": 0.0, "pfa_spoof_asv": 0.5, "pmiss_spoof_asv": 0.5}
    rates = load_asv_error_rates(
        keys / "LA" / "ASV" / "trial_metadata.txt",
        keys / "LA" / "ASV" / "ASVTorch_Kaldi" / "score.txt",
    )
    assert {k: rates[k] for k in expected} == expected
    report = build_report("asvspoof2021_la", scores, manifest, keys_dir=keys)
    assert {k: report["asv_rates"][k] for k in expected} == expected
    assert report["min_tdcf"] == pytest.approx(
        metrics.compute_min_tdcf([5.0, 6.0, 7.0, 8.0], [0.0, 1.0, 2.0, 3.0], 0.25, 0.0, 0.5),
        abs=1e-12,
    )
    same = build_report("asvspoof2021_la", scores, manifest, keys_dir=keys / "LA")
    assert same["min_tdcf"] == report["min_tdcf"]


def test_asv_files_must_line_up(tmp_path):
    keys = write_asv_keys(tmp_path / "keys")
    score_file = keys / "LA" / "ASV" / "ASVTorch_Kaldi" / "score.txt"
    score_file.write_text("".join(score_file.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match="do not match"):
        load_asv_error_rates(keys / "LA" / "ASV" / "trial_metadata.txt", score_file)


def test_subset_filter_needs_a_subset_column(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "subset"} for r in la_rows()]
    scores, manifest = write_set(tmp_path, rows)
    with pytest.raises(ValueError, match="no 'subset' column"):
        build_report("asvspoof2021_df", scores, manifest)
    scores, manifest = write_set(tmp_path / "b", la_rows())
    with pytest.raises(ValueError, match="no manifest row has subset == 'hidden'"):
        build_report("asvspoof2021_df", scores, manifest, subset="hidden")


def test_asvspoof2021_df_per_codec_and_vocoder(tmp_path):
    rows = [
        bona(0.0, codec="nocodec", vocoder="bonafide", subset="eval"),
        bona(2.0, codec="nocodec", vocoder="bonafide", subset="eval"),
        spoof(1.0, "A1", codec="nocodec", vocoder="neural_vocoder_autoregressive", subset="eval"),
        spoof(3.0, "A1", codec="nocodec", vocoder="neural_vocoder_autoregressive", subset="eval"),
        bona(10.0, codec="low_mp3", vocoder="bonafide", subset="eval"),
        spoof(-10.0, "A2", codec="low_mp3", vocoder="traditional_vocoder", subset="eval"),
        spoof(99.0, "A2", codec="low_mp3", vocoder="traditional_vocoder", subset="hidden"),
    ]
    scores, manifest = write_set(tmp_path, rows)
    report = build_report("asvspoof2021_df", scores, manifest)
    assert (report["n_bonafide"], report["n_spoof"]) == (3, 3)
    codec = report["breakdowns"]["codec"]
    # nocodec: bona 0, 2 vs spoof 1, 3 -> the ASVspoof EER is 0.5.
    assert codec["nocodec"]["eer"] == 0.5
    assert codec["low_mp3"]["eer"] == 0.0
    vocoder = report["breakdowns"]["vocoder"]
    assert set(vocoder) == {"neural_vocoder_autoregressive", "traditional_vocoder"}
    assert vocoder["traditional_vocoder"]["n_bonafide"] == 3
    assert vocoder["traditional_vocoder"]["eer"] == 0.0


# ---------------------------------------------------------------------------
# ASVspoof 5, In-the-Wild, generic
# ---------------------------------------------------------------------------


def asvspoof5_rows():
    rows = [bona(4.0 + i, codec="-") for i in range(3)] + [bona(6.0, codec="C01")]
    rows += [
        spoof(-5.0, "A17", codec="-"),
        spoof(-6.0, "A17", codec="C01"),
        spoof(6.5, "A18", codec="C01"),
    ]
    return rows


def test_asvspoof5_metrics_breakdowns_and_calibration(tmp_path):
    scores, manifest = write_set(tmp_path, asvspoof5_rows())
    report = build_report("asvspoof5", scores, manifest)
    bona_scores, spoof_scores = [4.0, 5.0, 6.0, 6.0], [-5.0, -6.0, 6.5]
    assert report["min_dcf"] == metrics.compute_min_dcf(bona_scores, spoof_scores)
    assert report["act_dcf"] == metrics.compute_act_dcf(bona_scores, spoof_scores)
    assert report["cllr"] == metrics.compute_cllr(bona_scores, spoof_scores)
    attack = report["breakdowns"]["attack"]
    assert attack["A17"]["eer"] == 0.0 and attack["A17"]["min_dcf"] == 0.0
    assert attack["A18"]["n_bonafide"] == 4
    codec = report["breakdowns"]["codec"]
    assert (codec["-"]["n_bonafide"], codec["-"]["n_spoof"]) == (3, 1)
    # C01: bona fide 6 vs spoofs -6, 6.5; rejecting -6 gives (FRR 0, FAR 1/2).
    assert codec["C01"]["eer"] == 0.25
    assert codec["C01"]["min_dcf"] == metrics.compute_min_dcf([6.0], [-6.0, 6.5])
    # The Markdown report has the per-codec table with EER and minDCF (docs/ROBUSTNESS.md).
    markdown = write_report(report, tmp_path / "out", "eval")["markdown"].read_text()
    table = markdown.split("## Per codec")[1]
    assert "| codec | bona fide | spoof | EER (%) | minDCF |" in table
    assert f"| C01 | 1 | 2 | 25.000 | {codec['C01']['min_dcf']:.4f} |" in table

    cal = ScoreCalibration(scale=0.5, offset=-20.0)
    shifted = build_report("asvspoof5", scores, manifest, calibration=cal.to_dict())
    assert shifted["eer"] == report["eer"]  # a positive affine map keeps the ranking
    assert shifted["cllr"] == pytest.approx(
        metrics.compute_cllr(cal.apply(bona_scores), cal.apply(spoof_scores)), abs=1e-12
    )
    # Every LLR is now below the Bayes threshold: all bona fide missed.
    assert shifted["act_dcf"] == pytest.approx(0.95 / 0.5)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal.to_dict()))
    assert (
        build_report("asvspoof5", scores, manifest, calibration=str(path))["cllr"]
        == shifted["cllr"]
    )


def test_in_the_wild_and_generic_eer(tmp_path):
    rows = [bona(float(v)) for v in (1, 3, 5, 7)] + [
        spoof(float(v), "spoof") for v in (2, 0, -1, -2)
    ]
    scores, manifest = write_set(tmp_path, rows)
    report = build_report("in_the_wild", scores, manifest)
    # Rejecting 4 trials (-2, -1, 0, 1) misses 1 of 4 bona fide and accepts 1 of 4 spoofs.
    assert report["eer"] == 0.25 and report["eer_threshold"] == 1.0
    assert "breakdowns" not in report
    generic = build_report("eer", scores, manifest)
    assert generic["eer"] == 0.25
    assert generic["breakdowns"]["attack"]["spoof"]["n_spoof"] == 4


# ---------------------------------------------------------------------------
# PartialSpoof
# ---------------------------------------------------------------------------


def partialspoof_set(tmp_path):
    rows = [
        {"ID": "LA_E_1", **bona(3.0)},
        {"ID": "LA_E_2", **bona(2.0)},
        {"ID": "CON_E_1", **spoof(-1.0, "CON")},
        {"ID": "CON_E_2", **spoof(2.5, "CON")},
    ]
    scores, manifest = write_set(tmp_path, rows)
    segments = {
        "LA_E_1": np.array([2.0, 2.0, 2.0]),
        "LA_E_2": np.array([1.0, 1.5]),
        "CON_E_1": np.array([1.2, -3.0, -3.0, 0.9]),
        "CON_E_2": np.array([3.0, -1.0, 0.5]),  # one segment more than labels
    }
    labels = {
        "LA_E_1": np.array(["1", "1", "1"]),
        "LA_E_2": np.array(["1", "1"]),
        "CON_E_1": np.array(["1", "0", "0", "1"]),
        "CON_E_2": np.array(["1", "0"]),
    }
    return scores, manifest, segments, labels


def test_partialspoof_utterance_and_segment_eer(tmp_path):
    scores, manifest, segments, labels = partialspoof_set(tmp_path)
    npz = tmp_path / "segments.npz"
    np.savez(npz, __shift__=0.16, **segments)
    report = build_report(
        "partialspoof", scores, manifest, segment_scores=npz, segment_labels=labels
    )
    assert report["eer"] == metrics.compute_eer([3.0, 2.0], [-1.0, 2.5])[0]
    segment = report["segment"]
    # Bona fide segments: 2, 2, 2, 1, 1.5, 1.2, 0.9, 3 - spoof: -3, -3, -1 (0.5 cut off).
    assert (segment["n_bonafide"], segment["n_spoof"]) == (8, 3)
    assert segment["eer"] == 0.0
    assert segment["n_length_mismatch_truncated"] == 1
    assert segment["shift"] == 0.16

    def label_fn(utt_id, shift):
        assert shift == 0.16
        return labels[utt_id].astype(int)

    again = build_report(
        "partialspoof",
        scores,
        manifest,
        segment_scores=segments,
        segment_labels=label_fn,
        segment_shift=0.16,
    )
    assert again["segment"]["eer"] == 0.0 and again["segment"]["n_bonafide"] == 8


def test_partialspoof_segment_errors(tmp_path):
    scores, manifest, segments, labels = partialspoof_set(tmp_path)
    with pytest.raises(ValueError, match="tolerance"):
        build_report(
            "partialspoof",
            scores,
            manifest,
            segment_scores=segments,
            segment_labels=labels,
            segment_shift=0.16,
            segment_length_tolerance=0,
        )
    npz = tmp_path / "segments.npz"
    np.savez(npz, __shift__=0.16, **segments)
    with pytest.raises(ValueError, match="segment_shift=0.32"):
        build_report(
            "partialspoof",
            scores,
            manifest,
            segment_scores=npz,
            segment_labels=labels,
            segment_shift=0.32,
        )
    partial = {k: v for k, v in segments.items() if k != "LA_E_2"}
    with pytest.raises(ValueError, match="1 of 4 scored utterances have no segment scores"):
        build_report(
            "partialspoof",
            scores,
            manifest,
            segment_scores=partial,
            segment_labels=labels,
            segment_shift=0.16,
        )
    report = build_report(
        "partialspoof",
        scores,
        manifest,
        allow_missing=True,
        segment_scores=partial,
        segment_labels=labels,
        segment_shift=0.16,
    )
    assert report["segment"]["utterances_without_segment_scores"] == 1
    assert report["segment"]["n_bonafide"] == 6


# ---------------------------------------------------------------------------
# Bad input: clear errors or counted skips, never a silently wrong number
# ---------------------------------------------------------------------------


def simple_rows():
    return [bona(1.0), bona(2.0), spoof(0.0, "A01"), spoof(-1.0, "A02")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("utt0000 1.0\nutt0001 2.0 extra\n", r"_scores.txt:2: expected 'ID score', got 3 fields"),
        (
            "utt0000 1.0\n\nutt0001 high\n",
            r"_scores.txt:3: score 'high' of utt0001 is not a number",
        ),
        (
            "utt0000 1.0\nutt0001 2.0\nutt0000 3.0\n",
            r"_scores.txt:3: duplicate ID utt0000 \(first on line 1\)",
        ),
        (
            "utt0000 nan\nutt0001 2.0\nutt0002 inf\n",
            r"2 of 3 scores are NaN or inf: line 1 \(utt0000\), line 3 \(utt0002\)",
        ),
    ],
)
def test_malformed_score_files_name_file_and_line(tmp_path, text, message):
    scores, manifest = write_set(tmp_path, simple_rows(), scores=text)
    with pytest.raises(ValueError, match=message):
        build_report("eer", scores, manifest)


def test_missing_scores_raise_unless_allowed_and_are_counted(tmp_path):
    text = "utt0000 1.0\nutt0001 2.0\nutt0002 0.0\nghost 5.0\n"
    scores, manifest = write_set(tmp_path, simple_rows(), scores=text)
    with pytest.raises(ValueError, match=r"1 of 4 selected manifest rows .* no score .*utt0003"):
        build_report("eer", scores, manifest)
    report = build_report("eer", scores, manifest, allow_missing=True)
    assert (report["n_bonafide"], report["n_spoof"]) == (2, 1)
    missing = report["missing"]
    assert missing["manifest_rows_without_score"] == 1
    assert missing["manifest_rows_without_score_examples"] == ["utt0003"]
    assert missing["scores_without_manifest_row"] == 1
    assert missing["scores_without_manifest_row_examples"] == ["ghost"]


def test_empty_class_after_filtering_is_an_error(tmp_path):
    rows = [bona(1.0, subset="eval"), spoof(0.0, "A07", subset="progress")]
    scores, manifest = write_set(tmp_path, rows)
    with pytest.raises(ValueError, match="no spoof trials in the selected data"):
        build_report("asvspoof2021_df", scores, manifest)


def test_manifest_checks(tmp_path):
    rows = simple_rows()
    rows[1]["label"] = "bona-fide"
    scores, manifest = write_set(tmp_path, rows)
    with pytest.raises(ValueError, match=r"set.csv, line 3: label 'bona-fide'"):
        read_manifest(manifest)
    rows = simple_rows()
    rows[1]["ID"] = "utt0000"
    scores, manifest = write_set(tmp_path / "dup", rows, scores="utt0000 1.0\n")
    with pytest.raises(ValueError, match="utt0000"):
        build_report("eer", scores, manifest)


def test_unknown_corpus_and_option(tmp_path):
    scores, manifest = write_set(tmp_path, simple_rows())
    with pytest.raises(ValueError, match="unknown corpus 'asvspoof2019'"):
        build_report("asvspoof2019", scores, manifest)
    with pytest.raises(ValueError, match="the in_the_wild report takes no option subset; its options: none"):
        build_report("in_the_wild", scores, manifest, subset="eval")
    with pytest.raises(ValueError, match="ctrsvdd report takes no option subset; its options: include_acesinger_bonafide, exclude_attacks"):
        build_report("ctrsvdd", scores, manifest, subset="eval")


def test_read_scores_keeps_order_and_ids(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("b  -1.5\n\na\t2e-3\n")
    scores = read_scores(path)
    assert list(scores.index) == ["b", "a"]
    assert scores.tolist() == [-1.5, 0.002]


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def test_write_report_json_and_markdown(tmp_path):
    scores, manifest = write_set(tmp_path, ctrsvdd_rows())
    report = build_report("ctrsvdd", scores, manifest)
    written = write_report(report, tmp_path / "out", "ctrsvdd_test")
    data = json.loads(written["json"].read_text())
    assert data["eer"] == 0.0 and data["n_bonafide"] == 4 and data["n_spoof"] == 10
    assert data["conditions"]["with_acesinger_bonafide"]["eer"] == pytest.approx(1 / 6)
    text = written["markdown"].read_text()
    assert "| attack | bona fide | spoof | EER (%) |" in text
    assert "| A09 | 4 | 2 | 0.000 |" in text
    assert "| with_acesinger_bonafide | 6 | 10 | 16.667 |" in text
    assert "skipped: no spoof trials" in text
    # A plain dict (no scores attached) still writes JSON and Markdown.
    plain = write_report(dict(report), tmp_path / "plain", "x")
    assert set(plain) == {"json", "markdown"}


def test_write_report_draws_plots_when_matplotlib_is_installed(tmp_path):
    pytest.importorskip("matplotlib")
    scores, manifest = write_set(tmp_path, ctrsvdd_rows())
    written = write_report(build_report("ctrsvdd", scores, manifest), tmp_path / "out", "c")
    for key in ("det", "histogram", "histogram_attacks"):
        assert written[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert written[key].parent == tmp_path / "out"


def test_write_report_without_matplotlib(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    scores, manifest = write_set(tmp_path, simple_rows())
    written = write_report(build_report("eer", scores, manifest), tmp_path / "out", "g")
    assert set(written) == {"json", "markdown"}
