"""Checks of a recipe YAML across its keys, and the schedule rules they enforce.

The YAMLs state each setting's type; :func:`check_recipe_config` catches
settings that contradict each other (or the loaded SSL model) before any data
or model work, and choices whose wrong value would pass silently, naming the
keys. :func:`check_run_options` does the same for SpeechBrain's run options.
The validation and learning-rate schedule rules serve the checks and the Brain.

Authors
 * speechbrain-nes2net contributors
"""

import math

import torch

from speechbrain_nes2net.codecs import ChannelAugment
from speechbrain_nes2net.training.sampling import parse_data_spec

TEST_SET_KEYS = {"data", "eval_samples", "report"}
#: Validation statistics; ``aug_<name>`` is the same statistic on the augmented dev pass.
STATISTICS = ("EER", "minDCF", "loss")


class RecipeConfigError(ValueError):
    """A recipe YAML that cannot work, with what to fix."""


def check_recipe_config(hparams):
    """Catches configuration mistakes before any data or model work.

    Arguments
    ---------
    hparams : dict
        The loaded recipe YAML.

    Raises
    ------
    RecipeConfigError
        Naming the keys and what is expected.
    """
    try:
        _check_recipe_config(hparams)
    except KeyError as err:
        # The YAML is the one place of every setting: the code has no defaults.
        raise RecipeConfigError(
            f"the YAML has no {err.args[0]!r}: every setting the recipe reads is in its YAML "
            "(hparams/demo.yaml shows each one with its meaning)"
        ) from None


def _check_recipe_config(hparams):
    schedules_whole_run(hparams["lr_scheduler"], hparams["lr_schedule_interval"])
    valid_epochs_period(hparams)
    _check_selection(hparams)
    _check_codec_augment(hparams)
    _check_ssl_shape(hparams)
    _check_localization(hparams)
    if hparams["valid_pooling"] not in ("pooled", "worst"):
        raise RecipeConfigError(
            f"valid_pooling={hparams['valid_pooling']!r} must be 'pooled' or 'worst'"
        )
    preparation = hparams["data_preparation"]
    if not isinstance(preparation, dict) or not preparation:
        raise RecipeConfigError("data_preparation must map corpus names to !name: prepare functions")
    for key in ("train_data", "valid_data"):
        try:
            references = parse_data_spec(hparams[key], key)
        except ValueError as err:
            raise RecipeConfigError(str(err)) from None
        for reference in references:
            _check_reference(key, reference, preparation)
    for name, spec in (hparams["test_sets"] or {}).items():
        if not isinstance(spec, dict) or "data" not in spec:
            raise RecipeConfigError(
                f"test_sets.{name} must be a mapping with a 'data: <corpus>/<split>' entry"
            )
        unknown = set(spec) - TEST_SET_KEYS
        if unknown:
            raise RecipeConfigError(
                f"test_sets.{name} has unknown keys {sorted(unknown)}; "
                f"allowed: {sorted(TEST_SET_KEYS)}"
            )
        _check_reference(f"test_sets.{name}.data", spec["data"], preparation)
        report = spec.get("report")
        if report is not None and not (isinstance(report, dict) and "corpus" in report):
            raise RecipeConfigError(
                f"test_sets.{name}.report must be a mapping with a 'corpus' entry "
                "(and that corpus' report options)"
            )


def check_run_options(run_opts):
    """Catches run options this machine cannot honour, before any model is built.

    Arguments
    ---------
    run_opts : dict
        SpeechBrain's run options (``sb.parse_arguments``).

    Raises
    ------
    RecipeConfigError
        For a CUDA ``--device`` on a machine where torch sees no GPU, and
        for ``--compile`` / ``--jit``, which the recipe does not support.

    Example
    -------
    >>> check_run_options({"device": "cpu"})
    """
    for option in ("compile", "jit"):
        if run_opts.get(option):
            # The recipe wraps its modules itself (AntiSpoofBrain.on_fit_start), without
            # SpeechBrain's compile step; jit.script fails on the Nes2Net lobes.
            raise RecipeConfigError(
                f"--{option} is not supported by this recipe's training; run without it"
            )
    device = str(run_opts.get("device") or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RecipeConfigError(
            f"--device={device} but torch sees no CUDA device on this machine "
            "(torch.cuda.is_available() is False); use --device=cpu"
        )


def schedules_whole_run(scheduler_factory, interval):
    """Whether ``lr_scheduler`` has ``T_max: null``: annealing over the whole run's
    optimiser steps (known once the training loader exists), stepped per step.

    Raises
    ------
    RecipeConfigError
        An interval other than 'epoch' or 'step' (the schedulers would never
        step), or ``T_max: null`` with 'epoch'.
    """
    if interval not in ("epoch", "step"):
        raise RecipeConfigError(
            f"lr_schedule_interval={interval!r} must be one of ['epoch', 'step']"
        )
    if getattr(scheduler_factory, "keywords", {}).get("T_max", 0) is not None:
        return False
    if interval != "step":
        raise RecipeConfigError(
            "lr_scheduler has T_max: null (the whole run in optimiser steps), which needs "
            f"lr_schedule_interval: step, not {interval!r}"
        )
    return True


def cosine_minima(epoch, period):
    """Whether the CtrSVDD release validates after ``epoch``: its ``check_condition``.

    The release (``train.py``, ``check_condition(i, m)`` with ``m`` the
    cosine's ``T_max``) validates after epoch 1 and after the three epochs
    around each minimum of the restarting cosine, ``(epoch - m) % 2m`` in
    ``{2m - 1, 0, 1}``, from epoch 2m + 2 on (not around the first minimum).

    Arguments
    ---------
    epoch : int
        Epoch number, from 1.
    period : int
        The cosine's ``T_max`` in epochs (half its period).

    Returns
    -------
    bool

    Example
    -------
    >>> [epoch for epoch in range(1, 76) if cosine_minima(epoch, 5)]
    [1, 14, 15, 16, 24, 25, 26, 34, 35, 36, 44, 45, 46, 54, 55, 56, 64, 65, 66, 74, 75]
    """
    m = period
    return epoch == 1 or (epoch > 2 * m + 1 and (epoch - m) % (2 * m) in (2 * m - 1, 0, 1))


def valid_epochs_period(hparams):
    """The period of ``valid_epochs: cosine_minima``, or None for ``all``.

    ``valid_epochs_period`` when set, else the ``T_max`` of ``lr_scheduler``
    (which must then count epochs: ``lr_schedule_interval: epoch``).

    Arguments
    ---------
    hparams : dict or namespace
        The recipe's hyperparameters.

    Returns
    -------
    int or None

    Raises
    ------
    RecipeConfigError
        An unknown ``valid_epochs``, or no whole number of epochs >= 1 for
        ``cosine_minima``.

    Example
    -------
    >>> from functools import partial
    >>> from torch.optim.lr_scheduler import CosineAnnealingLR
    >>> valid_epochs_period({"valid_epochs": "cosine_minima",
    ...                      "lr_scheduler": partial(CosineAnnealingLR, T_max=5)})
    5
    """
    get = (hparams if isinstance(hparams, dict) else vars(hparams)).get
    policy = get("valid_epochs", "all")
    if policy == "all":
        return None
    if policy != "cosine_minima":
        raise RecipeConfigError(f"valid_epochs={policy!r} must be one of ['all', 'cosine_minima']")
    period = get("valid_epochs_period")
    if period is not None:
        if not (isinstance(period, int) and not isinstance(period, bool) and period >= 1):
            raise RecipeConfigError(
                f"valid_epochs_period={period!r} must be a whole number of epochs >= 1"
            )
        return period
    t_max = getattr(get("lr_scheduler"), "keywords", {}).get("T_max")
    interval = get("lr_schedule_interval", "epoch")
    whole_epochs = isinstance(t_max, int) and not isinstance(t_max, bool) and t_max >= 1
    if not whole_epochs or interval != "epoch":
        raise RecipeConfigError(
            "valid_epochs: cosine_minima validates around the minima of a cosine schedule "
            "stepped per epoch, and takes its period from lr_scheduler's T_max; this recipe has "
            f"T_max={t_max!r} with lr_schedule_interval={interval!r}. Set valid_epochs_period "
            "(epochs) or use valid_epochs: all"
        )
    return t_max


def validates(hparams, epoch):
    """Whether the recipe validates (and may select a checkpoint) after ``epoch``.

    ``valid_epochs`` from epoch ``valid_start_epoch`` on (the ASVspoof 5
    release starts at 11).

    Arguments
    ---------
    hparams : dict or namespace
        The recipe's hyperparameters.
    epoch : int
        Epoch number, from 1.

    Returns
    -------
    bool

    Example
    -------
    >>> validates({"valid_epochs": "all"}, 7)
    True
    >>> validates({"valid_epochs": "cosine_minima", "valid_epochs_period": 2}, 8)
    False
    >>> validates({"valid_epochs": "all", "valid_start_epoch": 11}, 10)
    False
    """
    start = (hparams if isinstance(hparams, dict) else vars(hparams)).get("valid_start_epoch")
    if epoch < (start or 1):
        return False
    period = valid_epochs_period(hparams)
    return period is None or cosine_minima(epoch, period)


def _check_codec_augment(hparams):
    """``codec_augment: True`` needs known conditions (PyAV for some) and a probability."""
    if hparams["codec_augment"]:
        try:
            ChannelAugment(hparams["codec_conditions"], hparams["codec_augment_prob"])
        except (ValueError, ImportError) as err:
            raise RecipeConfigError(f"codec_augment: {err}") from None


def _check_selection(hparams):
    """The selection statistic and candidate rule, and the augmented dev pass they may need."""
    augmented = hparams["valid_augmented"]
    augment = hparams["waveform_augment"]
    rawboost_off = augment is None or getattr(augment, "algo", None) == 0
    if augmented and rawboost_off and not hparams["codec_augment"]:
        raise RecipeConfigError(
            "valid_augmented: True scores the dev set a second time through the training "
            "augmentation (RawBoost, codecs), which is off (rawboost_algo: 0, codec_augment: "
            "False); set one of them or valid_augmented: False"
        )
    # An unknown statistic would select no checkpoint: the test would load the newest.
    metric = hparams["selection_metric"]
    known = STATISTICS + tuple(f"aug_{name}" for name in STATISTICS) + ("segment_EER",)
    if metric not in known:
        raise RecipeConfigError(f"selection_metric={metric!r} must be one of {list(known)}")
    if metric.startswith("aug_") and not augmented:
        raise RecipeConfigError(
            f"selection_metric={metric!r} is a statistic of the augmented dev pass, which "
            "needs valid_augmented: True"
        )
    if metric == "segment_EER" and hparams.get("segment_loss") is None:
        raise RecipeConfigError(
            f"selection_metric={metric!r} is a localisation statistic, which needs a "
            "segment_loss (and a back-end with frame outputs)"
        )
    candidates = hparams["selection_candidates"]
    if candidates not in ("validated", "either_loss_improves"):
        raise RecipeConfigError(
            f"selection_candidates={candidates!r} must be one of "
            "['validated', 'either_loss_improves']"
        )
    if candidates == "either_loss_improves" and not augmented:
        raise RecipeConfigError(
            "selection_candidates: either_loss_improves compares the clean and the augmented "
            "dev loss, which needs valid_augmented: True"
        )


def _check_localization(hparams):
    """A segment objective needs a back-end with frame outputs on the SSL model's frames."""
    segment_loss = hparams.get("segment_loss")
    if segment_loss is None:
        return
    backend = hparams["backend"]
    if backend is not None and not hasattr(backend, "forward_with_frames"):
        raise RecipeConfigError(
            f"segment_loss trains frame outputs, but the back-end {type(backend).__name__} has "
            "none; use speechbrain_nes2net.lobes.localization.Nes2NetLocalizer"
        )
    config = _ssl_config(hparams)
    if config is not None:
        shift = math.prod(config.conv_stride) / hparams["sample_rate"]
        if abs(shift - segment_loss.frame_shift) > 1e-9:
            raise RecipeConfigError(
                f"segment_loss.frame_shift={segment_loss.frame_shift} but the SSL model's frames "
                f"are {shift} s apart"
            )
    shift = hparams.get("localization_shift")
    if shift is not None:
        ratio = shift / segment_loss.frame_shift if isinstance(shift, (int, float)) else 0
        if round(ratio) < 1 or abs(ratio - round(ratio)) > 1e-6:
            raise RecipeConfigError(
                f"localization_shift={shift!r} must be a whole multiple of the frame shift "
                f"{segment_loss.frame_shift} s (0.02, 0.04, ..., 0.64)"
            )


def _ssl_config(hparams):
    """The transformers config of the loaded SSL model (None when ``ssl`` has none)."""
    model = getattr(getattr(hparams["ssl"], "ssl", None), "model", None)
    return getattr(model, "config", None)


def _check_ssl_shape(hparams):
    """ssl_dim and ssl_layers must describe the SSL model the YAML loaded."""
    config = _ssl_config(hparams)
    if config is None:
        return
    if "ssl_dim" in hparams and hparams["ssl_dim"] != config.hidden_size:
        raise RecipeConfigError(
            f"ssl_dim={hparams['ssl_dim']} but the SSL model {hparams.get('ssl_source')} has "
            f"hidden size {config.hidden_size}; set --ssl_dim={config.hidden_size}"
        )
    layers = config.num_hidden_layers + 1
    if "ssl_layers" in hparams and hparams["ssl_layers"] != layers:
        raise RecipeConfigError(
            f"ssl_layers={hparams['ssl_layers']} but the SSL model {hparams.get('ssl_source')} "
            f"returns {layers} hidden states ({config.num_hidden_layers} layers + their input); "
            f"set --ssl_layers={layers}"
        )


def _check_reference(key, value, preparation):
    """``value`` is ``<corpus>/<split>`` of a corpus under ``data_preparation``."""
    if not isinstance(value, str) or value.count("/") != 1:
        raise RecipeConfigError(f"{key} must be '<corpus>/<split>', got {value!r}")
    corpus = value.split("/")[0]
    if corpus not in preparation:
        raise RecipeConfigError(
            f"{key}={value!r} names corpus {corpus!r}, which is not under "
            f"data_preparation (have: {sorted(preparation)})"
        )
