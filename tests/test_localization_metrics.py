"""Segment and range EER, pooling and time ranges, against values computed by hand."""

import numpy as np
import pytest

from speechbrain_nes2net.evaluation import metrics
from speechbrain_nes2net.evaluation.localization import (
    decision_ranges,
    pool_frame_scores,
    range_eer,
    range_trials,
    segment_eer,
    spoof_ranges_from_labels,
    weighted_eer,
)


def test_frames_pool_to_segments_from_the_start_with_a_partial_last_segment():
    frames = [3.0, 1.0, 2.0, 5.0, -1.0]  # 20 ms frames; 40 ms segments: (3, 1) (2, 5) (-1)
    assert pool_frame_scores(frames, 0.02, 0.04).tolist() == [1.0, 2.0, -1.0]
    assert pool_frame_scores(frames, 0.02, 0.04, "mean").tolist() == [2.0, 3.5, -1.0]
    assert pool_frame_scores(frames, 0.02, 0.04, "max").tolist() == [3.0, 5.0, -1.0]
    assert pool_frame_scores(frames, 0.02, 0.08).tolist() == [1.0, -1.0]
    assert pool_frame_scores(frames, 0.02, 0.02).tolist() == frames
    # Finer than the frames: each frame score for each of its segments.
    assert pool_frame_scores([3.0, 1.0], 0.02, 0.01).tolist() == [3.0, 3.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="whole multiple"):
        pool_frame_scores(frames, 0.02, 0.05)


def test_segment_eer_by_hand_with_a_bona_fide_file_an_all_spoof_file_and_a_boundary():
    # 20 ms frame scores pooled (min) to 40 ms segments. "partial" has a spoof
    # stretch that starts inside its second segment, so that segment is spoof.
    frames = {
        "bona_only": [2.0, 2.5, 0.4, 0.9, 1.0, 1.2],   # no spoofed frame
        "all_spoof": [-1.0, 0.0, 0.5, 0.7],            # every frame spoofed
        "partial": [1.5, 1.6, 0.8, -0.5, 0.3, 0.4],
    }
    labels = {"bona_only": [1, 1, 1], "all_spoof": [0, 0], "partial": [1, 0, 1]}
    scores = {k: pool_frame_scores(v, 0.02, 0.04) for k, v in frames.items()}
    assert scores["partial"].tolist() == [1.5, -0.5, 0.3]
    # Bona fide 2.0 0.4 1.0 1.5 0.3, spoof -1.0 0.5 -0.5. Rejecting up to 0.4:
    # miss 2/5 (0.3, 0.4), false alarm 1/3 (0.5 accepted) -> EER (2/5 + 1/3) / 2.
    result = segment_eer(scores, labels)
    assert result["eer"] == pytest.approx(11 / 30, abs=1e-12)
    assert result["eer_threshold"] == 0.4
    assert (result["n_bonafide"], result["n_spoof"]) == (5, 3)
    # The utterance label does not enter: only segment labels do.
    swapped = dict(labels, partial=[0, 1, 0])
    assert segment_eer(scores, swapped)["eer"] != pytest.approx(11 / 30)


def test_segment_eer_cuts_one_extra_segment_and_refuses_more():
    result = segment_eer({"a": [1.0, -1.0, 5.0]}, {"a": [1, 0]})
    assert result["eer"] == 0.0 and result["n_length_mismatch_truncated"] == 1
    with pytest.raises(ValueError, match="tolerance 1"):
        segment_eer({"a": [1.0, -1.0, 5.0, 5.0]}, {"a": [1, 0]})


def test_range_eer_by_hand_with_a_bona_fide_file_an_all_spoof_file_and_a_boundary_inside_a_segment():
    # 0.1 s segments. A: no spoofed time. B: all spoofed. C: 0.25 s (last segment
    # partial), spoofed from 0.15 to 0.22 s, a boundary inside segments 2 and 3.
    utterances = [
        ([1.0, 0.2, 0.8], 0.1, [], 0.3),
        ([-0.5, 0.5], 0.1, [(0.0, 0.2)], 0.2),
        ([0.9, -0.2, 0.6], 0.1, [(0.15, 0.22)], 0.25),
    ]
    result = range_eer(utterances)
    # Bona fide seconds: A 0.3, C 0.1 + 0.05 + 0.03 = 0.48; spoof: B 0.2, C 0.05 + 0.02 = 0.27.
    assert result["bonafide_seconds"] == pytest.approx(0.48)
    assert result["spoof_seconds"] == pytest.approx(0.27)
    # Calling spoof every range scoring <= 0.2: bona fide time rejected 0.05 (C, -0.2)
    # + 0.1 (A, 0.2) = 0.15 of 0.48; spoof time accepted 0.1 (B, 0.5) + 0.02 (C, 0.6)
    # = 0.12 of 0.27. Closest rates of all thresholds; EER their mean.
    assert result["eer"] == pytest.approx((0.15 / 0.48 + 0.12 / 0.27) / 2, abs=1e-12)
    assert result["eer_threshold"] == 0.2
    # A segment-count EER of the same scores is a different number.
    bona, spoof = [1.0, 0.2, 0.8, 0.9, 0.6], [-0.5, 0.5, -0.2]
    assert metrics.compute_eer(bona, spoof)[0] != pytest.approx(result["eer"])


def test_range_eer_is_the_segment_eer_when_the_reference_follows_the_segments():
    # Equal-length segments, labels constant within segments, distinct scores:
    # durations are counts times the shift, so both EERs agree exactly.
    rng = np.random.default_rng(0)
    utterances, bona, spoof = [], [], []
    for _ in range(20):
        n = int(rng.integers(3, 12))
        labels = rng.integers(0, 2, n)
        scores = rng.normal(size=n) + 1.5 * labels
        utterances.append((scores, 0.16, spoof_ranges_from_labels(labels, 0.16), n * 0.16))
        bona.extend(scores[labels == 1])
        spoof.extend(scores[labels == 0])
    expected = metrics.compute_eer(bona, spoof)
    result = range_eer(utterances)
    assert result["eer"] == pytest.approx(expected[0], abs=1e-12) and 0.05 < expected[0] < 0.5
    assert result["eer_threshold"] == expected[1]


def test_weighted_eer_never_splits_equal_scores():
    # One segment, half bona fide and half spoof, one score: no threshold separates
    # them; the best is to reject or accept both (EER 0.5 either way here).
    eer, _ = weighted_eer([0.0, 0.0], [0.5, 0.5], [True, False])
    assert eer == 0.5
    with pytest.raises(ValueError, match="no spoof duration"):
        weighted_eer([0.0], [1.0], [True])


def test_decision_ranges_merge_and_end_at_the_duration():
    ranges = decision_ranges([1.0, 0.5, -2.0, -1.0, 3.0], 0.16, threshold=0.0, duration=0.7)
    assert [(r.start, r.end, r.label) for r in ranges] == [
        (0.0, 0.32, "bonafide"), (0.32, 0.64, "spoof"), (0.64, 0.7, "bonafide")
    ]
    assert [r.score for r in ranges] == [0.75, -1.5, 3.0]
    # A score exactly at the threshold is bona fide (the toolkit's rule, score >= threshold).
    assert decision_ranges([0.0], 0.16, 0.0, 0.1)[0].label == "bonafide"
    # A segment grid longer than the recording is cut; a shorter one is extended.
    assert decision_ranges([1.0, 1.0, 1.0], 0.16, 0.0, 0.2)[-1].end == 0.2
    assert decision_ranges([1.0], 0.16, 0.0, 0.3)[-1].end == 0.3


def test_spoof_ranges_from_labels_use_partialspoof_polarity():
    assert spoof_ranges_from_labels(np.array(["1", "0", "0", "1"]), 0.02) == [(0.02, 0.06)]
    assert spoof_ranges_from_labels([0, 1, 1], 0.16, duration=0.4) == [(0.0, 0.16)]


def test_boundary_inside_a_20ms_frame_by_hand():
    # 0.1 s file, 20 ms frames, spoofed 0.05-0.08 s: the boundary at 0.05 s cuts
    # frame 2 ([0.04, 0.06)) in half. Its segment label is spoof (any part), so the
    # segment EER is 0; in time, that frame's first 10 ms are bona fide speech
    # rejected: bona fide 0.07 s, spoof 0.03 s, and at threshold -1 the false
    # rejection is 0.01 / 0.07 with no miss -> range EER (1/7 + 0) / 2.
    frames = [1.0, 1.0, -1.0, -1.0, 1.0]
    assert segment_eer({"f": frames}, {"f": [1, 1, 0, 0, 1]})["eer"] == 0.0
    result = range_eer([(frames, 0.02, [(0.05, 0.08)], 0.1)])
    assert result["bonafide_seconds"] == pytest.approx(0.07)
    assert result["spoof_seconds"] == pytest.approx(0.03)
    assert result["eer"] == pytest.approx(1 / 14, abs=1e-12) and result["eer_threshold"] == -1.0


def test_overlapping_reference_ranges_count_their_time_once():
    # Two spoof ranges that overlap by 60 ms cover the whole 0.1 s segment, not 0.16 s of it.
    _, weights, bona = range_trials([0.3], 0.1, [(0.0, 0.08), (0.02, 0.1)], 0.1)
    assert weights.sum() == pytest.approx(0.1)
    assert bona.tolist() == [False]
    # The same in a range EER: the overlap must not outweigh the bona fide file.
    overlapping = range_eer([([0.2], 0.1, [(0.0, 0.08), (0.02, 0.1)], 0.1), ([0.1], 0.1, [], 0.1)])
    merged = range_eer([([0.2], 0.1, [(0.0, 0.1)], 0.1), ([0.1], 0.1, [], 0.1)])
    assert overlapping == merged
    assert overlapping["spoof_seconds"] == pytest.approx(0.1)
