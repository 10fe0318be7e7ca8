"""The pieces every corpus report is made of: label splits, metric blocks, the finished report.

:mod:`speechbrain_nes2net.evaluation.reports` (the corpus rules and
:func:`~speechbrain_nes2net.evaluation.reports.build_report`) and
:mod:`speechbrain_nes2net.evaluation.partialspoof_report` both build their
reports from these, so that every corpus counts, skips and finishes alike.

Example
-------
>>> import pandas as pd
>>> data = pd.DataFrame({"label": ["bonafide", "spoof", "spoof"], "score": [1.0, -1.0, 2.0]})
>>> bona, spoof = split_by_label(data)
>>> metric_block(bona, spoof, eer_metrics)["n_spoof"]
2

Authors
 * speechbrain-nes2net contributors
"""

import numpy as np

from speechbrain_nes2net.evaluation import metrics
from speechbrain_nes2net.scores import BONAFIDE, SPOOF

#: The ``definitions`` entry of a report that gives an EER.
EER_DEFINITION = {
    "eer": "ASVspoof EER (fraction): mean of miss and false-alarm rates where they are closest",
}


def split_by_label(data):
    """Bona fide and spoof scores of joined report rows.

    Arguments
    ---------
    data : pandas.DataFrame
        Rows with ``label`` and ``score`` columns.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        float64 bona fide scores, then the others (spoof).

    Example
    -------
    >>> import pandas as pd
    >>> split_by_label(pd.DataFrame({"label": ["spoof", "bonafide"], "score": [0.5, 2.0]}))
    (array([2.]), array([0.5]))
    """
    is_bona = (data["label"] == BONAFIDE).to_numpy()
    scores = data["score"].to_numpy(dtype=np.float64)
    return scores[is_bona], scores[~is_bona]


def metric_block(bona, spoof, metric_fn):
    """Counts plus metrics, or a ``skipped`` reason when a class is empty.

    Arguments
    ---------
    bona, spoof : numpy.ndarray
        Scores of each class.
    metric_fn : callable
        ``(bona, spoof) -> dict`` of metrics, e.g. :func:`eer_metrics`.

    Returns
    -------
    dict
        ``n_bonafide``, ``n_spoof`` and the metrics, or ``skipped``.

    Example
    -------
    >>> metric_block(np.array([1.0]), np.array([]), eer_metrics)
    {'n_bonafide': 1, 'n_spoof': 0, 'skipped': 'no spoof trials'}
    """
    block = {"n_bonafide": int(bona.size), "n_spoof": int(spoof.size)}
    if bona.size == 0 or spoof.size == 0:
        block["skipped"] = "no bona fide trials" if bona.size == 0 else "no spoof trials"
        return block
    block.update(metric_fn(bona, spoof))
    return block


def headline_block(bona, spoof, metric_fn, corpus, condition):
    """The report's headline :func:`metric_block`; an error when a class is empty.

    Arguments
    ---------
    bona, spoof : numpy.ndarray
        Scores of each class.
    metric_fn : callable
        ``(bona, spoof) -> dict`` of metrics.
    corpus : str
        The corpus rule, for the error message.
    condition : str
        Which rows were selected, for the error message.

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        When the selection has no bona fide or no spoof trial.

    Example
    -------
    >>> headline_block(np.array([2.0]), np.array([0.0]), eer_metrics, "eer", "all rows")["eer"]
    0.0
    """
    if bona.size == 0 or spoof.size == 0:
        which = "bona fide" if bona.size == 0 else "spoof"
        raise ValueError(
            f"{corpus} report: no {which} trials in the selected data "
            f"({condition}); check the manifest labels and the filters"
        )
    return metric_block(bona, spoof, metric_fn)


def eer_metrics(bona, spoof):
    """The ASVspoof EER and its threshold, as a metric block wants them.

    Arguments
    ---------
    bona, spoof : numpy.ndarray
        Scores of each class (higher = more bona fide).

    Returns
    -------
    dict
        ``eer`` and ``eer_threshold``.

    Example
    -------
    >>> eer_metrics(np.array([2.0, 1.0]), np.array([0.0, -1.0]))["eer"]
    0.0
    """
    eer, threshold = metrics.compute_eer(bona, spoof)
    return {"eer": eer, "eer_threshold": threshold}


def _plot_data(data):
    """The score arrays the report's plots draw (``Report.plot_data``)."""
    bona, spoof = split_by_label(data)
    by_attack = {}
    if "attack" in data.columns:
        spoof_rows = data[data["label"] == SPOOF]
        for attack, rows in spoof_rows.groupby("attack", sort=True):
            by_attack[str(attack)] = rows["score"].to_numpy(dtype=np.float64)
    return {"bonafide": bona, "spoof": spoof, "by_attack": by_attack}


def finish_report(report, inputs, data, headline, condition, definitions):
    """Completes a report: its condition, headline, definitions, missing rows and plot data.

    Arguments
    ---------
    report : Report
        The report started from the inputs.
    inputs : object
        The report's inputs; their ``missing`` counts go into the report.
    data : pandas.DataFrame
        The joined rows of the headline condition (for the plots).
    headline : dict
        The headline metric block.
    condition : str
        Which rows the headline covers.
    definitions : dict
        What each metric of the report means.

    Returns
    -------
    Report
        ``report``, completed.

    Example
    -------
    >>> import pandas as pd, types
    >>> class Report(dict):
    ...     plot_data = None
    >>> data = pd.DataFrame({"label": ["bonafide", "spoof"], "score": [1.0, 0.0]})
    >>> inputs = types.SimpleNamespace(missing={})
    >>> done = finish_report(Report(), inputs, data, {"eer": 0.0}, "all rows", EER_DEFINITION)
    >>> done["condition"], done.plot_data["spoof"].tolist()
    ('all rows', [0.0])
    """
    report["condition"] = condition
    report.update(headline)
    report["definitions"] = definitions
    report["missing"] = inputs.missing
    report.plot_data = _plot_data(data)
    return report
