"""The files of an evaluation: score files (``ID score`` lines, higher = more bona fide),
segment score archives, the organisers' ASV files, metrics, the decision rule and the protocol record.
"""

import csv
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from speechbrain_nes2net.evaluation import metrics
from speechbrain_nes2net.evaluation.calibration import DecisionRule, decision_from_dev
from speechbrain_nes2net.manifest import read_manifest

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5  # example IDs an error message or a report lists


def examples(values):
    """The first few values, comma-separated, for error messages.

    Example
    -------
    >>> examples(range(7))
    '0, 1, 2, 3, 4, ...'
    """
    values = list(values)
    listed = ", ".join(str(v) for v in values[:MAX_EXAMPLES])
    return listed + (", ..." if len(values) > MAX_EXAMPLES else "")


def read_scores(path):
    """Reads a score file: one ``ID score`` line per trial, whitespace-separated.

    Arguments
    ---------
    path : str or Path
        The score file (blank lines are ignored).

    Returns
    -------
    pandas.Series
        Float scores indexed by ID, in file order.

    Raises
    ------
    ValueError
        Naming the file and line: not two fields, not a number, a duplicate ID, NaN/inf.

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
            f"{examples(where)}; fix the model output or drop these trials"
        )
    return scores


def _read_whitespace_table(path, n_columns, what):
    """The ``n_columns`` text columns of a space-separated file."""
    frame = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, keep_default_na=False)
    if frame.shape[1] != n_columns:
        raise ValueError(
            f"{path}: expected {n_columns} space-separated columns ({what}), got {frame.shape[1]}"
        )
    return frame


def load_asv_error_rates(asv_metadata, asv_scores, subset="eval"):
    """ASV error rates for the t-DCF from the organisers' ASVspoof 2021 LA files.

    Arguments
    ---------
    asv_metadata : str or Path
        ``keys/LA/ASV/trial_metadata.txt`` (speaker, trial, codec, transmission,
        attack, key ``target|nontarget|spoof``, trim, subset).
    asv_scores : str or Path
        ``keys/LA/ASV/ASVTorch_Kaldi/score.txt`` (claimed speaker, trial,
        score), aligned line by line with the metadata or joined on unique trial IDs.
    subset : str or None
        Subset to keep (``eval``, ``progress``, ``hidden``); None keeps all.

    Returns
    -------
    dict
        :func:`~speechbrain_nes2net.evaluation.metrics.compute_asv_error_rates`.
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


def load_segment_scores(path):
    """Loads segment (or frame) scores: an ``.npz`` of ID -> scores, ``__shift__`` the shift.

    Score ``k`` covers ``[k * shift, (k + 1) * shift)`` seconds; ``__shift__``
    is optional.

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
    >>> import os, tempfile
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


def write_frame_scores(folder, name, records, frame_shift):
    """Writes ``<name>_frame_scores.npz`` (float32) for :func:`load_segment_scores`.

    Arguments
    ---------
    folder, name : str or Path
        Output folder and test set name.
    records : iterable of (str, array-like)
        (ID, frame scores).
    frame_shift : float
        Frame hop in seconds.

    Returns
    -------
    Path

    Example
    -------
    >>> import tempfile
    >>> path = write_frame_scores(tempfile.mkdtemp(), "dev", [("a", [1.0, -2.0])], 0.02)
    >>> scores, shift = load_segment_scores(path)
    >>> scores["a"].tolist(), shift
    ([1.0, -2.0], 0.02)
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_frame_scores.npz"
    arrays = {str(utt): np.asarray(scores, dtype=np.float32) for utt, scores in records}
    if "__shift__" in arrays:
        raise ValueError("an utterance cannot be called __shift__")
    tmp = folder / f".{name}_frame_scores.tmp.npz"
    np.savez(tmp, __shift__=np.array([frame_shift]), **arrays)
    os.replace(tmp, path)
    return path


def score_summary(records, decision=None):
    """EER, minDCF and class counts of (id, score, label) records (further fields ignored).

    With a :class:`~speechbrain_nes2net.evaluation.calibration.DecisionRule`,
    also :func:`decision_rates`. With one class missing (a debug run, a
    one-class test set) the error rates are NaN and a warning says why.

    Example
    -------
    >>> records = [("a", 2.0, 1), ("b", -1.0, 1), ("c", -2.0, 0), ("d", 0.5, 0)]
    >>> summary = score_summary(records)
    >>> summary["eer"], summary["n_bonafide"], summary["n_spoof"]
    (0.5, 2, 2)
    """
    bonafide = [record[1] for record in records if record[2] == 1]
    spoof = [record[1] for record in records if record[2] == 0]
    summary = {"n_bonafide": len(bonafide), "n_spoof": len(spoof)}
    if decision is not None:
        summary.update(decision_rates(decision, bonafide, spoof))
    if not bonafide or not spoof:
        logger.warning(
            "No EER: %d bona fide and %d spoof scores; both classes are needed",
            len(bonafide),
            len(spoof),
        )
        nan = float("nan")
        return {"eer": nan, "threshold": nan, "min_dcf": nan, **summary}
    eer, threshold = metrics.compute_eer(bonafide, spoof)
    return {
        "eer": float(eer),
        "threshold": float(threshold),
        "min_dcf": float(metrics.compute_min_dcf(bonafide, spoof)),
        **summary,
    }


def decision_rates(decision, bonafide, spoof):
    """The error rates of a model's decisions at its shipped threshold.

    ``bpcer``: bona fide trials called spoof; ``apcer``: spoofed trials called
    bona fide (ISO/IEC 30107-3). NaN for a class without trials.

    Arguments
    ---------
    decision : DecisionRule
        The model's decision rule.
    bonafide, spoof : array-like
        Raw scores of each class.

    Returns
    -------
    dict
        ``decision_threshold``, ``bpcer``, ``apcer``.

    Example
    -------
    >>> decision_rates(DecisionRule(0.0, source="logit_0"), [1.0, -1.0], [-2.0, -3.0, 0.5])
    {'decision_threshold': 0.0, 'bpcer': 0.5, 'apcer': 0.3333333333333333}
    """
    bona = np.asarray(bonafide, dtype=np.float64)
    spoof = np.asarray(spoof, dtype=np.float64)
    rate = lambda values: float(values.mean()) if values.size else float("nan")
    return {
        "decision_threshold": float(decision.threshold),
        "bpcer": rate(~decision.is_bonafide(bona)),
        "apcer": rate(decision.is_bonafide(spoof)),
    }


def fit_decision(scores_paths, manifest_paths, prior=0.5):
    """The decision rule fitted on development score files, and its rates there.

    Arguments
    ---------
    scores_paths : list of str or Path
        Score files of the development sets.
    manifest_paths : list of str or Path
        Their manifests (labels), in the same order.
    prior : float
        Bona fide prior of the decision.

    Returns
    -------
    (DecisionRule, dict)
        The rule (see :func:`~speechbrain_nes2net.evaluation.calibration.decision_from_dev`),
        fitted on the sets' scores pooled, and :func:`decision_rates` on them.
    """
    parts = [class_scores(path, manifest) for path, manifest in zip(scores_paths, manifest_paths)]
    bona = np.concatenate([b for b, _ in parts])
    spoof = np.concatenate([s for _, s in parts])
    rule = decision_from_dev(bona, spoof, prior)
    return rule, decision_rates(rule, bona, spoof)


def class_scores(scores_path, manifest_path):
    """(bona fide, spoof) scores of a score file, labelled by its manifest."""
    scores = read_scores(scores_path)
    labels = read_manifest(manifest_path).set_index("ID")["label"].reindex(scores.index)
    return scores[labels == "bonafide"].to_numpy(), scores[labels == "spoof"].to_numpy()


#: The file of a training run with its decision rule and development statistics.
DECISION_FILE = "decision.json"


def write_decision(folder, decision, dev_metrics):
    """Writes ``<folder>/decision.json``: the rule and what it was fitted on.

    Arguments
    ---------
    folder : str or Path
        The run's output folder.
    decision : DecisionRule
        The fitted rule.
    dev_metrics : dict
        The development set's metrics (``test_set`` name, ``eer``, rates).

    Returns
    -------
    Path
    """
    path = Path(folder) / DECISION_FILE
    content = {"decision": decision.to_dict(), "dev": _no_nan(dev_metrics)}
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


def _no_nan(values):
    """``values`` with None for NaN (JSON has no NaN: a rate that cannot be computed is null)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}


def read_decision(folder):
    """(DecisionRule, dev metrics) of a run's ``decision.json``, or (None, None) without one."""
    path = Path(folder) / DECISION_FILE
    if not path.is_file():
        return None, None
    data = json.loads(path.read_text())
    return DecisionRule.from_dict(data["decision"]), data.get("dev") or {}


def scoring_protocol(
    eval_samples, window_seconds, checkpoints, precision, manifest, n_rows, n_scored,
    n_failed, min_samples=0, sample_rate=16000, partial=None, condition=None,
):  # fmt: skip
    """How a set's scores were made, stated beside every EER from them (the metrics JSON, the report).

    Arguments
    ---------
    eval_samples : int or None
        Each file cropped to its first ``eval_samples`` samples (None: full files).
    window_seconds : float or None
        Files longer than this scored by windows of this length (mean logit).
    checkpoints : list of str
        The checkpoint(s) whose parameters were used (several: their average).
    precision : str
        'fp32', 'bf16' or 'fp16'.
    manifest : str or Path
        The manifest the trials came from.
    n_rows, n_scored, n_failed : int
        Rows of the manifest, trials scored, files that could not be scored.
    min_samples : int
        Shorter files repeat-padded to this many samples.
    sample_rate : int
        Samples per second.
    partial : str, optional
        Why only part of the manifest was scored (e.g. a debug run).
    condition : str, optional
        The codec or channel every file went through (:mod:`speechbrain_nes2net.codecs`).

    Returns
    -------
    dict
        ``crop`` (in words) with ``eval_samples`` and ``eval_window_seconds``,
        ``checkpoints``, ``precision``, ``subset`` (manifest, rows, scored,
        failed, and ``partial`` when given) and ``condition`` when given.

    Example
    -------
    >>> protocol = scoring_protocol(64600, None, ["CKPT+1", "CKPT+2"], "fp32", "eval.csv", 10, 9, 1)
    >>> protocol["crop"]
    'first 64,600 samples (4.04 s) of each file, shorter files repeat-padded'
    >>> protocol["checkpoints"], protocol["subset"]["failed"]
    (['CKPT+1', 'CKPT+2'], 1)
    >>> scoring_protocol(None, 60, ["CKPT+1"], "bf16", "eval.csv", 10, 10, 0)["crop"]
    'full utterances; files longer than 60 s scored by 60 s windows (mean logit)'
    """
    if eval_samples:
        crop = (
            f"first {int(eval_samples):,} samples ({eval_samples / sample_rate:.2f} s) of each "
            "file, shorter files repeat-padded"
        )
    else:
        crop = "full utterances"
        if min_samples:
            crop += f" (shorter than {int(min_samples):,} samples: repeat-padded)"
        if window_seconds:
            crop += f"; files longer than {window_seconds:g} s scored by {window_seconds:g} s windows (mean logit)"
    subset = {
        "manifest": str(manifest),
        "rows": int(n_rows),
        "scored": int(n_scored),
        "failed": int(n_failed),
    }
    if partial:
        subset["partial"] = partial
    protocol = {
        "crop": crop,
        "eval_samples": int(eval_samples) if eval_samples else None,
        "eval_window_seconds": window_seconds,
        "checkpoints": list(checkpoints),
        "precision": precision,
        "subset": subset,
    }
    return dict(protocol, condition=condition) if condition else protocol


def describe_protocol(protocol):
    """One line of a :func:`scoring_protocol` record, for reports and logs.

    Example
    -------
    >>> describe_protocol(scoring_protocol(None, None, ["CKPT+1"], "fp32", "eval.csv", 10, 10, 0))
    'full utterances; checkpoint CKPT+1; fp32; 10 of 10 rows of eval.csv scored'
    """
    subset = protocol["subset"]
    scored = f"{subset['scored']} of {subset['rows']} rows of {subset['manifest']} scored"
    if subset["failed"]:
        scored += f", {subset['failed']} failed"
    if subset.get("partial"):
        scored += f" ({subset['partial']})"
    if "fusion" in protocol:
        systems = protocol["fusion"]["systems"]
        return (
            f"fusion of {len(systems)} systems ({', '.join(systems)}), each scored by the "
            f"protocol of its own metrics; {scored}"
        )
    checkpoints = protocol["checkpoints"]
    if len(checkpoints) > 1:
        used = f"average of {len(checkpoints)} checkpoints ({', '.join(checkpoints)})"
    else:
        used = f"checkpoint {checkpoints[0]}" if checkpoints else "no checkpoint (initial weights)"
    coded = f"files coded through {protocol['condition']}; " if protocol.get("condition") else ""
    return f"{coded}{protocol['crop']}; {used}; {protocol['precision']}; {scored}"


def write_test_outputs(folder, name, records, summary, failures=(), protocol=None):
    """Writes ``<name>_scores.txt`` (``ID score``), ``<name>_metrics.json`` and ``<name>_failed.csv``.

    Arguments
    ---------
    folder, name : str or Path
        Output folder and test set name.
    records : iterable of tuple
        ``(ID, score, ...)``.
    summary : dict
        The metrics (:func:`score_summary`).
    failures : iterable of (str, str)
        ``(ID, reason)`` of unusable files (no score).
    protocol : dict, optional
        :func:`scoring_protocol`.

    Returns
    -------
    (Path, Path)
        The score file and the metrics file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scores_path = folder / f"{name}_scores.txt"
    tmp = scores_path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(f"{utt_id} {score:.6f}\n" for utt_id, score, *_ in sorted(records))
    os.replace(tmp, scores_path)
    failed_path = folder / f"{name}_failed.csv"
    if failures:
        with open(failed_path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["ID", "reason"])
            writer.writerows(sorted(failures))
        logger.warning(
            "Test set %s: %d unusable files listed in %s", name, len(failures), failed_path
        )
    elif failed_path.exists():
        failed_path.unlink()  # from an earlier evaluation of the same name
    metrics_path = folder / f"{name}_metrics.json"
    content = {"test_set": name, **_no_nan(summary)}
    if protocol is not None:
        content["protocol"] = protocol
    metrics_path.write_text(json.dumps(content, indent=2) + "\n")
    logger.info("Test set %s: EER %.2f%% -> %s", name, 100 * summary["eer"], metrics_path)
    return scores_path, metrics_path
