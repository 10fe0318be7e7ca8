"""Tests of speechbrain_nes2net.evaluation.metrics and speechbrain_nes2net.evaluation.calibration.

Official parity: every case of tests/data/metrics_reference.json (values
computed by the official ASVspoof 5, ASVspoof 2021 and Nes2Net CtrSVDD scorers)
to 1e-9. Ties: property tests against direct transcriptions of the official
definitions (the DET curve from a stable sort of the concatenated scores; the
ROC curve point by point with scikit-learn's dropping rule).
"""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from speechbrain_nes2net.evaluation import metrics
from speechbrain_nes2net.evaluation.calibration import (
    ScoreCalibration,
    _objective,
    effective_prior,
    decision_from_dev,
    fit_calibration,
)

REFERENCE = json.loads((Path(__file__).resolve().parent / "data" / "metrics_reference.json").read_text())
CASES = REFERENCE["cases"]


def _case_id(case):
    return f"seed{case['seed']}"


# ---------------------------------------------------------------------------
# Official parity on the reference fixture
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_reference_values(case):
    bona, spoof = case["bonafide"], case["spoof"]
    rates = case["asv_rates"]
    eer, threshold = metrics.compute_eer(bona, spoof)
    got = {
        "eer": eer,
        "eer_threshold": threshold,
        "min_dcf": metrics.compute_min_dcf(bona, spoof),
        "act_dcf": metrics.compute_act_dcf(bona, spoof),
        "cllr": metrics.compute_cllr(bona, spoof),
        "min_tdcf_2021": metrics.compute_min_tdcf(
            bona, spoof, rates["pfa_asv"], rates["pmiss_asv"], rates["pfa_spoof_asv"]
        ),
        "ctrsvdd_eer": metrics.compute_ctrsvdd_eer(bona, spoof),
        "ctrsvdd_min_dcf": metrics.compute_ctrsvdd_min_dcf(bona, spoof),
    }
    for key, value in got.items():
        assert isinstance(value, float), key
        assert abs(value - case[key]) <= 1e-9, (key, value, case[key])


def test_reference_covers_ties():
    # Cases 12 and 14 have heavily tied scores: they pin the tie conventions.
    tied = [
        c
        for c in CASES
        if len(set(c["bonafide"] + c["spoof"])) < len(c["bonafide"]) + len(c["spoof"])
    ]
    assert len(tied) >= 2
    # On case 14 the ASVspoof and CtrSVDD EER definitions differ: both matter.
    case = next(c for c in CASES if c["seed"] == 14)
    assert case["eer"] != case["ctrsvdd_eer"]


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_reference_values_independent_of_input_order(case):
    rng = np.random.default_rng(case["seed"])
    bona = rng.permutation(case["bonafide"])
    spoof = rng.permutation(case["spoof"])
    assert metrics.compute_eer(bona, spoof) == pytest.approx(
        (case["eer"], case["eer_threshold"]), abs=1e-12
    )
    assert metrics.compute_ctrsvdd_eer(bona, spoof) == pytest.approx(case["ctrsvdd_eer"], abs=1e-12)
    assert metrics.compute_min_dcf(bona, spoof) == pytest.approx(case["min_dcf"], abs=1e-12)


# ---------------------------------------------------------------------------
# Transcriptions of the official definitions, for property tests with ties
# ---------------------------------------------------------------------------


def official_det_curve(bona, spoof):
    """DET curve as the ASVspoof packages define it: stable sort of the concatenation."""
    scores = np.concatenate((bona, spoof))
    labels = np.concatenate((np.ones(bona.size), np.zeros(spoof.size)))
    order = np.argsort(scores, kind="mergesort")
    labels = labels[order]
    frr = [0.0]
    far = [1.0]
    for k in range(1, scores.size + 1):
        rejected = labels[:k]
        frr.append(rejected.sum() / bona.size)
        far.append((spoof.size - (k - rejected.sum())) / spoof.size)
    thresholds = np.concatenate(([scores[order[0]] - 0.001], scores[order]))
    return np.array(frr), np.array(far), thresholds


def reference_roc(bona, spoof):
    """scikit-learn roc_curve(drop_intermediate=True), one threshold at a time."""
    thresholds = sorted(set(bona.tolist()) | set(spoof.tolist()), reverse=True)
    tps = np.array([np.sum(bona >= t) for t in thresholds])
    fps = np.array([np.sum(spoof >= t) for t in thresholds])
    keep = [0]
    for i in range(1, len(thresholds) - 1):
        step_in = (tps[i] - tps[i - 1], fps[i] - fps[i - 1])
        step_out = (tps[i + 1] - tps[i], fps[i + 1] - fps[i])
        if step_in != step_out:
            keep.append(i)
    if len(thresholds) > 1:
        keep.append(len(thresholds) - 1)
    if len(thresholds) <= 2:
        keep = list(range(len(thresholds)))
    fpr = np.r_[0, fps[keep]] / spoof.size
    tpr = np.r_[0, tps[keep]] / bona.size
    return fpr, tpr, np.r_[np.inf, np.array(thresholds)[keep]]


# Scores on a coarse grid, so that ties within and across classes are common.
tied_scores = st.lists(st.integers(-4, 4).map(lambda v: v / 2), min_size=1, max_size=25)


@settings(max_examples=200, deadline=None)
@given(bona=tied_scores, spoof=tied_scores)
def test_det_curve_matches_official_definition(bona, spoof):
    bona, spoof = np.array(bona), np.array(spoof)
    frr, far, thresholds = metrics.det_curve(bona, spoof)
    ref_frr, ref_far, ref_thresholds = official_det_curve(bona, spoof)
    np.testing.assert_array_equal(frr, ref_frr)
    np.testing.assert_array_equal(far, ref_far)
    np.testing.assert_array_equal(thresholds, ref_thresholds)
    index = np.argmin(np.abs(ref_frr - ref_far))
    assert metrics.compute_eer(bona, spoof) == (
        (ref_frr[index] + ref_far[index]) / 2,
        ref_thresholds[index],
    )


@settings(max_examples=200, deadline=None)
@given(bona=tied_scores, spoof=tied_scores)
def test_ctrsvdd_roc_matches_reference_definition(bona, spoof):
    bona, spoof = np.array(bona), np.array(spoof)
    fpr, tpr, thresholds = metrics.ctrsvdd_roc_curve(bona, spoof)
    ref_fpr, ref_tpr, ref_thresholds = reference_roc(bona, spoof)
    np.testing.assert_array_equal(fpr, ref_fpr)
    np.testing.assert_array_equal(tpr, ref_tpr)
    np.testing.assert_array_equal(thresholds, ref_thresholds)
    fnr = 1 - ref_tpr
    index = np.argmin(np.abs(ref_fpr - fnr))
    assert metrics.compute_ctrsvdd_eer(bona, spoof) == (ref_fpr[index] + fnr[index]) / 2
    assert metrics.compute_ctrsvdd_min_dcf(bona, spoof) == np.min(0.5 * ref_fpr + 0.5 * fnr)


def test_ctrsvdd_roc_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    for _ in range(200):
        bona = np.round(rng.normal(1, 1, rng.integers(1, 40)), 1)
        spoof = np.round(rng.normal(0, 1, rng.integers(1, 40)), 1)
        labels = np.r_[np.ones(bona.size), np.zeros(spoof.size)]
        expected = sklearn_metrics.roc_curve(labels, np.r_[bona, spoof], pos_label=1)
        for got, want in zip(metrics.ctrsvdd_roc_curve(bona, spoof), expected, strict=True):
            np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------
# Hand-computed values and properties
# ---------------------------------------------------------------------------


def test_eer_of_separable_and_reversed_scores():
    assert metrics.compute_eer([3.0, 4.0], [1.0, 2.0]) == (0.0, 2.0)
    eer, _ = metrics.compute_eer([1.0, 2.0], [3.0, 4.0])
    assert eer == 1.0
    assert metrics.compute_ctrsvdd_eer([3.0, 4.0], [1.0, 2.0]) == 0.0


def test_eer_threshold_accepts_and_rejects_as_documented():
    rng = np.random.default_rng(0)
    bona, spoof = rng.normal(1, 1, 3000), rng.normal(-1, 1, 3000)
    eer, threshold = metrics.compute_eer(bona, spoof)
    # The official threshold is the score of the last rejected trial.
    frr = np.mean(bona <= threshold)
    far = np.mean(spoof > threshold)
    assert eer == pytest.approx((frr + far) / 2, abs=1e-12)
    assert abs(eer - 0.1587) < 0.02  # Phi(-1) for two unit Gaussians 2 apart


def test_min_dcf_never_exceeds_one_and_zero_when_separable():
    rng = np.random.default_rng(1)
    bona, spoof = rng.normal(0, 1, 500), rng.normal(0, 1, 500)
    assert metrics.compute_min_dcf(bona, spoof) <= 1.0
    assert metrics.compute_min_dcf(bona + 100, spoof) == 0.0


def test_act_dcf_decides_at_the_bayes_threshold():
    threshold = metrics.bayes_threshold(0.05, 1, 10)
    assert threshold == pytest.approx(-math.log(0.95 / 0.5))
    # A spoof exactly at the threshold is accepted (>=), a bona fide just below is missed.
    assert metrics.compute_act_dcf([5.0], [threshold]) == pytest.approx(1.0)
    assert metrics.compute_act_dcf([np.nextafter(threshold, -np.inf)], [-5.0]) == pytest.approx(
        0.95 / 0.5
    )
    assert metrics.compute_act_dcf([threshold], [np.nextafter(threshold, -np.inf)]) == 0.0


def test_cllr_values_and_large_scores():
    assert metrics.compute_cllr([0.0], [0.0]) == 1.0
    assert metrics.compute_cllr([1e4], [-1e4]) == 0.0
    # Confidently wrong: about |llr| / ln 2 bits per trial, no overflow.
    assert metrics.compute_cllr([-1e4], [1e4]) == pytest.approx(1e4 / math.log(2))


def test_min_tdcf_of_perfect_cm_is_the_asv_floor():
    model = metrics.TDCF_COST_MODEL_2021
    pfa, pmiss, pfa_spoof = 0.01, 0.02, 0.5
    c0 = model["Ptar"] * model["Cmiss"] * pmiss + model["Pnon"] * model["Cfa"] * pfa
    c1 = model["Ptar"] * model["Cmiss"] - c0
    c2 = model["Pspoof"] * model["Cfa_spoof"] * pfa_spoof
    got = metrics.compute_min_tdcf([2.0, 3.0, 4.0], [0.0, 1.0], pfa, pmiss, pfa_spoof)
    assert got == pytest.approx(c0 / (c0 + min(c1, c2)), abs=1e-12)
    # A useless CM (all scores reversed) cannot beat the trivial CM: 1.
    assert metrics.compute_min_tdcf(
        [0.0, 1.0], [2.0, 3.0, 4.0], pfa, pmiss, pfa_spoof
    ) == pytest.approx(1.0)


def test_min_tdcf_rejects_bad_inputs():
    with pytest.raises(ValueError, match="pfa_spoof_asv"):
        metrics.compute_min_tdcf([1.0, 2.0], [0.0, 3.0], 0.1, 0.1, 1.5)
    with pytest.raises(ValueError, match="soft scores"):
        metrics.compute_min_tdcf([1.0, 1.0], [0.0, 0.0], 0.1, 0.1, 0.5)
    with pytest.raises(ValueError, match="sum to 1"):
        metrics.compute_min_tdcf(
            [1.0, 2.0],
            [0.0],
            0.1,
            0.1,
            0.5,
            cost_model={**metrics.TDCF_COST_MODEL_2021, "Pspoof": 0.5},
        )


def test_asv_error_rates_at_the_asv_eer_threshold():
    # Targets 5..8 and non-targets 0, 1, 2, 9: the EER cut rejects 0, 1, 2, 5,
    # whose last score 5 is the threshold (accept >= 5).
    rates = metrics.compute_asv_error_rates([5, 6, 7, 8], [0, 1, 2, 9], [3, 6])
    assert rates["asv_threshold"] == 5.0
    assert rates["asv_eer"] == 0.25
    assert (rates["pfa_asv"], rates["pmiss_asv"]) == (0.25, 0.0)
    assert (rates["pfa_spoof_asv"], rates["pmiss_spoof_asv"]) == (0.5, 0.5)


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------

ALL_METRICS = [
    metrics.compute_eer,
    metrics.compute_min_dcf,
    metrics.compute_act_dcf,
    metrics.compute_cllr,
    metrics.compute_ctrsvdd_eer,
    metrics.compute_ctrsvdd_min_dcf,
    lambda b, s: metrics.compute_min_tdcf(b, s, 0.0188, 0.0188, 0.4607),
]


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_non_finite_scores_are_refused_with_count_and_class(metric):
    with pytest.raises(ValueError, match=r"2 of 4 spoof scores are not finite \(1 NaN, 1 inf\)"):
        metric([1.0, 2.0, 3.0], [0.0, np.nan, np.inf, -1.0])
    with pytest.raises(ValueError, match=r"1 of 3 bona fide scores .*positions \[2\]"):
        metric([1.0, 2.0, -np.inf], [0.0, 0.5])


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_empty_class_is_refused(metric):
    with pytest.raises(ValueError, match="no spoof scores"):
        metric([1.0, 2.0, 3.0], [])
    with pytest.raises(ValueError, match="no bona fide scores"):
        metric(np.array([]), [1.0, 2.0, 3.0])


def test_array_likes_are_accepted_and_shapes_checked():
    bona = torch.tensor([[0.6], [0.7], [0.8]])  # (N, 1) as a model outputs
    assert metrics.compute_eer(bona, (0.1, 0.2)) == (0.0, 0.2)
    with pytest.raises(ValueError, match="1-D"):
        metrics.compute_eer(np.zeros((2, 2)), [0.0])
    with pytest.raises(ValueError, match="must be numbers"):
        metrics.compute_eer(["a"], [0.0])


# ---------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------


def test_calibration_recovers_a_known_affine_map():
    # LLR of N(2, 4) vs N(-2, 4) is exactly the score: hide it behind an affine map.
    rng = np.random.default_rng(3)
    bona, spoof = rng.normal(2, 2, 40000), rng.normal(-2, 2, 40000)
    raw_bona, raw_spoof = 0.25 * bona + 3.0, 0.25 * spoof + 3.0
    cal = fit_calibration(raw_bona, raw_spoof)
    assert cal.scale == pytest.approx(4.0, rel=0.05)
    assert cal.offset == pytest.approx(-12.0, abs=0.3)
    raw = metrics.compute_cllr(raw_bona, raw_spoof)
    calibrated = metrics.compute_cllr(cal.apply(raw_bona), cal.apply(raw_spoof))
    assert calibrated < raw - 0.3
    # Rank metrics do not change under a positive affine map.
    assert (
        metrics.compute_eer(cal.apply(raw_bona), cal.apply(raw_spoof))[0]
        == metrics.compute_eer(raw_bona, raw_spoof)[0]
    )


@pytest.mark.parametrize("prior", [0.5, effective_prior(0.05, 1, 10), 0.2])
def test_calibrated_set_is_left_near_identity(prior):
    rng = np.random.default_rng(4)
    bona, spoof = rng.normal(1.5, math.sqrt(3), 50000), rng.normal(-1.5, math.sqrt(3), 50000)
    cal = fit_calibration(bona, spoof, prior=prior)
    assert cal.scale == pytest.approx(1.0, abs=0.05)
    assert cal.offset == pytest.approx(0.0, abs=0.05)
    assert cal.prior == prior


@settings(max_examples=25, deadline=None)
@given(
    scale=st.floats(0.05, 20.0),
    shift=st.floats(-10.0, 10.0),
    seed=st.integers(0, 1000),
)
def test_calibration_never_increases_cllr(scale, shift, seed):
    rng = np.random.default_rng(seed)
    bona = rng.normal(1.0, 1.0, 300) * scale + shift
    spoof = rng.normal(-1.0, 1.5, 500) * scale + shift
    cal = fit_calibration(bona, spoof)
    raw = metrics.compute_cllr(bona, spoof)
    assert metrics.compute_cllr(cal.apply(bona), cal.apply(spoof)) <= raw + 1e-9


def test_calibration_is_the_optimum_of_the_weighted_objective():
    rng = np.random.default_rng(6)
    bona, spoof = rng.normal(0.5, 1, 700), rng.normal(-0.5, 1.2, 300)
    prior = 0.3
    cal = fit_calibration(bona, spoof, prior=prior)
    x = np.r_[bona, spoof]
    y = np.r_[np.ones(bona.size), np.zeros(spoof.size)]
    w = np.r_[np.full(bona.size, prior / bona.size), np.full(spoof.size, (1 - prior) / spoof.size)]
    logit = math.log(prior / (1 - prior))
    design = np.stack([x, np.ones_like(x)], axis=1)  # raw scores and the offset's column
    best, grad, _ = _objective(np.array([cal.scale, cal.offset]), design, y, w, logit)
    assert np.abs(grad).max() < 1e-7
    for d_scale, d_offset in [(0.01, 0), (-0.01, 0), (0, 0.01), (0, -0.01)]:
        moved = _objective(np.array([cal.scale + d_scale, cal.offset + d_offset]), design, y, w, logit)[
            0
        ]
        assert moved > best


def test_calibration_serialises_and_applies_to_tensors():
    cal = ScoreCalibration(scale=2.0, offset=-0.5, prior=0.3)
    data = json.loads(json.dumps(cal.to_dict()))
    assert ScoreCalibration.from_dict(data) == cal
    out = cal.apply(torch.tensor([0.0, 1.0]))
    assert isinstance(out, torch.Tensor) and out.tolist() == [-0.5, 1.5]
    assert cal.apply([1.0]).tolist() == [1.5]
    with pytest.raises(ValueError, match="scale"):
        ScoreCalibration.from_dict({"offset": 0.0})
    with pytest.raises(ValueError, match="finite"):
        ScoreCalibration(scale=float("nan"), offset=0.0)
    with pytest.raises(ValueError, match="prior"):
        fit_calibration([1.0, 0.0], [0.5, -1.0], prior=1.0)


def test_calibration_warns_on_separable_scores_and_refuses_nan():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cal = fit_calibration([2.0, 3.0], [0.0, 1.0])
    assert any("separate" in str(w.message) for w in caught)
    assert cal.scale > 0 and math.isfinite(cal.scale)
    with pytest.raises(ValueError, match="spoof dev"):
        fit_calibration([1.0, 2.0], [np.nan, 0.0])


@settings(max_examples=100, deadline=None)
@given(
    bona=st.lists(st.integers(-20, 20).map(lambda v: v / 4), min_size=1, max_size=15),
    spoof=st.lists(st.integers(-20, 20).map(lambda v: v / 4), min_size=1, max_size=15),
)
def test_dev_eer_fallback_rule_makes_the_eer_points_decisions(bona, spoof):
    # Too few trials for a calibration: the rule is the dev EER threshold, and it must
    # accept (score >= threshold) exactly the trials that the EER point accepts.
    rule = decision_from_dev(bona, spoof, min_trials=100)
    assert rule.source == "dev_eer"
    _, rejected_at = metrics.compute_eer(bona, spoof)
    for scores in (bona, spoof):
        assert rule.is_bonafide(scores).tolist() == [s > rejected_at for s in scores]


def test_dev_eer_fallback_rejects_every_spoof_of_a_separated_dev_set():
    rule = decision_from_dev([0.6, 0.7, 0.8, 0.5], [0.4, 0.3, 0.2, 0.1], min_trials=100)
    assert rule.source == "dev_eer" and 0.4 < rule.threshold <= 0.5
    assert not rule.is_bonafide([0.4, 0.3, 0.2, 0.1]).any()
    assert rule.is_bonafide([0.6, 0.7, 0.8, 0.5]).all()
