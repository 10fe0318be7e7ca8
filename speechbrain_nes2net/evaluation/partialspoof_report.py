"""The ``partialspoof`` report: utterance, segment and localisation (range) EERs.

:func:`partialspoof_report` is the ``partialspoof`` entry of
:data:`speechbrain_nes2net.evaluation.reports.CORPUS_RULES` (see that module
for the score file, manifest and missing-row rules it shares with the other
corpora): utterance-level EER; segment-level EER from segment score files; and,
from frame scores, segment EER at each released resolution and range-based EER
(:mod:`speechbrain_nes2net.evaluation.localization`).

Authors
 * speechbrain-nes2net contributors
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd

from speechbrain_nes2net.evaluation import localization, metrics
from speechbrain_nes2net.evaluation.files import (
    examples,
    load_segment_scores,
)
from speechbrain_nes2net.evaluation.report_blocks import (
    EER_DEFINITION,
    eer_metrics,
    finish_report,
    headline_block,
    metric_block,
    split_by_label,
)
from speechbrain_nes2net.scores import BONAFIDE
from speechbrain_nes2net.segments import SEGMENT_SHIFTS, load_segment_labels

#: Frame hop of frame score files without a ``__shift__`` entry (WavLM / wav2vec 2.0).
DEFAULT_FRAME_SHIFT = 0.02


def _segment_labels_of(segment_labels, utt_id, shift):
    if callable(segment_labels):
        labels = segment_labels(utt_id, shift)
    else:
        labels = segment_labels.get(utt_id)
        if labels is None:
            raise ValueError(f"partialspoof report: no segment labels for {utt_id}")
    # PartialSpoof stores '0'/'1' strings; 1 = bona fide, 0 = spoof.
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"partialspoof report: segment labels of {utt_id} must be 0 (spoof) or 1 (bona fide)"
        )
    return labels


def _segment_block(inputs, data, segment_scores, segment_labels, segment_shift, tolerance):
    if isinstance(segment_scores, (str, Path)):
        segment_scores, stored_shift = load_segment_scores(segment_scores)
        if stored_shift is not None:
            if segment_shift is not None and not math.isclose(stored_shift, segment_shift):
                raise ValueError(
                    f"partialspoof report: segment_shift={segment_shift} but the segment "
                    f"score file says {stored_shift}"
                )
            segment_shift = stored_shift
    if segment_shift is None:
        raise ValueError("partialspoof report: pass segment_shift (seconds) with segment scores")
    ids = list(data["ID"])
    lacking = [i for i in ids if i not in segment_scores]
    if lacking and not inputs.allow_missing:
        raise ValueError(
            f"partialspoof report: {len(lacking)} of {len(ids)} scored utterances have no "
            f"segment scores (e.g. {examples(lacking)}); pass allow_missing=True to leave them out"
        )
    known = set(ids)
    bona_parts, spoof_parts, truncated = [], [], 0
    for utt_id in ids:
        if utt_id not in segment_scores:
            continue
        scores = metrics.as_scores(segment_scores[utt_id], f"segment ({utt_id})")
        labels = _segment_labels_of(segment_labels, utt_id, segment_shift)
        if scores.size != labels.size:
            if abs(scores.size - labels.size) > tolerance:
                raise ValueError(
                    f"partialspoof report: {utt_id} has {scores.size} segment scores but "
                    f"{labels.size} segment labels at shift {segment_shift} s (tolerance "
                    f"{tolerance}); is the shift right?"
                )
            truncated += 1
            length = min(scores.size, labels.size)
            scores, labels = scores[:length], labels[:length]
        bona_parts.append(scores[labels == 1])
        spoof_parts.append(scores[labels == 0])
    bona = np.concatenate(bona_parts) if bona_parts else np.empty(0)
    spoof = np.concatenate(spoof_parts) if spoof_parts else np.empty(0)
    block = headline_block(bona, spoof, eer_metrics, "partialspoof", f"segments at {segment_shift} s")
    block.update(
        shift=float(segment_shift),
        n_utterances=len(ids) - len(lacking),
        n_length_mismatch_truncated=truncated,
        utterances_without_segment_scores=len(lacking),
        segment_scores_without_manifest_row=sum(1 for k in segment_scores if k not in known),
    )
    return block


def _label_source(segment_labels, data):
    """A callable (ID, shift) -> labels: given, a template, or the manifest's templates."""
    if callable(segment_labels):
        return segment_labels
    if isinstance(segment_labels, (str, Path)):
        return lambda utt_id, shift: load_segment_labels(str(segment_labels), utt_id, shift)
    if segment_labels is not None:
        raise ValueError(
            "partialspoof report: with frame_scores, segment_labels is a callable "
            "(ID, shift) -> labels or a label path template with {shift} (default: the "
            "manifest's segment_labels column)"
        )
    if "segment_labels" not in data.columns:
        raise ValueError(
            "partialspoof report: frame_scores need segment labels: the manifest has no "
            "segment_labels column; pass segment_labels (a template or a callable)"
        )
    templates = dict(zip(data["ID"], data["segment_labels"]))
    return lambda utt_id, shift: load_segment_labels(templates[utt_id], utt_id, shift)


def _range_reference(range_reference, labels_of, finest, durations):
    """ID -> spoofed (start, end) stretches: given, from a truth JSON, or from the finest labels."""
    if range_reference is None:
        return lambda utt_id: localization.spoof_ranges_from_labels(
            labels_of(utt_id, finest), finest, durations[utt_id]
        ), f"segment labels at {finest} s"
    if isinstance(range_reference, (str, Path)):
        import json

        table = json.loads(Path(range_reference).read_text(encoding="utf-8"))
        source = str(range_reference)
    else:
        table, source = range_reference, "given ranges"

    def ranges(utt_id):
        """The spoofed (start, end) stretches of ``utt_id`` in the reference."""
        if utt_id not in table:
            raise ValueError(f"partialspoof report: no reference ranges for {utt_id} in {source}")
        entry = table[utt_id]
        return [tuple(pair) for pair in (entry["spoof"] if isinstance(entry, dict) else entry)]

    return ranges, source


def _localization_block(
    inputs, data, frame_scores, segment_labels, resolutions, pooling, range_reference, tolerance
):
    """Segment and range EER at each resolution from frame scores."""
    if isinstance(frame_scores, (str, Path)):
        frame_scores, frame_shift = load_segment_scores(frame_scores)
    else:
        frame_scores, frame_shift = dict(frame_scores), None
    frame_shift = frame_shift or DEFAULT_FRAME_SHIFT
    ids = [i for i in data["ID"] if i in frame_scores]
    lacking = len(data) - len(ids)
    if lacking and not inputs.allow_missing:
        raise ValueError(
            f"partialspoof report: {lacking} of {len(data)} scored utterances have no frame "
            "scores; pass allow_missing=True to leave them out"
        )
    labels_of = _label_source(segment_labels, data)
    asked = resolutions is not None
    resolutions = [float(r) for r in (resolutions or SEGMENT_SHIFTS)]
    unavailable = []
    if not asked and ids:  # the released resolutions whose label files are there
        for shift in list(resolutions):
            try:
                labels_of(ids[0], shift)
            except FileNotFoundError:
                resolutions.remove(shift)
                unavailable.append(shift)
        if not resolutions:
            raise ValueError(
                "partialspoof report: no segment label file at any released resolution"
            )
    durations = dict(zip(data["ID"], data["duration"].astype(float)))
    finest = min(resolutions)
    if range_reference is None and ids and SEGMENT_SHIFTS[0] < finest:
        try:  # the finest released labels, when they are there
            labels_of(ids[0], SEGMENT_SHIFTS[0])
            finest = SEGMENT_SHIFTS[0]
        except FileNotFoundError:
            pass
    reference, reference_source = _range_reference(range_reference, labels_of, finest, durations)
    spoof_ranges = {utt_id: reference(utt_id) for utt_id in ids}
    blocks = {}
    for shift in resolutions:
        scores = {
            utt_id: localization.pool_frame_scores(frame_scores[utt_id], frame_shift, shift, pooling)
            for utt_id in ids
        }
        labels = {utt_id: labels_of(utt_id, shift) for utt_id in ids}
        allowed = tolerance * max(1, round(frame_shift / shift))
        try:
            block = localization.segment_eer(scores, labels, allowed)
        except ValueError as err:
            raise ValueError(f"partialspoof report, segments at {shift} s: {err}") from None
        ranged = localization.range_eer(
            (scores[u], shift, spoof_ranges[u], durations[u]) for u in ids
        )
        block.update(
            range_eer=ranged["eer"],
            range_eer_threshold=ranged["eer_threshold"],
            bonafide_seconds=ranged["bonafide_seconds"],
            spoof_seconds=ranged["spoof_seconds"],
        )
        blocks[f"{shift:.2f}"] = block
    by_min = data[data["ID"].isin(ids)]
    minimum = by_min["ID"].map(lambda u: float(np.min(frame_scores[u])))
    bona = minimum[by_min["label"] == BONAFIDE].to_numpy()
    spoof = minimum[by_min["label"] != BONAFIDE].to_numpy()
    return {
        "frame_shift": frame_shift,
        "pooling": pooling,
        "range_reference": reference_source,
        "n_utterances": len(ids),
        "utterances_without_frame_scores": lacking,
        "resolutions": blocks,
        "resolutions_without_label_files": unavailable,
        "utterance_from_frames": metric_block(bona, spoof, eer_metrics),
    }


def partialspoof_report(
    inputs,
    segment_scores=None,
    segment_labels=None,
    segment_shift=None,
    segment_length_tolerance=1,
    frame_scores=None,
    resolutions=None,
    segment_pooling="min",
    range_reference=None,
):
    """The ``partialspoof`` report of a score file joined to its manifest.

    Arguments
    ---------
    inputs : speechbrain_nes2net.evaluation.reports.ReportInputs
        The joined scores and manifest (as every corpus rule receives them).
    segment_scores : str, Path or dict, optional
        Segment scores (``ID -> scores``, or a file for
        :func:`~speechbrain_nes2net.evaluation.files.load_segment_scores`).
    segment_labels : dict or callable, optional
        ``ID -> labels`` or ``(ID, shift) -> labels`` (1 = bona fide).
    segment_shift : float, optional
        Resolution of ``segment_scores`` in seconds.
    segment_length_tolerance : int
        Score/label length differences cut to the shorter.
    frame_scores : str, Path or dict, optional
        Frame scores of a localisation model (the recipes' ``.npz``).
    resolutions : list of float, optional
        Segment resolutions of the localisation block (default: the released ones).
    segment_pooling : str
        How frames pool into segments (``min``, as PartialSpoof down-samples).
    range_reference : optional
        Exact spoofed ranges for the range-based EER (default: from the labels).

    Returns
    -------
    Report
    """
    corpus = "partialspoof"
    data = inputs.select(pd.Series(True, index=inputs.manifest.index))
    report = inputs.start(
        {
            "segment_shift": segment_shift,
            "segment_length_tolerance": segment_length_tolerance,
            "frame_scores": None if frame_scores is None or isinstance(frame_scores, dict)
            else str(frame_scores),
            "resolutions": resolutions,
            "segment_pooling": segment_pooling,
        }
    )
    bona, spoof = split_by_label(data)
    headline = headline_block(bona, spoof, eer_metrics, corpus, "utterances")
    definitions = dict(EER_DEFINITION)
    if segment_scores is not None:
        if segment_labels is None:
            raise ValueError(
                "partialspoof report: segment_scores need segment_labels (a dict "
                "ID -> labels or a callable (ID, shift) -> labels, 1 = bona fide)"
            )
        report["segment"] = _segment_block(
            inputs, data, segment_scores, segment_labels, segment_shift, segment_length_tolerance
        )
        definitions["segment"] = (
            "EER over all segments of all scored utterances (label 1 = bona fide); "
            "score/label lengths differing by up to the tolerance are cut to the shorter"
        )
    if frame_scores is not None:
        report["localization"] = _localization_block(
            inputs, data, frame_scores, segment_labels, resolutions, segment_pooling,
            range_reference, segment_length_tolerance,
        )  # fmt: skip
        definitions.update(
            localization_segment_eer=(
                f"per resolution: frame scores pooled into segments ({segment_pooling} of the "
                "frames of each segment, from the start of the file; a finer resolution repeats "
                "each frame score), then the EER over all segments of all utterances against "
                "the released segment labels (1 = bona fide)"
            ),
            localization_range_eer=(
                "range-based EER (Zhang et al., Interspeech 2023): the segment scores as time "
                "ranges; at each threshold, bona fide time called spoof over all bona fide time "
                "and spoofed time called bona fide over all spoofed time, summed over the "
                "utterances (each over [0, duration]); the EER where they are closest"
            ),
            localization_utterance_from_frames="utterance EER of each file's minimum frame score",
        )
    return finish_report(report, inputs, data, headline, "utterances", definitions)
