"""Detection metrics for spoofing countermeasures, sort-based and exact.

Every function takes the scores of the ``bonafide`` and the ``spoof`` trials
(**higher = more bona fide**) and equals the official scorer to floating-point
precision (``tests/data/metrics_reference.json``): the ASVspoof 5 package for
EER, minDCF, actDCF and Cllr; ASVspoof 2021 LA for the min t-DCF; the Nes2Net
CtrSVDD scorer (scikit-learn's ROC curve) for the ``ctrsvdd`` ones. NaN or
infinite scores and an empty class raise a ValueError saying how many and where.

Example
-------
>>> bonafide = [0.6, 0.7, 0.8, 0.5]
>>> spoof = [0.4, 0.3, 0.2, 0.55]
>>> compute_eer(bonafide, spoof)
(0.25, 0.5)
>>> round(compute_min_dcf(bonafide, spoof), 4)
0.25
"""

import numpy as np

#: ASVspoof 2021 LA t-DCF cost model (priors and costs of the official ranking).
TDCF_COST_MODEL_2021 = {
    "Pspoof": 0.05,
    "Ptar": (1 - 0.05) * 0.99,
    "Pnon": (1 - 0.05) * 0.01,
    "Cmiss": 1.0,
    "Cfa": 10.0,
    "Cfa_spoof": 10.0,
}

_MAX_LISTED = 5  # offending positions an error message lists


def as_scores(values, name="scores"):
    """Converts an array-like of scores to a finite, non-empty float64 vector.

    Arguments
    ---------
    values : array-like
        A list, NumPy array or torch tensor with one non-singleton axis.
    name : str
        What the scores are (e.g. ``"bona fide"``), for error messages.

    Returns
    -------
    numpy.ndarray
        1-D float64.

    Raises
    ------
    ValueError
        For scores that are not numbers, not one-dimensional, empty, NaN or infinite.

    Example
    -------
    >>> as_scores([1, 2.5], "bona fide")
    array([1. , 2.5])
    >>> as_scores([1.0, float("nan")], "spoof")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 1 of 2 spoof scores are not finite (1 NaN, 0 inf), at positions [1]; ...
    """
    if hasattr(values, "detach"):  # torch tensors, possibly on a GPU
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} scores must be numbers ({err})") from None
    if arr.ndim != 1:
        if arr.ndim == 0 or arr.size != max(arr.shape):
            raise ValueError(f"{name} scores must be a 1-D sequence, got shape {arr.shape}")
        arr = arr.reshape(-1)
    if arr.size == 0:
        raise ValueError(
            f"no {name} scores: the metric needs at least one bona fide and one spoof trial"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        n_nan = int(np.isnan(arr).sum())
        n_bad = int(bad.sum())
        where = np.flatnonzero(bad)[:_MAX_LISTED].tolist()
        more = ", ..." if n_bad > _MAX_LISTED else ""
        raise ValueError(
            f"{n_bad} of {arr.size} {name} scores are not finite ({n_nan} NaN, "
            f"{n_bad - n_nan} inf), at positions {str(where)[:-1]}{more}]; "
            "remove or fix these trials before scoring"
        )
    return arr


def _check(bonafide, spoof):
    """Both classes through :func:`as_scores`."""
    return as_scores(bonafide, "bona fide"), as_scores(spoof, "spoof")


def _merge_sorted(bonafide, spoof):
    """All trials ascending, bona fide first within a tie (the official DET curve's
    stable sort of ``concatenate(bonafide, spoof)``, from two smaller sorts), and the class flags."""
    bona_sorted = np.sort(bonafide)
    spoof_sorted = np.sort(spoof)
    n_trials = bona_sorted.size + spoof_sorted.size
    # A spoof trial lands after every bona fide trial with a score <= its own.
    spoof_pos = np.arange(spoof_sorted.size) + np.searchsorted(
        bona_sorted, spoof_sorted, side="right"
    )
    is_bona = np.ones(n_trials, dtype=bool)
    is_bona[spoof_pos] = False
    merged = np.empty(n_trials, dtype=np.float64)
    merged[spoof_pos] = spoof_sorted
    merged[is_bona] = bona_sorted
    return merged, is_bona


def det_curve(bonafide, spoof):
    """Miss and false-alarm rates at every cut of the sorted trials (ASVspoof).

    Point ``k`` rejects the ``k`` lowest-scoring trials (ties cut bona fide
    first, as the official code does); ``thresholds[k]`` is the score of the
    last rejected trial (the lowest score minus 0.001 for point 0).

    Arguments
    ---------
    bonafide, spoof : array-like
        Scores of the bona fide and of the spoofed trials.

    Returns
    -------
    frr, far, thresholds : numpy.ndarray
        ``n_trials + 1`` bona fide rejection (miss) rates, spoof acceptance
        rates and thresholds.

    Example
    -------
    >>> frr, far, thr = det_curve([0.9, 0.4], [0.1, 0.5])
    >>> frr.tolist(), far.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [1.0, 0.5, 0.5, 0.0, 0.0])
    """
    bonafide, spoof = _check(bonafide, spoof)
    merged, is_bona = _merge_sorted(bonafide, spoof)
    bona_rejected = np.cumsum(is_bona)
    spoof_accepted = spoof.size - (np.arange(1, merged.size + 1) - bona_rejected)
    frr = np.concatenate(([0.0], bona_rejected / bonafide.size))
    far = np.concatenate(([1.0], spoof_accepted / spoof.size))
    thresholds = np.concatenate(([merged[0] - 0.001], merged))
    return frr, far, thresholds


def compute_eer(bonafide, spoof):
    """Equal error rate and its threshold: the mean of the miss and false-alarm
    rates at the point of :func:`det_curve` where they are closest (the first on a tie).

    Arguments
    ---------
    bonafide, spoof : array-like
        Scores of the bona fide and of the spoofed trials.

    Returns
    -------
    eer : float
        Fraction in [0, 1] (not percent).
    threshold : float
        The score of the last trial rejected there.

    Example
    -------
    >>> compute_eer([0.6, 0.7, 0.8, 0.5], [0.4, 0.3, 0.2, 0.1])
    (0.0, 0.4)
    """
    frr, far, thresholds = det_curve(bonafide, spoof)
    index = np.argmin(np.abs(frr - far))
    eer = (frr[index] + far[index]) / 2
    return float(eer), float(thresholds[index])


def compute_min_dcf(bonafide, spoof, p_spoof=0.05, c_miss=1, c_fa=10):
    """Normalised minimum detection cost, ASVspoof 5 definition.

    ``min_k [c_miss (1 - p_spoof) frr[k] + c_fa p_spoof far[k]]`` over the DET
    curve, over the cost of the better trivial system.

    Arguments
    ---------
    bonafide, spoof : array-like
        Scores of the bona fide and of the spoofed trials.
    p_spoof, c_miss, c_fa : float
        Prior of a spoofing attack; costs of rejecting a bona fide and of
        accepting a spoofed trial.

    Returns
    -------
    float
        Normalised minDCF (0 = perfect, 1 = no better than a trivial system).

    Example
    -------
    >>> compute_min_dcf([0.6, 0.7, 0.8, 0.5], [0.4, 0.3, 0.2, 0.1])
    0.0
    """
    frr, far, _ = det_curve(bonafide, spoof)
    p_bona = 1 - p_spoof
    cost = c_miss * frr * p_bona + c_fa * far * (1 - p_bona)
    default_cost = min(c_miss * p_bona, c_fa * (1 - p_bona))
    return float(cost.min() / default_cost)


def bayes_threshold(p_spoof=0.05, c_miss=1, c_fa=10):
    """The Bayes decision threshold on log-likelihood-ratio scores.

    Arguments
    ---------
    p_spoof, c_miss, c_fa : float
        Prior of a spoofing attack; costs of rejecting a bona fide and of
        accepting a spoofed trial.

    Returns
    -------
    float
        ``-ln(c_miss (1 - p_spoof) / (c_fa p_spoof))``; trials with an LLR at
        or above it are accepted as bona fide.

    Example
    -------
    >>> round(bayes_threshold(), 4)
    -0.6419
    """
    beta = c_miss * (1 - p_spoof) / (c_fa * p_spoof)
    return float(-np.log(beta))


def compute_act_dcf(bonafide, spoof, p_spoof=0.05, c_miss=1, c_fa=10):
    """Normalised actual detection cost at :func:`bayes_threshold`, ASVspoof 5.

    Meaningful for calibrated log-likelihood ratios
    (:mod:`~speechbrain_nes2net.evaluation.calibration`).

    Arguments
    ---------
    bonafide, spoof : array-like
        LLR scores (natural log) of the bona fide and of the spoofed trials.
    p_spoof, c_miss, c_fa : float
        Prior of a spoofing attack; costs of rejecting a bona fide and of
        accepting a spoofed trial.

    Returns
    -------
    float
        Normalised actDCF (can exceed 1 for badly calibrated scores).

    Example
    -------
    >>> compute_act_dcf([2.0, 3.0], [-2.0, -0.7])
    0.0
    >>> compute_act_dcf([2.0, 3.0], [-2.0, -0.6])
    0.5
    """
    bonafide, spoof = _check(bonafide, spoof)
    threshold = bayes_threshold(p_spoof, c_miss, c_fa)
    miss_rate = np.sum(bonafide < threshold) / bonafide.size
    fa_rate = np.sum(spoof >= threshold) / spoof.size
    cost = c_miss * (1 - p_spoof) * miss_rate + c_fa * p_spoof * fa_rate
    return float(cost / min(c_fa * p_spoof, c_miss * (1 - p_spoof)))


def compute_cllr(bonafide, spoof):
    """Log-likelihood-ratio cost in bits (ASVspoof 5 definition).

    ``0.5 [mean log2(1 + e^-s_bona) + mean log2(1 + e^s_spoof)]``: 0 for
    perfect LLRs, 1 for a system that always outputs 0.

    Arguments
    ---------
    bonafide, spoof : array-like
        LLR scores (natural log) of the bona fide and of the spoofed trials.

    Returns
    -------
    float
        Cllr in bits.

    Example
    -------
    >>> compute_cllr([0.0, 0.0], [0.0])
    1.0
    """
    bonafide, spoof = _check(bonafide, spoof)
    # logaddexp(0, -x) = log(1 + e^-x) without overflow for very negative x.
    bona_cost = np.mean(np.logaddexp(0.0, -bonafide))
    spoof_cost = np.mean(np.logaddexp(0.0, spoof))
    return float(0.5 * (bona_cost + spoof_cost) / np.log(2))


def compute_asv_error_rates(target, nontarget, spoof):
    """ASV error rates at the ASV's own EER threshold (target vs non-target), as the organisers do.

    Arguments
    ---------
    target, nontarget, spoof : array-like
        ASV scores of bona fide target-speaker trials, of bona fide non-target
        (zero-effort impostor) trials and of spoofed trials.

    Returns
    -------
    dict
        ``pfa_asv``, ``pmiss_asv``, ``pmiss_spoof_asv``, ``pfa_spoof_asv``
        (fractions) and ``asv_threshold``, ``asv_eer``.

    Example
    -------
    >>> rates = compute_asv_error_rates([3.0, 4.0, 1.0], [0.0, -1.0, 2.0], [3.5, 0.5])
    >>> rates["pfa_asv"], rates["pfa_spoof_asv"]
    (0.3333333333333333, 0.5)
    """
    target = as_scores(target, "ASV target")
    nontarget = as_scores(nontarget, "ASV non-target")
    spoof = as_scores(spoof, "ASV spoof")
    eer, threshold = compute_eer(target, nontarget)
    return {
        "pfa_asv": float(np.sum(nontarget >= threshold) / nontarget.size),
        "pmiss_asv": float(np.sum(target < threshold) / target.size),
        "pmiss_spoof_asv": float(np.sum(spoof < threshold) / spoof.size),
        "pfa_spoof_asv": float(np.sum(spoof >= threshold) / spoof.size),
        "asv_threshold": threshold,
        "asv_eer": eer,
    }


def compute_min_tdcf(bonafide, spoof, pfa_asv, pmiss_asv, pfa_spoof_asv, cost_model=None):
    """Normalised minimum tandem detection cost (ASVspoof 2021 LA definition).

    ``t-DCF(k) = C0 + C1 frr[k] + C2 far[k]`` along the CM DET curve, with
    ``C0 = Ptar Cmiss Pmiss_asv + Pnon Cfa Pfa_asv``,
    ``C1 = Ptar Cmiss - C0`` and ``C2 = Pspoof Cfa_spoof Pfa_spoof_asv``,
    normalised by ``C0 + min(C1, C2)`` (the cost of the better trivial CM).

    Arguments
    ---------
    bonafide, spoof : array-like
        CM scores of the bona fide and of the spoofed trials.
    pfa_asv, pmiss_asv, pfa_spoof_asv : float
        ASV false-alarm rate on non-target trials, miss rate on target trials,
        false-alarm rate on spoofed trials (fractions).
    cost_model : dict, optional
        Keys ``Pspoof, Ptar, Pnon, Cmiss, Cfa, Cfa_spoof``; default
        :data:`TDCF_COST_MODEL_2021`.

    Returns
    -------
    float
        min t-DCF (1 = the CM does not help the ASV system).

    Raises
    ------
    ValueError
        For priors that do not sum to one, rates outside [0, 1], negative
        cost weights, or fewer than 3 distinct scores (hard decisions).

    Example
    -------
    >>> # A perfect CM still pays for the ASV errors (C0):
    >>> round(compute_min_tdcf([1.0, 2.0, 3.0], [-1.0, 0.0], 0.0188, 0.0188, 0.4607), 6)
    0.077927
    """
    model = dict(TDCF_COST_MODEL_2021 if cost_model is None else cost_model)
    priors = (model["Ptar"], model["Pnon"], model["Pspoof"])
    if min(priors) < 0 or abs(sum(priors) - 1) > 1e-10:
        raise ValueError(f"t-DCF priors Ptar, Pnon, Pspoof must be >= 0 and sum to 1, got {priors}")
    for name, rate in (
        ("pfa_asv", pfa_asv),
        ("pmiss_asv", pmiss_asv),
        ("pfa_spoof_asv", pfa_spoof_asv),
    ):
        if rate is None or not 0 <= rate <= 1:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {rate!r}")
    bonafide, spoof = _check(bonafide, spoof)
    if np.unique(np.concatenate((bonafide, spoof))).size < 3:
        raise ValueError(
            "min t-DCF needs soft scores, got fewer than 3 distinct values (hard decisions?)"
        )
    frr, far, _ = det_curve(bonafide, spoof)
    c0 = model["Ptar"] * model["Cmiss"] * pmiss_asv + model["Pnon"] * model["Cfa"] * pfa_asv
    c1 = model["Ptar"] * model["Cmiss"] - c0
    c2 = model["Pspoof"] * model["Cfa_spoof"] * pfa_spoof_asv
    if c0 < 0 or c1 < 0 or c2 < 0:
        raise ValueError(
            f"negative t-DCF weights (C0={c0}, C1={c1}, C2={c2}): check the ASV error rates"
        )
    tdcf = c0 + c1 * frr + c2 * far
    return float(np.min(tdcf / (c0 + min(c1, c2))))


def ctrsvdd_roc_curve(bonafide, spoof):
    """ROC points of the Nes2Net CtrSVDD scorer (bona fide = positive class).

    scikit-learn's ``roc_curve(..., drop_intermediate=True)``: one point per
    distinct score (accept ``score >= threshold``), collinear points dropped,
    a first point (0, 0) at an infinite threshold.

    Arguments
    ---------
    bonafide, spoof : array-like
        Scores of the bona fide and of the spoofed trials.

    Returns
    -------
    fpr, tpr, thresholds : numpy.ndarray
        Fractions of spoof and of bona fide trials accepted; decreasing thresholds.

    Example
    -------
    >>> fpr, tpr, thr = ctrsvdd_roc_curve([0.9, 0.4], [0.1, 0.5])
    >>> fpr.tolist(), tpr.tolist(), thr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0], [inf, 0.9, 0.5, 0.4, 0.1])
    """
    bonafide, spoof = _check(bonafide, spoof)
    merged, is_bona = _merge_sorted(bonafide, spoof)
    # First index of every group of equal scores, highest score first.
    starts = np.flatnonzero(np.r_[True, merged[1:] != merged[:-1]])[::-1]
    bona_below = np.r_[0, np.cumsum(is_bona)][starts]
    tps = bonafide.size - bona_below
    fps = (merged.size - starts) - tps
    thresholds = merged[starts]
    if tps.size > 2:
        # Keep the ends and every point where the step to the next differs.
        keep = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    fpr = np.r_[0, fps] / spoof.size
    tpr = np.r_[0, tps] / bonafide.size
    return fpr, tpr, np.r_[np.inf, thresholds]


def compute_ctrsvdd_eer(bonafide, spoof, return_threshold=False):
    """EER as the Nes2Net CtrSVDD scorer computes it (``EER_minDCF.py``).

    The mean of FPR and FNR at the first point of :func:`ctrsvdd_roc_curve`
    minimising ``|FPR - FNR|``; it can differ slightly from :func:`compute_eer`.

    Arguments
    ---------
    bonafide, spoof : array-like
        Scores of the bona fide and of the spoofed trials.
    return_threshold : bool
        Also return the threshold of that point (accept ``score >= threshold``).

    Returns
    -------
    eer : float
        Fraction in [0, 1].
    threshold : float
        Only when ``return_threshold`` is True.

    Example
    -------
    >>> compute_ctrsvdd_eer([0.9, 0.4], [0.1, 0.5])
    0.5
    """
    fpr, tpr, thresholds = ctrsvdd_roc_curve(bonafide, spoof)
    fnr = 1 - tpr
    index = np.argmin(np.abs(fpr - fnr))
    eer = float((fpr[index] + fnr[index]) / 2)
    if return_threshold:
        return eer, float(thresholds[index])
    return eer


def compute_ctrsvdd_min_dcf(bonafide, spoof):
    """ "minDCF" of the Nes2Net CtrSVDD scorer: ``min 0.5 FPR + 0.5 FNR`` over
    :func:`ctrsvdd_roc_curve` (unnormalised; not the ASVspoof 5 minDCF).

    Arguments
    ---------
    bonafide, spoof : array-like
        Scores of the bona fide and of the spoofed trials.

    Returns
    -------
    float
        The minimum cost in [0, 0.5].

    Example
    -------
    >>> compute_ctrsvdd_min_dcf([0.9, 0.4], [0.1, 0.5])
    0.25
    """
    fpr, tpr, _ = ctrsvdd_roc_curve(bonafide, spoof)
    return float(np.min(0.5 * fpr + 0.5 * (1 - tpr)))
