"""Per-corpus evaluation reports from a score file and a manifest.

:func:`build_report` joins a score file (``ID score`` lines, higher = more bona
fide) to a manifest on ``ID``, applies the rule of a corpus and computes its
official metrics; :func:`~speechbrain_nes2net.evaluation.report_writer.write_report`
writes the report. A per-attack breakdown compares one attack's spoofed trials
with every bona fide trial, a per-codec or per-source one keeps both classes
of that value; a group without one of the classes is listed as ``skipped``.
Selected manifest rows without a score raise unless ``allow_missing=True``,
scores without a row are dropped: both are counted in ``missing``.

Example
-------
>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> manifest = os.path.join(folder, "test.csv")
>>> with open(manifest, "w") as f:
...     _ = f.write("ID,duration,wav,label,attack\\n")
...     _ = f.write("u1,1.0,/a/u1.wav,bonafide,-\\nu2,1.0,/a/u2.wav,bonafide,-\\n")
...     _ = f.write("u3,1.0,/a/u3.wav,spoof,A01\\nu4,1.0,/a/u4.wav,spoof,A02\\n")
>>> scores = os.path.join(folder, "scores.txt")
>>> with open(scores, "w") as f:
...     _ = f.write("u1 2.0\\nu2 0.5\\nu3 1.0\\nu4 -3.0\\n")
>>> report = build_report("eer", scores, manifest)
>>> report["eer"], report["n_bonafide"], report["n_spoof"]
(0.5, 2, 2)
>>> report["breakdowns"]["attack"]["A02"]["eer"]
0.0
>>> written = write_report(report, folder, "demo")
>>> written["json"].name, written["markdown"].name
('demo_report.json', 'demo_report.md')
"""

import inspect
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from speechbrain_nes2net import manifest
from speechbrain_nes2net.evaluation import localization, metrics
from speechbrain_nes2net.evaluation.calibration import load_calibration
from speechbrain_nes2net.evaluation.files import (
    MAX_EXAMPLES,
    examples,
    load_asv_error_rates,
    load_segment_scores,
    read_scores,
)
from speechbrain_nes2net.evaluation.report_writer import write_report
from speechbrain_nes2net.scores import BONAFIDE, SPOOF
from speechbrain_nes2net.segments import SEGMENT_SHIFTS, load_segment_labels

logger = logging.getLogger(__name__)

EER_DEFINITION = {
    "eer": "ASVspoof EER (fraction): mean of miss and false-alarm rates where they are closest",
}
#: Frame hop of frame score files without a ``__shift__`` entry (WavLM / wav2vec 2.0).
DEFAULT_FRAME_SHIFT = 0.02


class Report(dict):
    """A JSON-ready report; ``plot_data`` (not serialised) holds the headline's
    ``bonafide`` and ``spoof`` scores and the spoof scores ``by_attack``, for the plots."""

    plot_data = None


def _split(data):
    """(bona fide, spoof) float64 scores of joined report rows."""
    is_bona = (data["label"] == BONAFIDE).to_numpy()
    scores = data["score"].to_numpy(dtype=np.float64)
    return scores[is_bona], scores[~is_bona]


def _block(bona, spoof, metric_fn):
    """Counts plus ``metric_fn(bona, spoof)``, or a ``skipped`` reason when a class is empty."""
    block = {"n_bonafide": int(bona.size), "n_spoof": int(spoof.size)}
    if bona.size == 0 or spoof.size == 0:
        block["skipped"] = "no bona fide trials" if bona.size == 0 else "no spoof trials"
        return block
    block.update(metric_fn(bona, spoof))
    return block


def _eer_metrics(bona, spoof):
    """The ASVspoof EER and its threshold."""
    eer, threshold = metrics.compute_eer(bona, spoof)
    return {"eer": eer, "eer_threshold": threshold}


def _ctrsvdd_metrics(bona, spoof):
    """The Nes2Net CtrSVDD scorer's EER, its threshold and minDCF."""
    eer, threshold = metrics.compute_ctrsvdd_eer(bona, spoof, return_threshold=True)
    return {
        "eer": eer,
        "eer_threshold": threshold,
        "ctrsvdd_min_dcf": metrics.compute_ctrsvdd_min_dcf(bona, spoof),
    }


def _asvspoof5_metrics(bona, spoof):
    """ASVspoof 5 minDCF, actDCF, Cllr and the EER."""
    return {
        "min_dcf": metrics.compute_min_dcf(bona, spoof),
        "act_dcf": metrics.compute_act_dcf(bona, spoof),
        "cllr": metrics.compute_cllr(bona, spoof),
        **_eer_metrics(bona, spoof),
    }


def _spoof_only(data, column, metric_fn):
    """Each value of ``column`` among the spoof trials against all bona fide trials."""
    bona, _ = _split(data)
    spoofed = data[data["label"] == SPOOF]
    return {
        str(value): _block(bona, rows["score"].to_numpy(dtype=np.float64), metric_fn)
        for value, rows in spoofed.groupby(column, sort=True)
    }


def _both_classes(data, column, metric_fn):
    """Trials of both classes, per value of ``column``."""
    return {
        str(value): _block(*_split(rows), metric_fn)
        for value, rows in data.groupby(column, sort=True)
    }


def _breakdowns(data, metric_fn, **factors):
    """Column -> its breakdown (``_spoof_only`` or ``_both_classes``), for the columns ``data`` has."""
    return {
        col: factor(data, col, metric_fn) for col, factor in factors.items() if col in data.columns
    }


class ReportInputs:
    """The scores and manifest of one report, joined on ``ID``, with the join's counts.

    Arguments
    ---------
    corpus, scores_path, manifest_path, allow_missing
        As :func:`build_report` takes them.
    """

    def __init__(self, corpus, scores_path, manifest_path, allow_missing):
        self.corpus = corpus
        self.scores_path = str(scores_path)
        self.manifest_path = str(manifest_path)
        self.allow_missing = allow_missing
        self.scores = read_scores(scores_path)
        self.manifest = manifest.read_manifest(manifest_path)
        unknown = ~self.scores.index.isin(self.manifest["ID"])
        self.missing = {
            "scores_without_manifest_row": int(unknown.sum()),
            "scores_without_manifest_row_examples": list(self.scores.index[unknown][:MAX_EXAMPLES]),
            "manifest_rows_without_score": 0,
            "manifest_rows_without_score_examples": [],
            "scores_outside_selection": 0,
        }

    def select(self, mask=None):
        """The manifest rows of ``mask`` (default: all) with their ``score``."""
        if mask is None:
            mask = pd.Series(True, index=self.manifest.index)
        selected = self.manifest[mask]
        has_score = selected["ID"].isin(self.scores.index)
        lacking = selected.loc[~has_score, "ID"]
        if len(lacking) and not self.allow_missing:
            raise ValueError(
                f"{self.corpus} report: {len(lacking)} of {len(selected)} selected manifest rows "
                f"of {self.manifest_path} have no score in {self.scores_path} (e.g. "
                f"{examples(lacking)}); score them, or pass allow_missing=True to leave them "
                "out (they are counted in the report)"
            )
        self.missing.update(
            manifest_rows_without_score=len(lacking),
            manifest_rows_without_score_examples=list(lacking[:MAX_EXAMPLES]),
            scores_outside_selection=int(
                self.manifest.loc[~mask, "ID"].isin(self.scores.index).sum()
            ),
        )
        data = selected[has_score].copy()
        data["score"] = self.scores.reindex(data["ID"]).to_numpy()
        return data.reset_index(drop=True)

    def subset(self, subset):
        """The rows of ``subset`` (all rows for None) with their ``score``."""
        frame = self.manifest
        if subset is None:
            return self.select()
        if "subset" not in frame.columns:
            raise ValueError(
                f"{self.corpus} report: subset={subset!r} was asked for but manifest "
                f"{self.manifest_path} has no 'subset' column; pass subset=None to use every row"
            )
        mask = frame["subset"] == subset
        if not mask.any():
            raise ValueError(
                f"{self.corpus} report: no manifest row has subset == {subset!r}; values "
                f"present: {sorted(frame['subset'].unique())}"
            )
        return self.select(mask)

    def headline(self, data, metric_fn, condition):
        """The metric block of ``data``; an error when a class is empty."""
        bona, spoof = _split(data)
        if bona.size == 0 or spoof.size == 0:
            which = "bona fide" if bona.size == 0 else "spoof"
            raise ValueError(
                f"{self.corpus} report: no {which} trials in the selected data ({condition}); "
                "check the manifest labels and the filters"
            )
        return _block(bona, spoof, metric_fn)

    def report(self, options, data, headline, condition, definitions, **sections):
        """The :class:`Report` of the headline rows ``data``, with its ``sections``."""
        report = Report(
            corpus=self.corpus,
            scores_path=self.scores_path,
            manifest_path=self.manifest_path,
            options=options,
            **sections,
        )
        report.update(condition=condition, **headline)
        report.update(definitions=definitions, missing=self.missing)
        bona, spoof = _split(data)
        by_attack = data[data["label"] == SPOOF].groupby("attack", sort=True)["score"]
        report.plot_data = {
            "bonafide": bona,
            "spoof": spoof,
            "by_attack": {str(a): s.to_numpy(dtype=np.float64) for a, s in by_attack},
        }
        return report


# ---------------------------------------------------------------------------
# Corpus rules
# ---------------------------------------------------------------------------


def _ctrsvdd(inputs, include_acesinger_bonafide=False, exclude_attacks=("A14",)):
    """The CtrSVDD report."""
    if "source" not in inputs.manifest.columns:
        raise ValueError(
            f"ctrsvdd report: manifest {inputs.manifest_path} lacks column(s) ['source'] "
            "needed by this corpus rule"
        )
    exclude_attacks = [str(a) for a in exclude_attacks]
    data = inputs.select(~inputs.manifest["attack"].isin(exclude_attacks))
    acesinger_bona = (data["source"].str.lower() == "acesinger") & (data["label"] == BONAFIDE)
    excluded = ", ".join(exclude_attacks) or "no attack"
    conditions = {}
    for key, rows in (
        ("with_acesinger_bonafide", data),
        ("without_acesinger_bonafide", data[~acesinger_bona]),
    ):
        block = inputs.headline(rows, _ctrsvdd_metrics, f"{excluded} excluded, {key}")
        block["attack"] = _spoof_only(rows, "attack", _ctrsvdd_metrics)
        conditions[key] = block
    main = conditions[
        "with_acesinger_bonafide" if include_acesinger_bonafide else "without_acesinger_bonafide"
    ]
    return inputs.report(
        {
            "include_acesinger_bonafide": include_acesinger_bonafide,
            "exclude_attacks": exclude_attacks,
        },
        data if include_acesinger_bonafide else data[~acesinger_bona],
        {k: v for k, v in main.items() if k != "attack"},
        f"{excluded} excluded; ACESinger bona fide "
        + ("included" if include_acesinger_bonafide else "excluded"),
        {
            "eer": "Nes2Net CtrSVDD scorer EER (fraction): ROC curve of scikit-learn, "
            "first point minimising |FPR - FNR|",
            "ctrsvdd_min_dcf": "Nes2Net CtrSVDD scorer minDCF: min over ROC points of "
            "0.5 FPR + 0.5 FNR (unnormalised)",
            "attack": "each attack against all kept bona fide trials",
            "source": "trials of both classes from each source corpus",
        },
        n_acesinger_bonafide=int(acesinger_bona.sum()),
        conditions=conditions,
        breakdowns={
            "attack": main["attack"],
            "source": _both_classes(data, "source", _ctrsvdd_metrics),
        },
    )


def _asv_rates(keys_dir, asv_metadata, asv_scores, asv_rates, subset):
    """(ASV error rates, where they come from), or (None, None) without a source."""
    if asv_rates is not None:
        needed = {"pfa_asv", "pmiss_asv", "pfa_spoof_asv"}
        if not needed <= set(asv_rates):
            raise ValueError(f"asv_rates needs keys {sorted(needed)}, got {sorted(asv_rates)}")
        return {k: float(v) for k, v in asv_rates.items()}, "given"
    if keys_dir is not None:
        root = Path(keys_dir)
        # The keys folder itself or its LA sub-folder.
        la_root = root / "LA" if (root / "LA" / "ASV").is_dir() else root
        asv_metadata = la_root / "ASV" / "trial_metadata.txt"
        asv_scores = la_root / "ASV" / "ASVTorch_Kaldi" / "score.txt"
    if asv_metadata is None or asv_scores is None:
        return None, None
    return load_asv_error_rates(asv_metadata, asv_scores, subset), str(asv_scores)


def _asvspoof2021_la(
    inputs, subset="eval", keys_dir=None, asv_metadata=None, asv_scores=None, asv_rates=None
):
    """The ASVspoof 2021 LA report."""
    data = inputs.subset(subset)
    condition = f"subset {subset}" if subset else "all rows"
    headline = inputs.headline(data, _eer_metrics, condition)
    rates, source = _asv_rates(keys_dir, asv_metadata, asv_scores, asv_rates, subset)
    if rates is not None:
        bona, spoof = _split(data)
        headline["min_tdcf"] = metrics.compute_min_tdcf(
            bona, spoof, rates["pfa_asv"], rates["pmiss_asv"], rates["pfa_spoof_asv"]
        )
        sections = {"asv_rates": rates, "asv_rates_source": source}
    else:
        sections = {
            "min_tdcf_note": "not computed: pass keys_dir (or asv_metadata and asv_scores) or asv_rates"
        }
    return inputs.report(
        {"subset": subset},
        data,
        headline,
        condition,
        {
            **EER_DEFINITION,
            "min_tdcf": "ASVspoof 2021 LA normalised min t-DCF (Pspoof 0.05, Cmiss 1, "
            "Cfa 10, Cfa_spoof 10), pooled",
            "attack": "each attack against all bona fide trials (EER only)",
            "codec": "trials of both classes per codec (EER only)",
        },
        **sections,
        breakdowns=_breakdowns(data, _eer_metrics, attack=_spoof_only, codec=_both_classes),
    )


def _asvspoof2021_df(inputs, subset="eval"):
    """The ASVspoof 2021 DF report."""
    data = inputs.subset(subset)
    condition = f"subset {subset}" if subset else "all rows"
    return inputs.report(
        {"subset": subset},
        data,
        inputs.headline(data, _eer_metrics, condition),
        condition,
        {
            **EER_DEFINITION,
            "codec": "trials of both classes per codec",
            "vocoder": "spoofed trials of each vocoder type against all bona fide trials",
        },
        breakdowns=_breakdowns(data, _eer_metrics, codec=_both_classes, vocoder=_spoof_only),
    )


def _asvspoof5(inputs, calibration=None):
    """The ASVspoof 5 report."""
    calibration = load_calibration(calibration)
    data = inputs.select()
    if calibration is not None:
        data["score"] = calibration.apply(data["score"].to_numpy(dtype=np.float64))
    return inputs.report(
        {"calibration": None if calibration is None else calibration.to_dict()},
        data,
        inputs.headline(data, _asvspoof5_metrics, "all rows"),
        "all rows" + (", calibrated scores" if calibration is not None else ", raw scores"),
        {
            **EER_DEFINITION,
            "min_dcf": "ASVspoof 5 normalised minDCF (Pspoof 0.05, Cmiss 1, Cfa 10)",
            "act_dcf": "ASVspoof 5 normalised actDCF at the Bayes threshold on LLR scores",
            "cllr": "Cllr in bits; actDCF and Cllr assume the scores are LLRs (pass calibration)",
            "attack": "each attack against all bona fide trials",
            "codec": "trials of both classes per codec",
        },
        breakdowns=_breakdowns(data, _asvspoof5_metrics, attack=_spoof_only, codec=_both_classes),
    )


def _eer_only(corpus):
    def rule(inputs):
        """The report of this corpus: pooled EER (and per attack for ``eer``)."""
        data = inputs.select()
        sections = {}
        if corpus == "eer":
            sections["breakdowns"] = _breakdowns(data, _eer_metrics, attack=_spoof_only)
        headline = inputs.headline(data, _eer_metrics, "all rows")
        return inputs.report({}, data, headline, "all rows", dict(EER_DEFINITION), **sections)

    return rule


# ---------------------------------------------------------------------------
# PartialSpoof: utterance, segment and localisation (range) EERs
# ---------------------------------------------------------------------------


def _segment_block(inputs, data, segment_scores, segment_labels, segment_shift, tolerance):
    """Segment EER of segment score files against segment labels at one resolution."""
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
    scored = {i: metrics.as_scores(segment_scores[i], f"segment ({i})")
              for i in ids if i in segment_scores}  # fmt: skip
    if callable(segment_labels):
        labels = {i: segment_labels(i, segment_shift) for i in scored}
    else:
        labels = {i: segment_labels[i] for i in scored if i in segment_labels}
    try:
        block = localization.segment_eer(scored, labels, tolerance)
    except ValueError as err:
        raise ValueError(f"partialspoof report, segments at {segment_shift} s: {err}") from None
    known = set(ids)
    block.update(
        shift=float(segment_shift),
        n_utterances=len(scored),
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
    """(ID -> spoofed (start, end) stretches, its source): given, a truth JSON, or the finest labels."""
    if range_reference is None:
        return lambda utt_id: localization.spoof_ranges_from_labels(
            labels_of(utt_id, finest), finest, durations[utt_id]
        ), f"segment labels at {finest} s"
    if isinstance(range_reference, (str, Path)):
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


def _has_labels(labels_of, utt_id, shift):
    """Whether the label file of ``shift`` is there."""
    try:
        labels_of(utt_id, shift)
    except FileNotFoundError:
        return False
    return True


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
    unavailable = []
    if resolutions is None:  # the released resolutions whose label files are there
        resolutions = [s for s in SEGMENT_SHIFTS if not ids or _has_labels(labels_of, ids[0], s)]
        unavailable = [s for s in SEGMENT_SHIFTS if s not in resolutions]
        if not resolutions:
            raise ValueError(
                "partialspoof report: no segment label file at any released resolution"
            )
    resolutions = [float(r) for r in resolutions]
    durations = dict(zip(data["ID"], data["duration"].astype(float)))
    finest = min(resolutions)
    finer = SEGMENT_SHIFTS[0]
    if range_reference is None and ids and finer < finest and _has_labels(labels_of, ids[0], finer):
        finest = finer
    reference, reference_source = _range_reference(range_reference, labels_of, finest, durations)
    spoof_ranges = {utt_id: reference(utt_id) for utt_id in ids}
    blocks = {}
    for shift in resolutions:
        scores = {
            u: localization.pool_frame_scores(frame_scores[u], frame_shift, shift, pooling)
            for u in ids
        }
        labels = {u: labels_of(u, shift) for u in ids}
        try:
            block = localization.segment_eer(
                scores, labels, tolerance * max(1, round(frame_shift / shift))
            )
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
    rows = data[data["ID"].isin(ids)]
    minimum = rows.assign(score=rows["ID"].map(lambda u: float(np.min(frame_scores[u]))))
    return {
        "frame_shift": frame_shift,
        "pooling": pooling,
        "range_reference": reference_source,
        "n_utterances": len(ids),
        "utterances_without_frame_scores": lacking,
        "resolutions": blocks,
        "resolutions_without_label_files": unavailable,
        "utterance_from_frames": _block(*_split(minimum), _eer_metrics),
    }


def _partialspoof(
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
    """The PartialSpoof report."""
    data = inputs.select()
    headline = inputs.headline(data, _eer_metrics, "utterances")
    definitions, sections = dict(EER_DEFINITION), {}
    if segment_scores is not None:
        if segment_labels is None:
            raise ValueError(
                "partialspoof report: segment_scores need segment_labels (a dict "
                "ID -> labels or a callable (ID, shift) -> labels, 1 = bona fide)"
            )
        sections["segment"] = _segment_block(
            inputs, data, segment_scores, segment_labels, segment_shift, segment_length_tolerance
        )
        definitions["segment"] = (
            "EER over all segments of all scored utterances (label 1 = bona fide); "
            "score/label lengths differing by up to the tolerance are cut to the shorter"
        )
    if frame_scores is not None:
        sections["localization"] = _localization_block(
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
    options = {
        "segment_shift": segment_shift,
        "segment_length_tolerance": segment_length_tolerance,
        "frame_scores": None if frame_scores is None or isinstance(frame_scores, dict)
        else str(frame_scores),
        "resolutions": resolutions,
        "segment_pooling": segment_pooling,
    }  # fmt: skip
    return inputs.report(options, data, headline, "utterances", definitions, **sections)


CORPUS_RULES = {
    "ctrsvdd": _ctrsvdd,
    "asvspoof2021_la": _asvspoof2021_la,
    "asvspoof2021_df": _asvspoof2021_df,
    "asvspoof5": _asvspoof5,
    "in_the_wild": _eer_only("in_the_wild"),
    "partialspoof": _partialspoof,
    "eer": _eer_only("eer"),
}


def build_report(corpus, scores_path, manifest_path, allow_missing=False, **corpus_options):
    """Computes a corpus' evaluation report from a score file and a manifest.

    Arguments
    ---------
    corpus : str
        - ``ctrsvdd``: ``exclude_attacks`` (A14) removed; the Nes2Net CtrSVDD
          scorer's EER and minDCF with and without the ACESinger bona fide
          trials (``source`` acesinger; ``include_acesinger_bonafide`` picks
          the headline); per attack and per source corpus.
        - ``asvspoof2021_la``: rows of ``subset`` ("eval"); EER and min t-DCF
          with the ASV error rates of the organisers' files (``keys_dir``, or
          ``asv_metadata`` + ``asv_scores``) or ``asv_rates`` (``pfa_asv,
          pmiss_asv, pfa_spoof_asv``); per attack and codec.
        - ``asvspoof2021_df``: rows of ``subset``; EER pooled, per codec and vocoder.
        - ``asvspoof5``: minDCF, actDCF, Cllr and EER, pooled, per attack and
          codec; ``calibration`` (a ScoreCalibration, its dict or JSON file)
          maps the scores to LLRs first.
        - ``in_the_wild``: EER. ``eer``: any manifest, EER pooled and per attack.
        - ``partialspoof``: utterance EER; the segment EER of ``segment_scores``
          (``.npz`` or dict; ``segment_shift``) against ``segment_labels``
          (dict or callable ``(ID, shift)``, 1 = bona fide), score and label
          counts differing by up to ``segment_length_tolerance`` (1) cut to the
          shorter; from ``frame_scores`` (``.npz`` with ``__shift__``, or a
          dict), segment and range EER at each of ``resolutions`` (default: the
          released ones with label files), frames pooled by
          ``segment_pooling`` ('min'), against ``segment_labels`` (also a path
          template; default: the manifest's), the ranges of
          ``range_reference`` (ID -> spoofed (start, end), or a JSON file;
          default: the finest labels), and the utterance EER of the minimum
          frame score.
    scores_path, manifest_path : str or Path
        The score file and the manifest of the evaluated set.
    allow_missing : bool
        Leave out (and count) selected manifest rows without a score instead of raising.
    **corpus_options
        The options of the corpus rule, above.

    Returns
    -------
    Report
        A dict with at least ``corpus``, ``condition``, ``eer`` (fraction),
        ``n_bonafide``, ``n_spoof`` and ``missing`` for the headline
        condition, plus ``breakdowns``/``conditions`` per corpus.
    """
    if corpus not in CORPUS_RULES:
        raise ValueError(f"unknown corpus {corpus!r}; choose one of {sorted(CORPUS_RULES)}")
    rule = CORPUS_RULES[corpus]
    accepted = [name for name in inspect.signature(rule).parameters if name != "inputs"]
    unknown = sorted(set(corpus_options) - set(accepted))
    if unknown:
        raise ValueError(
            f"the {corpus} report takes no option {', '.join(unknown)}; its options: "
            f"{', '.join(accepted) or 'none'}"
        )
    report = rule(ReportInputs(corpus, scores_path, manifest_path, allow_missing), **corpus_options)
    report["options"]["allow_missing"] = allow_missing
    return report


def write_corpus_report(
    folder, name, scores_path, test_set, allow_missing=False, frame_scores=None, protocol=None
):  # fmt: skip
    """Writes the corpus report of a test set; a failure is logged, not raised.

    The score file is already written, so a report problem (e.g. missing ASV
    keys) costs no scoring: fix it and rerun ``recipes/evaluate.py``.

    Arguments
    ---------
    folder, name, scores_path
        Output folder, file stem and the set's score file.
    test_set : TestSet
        Its ``manifest`` and ``report`` (``corpus`` and the rule's options).
    allow_missing : bool
        Leave unusable files out of the report (counted in ``missing``).
    frame_scores : str or Path, optional
        A localisation model's frame scores, for the ``partialspoof`` rule.
    protocol : dict, optional
        :func:`~speechbrain_nes2net.evaluation.files.scoring_protocol`, stated in the report.

    Returns
    -------
    dict or None
        The written paths, None on failure.
    """
    options = dict(test_set.report)
    corpus = options.pop("corpus")
    if frame_scores is not None and corpus == "partialspoof":
        options.setdefault("frame_scores", str(frame_scores))
    try:
        report = build_report(
            corpus, scores_path, test_set.manifest, allow_missing=allow_missing, **options
        )
        if protocol is not None:
            report["protocol"] = protocol
        written = write_report(report, folder, name)
    except (ValueError, OSError) as err:
        logger.error("Report %s (%s) not written: %s", name, corpus, err)
        return None
    logger.info("Test set %s: %s report -> %s", name, corpus, written["markdown"])
    return written
