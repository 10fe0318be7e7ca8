"""Score calibration (raw scores to log-likelihood ratios) and the decision rule a model ships.

Raw scores rank trials, which is all EER and minDCF need; actDCF and Cllr need
log-likelihood ratios (LLRs). :func:`fit_calibration` learns ``llr = scale *
score + offset`` on development scores by prior-weighted logistic regression;
:func:`decision_from_dev` turns it into a :class:`DecisionRule`.

Example
-------
>>> rng = np.random.default_rng(0)
>>> bona, spoof = rng.normal(2, 1, 2000), rng.normal(-2, 1, 2000)
>>> cal = fit_calibration(bona, spoof)
>>> abs(cal.scale - 4.0) < 0.3, abs(cal.offset) < 0.1  # the true LLR is 4 * score
(True, True)
>>> ScoreCalibration.from_dict(cal.to_dict()) == cal
True
"""

import json
import logging
import math
import numbers
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from speechbrain_nes2net.evaluation.metrics import as_scores, compute_eer

logger = logging.getLogger(__name__)


def _numeric(scores):
    """Numbers, arrays and tensors as they are; sequences as float64 arrays."""
    if isinstance(scores, (list, tuple)) or not hasattr(scores, "__mul__"):
        return np.asarray(scores, dtype=np.float64)
    return scores


def effective_prior(p_spoof=0.05, c_miss=1, c_fa=10):
    """The bona fide prior that folds an operating point's costs into one number.

    A calibration fitted with it is best at the actDCF of the same operating
    point (ASVspoof 5: 0.655).

    Arguments
    ---------
    p_spoof, c_miss, c_fa : float
        Prior of a spoofing attack; costs of rejecting a bona fide and of
        accepting a spoofed trial.

    Returns
    -------
    float
        ``c_miss (1 - p_spoof) / (c_miss (1 - p_spoof) + c_fa p_spoof)``.

    Example
    -------
    >>> round(effective_prior(0.05, 1, 10), 4)
    0.6552
    """
    miss_weight = c_miss * (1 - p_spoof)
    return miss_weight / (miss_weight + c_fa * p_spoof)


@dataclass(frozen=True)
class ScoreCalibration:
    """An affine map from raw detector scores to natural-log LLRs.

    Arguments
    ---------
    scale : float
        Multiplies the raw score (positive for a useful detector).
    offset : float
        Added after scaling.
    prior : float
        The bona fide prior of the fit (for the record: the output is an LLR).

    Example
    -------
    >>> cal = ScoreCalibration(scale=2.0, offset=-1.0)
    >>> cal.apply([0.0, 1.0]).tolist()
    [-1.0, 1.0]
    >>> cal.to_dict()
    {'scale': 2.0, 'offset': -1.0, 'prior': 0.5}
    """

    scale: float
    offset: float
    prior: float = 0.5

    def __post_init__(self):
        for name in ("scale", "offset", "prior"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"calibration {name} must be a finite number, got {value!r}")
        if not 0 < self.prior < 1:
            raise ValueError(f"calibration prior must be in (0, 1), got {self.prior}")

    def apply(self, scores):
        """LLRs of raw scores (arrays and tensors keep their type, lists become float64 arrays)."""
        return _numeric(scores) * self.scale + self.offset

    def to_dict(self):
        """Returns ``{'scale', 'offset', 'prior'}`` as plain floats (JSON-ready)."""
        return {key: float(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data):
        """The calibration of a dict with ``scale``, ``offset`` and optionally ``prior``."""
        missing = {"scale", "offset"} - set(data)
        unknown = set(data) - {"scale", "offset", "prior"}
        if missing or unknown:
            raise ValueError(
                "a calibration dict needs keys 'scale' and 'offset' (and optionally "
                f"'prior'); missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        return cls(**{key: float(value) for key, value in data.items()})


def load_calibration(calibration):
    """A :class:`ScoreCalibration` from any of the forms users pass, or None.

    Arguments
    ---------
    calibration : ScoreCalibration, dict, str, Path or None
        A calibration, its :meth:`ScoreCalibration.to_dict`, or a JSON file
        of that dict.

    Returns
    -------
    ScoreCalibration or None

    Example
    -------
    >>> load_calibration({"scale": 2.0, "offset": -1.0})
    ScoreCalibration(scale=2.0, offset=-1.0, prior=0.5)
    >>> load_calibration(None) is None
    True
    """
    if calibration is None or isinstance(calibration, ScoreCalibration):
        return calibration
    if isinstance(calibration, (str, Path)):
        with open(calibration, encoding="utf-8") as handle:
            calibration = json.load(handle)
    return ScoreCalibration.from_dict(calibration)


def _objective(params, design, y, weights, prior_logit):
    """Prior-weighted cross-entropy (nats) of ``design @ params``, its gradient and Hessian."""
    z = design @ params + prior_logit
    # Loss of a bona fide trial softplus(-z), of a spoof trial softplus(z).
    signed = np.where(y, -z, z)
    loss = np.sum(weights * np.logaddexp(0.0, signed))
    posterior = 0.5 * (1.0 + np.tanh(0.5 * z))  # a sigmoid that cannot overflow
    grad = design.T @ (weights * (posterior - y))
    hess = design.T @ ((weights * posterior * (1.0 - posterior))[:, None] * design)
    return loss, grad, hess


def fit_linear_llr(features, is_bonafide, prior=0.5, max_iter=100, tol=1e-10):
    """Fits ``llr = features @ weights + offset`` by prior-weighted logistic regression.

    The one solver of calibration (:func:`fit_calibration`) and fusion
    (:func:`~speechbrain_nes2net.evaluation.fusion.fit_fusion`). Minimises
    ``prior * mean_bona log(1 + e^-(llr + logit(prior))) + (1 - prior) *
    mean_spoof log(1 + e^(llr + logit(prior)))``, so that the output is a
    likelihood ratio (the prior is added back only for training; ``prior=0.5``
    minimises Cllr), by Newton's method with a backtracking line search on
    standardised features (the objective is convex).

    Arguments
    ---------
    features, is_bonafide : array-like
        (trials, k) scores and (trials,) classes.
    prior : float
        Bona fide prior that weights the two classes.
    max_iter, tol : int, float
        Newton iterations at most; stop when the gradient norm is below ``tol``.

    Returns
    -------
    (numpy.ndarray, float)
        The (k,) weights and the offset.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([True, False], 2000)
    >>> x = np.where(labels, 2.0, -2.0) + rng.normal(0, 1, 4000)
    >>> weights, offset = fit_linear_llr(np.stack([x, rng.normal(0, 1, 4000)], axis=1), labels)
    >>> round(float(weights[0]), 1), abs(float(weights[1])) < 0.05  # true LLR 4 x; noise: ~0
    (3.8, True)
    """
    if not 0 < prior < 1:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    features = np.asarray(features, dtype=np.float64)
    y = np.asarray(is_bonafide, dtype=bool)
    n_bona, n_spoof = int(y.sum()), int((~y).sum())
    if n_bona == 0 or n_spoof == 0:
        raise ValueError(f"need trials of both classes, got {n_bona} bona fide and {n_spoof} spoof")
    centre = features.mean(axis=0)
    spread = features.std(axis=0)
    spread[spread == 0] = 1.0  # a constant feature: keep the unit scale
    design = np.concatenate([(features - centre) / spread, np.ones((len(y), 1))], axis=1)
    weights = np.where(y, prior / n_bona, (1 - prior) / n_spoof)
    prior_logit = math.log(prior / (1 - prior))

    params = np.zeros(design.shape[1])
    loss, grad, hess = _objective(params, design, y, weights, prior_logit)
    for _ in range(max_iter):
        if np.linalg.norm(grad) < tol:
            break
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            step = grad
        size = 1.0
        while size > 1e-12:
            candidate = params - size * step
            new = _objective(candidate, design, y, weights, prior_logit)
            if new[0] <= loss:
                break
            size *= 0.5
        else:
            break  # no descent possible: at the optimum to machine precision
        params = candidate
        loss, grad, hess = new
    scales = params[:-1] / spread
    return scales, float(params[-1] - scales @ centre)


def fit_calibration(bonafide_dev, spoof_dev, prior=0.5, max_iter=100, tol=1e-10):
    """Fits ``llr = scale * score + offset`` on development scores (:func:`fit_linear_llr`).

    Arguments
    ---------
    bonafide_dev, spoof_dev : array-like
        Raw scores of the bona fide and of the spoofed development trials.
    prior : float
        Bona fide prior that weights the two classes (:func:`effective_prior`
        for a DCF operating point).
    max_iter, tol
        As :func:`fit_linear_llr` takes them.

    Returns
    -------
    ScoreCalibration

    Warns
    -----
    UserWarning
        If the development scores separate the classes perfectly (the scale
        then grows without bound and the fit stops at ``max_iter``).

    Example
    -------
    >>> cal = fit_calibration([1.0, 2.0, 0.5, -0.2], [-1.0, 0.1, -2.0, 0.7])
    >>> cal.scale > 0
    True
    """
    bona = as_scores(bonafide_dev, "bona fide dev")
    spoof = as_scores(spoof_dev, "spoof dev")
    if bona.min() > spoof.max():
        warnings.warn(
            "the development scores separate bona fide and spoof perfectly; the "
            "calibration scale is unbounded and will be very large",
            stacklevel=2,
        )
    scores = np.concatenate((bona, spoof))[:, None]
    labels = np.concatenate((np.ones(bona.size, dtype=bool), np.zeros(spoof.size, dtype=bool)))
    (scale,), offset = fit_linear_llr(scores, labels, prior, max_iter, tol)
    return ScoreCalibration(scale=float(scale), offset=float(offset), prior=float(prior))


#: Fewer development trials of a class than this: no calibration, the
#: decision threshold is the development EER threshold.
MIN_TRIALS_PER_CLASS = 10


@dataclass(frozen=True)
class DecisionRule:
    """How a model decides bona fide or spoof from its raw score.

    Bona fide when ``raw score >= threshold``. With a calibration, the
    threshold is the Bayes decision at ``prior``: the raw score where ``LLR +
    logit(prior) = 0`` (a cost ratio folds into :func:`effective_prior`).
    Without one, the development EER threshold ('dev_eer') or 0 ('logit_0').

    Arguments
    ---------
    threshold : float
        Raw score at and above which a trial is called bona fide.
    prior : float
        Bona fide prior of the decision.
    calibration : ScoreCalibration, optional
        Raw score -> LLR.
    source : str
        'calibration', 'dev_eer' or 'logit_0': how the threshold was made.
    fitted_on : str, optional
        What it was fitted on (a development set, or a user's files by
        ``nes2net-calibrate``), for model cards and users.

    Example
    -------
    >>> rule = DecisionRule.from_calibration(ScoreCalibration(scale=2.0, offset=2.4))
    >>> rule.threshold
    -1.2
    >>> rule.is_bonafide([-1.5, -1.0]).tolist()
    [False, True]
    >>> DecisionRule.from_dict(rule.to_dict()) == rule
    True
    """

    threshold: float
    prior: float = 0.5
    calibration: ScoreCalibration = None
    source: str = "calibration"
    fitted_on: str = None

    SOURCES = ("calibration", "dev_eer", "logit_0")

    def __post_init__(self):
        if self.source not in self.SOURCES:
            raise ValueError(f"decision source {self.source!r} must be one of {self.SOURCES}")
        if not 0 < self.prior < 1:
            raise ValueError(f"decision prior must be in (0, 1), got {self.prior}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"decision threshold must be finite, got {self.threshold}")

    @classmethod
    def from_calibration(cls, calibration, prior=0.5, fitted_on=None):
        """The Bayes decision at ``prior`` on calibrated scores (needs a positive scale)."""
        if calibration.scale <= 0:
            raise ValueError(
                f"calibration scale {calibration.scale} is not positive: higher raw scores "
                "would be less bona fide"
            )
        llr_threshold = -math.log(prior / (1 - prior))
        threshold = (llr_threshold - calibration.offset) / calibration.scale
        return cls(float(threshold), float(prior), calibration, "calibration", fitted_on)

    def log_odds(self, scores):
        """Posterior log-odds of bona fide at the rule's prior (the decision is log-odds >= 0).

        With a calibration: ``LLR + logit(prior)``; otherwise the raw score
        minus the threshold, which decides the same way.
        """
        if self.calibration is not None:
            return self.calibration.apply(scores) + math.log(self.prior / (1 - self.prior))
        return _numeric(scores) - self.threshold

    def is_bonafide(self, scores):
        """The decision for raw scores (a boolean array or tensor)."""
        return _numeric(scores) >= self.threshold

    def to_dict(self):
        """Plain JSON / YAML data."""
        return {
            "threshold": float(self.threshold),
            "prior": float(self.prior),
            "source": self.source,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_dict(cls, data):
        """The rule of :meth:`to_dict` output."""
        calibration = data.get("calibration")
        return cls(
            threshold=float(data["threshold"]),
            prior=float(data.get("prior", 0.5)),
            calibration=None if calibration is None else ScoreCalibration.from_dict(calibration),
            source=data.get("source", "calibration"),
            fitted_on=data.get("fitted_on"),
        )


def decision_from_dev(bonafide_dev, spoof_dev, prior=0.5, min_trials=MIN_TRIALS_PER_CLASS):
    """The decision rule a trained model ships, fitted on its development scores.

    A calibration (:func:`fit_calibration`) and its Bayes threshold at
    ``prior``; with fewer than ``min_trials`` trials of a class, or a
    calibration that decreases with the score, the development EER threshold
    (at which the rule makes exactly the EER point's decisions); with one
    class missing, 0. Both fallbacks log a warning that says why.

    Arguments
    ---------
    bonafide_dev, spoof_dev : array-like
        Raw development scores of each class.
    prior : float
        Bona fide prior of the decision (``decision_prior`` in the recipes).
    min_trials : int
        Trials of each class a calibration needs.

    Returns
    -------
    DecisionRule

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> rule = decision_from_dev(rng.normal(-0.2, 1, 500), rng.normal(-2.2, 1, 500))
    >>> rule.source, round(rule.threshold, 2)  # the true EER threshold is -1.2
    ('calibration', -1.27)
    """
    bona = np.asarray(bonafide_dev, dtype=np.float64).reshape(-1)
    spoof = np.asarray(spoof_dev, dtype=np.float64).reshape(-1)
    if bona.size == 0 or spoof.size == 0:
        logger.warning(
            "The development set has %d bona fide and %d spoof scores: no calibration or "
            "threshold can be fitted, the decision is the raw score's sign (score >= 0); give "
            "a development set with both classes",
            bona.size,
            spoof.size,
        )
        return DecisionRule(0.0, prior, None, "logit_0")
    if min(bona.size, spoof.size) >= min_trials:
        with warnings.catch_warnings():
            # A perfectly separated dev set still gives a threshold in the gap.
            warnings.simplefilter("ignore")
            calibration = fit_calibration(bona, spoof, prior=prior)
        if bona.min() > spoof.max():
            logger.info(
                "The development scores separate the classes perfectly: the calibration's "
                "scale (%.3g) is as large as the fit allows; LLRs are overconfident",
                calibration.scale,
            )
        if calibration.scale > 0:
            return DecisionRule.from_calibration(calibration, prior)
        reason = (
            f"the calibration fitted on it decreases with the score (scale {calibration.scale:.3g})"
        )
    else:
        reason = f"it has {bona.size} bona fide and {spoof.size} spoof scores (a calibration needs {min_trials} of each)"
    threshold = _eer_threshold(bona, spoof)
    logger.warning(
        "No calibration from the development set: %s; the decision threshold is its EER "
        "threshold %.4g instead",
        reason,
        threshold,
    )
    return DecisionRule(threshold, prior, None, "dev_eer")


def _eer_threshold(bonafide, spoof):
    """A threshold between the score of the last trial rejected at the EER point
    (:func:`~speechbrain_nes2net.evaluation.metrics.compute_eer`'s) and the next higher one."""
    scores = np.concatenate([as_scores(bonafide), as_scores(spoof)])
    _, rejected = compute_eer(bonafide, spoof)
    above = scores[scores > rejected]
    if above.size == 0:
        return float(np.nextafter(rejected, np.inf))
    return float(rejected + (above.min() - rejected) / 2)
