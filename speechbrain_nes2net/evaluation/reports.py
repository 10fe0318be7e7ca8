"""Per-corpus evaluation reports from a score file and a manifest.

:func:`build_report` reads a score file (one ``ID score`` line per utterance,
higher = more bona fide) and a manifest CSV (``ID, duration, wav, label,
attack`` + metadata columns), joins them on ``ID``, applies the corpus rules
below and computes the corpus' official metrics; :func:`write_report` writes
``<name>_report.json``, a Markdown table ``<name>_report.md`` and, when
matplotlib is installed, a DET curve and score histograms beside them.

Corpus rules (``corpus`` argument):

- ``ctrsvdd``: attacks in ``exclude_attacks`` (A14) removed; pooled EER and the
  scorer's minDCF with and without the ACESinger bona fide trials (rows with
  ``source == acesinger``, any case); per attack, each attack against all kept
  bona fide trials; per source corpus. EER and minDCF follow the Nes2Net
  CtrSVDD scorer (:func:`~speechbrain_nes2net.evaluation.metrics.compute_ctrsvdd_eer`).
  ``include_acesinger_bonafide`` picks the headline condition.
- ``asvspoof2021_la``: rows of ``subset`` (``eval``) only; EER and min t-DCF,
  with ASV error rates from the organisers' ASV files (``keys_dir`` or
  ``asv_metadata`` + ``asv_scores``) or given as ``asv_rates``; EER per attack
  and per codec.
- ``asvspoof2021_df``: rows of ``subset`` only; EER pooled, per codec and per
  vocoder type.
- ``asvspoof5``: minDCF, actDCF, Cllr and EER, pooled, per attack and per
  codec; an optional ``calibration`` maps scores to LLRs first.
- ``in_the_wild``: EER.
- ``partialspoof``: utterance-level EER; segment-level EER when
  ``segment_scores`` and ``segment_labels`` are given (see
  :func:`~speechbrain_nes2net.evaluation.files.load_segment_scores`); with
  ``frame_scores`` (the frame scores of a localisation model, an ``.npz`` as
  the recipes write them), the segment EER at every released resolution
  (frames pooled to segments, see
  :mod:`speechbrain_nes2net.evaluation.localization`), the range-based EER at
  each, and the utterance EER of the minimum frame score
  (:mod:`speechbrain_nes2net.evaluation.partialspoof_report`).
- ``eer``: any manifest: EER pooled and per attack.

A per-attack ("spoof-only") breakdown compares the spoofed trials of one value
against every bona fide trial; a per-codec or per-source breakdown keeps the
trials of both classes with that value. A group without one of the classes is
listed with ``skipped`` instead of numbers.

Bad input never gives a silently wrong number: malformed score lines,
duplicate IDs, NaN/inf scores and unknown labels raise errors that name the
file and line; manifest rows (after the corpus filters) without a score raise
unless ``allow_missing=True``, and scores without a manifest row are dropped;
both are counted in the report's ``missing`` section.

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
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from speechbrain_nes2net import manifest
from speechbrain_nes2net.evaluation import metrics
from speechbrain_nes2net.evaluation.calibration import load_calibration
from speechbrain_nes2net.evaluation.files import (
    MAX_EXAMPLES,
    examples,
    load_asv_error_rates,
    read_scores,
)
from speechbrain_nes2net.evaluation.partialspoof_report import partialspoof_report
from speechbrain_nes2net.evaluation.report_blocks import (
    EER_DEFINITION,
    eer_metrics,
    finish_report,
    headline_block,
    metric_block,
    split_by_label,
)
from speechbrain_nes2net.evaluation.report_writer import write_report
from speechbrain_nes2net.scores import BONAFIDE, SPOOF

logger = logging.getLogger(__name__)


class Report(dict):
    """A report: a JSON-ready dict, plus the scores the plots need.

    ``plot_data`` (not serialised) holds ``bonafide`` and ``spoof`` score
    arrays of the headline condition and ``by_attack``, spoof scores per attack.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plot_data = None


# ---------------------------------------------------------------------------
# Reading inputs
# ---------------------------------------------------------------------------


def _require_columns(frame, columns, corpus, manifest_path):
    missing = [col for col in columns if col not in frame.columns]
    if missing:
        raise ValueError(
            f"{corpus} report: manifest {manifest_path} lacks column(s) {missing} "
            "needed by this corpus rule"
        )


class ReportInputs:
    """Scores and manifest of one report, and the bookkeeping of the join."""

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
            "scores_without_manifest_row_examples": list(
                self.scores.index[unknown][:MAX_EXAMPLES]
            ),
            "manifest_rows_without_score": 0,
            "manifest_rows_without_score_examples": [],
            "scores_outside_selection": 0,
        }

    def select(self, mask):
        """Joins the scores onto the manifest rows of ``mask``."""
        selected = self.manifest[mask]
        has_score = selected["ID"].isin(self.scores.index)
        lacking = selected.loc[~has_score, "ID"]
        if len(lacking) and not self.allow_missing:
            raise ValueError(
                f"{self.corpus} report: {len(lacking)} of {len(selected)} selected "
                f"manifest rows of {self.manifest_path} have no score in "
                f"{self.scores_path} (e.g. {examples(lacking)}); score them, or "
                "pass allow_missing=True to leave them out (they are counted in "
                "the report)"
            )
        outside = self.manifest.loc[~mask, "ID"].isin(self.scores.index)
        self.missing.update(
            manifest_rows_without_score=int(len(lacking)),
            manifest_rows_without_score_examples=list(lacking[:MAX_EXAMPLES]),
            scores_outside_selection=int(outside.sum()),
        )
        data = selected[has_score].copy()
        data["score"] = self.scores.reindex(data["ID"]).to_numpy()
        return data.reset_index(drop=True)

    def start(self, options):
        """An empty report that records where its inputs came from."""
        return Report(
            corpus=self.corpus,
            scores_path=self.scores_path,
            manifest_path=self.manifest_path,
            options=options,
        )


# ---------------------------------------------------------------------------
# Metric blocks
# ---------------------------------------------------------------------------


def _spoof_factor(data, column, metric_fn):
    """Each value of ``column`` among spoof trials vs all bona fide trials."""
    bona, _ = split_by_label(data)
    spoof_rows = data[data["label"] == SPOOF]
    out = {}
    for value in sorted(spoof_rows[column].unique()):
        spoof = spoof_rows.loc[spoof_rows[column] == value, "score"].to_numpy(dtype=np.float64)
        out[str(value)] = metric_block(bona, spoof, metric_fn)
    return out


def _both_factor(data, column, metric_fn):
    """Trials of both classes, per value of ``column``."""
    out = {}
    for value in sorted(data[column].unique()):
        bona, spoof = split_by_label(data[data[column] == value])
        out[str(value)] = metric_block(bona, spoof, metric_fn)
    return out


def _ctrsvdd_metrics(bona, spoof):
    eer, threshold = metrics.compute_ctrsvdd_eer(bona, spoof, return_threshold=True)
    return {
        "eer": eer,
        "eer_threshold": threshold,
        "ctrsvdd_min_dcf": metrics.compute_ctrsvdd_min_dcf(bona, spoof),
    }


def _asvspoof5_metrics(bona, spoof):
    return {
        "min_dcf": metrics.compute_min_dcf(bona, spoof),
        "act_dcf": metrics.compute_act_dcf(bona, spoof),
        "cllr": metrics.compute_cllr(bona, spoof),
        **eer_metrics(bona, spoof),
    }


# ---------------------------------------------------------------------------
# Corpus rules
# ---------------------------------------------------------------------------


def _subset_mask(frame, subset, corpus, manifest_path):
    if subset is None:
        return pd.Series(True, index=frame.index)
    if "subset" not in frame.columns:
        raise ValueError(
            f"{corpus} report: subset={subset!r} was asked for but manifest "
            f"{manifest_path} has no 'subset' column; pass subset=None to use every row"
        )
    mask = frame["subset"] == subset
    if not mask.any():
        raise ValueError(
            f"{corpus} report: no manifest row has subset == {subset!r}; values "
            f"present: {sorted(frame['subset'].unique())}"
        )
    return mask


def _ctrsvdd(inputs, include_acesinger_bonafide=False, exclude_attacks=("A14",)):
    frame = inputs.manifest
    _require_columns(frame, ["attack", "source"], "ctrsvdd", inputs.manifest_path)
    exclude_attacks = [str(a) for a in exclude_attacks]
    data = inputs.select(~frame["attack"].isin(exclude_attacks))
    report = inputs.start(
        {
            "include_acesinger_bonafide": include_acesinger_bonafide,
            "exclude_attacks": exclude_attacks,
        }
    )
    acesinger_bona = (data["source"].str.lower() == "acesinger") & (data["label"] == BONAFIDE)
    excluded = ", ".join(exclude_attacks) or "no attack"
    conditions = {}
    for key, keep in (
        ("with_acesinger_bonafide", pd.Series(True, index=data.index)),
        ("without_acesinger_bonafide", ~acesinger_bona),
    ):
        subset = data[keep]
        bona, spoof = split_by_label(subset)
        block = headline_block(bona, spoof, _ctrsvdd_metrics, "ctrsvdd", f"{excluded} excluded, {key}")
        block["attack"] = _spoof_factor(subset, "attack", _ctrsvdd_metrics)
        conditions[key] = block
    main_key = (
        "with_acesinger_bonafide" if include_acesinger_bonafide else "without_acesinger_bonafide"
    )
    main = conditions[main_key]
    report["n_acesinger_bonafide"] = int(acesinger_bona.sum())
    report["conditions"] = conditions
    report["breakdowns"] = {
        "attack": main["attack"],
        "source": _both_factor(data, "source", _ctrsvdd_metrics),
    }
    headline = {k: v for k, v in main.items() if k != "attack"}
    main_data = data if include_acesinger_bonafide else data[~acesinger_bona]
    return finish_report(
        report,
        inputs,
        main_data,
        headline,
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
    )


def _asv_rates(keys_dir, asv_metadata, asv_scores, asv_rates, subset):
    if asv_rates is not None:
        needed = {"pfa_asv", "pmiss_asv", "pfa_spoof_asv"}
        if not needed <= set(asv_rates):
            raise ValueError(f"asv_rates needs keys {sorted(needed)}, got {sorted(asv_rates)}")
        return {k: float(v) for k, v in asv_rates.items()}, "given"
    if keys_dir is not None:
        root = Path(keys_dir)
        # Accept the keys folder itself or its LA sub-folder.
        la_root = root / "LA" if (root / "LA" / "ASV").is_dir() else root
        asv_metadata = la_root / "ASV" / "trial_metadata.txt"
        asv_scores = la_root / "ASV" / "ASVTorch_Kaldi" / "score.txt"
    if asv_metadata is None or asv_scores is None:
        return None, None
    return load_asv_error_rates(asv_metadata, asv_scores, subset), f"{asv_scores}"


def _asvspoof2021_la(
    inputs, subset="eval", keys_dir=None, asv_metadata=None, asv_scores=None, asv_rates=None
):
    corpus = "asvspoof2021_la"
    frame = inputs.manifest
    data = inputs.select(_subset_mask(frame, subset, corpus, inputs.manifest_path))
    report = inputs.start({"subset": subset})
    bona, spoof = split_by_label(data)
    headline = headline_block(bona, spoof, eer_metrics, corpus, f"subset {subset}")
    rates, source = _asv_rates(keys_dir, asv_metadata, asv_scores, asv_rates, subset)
    if rates is not None:
        headline["min_tdcf"] = metrics.compute_min_tdcf(
            bona, spoof, rates["pfa_asv"], rates["pmiss_asv"], rates["pfa_spoof_asv"]
        )
        report["asv_rates"] = rates
        report["asv_rates_source"] = source
    else:
        report["min_tdcf_note"] = (
            "not computed: pass keys_dir (or asv_metadata and asv_scores) or asv_rates"
        )
    breakdowns = {}
    if "attack" in data.columns:
        breakdowns["attack"] = _spoof_factor(data, "attack", eer_metrics)
    if "codec" in data.columns:
        breakdowns["codec"] = _both_factor(data, "codec", eer_metrics)
    report["breakdowns"] = breakdowns
    return finish_report(
        report,
        inputs,
        data,
        headline,
        f"subset {subset}" if subset else "all rows",
        {
            **EER_DEFINITION,
            "min_tdcf": "ASVspoof 2021 LA normalised min t-DCF (Pspoof 0.05, Cmiss 1, "
            "Cfa 10, Cfa_spoof 10), pooled",
            "attack": "each attack against all bona fide trials (EER only)",
            "codec": "trials of both classes per codec (EER only)",
        },
    )


def _asvspoof2021_df(inputs, subset="eval"):
    corpus = "asvspoof2021_df"
    data = inputs.select(_subset_mask(inputs.manifest, subset, corpus, inputs.manifest_path))
    report = inputs.start({"subset": subset})
    bona, spoof = split_by_label(data)
    headline = headline_block(bona, spoof, eer_metrics, corpus, f"subset {subset}")
    breakdowns = {}
    if "codec" in data.columns:
        breakdowns["codec"] = _both_factor(data, "codec", eer_metrics)
    if "vocoder" in data.columns:
        breakdowns["vocoder"] = _spoof_factor(data, "vocoder", eer_metrics)
    report["breakdowns"] = breakdowns
    return finish_report(
        report,
        inputs,
        data,
        headline,
        f"subset {subset}" if subset else "all rows",
        {
            **EER_DEFINITION,
            "codec": "trials of both classes per codec",
            "vocoder": "spoofed trials of each vocoder type against all bona fide trials",
        },
    )


def _asvspoof5(inputs, calibration=None):
    corpus = "asvspoof5"
    calibration = load_calibration(calibration)
    data = inputs.select(pd.Series(True, index=inputs.manifest.index))
    if calibration is not None:
        data["score"] = calibration.apply(data["score"].to_numpy(dtype=np.float64))
    report = inputs.start({"calibration": None if calibration is None else calibration.to_dict()})
    bona, spoof = split_by_label(data)
    headline = headline_block(bona, spoof, _asvspoof5_metrics, corpus, "all rows")
    breakdowns = {}
    if "attack" in data.columns:
        breakdowns["attack"] = _spoof_factor(data, "attack", _asvspoof5_metrics)
    if "codec" in data.columns:
        breakdowns["codec"] = _both_factor(data, "codec", _asvspoof5_metrics)
    report["breakdowns"] = breakdowns
    return finish_report(
        report,
        inputs,
        data,
        headline,
        "all rows" + (", calibrated scores" if calibration is not None else ", raw scores"),
        {
            **EER_DEFINITION,
            "min_dcf": "ASVspoof 5 normalised minDCF (Pspoof 0.05, Cmiss 1, Cfa 10)",
            "act_dcf": "ASVspoof 5 normalised actDCF at the Bayes threshold on LLR scores",
            "cllr": "Cllr in bits; actDCF and Cllr assume the scores are LLRs (pass calibration)",
            "attack": "each attack against all bona fide trials",
            "codec": "trials of both classes per codec",
        },
    )


def _eer_only(corpus):
    def rule(inputs):
        """The report of this corpus: pooled EER (and per attack for ``eer``)."""
        data = inputs.select(pd.Series(True, index=inputs.manifest.index))
        report = inputs.start({})
        bona, spoof = split_by_label(data)
        headline = headline_block(bona, spoof, eer_metrics, corpus, "all rows")
        if corpus == "eer" and "attack" in data.columns:
            report["breakdowns"] = {"attack": _spoof_factor(data, "attack", eer_metrics)}
        return finish_report(report, inputs, data, headline, "all rows", dict(EER_DEFINITION))

    return rule


CORPUS_RULES = {
    "ctrsvdd": _ctrsvdd,
    "asvspoof2021_la": _asvspoof2021_la,
    "asvspoof2021_df": _asvspoof2021_df,
    "asvspoof5": _asvspoof5,
    "in_the_wild": _eer_only("in_the_wild"),
    "partialspoof": partialspoof_report,
    "eer": _eer_only("eer"),
}


def build_report(corpus, scores_path, manifest_path, allow_missing=False, **corpus_options):
    """Computes a corpus' evaluation report from a score file and a manifest.

    Arguments
    ---------
    corpus : str
        One of :data:`CORPUS_RULES`: ``ctrsvdd``, ``asvspoof2021_la``,
        ``asvspoof2021_df``, ``asvspoof5``, ``in_the_wild``, ``partialspoof``,
        ``eer``.
    scores_path : str or Path
        Score file, ``ID score`` per line.
    manifest_path : str or Path
        Manifest CSV of the evaluated set.
    allow_missing : bool
        Leave out (and count) selected manifest rows without a score instead
        of raising.
    **corpus_options
        ``ctrsvdd``: ``include_acesinger_bonafide`` (False),
        ``exclude_attacks`` (``("A14",)``). ``asvspoof2021_la``: ``subset``
        ("eval"), ``keys_dir`` or ``asv_metadata`` + ``asv_scores``, or
        ``asv_rates`` (dict with ``pfa_asv, pmiss_asv, pfa_spoof_asv``).
        ``asvspoof2021_df``: ``subset``. ``asvspoof5``: ``calibration``
        (ScoreCalibration, its dict, or a JSON path). ``partialspoof``:
        ``segment_scores`` (``.npz`` path or dict), ``segment_labels`` (dict
        or callable ``(ID, shift)``, e.g.
        ``functools.partial(speechbrain_nes2net.segments.load_segment_labels,
        template)``), ``segment_shift``, ``segment_length_tolerance`` (1);
        ``frame_scores`` (``.npz`` of ID -> frame scores with ``__shift__``,
        or a dict), ``resolutions`` (default: the released 0.01-0.64 s),
        ``segment_pooling`` ('min'), ``range_reference`` (ID -> spoofed
        (start, end) ranges, or a JSON file of them; default: the labels at
        the finest resolution); ``segment_labels`` then defaults to the
        manifest's ``segment_labels`` templates.

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
    inputs = ReportInputs(corpus, scores_path, manifest_path, allow_missing)
    report = rule(inputs, **corpus_options)
    report["options"]["allow_missing"] = allow_missing
    return report


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def write_corpus_report(
    folder, name, scores_path, test_set, allow_missing=False, frame_scores=None, protocol=None
):  # fmt: skip
    """Writes the corpus report of a test set; a failure is logged, not raised.

    The score file is already written, so a report problem (e.g. missing ASV
    keys) costs no scoring: fix it and rerun ``recipes/evaluate.py``. When
    files were unusable (``allow_missing``), the report leaves them out and
    counts them in its ``missing`` section. ``frame_scores`` (the frame score
    file of a localisation model) goes to the ``partialspoof`` rule.
    ``protocol`` (:func:`~speechbrain_nes2net.evaluation.files.scoring_protocol`)
    is stated in the report.
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
