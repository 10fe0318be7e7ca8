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
  :func:`load_segment_scores`).
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

import importlib.util
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from speechbrain_nes2net import manifest
from speechbrain_nes2net.evaluation import metrics
from speechbrain_nes2net.evaluation.calibration import (
    ScoreCalibration,
    load_calibration,
)

logger = logging.getLogger(__name__)

BONAFIDE = "bonafide"
SPOOF = "spoof"

# How many example IDs the missing section and error messages list.
_MAX_EXAMPLES = 5


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


def _examples(values):
    values = list(values)
    listed = ", ".join(str(v) for v in values[:_MAX_EXAMPLES])
    return listed + (", ..." if len(values) > _MAX_EXAMPLES else "")


def read_scores(path):
    """Reads a score file: one ``ID score`` line per trial, whitespace-separated.

    Arguments
    ---------
    path : str or Path
        The score file. Blank lines are ignored.

    Returns
    -------
    pandas.Series
        Float scores indexed by ID, in file order.

    Raises
    ------
    ValueError
        Naming the file and line, for a line without exactly two fields, a
        score that is not a number, a duplicate ID, or NaN/inf scores.

    Example
    -------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "scores.txt")
    >>> with open(path, "w") as f:
    ...     _ = f.write("a 1.5\\nb -2\\n")
    >>> read_scores(path).to_dict()
    {'a': 1.5, 'b': -2.0}
    """
    ids, values, first_line = [], [], {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(
                    f"{path}:{line_no}: expected 'ID score', got {len(fields)} "
                    f"fields: {line.strip()[:80]!r}"
                )
            utt_id, text = fields
            try:
                value = float(text)
            except ValueError:
                raise ValueError(
                    f"{path}:{line_no}: score {text!r} of {utt_id} is not a number"
                ) from None
            if utt_id in first_line:
                raise ValueError(
                    f"{path}:{line_no}: duplicate ID {utt_id} (first on line "
                    f"{first_line[utt_id]}); score each trial once"
                )
            first_line[utt_id] = line_no
            ids.append(utt_id)
            values.append(value)
    scores = pd.Series(np.asarray(values, dtype=np.float64), index=ids, name="score")
    bad = ~np.isfinite(scores.to_numpy())
    if bad.any():
        where = [f"line {first_line[i]} ({i})" for i in scores.index[bad]]
        raise ValueError(
            f"{path}: {int(bad.sum())} of {len(scores)} scores are NaN or inf: "
            f"{_examples(where)}; fix the model output or drop these trials"
        )
    return scores


def read_manifest(path):
    """Reads a manifest with the one schema's reader (:func:`speechbrain_nes2net.manifest.read_manifest`).

    Errors (missing columns, duplicate IDs, unknown labels, a wrong
    delimiter) name the file and line; the ``duration`` column is not needed
    here, so it stays as read.
    """
    return manifest.read_manifest(path)


def _require_columns(frame, columns, corpus, manifest_path):
    missing = [col for col in columns if col not in frame.columns]
    if missing:
        raise ValueError(
            f"{corpus} report: manifest {manifest_path} lacks column(s) {missing} "
            "needed by this corpus rule"
        )


class _Inputs:
    """Scores and manifest of one report, and the bookkeeping of the join."""

    def __init__(self, corpus, scores_path, manifest_path, allow_missing):
        self.corpus = corpus
        self.scores_path = str(scores_path)
        self.manifest_path = str(manifest_path)
        self.allow_missing = allow_missing
        self.scores = read_scores(scores_path)
        self.manifest = read_manifest(manifest_path)
        unknown = ~self.scores.index.isin(self.manifest["ID"])
        self.missing = {
            "scores_without_manifest_row": int(unknown.sum()),
            "scores_without_manifest_row_examples": list(
                self.scores.index[unknown][:_MAX_EXAMPLES]
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
                f"{self.scores_path} (e.g. {_examples(lacking)}); score them, or "
                "pass allow_missing=True to leave them out (they are counted in "
                "the report)"
            )
        outside = self.manifest.loc[~mask, "ID"].isin(self.scores.index)
        self.missing.update(
            manifest_rows_without_score=int(len(lacking)),
            manifest_rows_without_score_examples=list(lacking[:_MAX_EXAMPLES]),
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


def _split(data):
    is_bona = (data["label"] == BONAFIDE).to_numpy()
    scores = data["score"].to_numpy(dtype=np.float64)
    return scores[is_bona], scores[~is_bona]


def _block(bona, spoof, metric_fn):
    """Counts plus metrics, or a ``skipped`` reason when a class is empty."""
    block = {"n_bonafide": int(bona.size), "n_spoof": int(spoof.size)}
    if bona.size == 0 or spoof.size == 0:
        block["skipped"] = "no bona fide trials" if bona.size == 0 else "no spoof trials"
        return block
    block.update(metric_fn(bona, spoof))
    return block


def _headline(bona, spoof, metric_fn, corpus, condition):
    if bona.size == 0 or spoof.size == 0:
        which = "bona fide" if bona.size == 0 else "spoof"
        raise ValueError(
            f"{corpus} report: no {which} trials in the selected data "
            f"({condition}); check the manifest labels and the filters"
        )
    return _block(bona, spoof, metric_fn)


def _spoof_factor(data, column, metric_fn):
    """Each value of ``column`` among spoof trials vs all bona fide trials."""
    bona, _ = _split(data)
    spoof_rows = data[data["label"] == SPOOF]
    out = {}
    for value in sorted(spoof_rows[column].unique()):
        spoof = spoof_rows.loc[spoof_rows[column] == value, "score"].to_numpy(dtype=np.float64)
        out[str(value)] = _block(bona, spoof, metric_fn)
    return out


def _both_factor(data, column, metric_fn):
    """Trials of both classes, per value of ``column``."""
    out = {}
    for value in sorted(data[column].unique()):
        bona, spoof = _split(data[data[column] == value])
        out[str(value)] = _block(bona, spoof, metric_fn)
    return out


def _eer_metrics(bona, spoof):
    eer, threshold = metrics.compute_eer(bona, spoof)
    return {"eer": eer, "eer_threshold": threshold}


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
        **_eer_metrics(bona, spoof),
    }


def _plot_data(data):
    bona, spoof = _split(data)
    by_attack = {}
    if "attack" in data.columns:
        spoof_rows = data[data["label"] == SPOOF]
        for attack, rows in spoof_rows.groupby("attack", sort=True):
            by_attack[str(attack)] = rows["score"].to_numpy(dtype=np.float64)
    return {"bonafide": bona, "spoof": spoof, "by_attack": by_attack}


def _finish(report, inputs, data, headline, condition, definitions):
    report["condition"] = condition
    report.update(headline)
    report["definitions"] = definitions
    report["missing"] = inputs.missing
    report.plot_data = _plot_data(data)
    return report


_EER_DEFINITION = {
    "eer": "ASVspoof EER (fraction): mean of miss and false-alarm rates where they are closest",
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
        bona, spoof = _split(subset)
        block = _headline(bona, spoof, _ctrsvdd_metrics, "ctrsvdd", f"{excluded} excluded, {key}")
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
    return _finish(
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


def _read_whitespace_table(path, n_columns, what):
    frame = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, keep_default_na=False)
    if frame.shape[1] != n_columns:
        raise ValueError(
            f"{path}: expected {n_columns} space-separated columns ({what}), got {frame.shape[1]}"
        )
    return frame


def load_asv_error_rates(asv_metadata, asv_scores, subset="eval"):
    """ASV error rates for the t-DCF from the organisers' ASVspoof 2021 LA files.

    Reads ``keys/LA/ASV/trial_metadata.txt`` (8 columns: speaker, trial,
    codec, transmission, attack, key ``target|nontarget|spoof``, trim, subset)
    and ``keys/LA/ASV/ASVTorch_Kaldi/score.txt`` (3 columns: claimed speaker,
    trial, score), keeps the rows of ``subset`` and returns the rates at the
    ASV EER threshold (:func:`~speechbrain_nes2net.evaluation.metrics.compute_asv_error_rates`).

    Arguments
    ---------
    asv_metadata : str or Path
        The ASV trial metadata (key) file.
    asv_scores : str or Path
        The organisers' ASV score file, line by line aligned with the metadata
        (or with unique trial IDs, joined on them).
    subset : str or None
        Subset to keep (``eval``, ``progress``, ``hidden``); None keeps all.

    Returns
    -------
    dict
        ``pfa_asv``, ``pmiss_asv``, ``pmiss_spoof_asv``, ``pfa_spoof_asv``,
        ``asv_threshold``, ``asv_eer``.
    """
    meta = _read_whitespace_table(asv_metadata, 8, "ASV trial metadata")
    scores = _read_whitespace_table(asv_scores, 3, "claimed speaker, trial, score")
    if len(meta) == len(scores) and (meta[1].to_numpy() == scores[1].to_numpy()).all():
        values = scores[2]
    elif meta[1].is_unique and scores[1].is_unique and set(meta[1]) == set(scores[1]):
        values = scores.set_index(1)[2].reindex(meta[1]).reset_index(drop=True)
    else:
        raise ValueError(
            f"ASV scores {asv_scores} ({len(scores)} lines) do not match the ASV "
            f"metadata {asv_metadata} ({len(meta)} lines) line by line or by trial ID"
        )
    try:
        values = values.astype(np.float64).to_numpy()
    except ValueError as err:
        raise ValueError(f"{asv_scores}: non-numeric ASV score ({err})") from None
    keep = np.ones(len(meta), dtype=bool) if subset is None else (meta[7] == subset).to_numpy()
    if not keep.any():
        raise ValueError(f"{asv_metadata}: no ASV trial in subset {subset!r}")
    key = meta[5].to_numpy()
    unknown = set(key[keep]) - {"target", "nontarget", "spoof"}
    if unknown:
        raise ValueError(
            f"{asv_metadata}: key column (6th) must be target/nontarget/spoof, "
            f"got {sorted(unknown)}"
        )
    return metrics.compute_asv_error_rates(
        values[keep & (key == "target")],
        values[keep & (key == "nontarget")],
        values[keep & (key == "spoof")],
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
    bona, spoof = _split(data)
    headline = _headline(bona, spoof, _eer_metrics, corpus, f"subset {subset}")
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
        breakdowns["attack"] = _spoof_factor(data, "attack", _eer_metrics)
    if "codec" in data.columns:
        breakdowns["codec"] = _both_factor(data, "codec", _eer_metrics)
    report["breakdowns"] = breakdowns
    return _finish(
        report,
        inputs,
        data,
        headline,
        f"subset {subset}" if subset else "all rows",
        {
            **_EER_DEFINITION,
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
    bona, spoof = _split(data)
    headline = _headline(bona, spoof, _eer_metrics, corpus, f"subset {subset}")
    breakdowns = {}
    if "codec" in data.columns:
        breakdowns["codec"] = _both_factor(data, "codec", _eer_metrics)
    if "vocoder" in data.columns:
        breakdowns["vocoder"] = _spoof_factor(data, "vocoder", _eer_metrics)
    report["breakdowns"] = breakdowns
    return _finish(
        report,
        inputs,
        data,
        headline,
        f"subset {subset}" if subset else "all rows",
        {
            **_EER_DEFINITION,
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
    bona, spoof = _split(data)
    headline = _headline(bona, spoof, _asvspoof5_metrics, corpus, "all rows")
    breakdowns = {}
    if "attack" in data.columns:
        breakdowns["attack"] = _spoof_factor(data, "attack", _asvspoof5_metrics)
    if "codec" in data.columns:
        breakdowns["codec"] = _both_factor(data, "codec", _asvspoof5_metrics)
    report["breakdowns"] = breakdowns
    return _finish(
        report,
        inputs,
        data,
        headline,
        "all rows" + (", calibrated scores" if calibration is not None else ", raw scores"),
        {
            **_EER_DEFINITION,
            "min_dcf": "ASVspoof 5 normalised minDCF (Pspoof 0.05, Cmiss 1, Cfa 10)",
            "act_dcf": "ASVspoof 5 normalised actDCF at the Bayes threshold on LLR scores",
            "cllr": "Cllr in bits; actDCF and Cllr assume the scores are LLRs (pass calibration)",
            "attack": "each attack against all bona fide trials",
            "codec": "trials of both classes per codec",
        },
    )


def _eer_only(corpus):
    def rule(inputs):
        data = inputs.select(pd.Series(True, index=inputs.manifest.index))
        report = inputs.start({})
        bona, spoof = _split(data)
        headline = _headline(bona, spoof, _eer_metrics, corpus, "all rows")
        if corpus == "eer" and "attack" in data.columns:
            report["breakdowns"] = {"attack": _spoof_factor(data, "attack", _eer_metrics)}
        return _finish(report, inputs, data, headline, "all rows", dict(_EER_DEFINITION))

    return rule


def load_segment_scores(path):
    """Loads segment-level scores: an ``.npz`` of ID -> 1-D score array.

    Format: ``numpy.savez(path, **{utt_id: scores, "__shift__": shift})``,
    one array per utterance with one score per segment (higher = more bona
    fide), segment ``k`` covering ``[k * shift, (k + 1) * shift)`` seconds. The
    optional ``__shift__`` entry records the segment shift in seconds.

    Arguments
    ---------
    path : str or Path
        The ``.npz`` file.

    Returns
    -------
    scores : dict
        ID -> float64 array.
    shift : float or None
        The stored shift, if any.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "seg.npz")
    >>> np.savez(path, CON_E_0000001=np.array([0.5, -1.0]), __shift__=0.16)
    >>> scores, shift = load_segment_scores(path)
    >>> scores["CON_E_0000001"].tolist(), shift
    ([0.5, -1.0], 0.16)
    """
    with np.load(path, allow_pickle=False) as archive:
        scores = {
            key: np.asarray(archive[key], dtype=np.float64).reshape(-1) for key in archive.files
        }
    shift = scores.pop("__shift__", None)
    return scores, None if shift is None else float(shift[0])


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
            f"segment scores (e.g. {_examples(lacking)}); pass allow_missing=True to leave them out"
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
    block = _headline(bona, spoof, _eer_metrics, "partialspoof", f"segments at {segment_shift} s")
    block.update(
        shift=float(segment_shift),
        n_utterances=len(ids) - len(lacking),
        n_length_mismatch_truncated=truncated,
        utterances_without_segment_scores=len(lacking),
        segment_scores_without_manifest_row=sum(1 for k in segment_scores if k not in known),
    )
    return block


def _partialspoof(
    inputs,
    segment_scores=None,
    segment_labels=None,
    segment_shift=None,
    segment_length_tolerance=1,
):
    corpus = "partialspoof"
    data = inputs.select(pd.Series(True, index=inputs.manifest.index))
    report = inputs.start(
        {"segment_shift": segment_shift, "segment_length_tolerance": segment_length_tolerance}
    )
    bona, spoof = _split(data)
    headline = _headline(bona, spoof, _eer_metrics, corpus, "utterances")
    definitions = dict(_EER_DEFINITION)
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
    return _finish(report, inputs, data, headline, "utterances", definitions)


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
        ``functools.partial(data_prep.partialspoof_prepare.load_segment_labels,
        template)``), ``segment_shift``, ``segment_length_tolerance`` (1).

    Returns
    -------
    Report
        A dict with at least ``corpus``, ``condition``, ``eer`` (fraction),
        ``n_bonafide``, ``n_spoof`` and ``missing`` for the headline
        condition, plus ``breakdowns``/``conditions`` per corpus.
    """
    if corpus not in CORPUS_RULES:
        raise ValueError(f"unknown corpus {corpus!r}; choose one of {sorted(CORPUS_RULES)}")
    inputs = _Inputs(corpus, scores_path, manifest_path, allow_missing)
    report = CORPUS_RULES[corpus](inputs, **corpus_options)
    report["options"]["allow_missing"] = allow_missing
    return report


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

_TITLES = {
    "ctrsvdd": "CtrSVDD",
    "asvspoof2021_la": "ASVspoof 2021 LA",
    "asvspoof2021_df": "ASVspoof 2021 DF",
    "asvspoof5": "ASVspoof 5",
    "in_the_wild": "In-the-Wild",
    "partialspoof": "PartialSpoof",
    "eer": "Spoofing detection",
}

# Column key, header, format; only the keys a block has are shown.
_COLUMNS = [
    ("n_bonafide", "bona fide", "{:d}"),
    ("n_spoof", "spoof", "{:d}"),
    ("eer", "EER (%)", "pct"),
    ("min_tdcf", "min t-DCF", "{:.4f}"),
    ("min_dcf", "minDCF", "{:.4f}"),
    ("act_dcf", "actDCF", "{:.4f}"),
    ("cllr", "Cllr (bits)", "{:.4f}"),
    ("ctrsvdd_min_dcf", "minDCF (CtrSVDD)", "{:.4f}"),
    ("eer_threshold", "EER threshold", "{:.4g}"),
]


def _cell(block, key, fmt):
    if key not in block:
        return "-"
    value = block[key]
    return f"{100 * value:.3f}" if fmt == "pct" else fmt.format(value)


def _table(rows, first_header):
    """A Markdown table of metric blocks; skipped groups get a note."""
    columns = [c for c in _COLUMNS if any(c[0] in block for _, block in rows)]
    headers = [first_header] + [header for _, header, _ in columns]
    with_notes = any("skipped" in block for _, block in rows)
    if with_notes:
        headers.append("note")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, block in rows:
        cells = [str(name)] + [_cell(block, key, fmt) for key, _, fmt in columns]
        if with_notes:
            cells.append(f"skipped: {block['skipped']}" if "skipped" in block else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(report):
    """Renders a report as Markdown tables.

    Arguments
    ---------
    report : dict
        Output of :func:`build_report`.

    Returns
    -------
    str
    """
    title = _TITLES.get(report["corpus"], report["corpus"])
    out = [
        f"# {title} evaluation report",
        "",
        f"- scores: `{report['scores_path']}`",
        f"- manifest: `{report['manifest_path']}`",
        f"- condition: {report['condition']}",
        "",
    ]
    out += _table([("pooled", report)], "trials")
    if report.get("conditions"):
        out += ["", "## Conditions", ""]
        out += _table(list(report["conditions"].items()), "condition")
    if "segment" in report:
        out += ["", f"## Segment level ({report['segment']['shift']} s)", ""]
        out += _table([("segments", report["segment"])], "level")
    for factor, groups in report.get("breakdowns", {}).items():
        out += ["", f"## Per {factor}", ""]
        out += _table(list(groups.items()), factor)
    if "asv_rates" in report:
        rates = report["asv_rates"]
        out += ["", "## ASV error rates (t-DCF)", ""]
        out += [f"- {k}: {v:.6g}" for k, v in rates.items()]
    missing = report["missing"]
    out += [
        "",
        "## Missing",
        "",
        f"- manifest rows without a score (left out): {missing['manifest_rows_without_score']}",
        f"- scores without a manifest row (ignored): {missing['scores_without_manifest_row']}",
        "- scores of rows that the corpus rule leaves out (ignored): "
        f"{missing['scores_outside_selection']}",
        "",
        "## Definitions",
        "",
    ]
    out += [f"- {k}: {v}" for k, v in report.get("definitions", {}).items()]
    return "\n".join(out) + "\n"


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, ScoreCalibration):
        return value.to_dict()
    if callable(value):
        return getattr(value, "__name__", repr(value))
    return value


def write_report(report, out_dir, name):
    """Writes ``<name>_report.json``, ``<name>_report.md`` and the plots.

    The DET curve (``<name>_det.png``) and score histograms
    (``<name>_hist.png``, bona fide vs spoof, and ``<name>_hist_attacks.png``,
    per attack) are drawn when matplotlib is installed and the report still
    carries its scores (a :class:`Report` from :func:`build_report`).

    Arguments
    ---------
    report : dict
        Output of :func:`build_report`.
    out_dir : str or Path
        Folder, created if needed.
    name : str
        File name stem, e.g. ``ctrsvdd_test``.

    Returns
    -------
    dict
        ``json``, ``markdown`` and, when drawn, ``det``, ``histogram``,
        ``histogram_attacks`` -> written path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "json": out_dir / f"{name}_report.json",
        "markdown": out_dir / f"{name}_report.md",
    }
    with open(written["json"], "w", encoding="utf-8") as handle:
        json.dump(_json_ready(dict(report)), handle, indent=2, allow_nan=False)
        handle.write("\n")
    written["markdown"].write_text(to_markdown(report), encoding="utf-8")

    data = getattr(report, "plot_data", None)
    if data is None:
        return written
    if plots_extra_note() is not None:
        return written  # said once, at the end of a run (see plots_extra_note)
    from speechbrain_nes2net.evaluation import plots

    title = f"{_TITLES.get(report['corpus'], report['corpus'])}: {report['condition']}"
    written["det"] = plots.plot_det(
        data["bonafide"], data["spoof"], out_dir / f"{name}_det.png", title=title
    )
    written["histogram"] = plots.plot_score_histograms(
        {"bona fide": data["bonafide"], "spoof": data["spoof"]},
        out_dir / f"{name}_hist.png",
        title=title,
    )
    if len(data["by_attack"]) > 1:
        written["histogram_attacks"] = plots.plot_score_histograms(
            {"bona fide": data["bonafide"], **data["by_attack"]},
            out_dir / f"{name}_hist_attacks.png",
            title=f"{title} (per attack)",
        )
    return written


def plots_extra_note():
    """What the optional ``plots`` extra would add, or None when it is installed.

    Reports are written without their DET curve and histograms when matplotlib
    is missing; a run says so once, at its end, with this sentence, rather than
    once per report.

    Returns
    -------
    str or None

    Example
    -------
    >>> note = plots_extra_note()
    >>> note is None or "speechbrain-nes2net[plots]" in note
    True
    """
    if importlib.util.find_spec("matplotlib") is not None:
        return None
    return (
        "Reports were written without DET curves and score histograms; "
        "pip install 'speechbrain-nes2net[plots]' (matplotlib) adds them."
    )

