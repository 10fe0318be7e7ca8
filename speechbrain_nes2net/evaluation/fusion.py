"""Score fusion: several systems' score files into one, by logistic regression on dev.

:func:`fit_fusion` learns ``llr = w_1 s_1 + ... + w_k s_k + b`` on the systems'
development scores with the solver of calibration
(:func:`~speechbrain_nes2net.evaluation.calibration.fit_linear_llr`), so the
fused score is a calibrated log-likelihood ratio; :func:`fuse_score_files`
applies it to their evaluation score files.

Example
-------
>>> rng = np.random.default_rng(0)
>>> labels = np.repeat([True, False], 500)
>>> a = np.where(labels, 1.0, -1.0) + rng.normal(0, 1, 1000)    # two systems, noisy
>>> b = np.where(labels, 1.0, -1.0) + rng.normal(0, 1, 1000)    # in different ways
>>> fusion = fit_fusion(np.stack([a, b], axis=1), labels, ["a", "b"])
>>> fused = fusion.apply(np.stack([a, b], axis=1))
>>> eer = lambda s: metrics.compute_eer(s[labels], s[~labels])[0]
>>> eer(fused) < eer(a)
True
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from speechbrain_nes2net.evaluation import metrics
from speechbrain_nes2net.evaluation.calibration import fit_calibration, fit_linear_llr
from speechbrain_nes2net.evaluation.files import examples, read_scores
from speechbrain_nes2net.manifest import read_manifest


@dataclass(frozen=True)
class Fusion:
    """A linear fusion: ``llr = sum_i weights[i] * score_i + offset``.

    Arguments
    ---------
    systems : tuple of str
        System names, in the order of the weights.
    weights : tuple of float
        One weight per system.
    offset : float
        Added after the weighted sum.
    prior : float
        Bona fide prior of the fit.
    """

    systems: tuple
    weights: tuple
    offset: float
    prior: float = 0.5

    def apply(self, scores):
        """Fused LLRs of a (trials, systems) score matrix."""
        return np.asarray(scores, dtype=np.float64) @ np.asarray(self.weights) + self.offset

    def to_dict(self):
        """Plain JSON data."""
        return {
            "systems": list(self.systems),
            "weights": [float(w) for w in self.weights],
            "offset": float(self.offset),
            "prior": float(self.prior),
        }

    @classmethod
    def from_dict(cls, data):
        """The fusion of :meth:`to_dict` output."""
        return cls(tuple(data["systems"]), tuple(data["weights"]), float(data["offset"]),
                   float(data.get("prior", 0.5)))  # fmt: skip


def fit_fusion(scores, is_bonafide, systems, prior=0.5):
    """Fits the fusion weights on development scores.

    Arguments
    ---------
    scores : array-like
        (trials, systems) development scores.
    is_bonafide : array-like
        (trials,) booleans.
    systems : sequence of str
        System names.
    prior : float
        Bona fide prior of the fit (0.5: minimum Cllr).

    Returns
    -------
    Fusion
    """
    weights, offset = fit_linear_llr(scores, is_bonafide, prior)
    return Fusion(tuple(systems), tuple(float(w) for w in weights), float(offset), float(prior))


def _score_matrix(tables, paths, systems, ids, allow_missing, fill, what):
    """(trial IDs, (trials, systems) scores, per system the trials filled with ``fill``)."""
    ids = pd.Index(tables[0].index if ids is None else ids)
    columns, filled = [], {}
    for index, (system, table, path) in enumerate(zip(systems, tables, paths)):
        column = table.reindex(ids)
        lacking = ids[column.isna().to_numpy()]
        if len(lacking) and not allow_missing:
            raise ValueError(
                f"{what}: system {system} ({path}) has no score for {len(lacking)} of "
                f"{len(ids)} trials, e.g. {examples(lacking)}; score them, or pass "
                "allow_missing (--allow_missing) to fill them with its mean dev score"
            )
        filled[system] = len(lacking)
        if len(lacking):
            column = column.fillna(fill[index])
        columns.append(column.to_numpy())
    return ids, np.stack(columns, axis=1), filled


def fuse_score_files(
    dev_files, dev_manifest, eval_files, output_folder, systems=None, eval_manifest=None,
    allow_missing=False, prior=0.5,
):  # fmt: skip
    """Fits a fusion on the systems' dev scores, applies it to their eval scores, writes the results.

    Writes ``fusion.json`` (systems, weights, offset; on dev, and on eval
    with ``eval_manifest``, each system calibrated alone, the equal-weight
    average of the calibrated systems and the fusion compared),
    ``fused_dev_scores.txt`` and ``fused_eval_scores.txt`` (``ID llr``).

    Arguments
    ---------
    dev_files, eval_files : sequence of str or Path
        Per system, its dev and eval score files (same order).
    dev_manifest : str or Path
        The dev manifest (labels).
    output_folder : str or Path
        Where the files go.
    systems : sequence of str, optional
        System names (default: ``system1``, ``system2``, ...).
    eval_manifest : str or Path, optional
        The eval manifest, for eval metrics.
    allow_missing : bool
        Fill a trial a system lacks with its mean dev score (counted in
        ``fusion.json``) instead of raising.
    prior : float
        Bona fide prior of the fit.

    Returns
    -------
    dict
        The content of ``fusion.json``.
    """
    if len(dev_files) != len(eval_files) or len(dev_files) < 2:
        raise ValueError(
            f"give two or more systems, each with a dev and an eval score file; got "
            f"{len(dev_files)} dev and {len(eval_files)} eval files"
        )
    systems = list(systems or [f"system{i + 1}" for i in range(len(dev_files))])
    repeated = sorted({name for name in systems if systems.count(name) > 1})
    if repeated:
        raise ValueError(
            f"system names must differ (they key fusion.json and the comparison table); "
            f"{', '.join(repeated)} is given more than once: {systems}"
        )
    out = Path(output_folder)
    out.mkdir(parents=True, exist_ok=True)
    labels = _labels(dev_manifest)
    raw_dev = [read_scores(path) for path in dev_files]
    means = [float(table.mean()) for table in raw_dev]
    ids, dev, dev_filled = _score_matrix(
        raw_dev, dev_files, systems, labels.index, allow_missing, means, "dev"
    )
    is_bona = (labels.reindex(ids) == "bonafide").to_numpy()
    fusion = fit_fusion(dev, is_bona, systems, prior)
    raw_eval = [read_scores(path) for path in eval_files]
    eval_ids, evaluation, eval_filled = _score_matrix(
        raw_eval, eval_files, systems, None, allow_missing, means, "eval"
    )
    _write_scores(out / "fused_dev_scores.txt", ids, fusion.apply(dev))
    _write_scores(out / "fused_eval_scores.txt", eval_ids, fusion.apply(evaluation))
    calibrations = [
        fit_calibration(dev[is_bona, i], dev[~is_bona, i], prior) for i in range(len(systems))
    ]
    result = {
        **fusion.to_dict(),
        "filled_with_dev_mean": {"dev": dev_filled, "eval": eval_filled},
        "dev": _comparison(fusion, calibrations, systems, dev, is_bona),
    }
    if eval_manifest is not None:
        eval_labels = _labels(eval_manifest).reindex(eval_ids)
        known = eval_labels.notna().to_numpy()
        eval_bona = (eval_labels == "bonafide").to_numpy()[known]
        result["eval"] = _comparison(fusion, calibrations, systems, evaluation[known], eval_bona)
    (out / "fusion.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _labels(manifest):
    """ID -> label of a manifest."""
    return read_manifest(manifest).set_index("ID")["label"]


def _write_scores(path, ids, scores):
    """``ID score`` lines."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{utt_id} {score:.6f}\n" for utt_id, score in zip(ids, scores))


def _comparison(fusion, calibrations, systems, scores, is_bona):
    """EER, minDCF and Cllr of each calibrated system, their equal-weight average and the fusion."""
    candidates = {
        f"{system} (calibrated)": calibration.apply(scores[:, i])
        for i, (system, calibration) in enumerate(zip(systems, calibrations))
    }
    candidates["equal weights"] = np.mean(list(candidates.values()), axis=0)
    candidates["fusion"] = fusion.apply(scores)
    table = {}
    for name, llr in candidates.items():
        bona, spoof = llr[is_bona], llr[~is_bona]
        table[name] = {
            "eer": float(metrics.compute_eer(bona, spoof)[0]),
            "min_dcf": float(metrics.compute_min_dcf(bona, spoof)),
            "cllr": float(metrics.compute_cllr(bona, spoof)),
        }
    return table
