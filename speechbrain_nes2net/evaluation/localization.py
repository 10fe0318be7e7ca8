"""Spoof localisation: frame scores to segments and time ranges, segment and range EER.

A localisation model gives one bona fide score per SSL frame (higher = more
bona fide). Segment ``k`` of a resolution ``shift`` covers ``[k * shift, (k + 1)
* shift)`` seconds; :func:`pool_frame_scores` takes the **minimum** of its
frames by default, as PartialSpoof's ``SegmentEER.py`` down-samples (a segment
is spoof when any part of it is). The segment EER (:func:`segment_eer`) counts
segments; the range-based EER (:func:`range_eer`; L. Zhang et al., "Range-Based
Equal Error Rate for Spoof Localization", Interspeech 2023) measures errors in
time, computed exactly over every distinct score (:func:`weighted_eer`) rather
than by the paper's bisection. docs/LOCALIZATION.md has the details.

Example
-------
>>> frames = np.array([2.0, 1.5, -1.0, -2.0, 0.5, 1.0])   # 20 ms frames
>>> pool_frame_scores(frames, 0.02, 0.04).tolist()         # min of each pair
[1.5, -2.0, 0.5]
>>> [(r.start, r.end, r.label) for r in decision_ranges([1.5, -2.0, 0.5], 0.04, 0.0, 0.12)]
[(0.0, 0.04, 'bonafide'), (0.04, 0.08, 'spoof'), (0.08, 0.12, 'bonafide')]
"""

import csv
import math
from dataclasses import dataclass

import numpy as np

from speechbrain_nes2net.evaluation import metrics
from speechbrain_nes2net.segments import SEGMENT_POOLINGS


def _ratio(numerator, denominator, what):
    """The whole number ``numerator / denominator``, or an error naming ``what``."""
    ratio = numerator / denominator
    whole = round(ratio)
    if whole < 1 or abs(ratio - whole) > 1e-6 * max(1.0, ratio):
        raise ValueError(
            f"{what}: {numerator} s is not a whole multiple of {denominator} s; the "
            "resolutions must nest (PartialSpoof: 0.01, 0.02, ..., 0.64 s on 20 ms frames)"
        )
    return whole


def pool_frame_scores(frame_scores, frame_shift, segment_shift, pooling="min"):
    """Scores of the segments of one file from its frame scores (the last segment may be partial).

    Arguments
    ---------
    frame_scores : array-like
        One bona fide score per frame, from the start of the file.
    frame_shift, segment_shift : float
        Frame hop and segment length in seconds; a segment of a whole number
        of frames pools them, a whole fraction of a frame repeats its score.
    pooling : str
        'min', 'mean' or 'max' of the frames of a segment.

    Returns
    -------
    numpy.ndarray
        ``ceil(n_frames * frame_shift / segment_shift)`` float64 scores.

    Example
    -------
    >>> pool_frame_scores([3.0, 1.0, 2.0], 0.02, 0.04, pooling="mean").tolist()
    [2.0, 2.0]
    >>> pool_frame_scores([3.0, 1.0], 0.02, 0.01).tolist()
    [3.0, 3.0, 1.0, 1.0]
    """
    if pooling not in SEGMENT_POOLINGS:
        raise ValueError(f"pooling={pooling!r} must be one of {list(SEGMENT_POOLINGS)}")
    scores = np.asarray(frame_scores, dtype=np.float64).reshape(-1)
    if segment_shift < frame_shift:
        return np.repeat(scores, _ratio(frame_shift, segment_shift, "frame_shift"))
    size = _ratio(segment_shift, frame_shift, "segment_shift")
    if size == 1 or scores.size == 0:
        return scores.copy()
    n_segments = -(-scores.size // size)
    padded = np.full(n_segments * size, np.nan)
    padded[: scores.size] = scores
    groups = padded.reshape(n_segments, size)
    reduce = {"min": np.nanmin, "mean": np.nanmean, "max": np.nanmax}[pooling]
    return reduce(groups, axis=1)


def segment_trials(scores, labels, tolerance=1, utt_id="utterance"):
    """The bona fide and spoof segment scores of one utterance.

    Arguments
    ---------
    scores, labels : array-like
        Segment scores and labels (1 = bona fide, 0 = spoof, as PartialSpoof's).
    tolerance : int
        Lengths may differ by this many segments (frames and labels round the
        duration differently); both are then cut to the shorter.
    utt_id : str
        For error messages.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, bool)
        Bona fide scores, spoof scores, and whether the lengths were cut.

    Example
    -------
    >>> bona, spoof, cut = segment_trials([1.0, -1.0, 0.5], [1, 0])
    >>> bona.tolist(), spoof.tolist(), cut
    ([1.0], [-1.0], True)
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{utt_id}: segment labels must be 0 (spoof) or 1 (bona fide)")
    cut = scores.size != labels.size
    if cut:
        if abs(scores.size - labels.size) > tolerance:
            raise ValueError(
                f"{utt_id} has {scores.size} segment scores but {labels.size} segment labels "
                f"(tolerance {tolerance}); is the resolution right?"
            )
        length = min(scores.size, labels.size)
        scores, labels = scores[:length], labels[:length]
    return scores[labels == 1], scores[labels == 0], cut


def segment_eer(segment_scores, segment_labels, tolerance=1):
    """Point-based segment EER over all segments of all utterances.

    Arguments
    ---------
    segment_scores, segment_labels : dict
        Utterance ID -> segment scores, and -> labels (1 = bona fide) for each
        scored utterance, at one resolution.
    tolerance : int
        See :func:`segment_trials`.

    Returns
    -------
    dict
        ``eer`` (fraction), ``eer_threshold``, ``n_bonafide``, ``n_spoof``
        (segments), ``n_length_mismatch_truncated`` (utterances).

    Example
    -------
    >>> scores = {"a": [2.0, 1.0], "b": [1.5, -1.0, -0.5]}
    >>> labels = {"a": [1, 1], "b": [1, 0, 0]}
    >>> segment_eer(scores, labels)["eer"]
    0.0
    """
    bona_parts, spoof_parts, truncated = [], [], 0
    for utt_id, scores in segment_scores.items():
        if utt_id not in segment_labels:
            raise ValueError(f"no segment labels for {utt_id}")
        bona, spoof, cut = segment_trials(scores, segment_labels[utt_id], tolerance, utt_id)
        bona_parts.append(bona)
        spoof_parts.append(spoof)
        truncated += int(cut)
    bona = np.concatenate(bona_parts) if bona_parts else np.empty(0)
    spoof = np.concatenate(spoof_parts) if spoof_parts else np.empty(0)
    eer, threshold = metrics.compute_eer(bona, spoof)
    return {
        "eer": eer,
        "eer_threshold": threshold,
        "n_bonafide": int(bona.size),
        "n_spoof": int(spoof.size),
        "n_length_mismatch_truncated": truncated,
    }


def weighted_eer(scores, weights, is_bonafide):
    """EER of weighted trials, thresholds at the distinct scores.

    At threshold ``v`` the trials scoring at most ``v`` are rejected: the miss
    rate is the rejected bona fide weight over all bona fide weight, the false
    alarm rate the accepted spoof weight over all spoof weight. Equal scores are
    never split. As :func:`~speechbrain_nes2net.evaluation.metrics.compute_eer`
    (the same value for unit weights and distinct scores), the EER is the mean
    of the two rates where they are closest (the first on a tie).

    Arguments
    ---------
    scores, weights, is_bonafide : array-like
        Per trial, its score, non-negative weight (duration) and class.

    Returns
    -------
    (float, float)
        The EER (fraction) and its threshold (the highest rejected score).

    Example
    -------
    >>> weighted_eer([1.0, 2.0, 0.0], [1.0, 3.0, 2.0], [True, True, False])
    (0.0, 0.0)
    """
    scores = metrics.as_scores(scores, "weighted")
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    is_bona = np.asarray(is_bonafide, dtype=bool).reshape(-1)
    if not (scores.size == weights.size == is_bona.size):
        raise ValueError("scores, weights and classes must have the same length")
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise ValueError("weights must be finite and non-negative")
    bona_total = weights[is_bona].sum()
    spoof_total = weights[~is_bona].sum()
    if bona_total <= 0 or spoof_total <= 0:
        which = "bona fide" if bona_total <= 0 else "spoof"
        raise ValueError(f"no {which} duration: the EER needs both classes")
    values, inverse = np.unique(scores, return_inverse=True)
    bona_at = np.bincount(inverse, weights=np.where(is_bona, weights, 0.0), minlength=values.size)
    spoof_at = np.bincount(inverse, weights=np.where(is_bona, 0.0, weights), minlength=values.size)
    miss = np.concatenate(([0.0], np.cumsum(bona_at) / bona_total))
    false_alarm = np.concatenate(([1.0], 1.0 - np.cumsum(spoof_at) / spoof_total))
    thresholds = np.concatenate(([values[0] - 0.001], values))
    index = int(np.argmin(np.abs(miss - false_alarm)))
    return float((miss[index] + false_alarm[index]) / 2), float(thresholds[index])


@dataclass(frozen=True)
class TimeRange:
    """A stretch of one recording: ``start`` and ``end`` (seconds), ``label``
    ('bonafide' or 'spoof'; None for a range with a score only) and bona fide
    ``score`` (None for reference ranges)."""

    start: float
    end: float
    label: str = None
    score: float = None


def _grid_ranges(count, shift, duration):
    """(start, end) of ``count`` segments of ``shift`` s covering ``[0, duration]`` once.

    Segments starting at or after ``duration`` are dropped and the last kept
    one ends at ``duration``: a label or score grid rounds the duration either way.
    """
    bounds = []
    for index in range(count):
        start = index * shift
        if duration is not None and start >= duration - 1e-9 and index > 0:
            break
        bounds.append([start, (index + 1) * shift])
    if bounds and duration is not None:
        bounds[-1][1] = duration
    return [(round(s, 6), round(e, 6)) for s, e in bounds]  # microseconds


def decision_ranges(segment_scores, shift, threshold, duration=None):
    """A file's decisions as time ranges: consecutive segments with one label merged.

    A segment is bona fide when its score is at least ``threshold``; a range's
    score is the mean of its segment scores. With ``duration``, segments
    starting after it are dropped and the last range ends there.

    Arguments
    ---------
    segment_scores : array-like
        Bona fide scores of consecutive segments from the start of the file.
    shift, threshold : float
        Segment length in seconds; decision threshold.
    duration : float, optional
        Recording duration in seconds.

    Returns
    -------
    list of TimeRange

    Example
    -------
    >>> ranges = decision_ranges([0.5, 0.7, -1.0, -3.0], 0.16, 0.0, duration=0.6)
    >>> [(r.start, r.end, r.label, r.score) for r in ranges]
    [(0.0, 0.32, 'bonafide', 0.6), (0.32, 0.6, 'spoof', -2.0)]
    """
    scores = np.asarray(segment_scores, dtype=np.float64).reshape(-1)
    bounds = _grid_ranges(scores.size, shift, duration)
    if not bounds:
        return []
    bona = scores[: len(bounds)] >= threshold
    starts = np.flatnonzero(np.r_[True, bona[1:] != bona[:-1]])
    return [
        TimeRange(bounds[a][0], bounds[b - 1][1], "bonafide" if bona[a] else "spoof",
                  float(np.mean(scores[a:b])))
        for a, b in zip(starts, np.r_[starts[1:], len(bounds)])
    ]  # fmt: skip


def range_trials(segment_scores, shift, spoof_ranges, duration):
    """The duration-weighted trials of one utterance for :func:`range_eer`.

    Each scored segment (over ``[0, duration]``, see :func:`decision_ranges`)
    is split at the reference boundaries: the part inside a spoofed range
    (overlapping ranges count once) is a spoof trial, the rest a bona fide
    trial, both with the segment's score and weighted by their length in seconds.

    Arguments
    ---------
    segment_scores : array-like
        Scores of consecutive segments from the start of the file.
    shift, duration : float
        Segment length and recording duration in seconds.
    spoof_ranges : list of (start, end)
        The spoofed stretches of the reference (seconds; any order, may be empty).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        Scores, weights (seconds) and bona fide flags.

    Example
    -------
    >>> scores, weights, bona = range_trials([1.0, -1.0], 0.1, [(0.05, 0.2)], 0.2)
    >>> scores.tolist(), weights.round(3).tolist(), bona.tolist()
    ([1.0, 1.0, -1.0], [0.05, 0.05, 0.1], [True, False, False])
    """
    scores = np.asarray(segment_scores, dtype=np.float64).reshape(-1)
    spoof = []  # sorted, disjoint
    for start, end in sorted(
        (max(0.0, float(s)), min(float(duration), float(e))) for s, e in spoof_ranges
    ):
        if end <= start:
            continue
        if spoof and start <= spoof[-1][1]:
            spoof[-1] = (spoof[-1][0], max(spoof[-1][1], end))
        else:
            spoof.append((start, end))
    out_scores, out_weights, out_bona = [], [], []
    for (start, end), score in zip(_grid_ranges(scores.size, shift, duration), scores):
        covered = sum(max(0.0, min(end, e) - max(start, s)) for s, e in spoof)
        length = end - start
        for weight, bona in ((length - covered, True), (covered, False)):
            if weight > 1e-12:
                out_scores.append(score)
                out_weights.append(weight)
                out_bona.append(bona)
    return np.asarray(out_scores), np.asarray(out_weights), np.asarray(out_bona, dtype=bool)


def range_eer(utterances):
    """Range-based EER (Zhang et al., Interspeech 2023) over many utterances.

    Arguments
    ---------
    utterances : iterable of (segment_scores, shift, spoof_ranges, duration)
        Per utterance, as :func:`range_trials` takes them. Bona fide
        utterances have no spoof range.

    Returns
    -------
    dict
        ``eer`` (fraction), ``eer_threshold``, ``bonafide_seconds``,
        ``spoof_seconds``, ``n_utterances``.

    Example
    -------
    >>> one = ([2.0, -1.0, 1.0], 0.1, [(0.1, 0.2)], 0.3)   # spoof in the middle, found
    >>> range_eer([one])["eer"]
    0.0
    """
    parts = [range_trials(*utterance) for utterance in utterances]
    if not parts:
        raise ValueError("range EER of no utterance")
    scores = np.concatenate([p[0] for p in parts])
    weights = np.concatenate([p[1] for p in parts])
    bona = np.concatenate([p[2] for p in parts])
    eer, threshold = weighted_eer(scores, weights, bona)
    return {
        "eer": eer,
        "eer_threshold": threshold,
        "bonafide_seconds": float(weights[bona].sum()),
        "spoof_seconds": float(weights[~bona].sum()),
        "n_utterances": len(parts),
    }


def spoof_ranges_from_labels(labels, shift, duration=None):
    """The spoofed (start, end) stretches of segment labels (1 = bona fide).

    Example
    -------
    >>> spoof_ranges_from_labels([1, 0, 0, 1, 0], 0.01)
    [(0.01, 0.03), (0.04, 0.05)]
    """
    labels = np.asarray(labels).astype(np.int64)
    return [
        (r.start, r.end)
        for r in decision_ranges(labels, shift, 0.5, duration)
        if r.label == "spoof"
    ]


def segment_count(duration, shift):
    """Segments of ``shift`` seconds that cover ``duration`` seconds (the last one partial).

    Example
    -------
    >>> segment_count(1.0, 0.16), segment_count(0.32, 0.16)
    (7, 2)
    """
    return max(1, math.ceil(round(duration / shift, 6)))


def fit_frames_to_duration(frame_scores, frame_shift, duration):
    """Frame scores cut or extended to the ``ceil(duration / frame_shift)`` frames of a file.

    An SSL model gives up to two frames fewer than the label grid has segments:
    the last frame score is repeated over the missing tail, so that frame ``t``
    stands for ``[t * frame_shift, (t + 1) * frame_shift)``. Frames of
    repeat-padding past the duration are cut.

    Arguments
    ---------
    frame_scores : array-like
        One score per frame from the start of the file.
    frame_shift, duration : float
        Frame hop and the file's duration in seconds.

    Returns
    -------
    numpy.ndarray

    Example
    -------
    >>> fit_frames_to_duration([1.0, 2.0], 0.02, 0.07).tolist()
    [1.0, 2.0, 2.0, 2.0]
    >>> fit_frames_to_duration([1.0, 2.0, 3.0], 0.02, 0.03).tolist()
    [1.0, 2.0]
    """
    scores = np.asarray(frame_scores, dtype=np.float64).reshape(-1)
    count = segment_count(duration, frame_shift)
    if scores.size >= count or scores.size == 0:
        return scores[:count]
    return np.concatenate([scores, np.full(count - scores.size, scores[-1])])


def localize_frames(frame_scores, frame_shift, duration, segment_shift, threshold, pooling="min"):
    """A file's spoof localisation from its frame scores: decided segments as time ranges.

    :func:`fit_frames_to_duration`, :func:`pool_frame_scores`, then
    :func:`decision_ranges`: what ``AntiSpoofModel.localize`` and
    ``nes2net-score --frames`` return.

    Arguments
    ---------
    frame_scores : array-like
        One bona fide score per frame from the start of the file.
    frame_shift, duration, segment_shift : float
        Frame hop, the file's duration and the decision resolution in seconds.
    threshold : float
        Segment decision threshold (bona fide when score >= threshold).
    pooling : str
        How frames combine into a segment ('min', 'mean', 'max').

    Returns
    -------
    list of TimeRange
        Covering ``[0, duration]`` once.

    Example
    -------
    >>> frames = [2.0, 2.0, 2.0, 2.0, -3.0, -1.0, 2.0, 2.0, 1.0]   # 20 ms, 0.17 s file
    >>> [(r.start, r.end, r.label) for r in localize_frames(frames, 0.02, 0.17, 0.04, 0.0)]
    [(0.0, 0.08, 'bonafide'), (0.08, 0.12, 'spoof'), (0.12, 0.17, 'bonafide')]
    """
    frames = fit_frames_to_duration(frame_scores, frame_shift, duration)
    segments = pool_frame_scores(frames, frame_shift, segment_shift, pooling)
    return decision_ranges(segments, segment_shift, threshold, duration)


def write_ranges_csv(handle, rows):
    """Writes ``ID,start,end,label,score`` rows (times in seconds, 6 decimals).

    Arguments
    ---------
    handle : file object
        Opened for text writing.
    rows : iterable of (str, TimeRange)
        (ID, range) pairs.

    Example
    -------
    >>> import io
    >>> out = io.StringIO()
    >>> write_ranges_csv(out, [("f", TimeRange(0.0, 0.32, "spoof", -1.5))])
    >>> print(out.getvalue().strip())
    ID,start,end,label,score
    f,0.000000,0.320000,spoof,-1.500000
    """
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(("ID", "start", "end", "label", "score"))
    for utt_id, item in rows:
        writer.writerow(
            [utt_id, f"{item.start:.6f}", f"{item.end:.6f}", item.label, f"{item.score:.6f}"]
        )
