"""Import of weights from the official Nes2Net releases.

The official code (github.com/Liu-Tianchi/Nes2Net for CtrSVDD and
github.com/Liu-Tianchi/Nes2Net_ASVspoof_ITW for ASVspoof / In-the-Wild) saves
full-model checkpoints whose back-end lives under ``Nested_Res2Net_TDNN.`` and
whose SSL front-end and layer aggregation live under ``ssl_model.``. The
functions here rebuild our lobes from an official model name, the official
constructor arguments and such a state dict. Keys of other parts of the
checkpoint are ignored (the SSL front-end has its own entry point,
:func:`frontend_from_official`, re-exported here from
:mod:`speechbrain_nes2net.official.frontend`); within the part being imported every key must map onto
our module and every parameter and buffer of our module must be filled, or a
:class:`OfficialWeightsError` lists what is missing, unexpected or misshapen.

Example
-------
>>> import torch
>>> from speechbrain_nes2net.lobes.nes2net import Nes2NetX
>>> config = {"Nes_ratio": [4, 4], "input_channel": 64, "dilation": 1,
...           "pool_func": "mean", "SE_ratio": [1]}
>>> ours = Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4)
>>> state = official_backend_state_dict(ours)
>>> backend = backend_from_official("WavLM_Nes2Net_X", config, state)
>>> backend(torch.rand(1, 20, 64)).shape
torch.Size([1, 1])
"""

from typing import NamedTuple

import torch

from speechbrain_nes2net.lobes.aggregation import build_aggregator
from speechbrain_nes2net.lobes.nes2net import Nes2Net, Nes2NetX
from speechbrain_nes2net.official.frontend import frontend_from_official
from speechbrain_nes2net.official.keys import (
    OfficialWeightsError,
    raise_key_problems,
    rename_keys,
)

__all__ = [
    "backend_from_official",
    "aggregator_from_official",
    "frontend_from_official",
    "official_backend_state_dict",
    "official_backend_kwargs",
    "official_aggregator",
    "OfficialWeightsError",
]

BACKEND_PREFIX = "Nested_Res2Net_TDNN."
AGGREGATOR_PREFIX = "ssl_model."

# model name -> (our class, activation, smallest SE bottleneck, default n_out)
BACKENDS = {
    "WavLM_Nes2Net": (Nes2Net, "relu", 1, 1),
    "WavLM_Nes2Net_X": (Nes2NetX, "relu", 1, 1),
    "WavLM_Nes2Net_X_SeLU": (Nes2NetX, "selu", 2, 1),
    "wav2vec2_Nes2Net_X": (Nes2NetX, "relu", 1, 2),
}

# The official Nested_Res2Net_TDNN constructor defaults.
BACKEND_DEFAULTS = {
    "Nes_ratio": [8, 8],
    "input_channel": 1024,
    "dilation": 2,
    "pool_func": "mean",
    "SE_ratio": [8],
}
BACKEND_CONFIG_KEYS = set(BACKEND_DEFAULTS) | {"n_output_logits"}

# Key correspondences, official -> ours, on keys without the prefix, as templates
# of speechbrain_nes2net.official.keys: {i} and {j} stand for indices, {rest} for
# the parameter or buffer name.
BACKEND_KEY_RULES = [
    ("Build_in_Res2Nets.{i}.conv1.{rest}", "blocks.{i}.conv_in.{rest}"),
    ("Build_in_Res2Nets.{i}.bn1.{rest}", "blocks.{i}.bn_in.{rest}"),
    ("Build_in_Res2Nets.{i}.convs.{j}.{rest}", "blocks.{i}.convs.{j}.{rest}"),
    ("Build_in_Res2Nets.{i}.bns.{j}.{rest}", "blocks.{i}.bns.{j}.{rest}"),
    ("Build_in_Res2Nets.{i}.conv3.{rest}", "blocks.{i}.conv_out.{rest}"),
    ("Build_in_Res2Nets.{i}.bn3.{rest}", "blocks.{i}.bn_out.{rest}"),
    ("Build_in_Res2Nets.{i}.se.se.1.{rest}", "blocks.{i}.se.conv1.conv.{rest}"),
    ("Build_in_Res2Nets.{i}.se.se.3.{rest}", "blocks.{i}.se.conv2.conv.{rest}"),
    ("Build_in_Res2Nets.{i}.weighted_sum.{j}", "blocks.{i}.stack_weights.{j}"),
    ("bns.{i}.{rest}", "block_norms.{i}.{rest}"),
    ("bn.{rest}", "norm.{rest}"),
    ("fc.{rest}", "fc.{rest}"),
    ("pooling.linear1.{rest}", "pooling.attention_in.{rest}"),
    ("pooling.linear2.{rest}", "pooling.attention_out.{rest}"),
]


class OfficialAggregator(NamedTuple):
    """The names of one official layer aggregator.

    Attributes
    ----------
    agg : str
        Its name in the official configuration (``agg``).
    ours : str
        Its name for :func:`~speechbrain_nes2net.lobes.aggregation.build_aggregator`.
    marker : str
        A key (after :data:`AGGREGATOR_PREFIX`) that only checkpoints with this
        aggregator hold.
    """

    agg: str
    ours: str
    marker: str


#: Official aggregator model names -> their names in the official configuration,
#: in :func:`~speechbrain_nes2net.lobes.aggregation.build_aggregator`, and the
#: checkpoint key that identifies them.
AGGREGATORS = {
    "WavLM_SEA": OfficialAggregator("SEA", "SEA", "fc_att_merge.0.weight"),
    "WavLM_WeightedSum": OfficialAggregator("WeightedSum", "weighted_sum", "weight_hidd"),
    "WavLM_AttM": OfficialAggregator("AttM", "AttM", "W"),
}
AGGREGATOR_KEY_RULES = [
    ("fc_att_merge.{i}.weight", "excitation.{i}.weight"),
    ("weight_hidd", "layer_weights"),
    ("W", "feature_proj"),
    ("W1", "layer_proj_in"),
    ("W2", "layer_proj_out"),
    ("linear_proj.{rest}", "output_proj.{rest}"),
]


def backend_from_official(model_name, config, state_dict):
    """Builds our back-end from an official Nes2Net checkpoint.

    Arguments
    ---------
    model_name : str
        Official model name: 'WavLM_Nes2Net', 'WavLM_Nes2Net_X',
        'WavLM_Nes2Net_X_SeLU' or 'wav2vec2_Nes2Net_X'.
    config : dict
        Official ``Nested_Res2Net_TDNN`` constructor arguments (``Nes_ratio``,
        ``input_channel``, ``dilation``, ``pool_func``, ``SE_ratio``,
        ``n_output_logits``); missing ones take the official defaults.
    state_dict : dict
        A full official checkpoint (keys ``Nested_Res2Net_TDNN.*``; other
        keys are ignored) or the back-end's own state dict.

    Returns
    -------
    torch.nn.Module
        A :class:`Nes2Net` or :class:`Nes2NetX` in eval mode, taking
        (batch, time, channels) and returning logits (batch, n_out).
    """
    cls, kwargs = official_backend_kwargs(model_name, config)
    model = cls(**kwargs)
    part = _strip_prefix(state_dict, BACKEND_PREFIX)
    mapped = rename_keys(part, BACKEND_KEY_RULES, f"{model_name} back-end")
    _load_exactly(model, mapped, f"{model_name} back-end")
    return model.eval()


def aggregator_from_official(model_name, config, state_dict):
    """Builds our SSL layer aggregator from an official CtrSVDD checkpoint.

    Arguments
    ---------
    model_name : str
        'WavLM_SEA', 'WavLM_WeightedSum' or 'WavLM_AttM'.
    config : dict
        ``agg`` (must agree with the model name when given), ``n_layers``
        (25 for WavLM-Large) and ``dim`` (1024).
    state_dict : dict
        A full official checkpoint (keys ``ssl_model.*``; the SSL model's own
        ``ssl_model.model.*`` keys and keys of other parts are ignored).

    Returns
    -------
    torch.nn.Module
        Takes (layers, batch, time, dim) and returns (batch, time, dim).
    """
    entry = official_aggregator(model_name)
    if config.get("agg", entry.agg) != entry.agg:
        raise ValueError(
            f"config agg={config['agg']!r} contradicts model name {model_name!r}"
        )
    num_layers = int(config.get("n_layers", 25))
    dim = int(config.get("dim", 1024))
    model = build_aggregator(entry.ours, num_layers, dim)
    part = {
        key: value
        for key, value in _strip_prefix(state_dict, AGGREGATOR_PREFIX).items()
        if not key.startswith("model.")
    }
    mapped = rename_keys(part, AGGREGATOR_KEY_RULES, f"{model_name} aggregator")
    _load_exactly(model, mapped, f"{model_name} aggregator")
    return model.eval()


def official_aggregator(model_name):
    """The names of an official aggregator (see :data:`AGGREGATORS`).

    Arguments
    ---------
    model_name : str
        'WavLM_SEA', 'WavLM_WeightedSum' or 'WavLM_AttM'.

    Returns
    -------
    OfficialAggregator

    Raises
    ------
    ValueError
        For an unknown name.

    Example
    -------
    >>> official_aggregator("WavLM_WeightedSum").ours
    'weighted_sum'
    """
    if model_name not in AGGREGATORS:
        raise ValueError(
            f"unknown official aggregator {model_name!r}; known: {sorted(AGGREGATORS)}"
        )
    return AGGREGATORS[model_name]


def official_backend_state_dict(model):
    """Writes our back-end's weights under the official key names.

    The inverse of the import, used to hand weights back to the official code
    and to test the mapping on any configuration.

    Arguments
    ---------
    model : Nes2Net
        Our back-end.

    Returns
    -------
    dict
        State dict with ``Nested_Res2Net_TDNN.*`` keys and official shapes.
    """
    renamed = rename_keys(
        model.state_dict(), BACKEND_KEY_RULES, f"{type(model).__name__} back-end", reverse=True
    )
    return {
        BACKEND_PREFIX + name: _official_shape(name, value) for name, value in renamed.items()
    }


def _official_shape(name, value):
    """A copy of one of our tensors in the shape the official code stores."""
    if ".weighted_sum." in name:
        return value.reshape(1, 1, 1, -1).clone()
    return value.clone()


def _strip_prefix(state_dict, prefix):
    """The part of a state dict under ``prefix``, with the prefix removed."""
    if any(key.startswith(prefix) for key in state_dict):
        return {
            key[len(prefix):]: value
            for key, value in state_dict.items()
            if key.startswith(prefix)
        }
    return dict(state_dict)


def _load_exactly(model, mapped, what):
    """Loads renamed official weights into our module, every key and shape checked."""
    own = model.state_dict()
    converted, mismatched = {}, []
    for key in sorted(set(own) & set(mapped)):
        value = torch.as_tensor(mapped[key])
        if value.numel() == own[key].numel() and value.dim() != own[key].dim():
            # Nes2Net-X stack weights are stored as (1, 1, 1, n) officially.
            value = value.reshape(own[key].shape)
        if value.shape != own[key].shape:
            mismatched.append(
                f"{key}: official shape {tuple(value.shape)} vs expected "
                f"{tuple(own[key].shape)}"
            )
        converted[key] = value
    raise_key_problems(
        f"{what}: the state dict does not match the configuration",
        [
            ("missing keys, by our names", sorted(set(own) - set(mapped))),
            ("unexpected keys, by our names", sorted(set(mapped) - set(own))),
            ("shape mismatches", mismatched),
        ],
    )
    model.load_state_dict(converted, strict=True)


def official_backend_kwargs(model_name, config):
    """Our back-end class and constructor arguments for an official configuration.

    The same translation :func:`backend_from_official` makes, returned as data
    so that an exported ``hyperparams.yaml`` can rebuild the back-end.

    Arguments
    ---------
    model_name : str
        Official model name (see :data:`BACKENDS`).
    config : dict
        Official ``Nested_Res2Net_TDNN`` constructor arguments.

    Returns
    -------
    (type, dict)
        The class (:class:`Nes2Net` or :class:`Nes2NetX`) and its keyword
        arguments.

    Example
    -------
    >>> cls, kwargs = official_backend_kwargs("WavLM_Nes2Net_X_SeLU", {"input_channel": 64,
    ...     "Nes_ratio": [4, 4]})
    >>> cls.__name__, kwargs["activation"], kwargs["se_min_channels"], kwargs["n_out"]
    ('Nes2NetX', 'selu', 2, 1)
    """
    if model_name not in BACKENDS:
        raise ValueError(
            f"unknown official back-end {model_name!r}; known: {sorted(BACKENDS)}"
        )
    cls, activation, se_min_channels, default_n_out = BACKENDS[model_name]
    unknown = set(config) - BACKEND_CONFIG_KEYS
    if unknown:
        raise ValueError(
            f"unknown official back-end config keys {sorted(unknown)}; "
            f"expected a subset of {sorted(BACKEND_CONFIG_KEYS)}"
        )
    cfg = {**BACKEND_DEFAULTS, **config}
    ratios = list(cfg["Nes_ratio"])
    if len(ratios) < 2:
        raise ValueError(f"Nes_ratio must give [outer, inner], got {cfg['Nes_ratio']}")
    se_ratio = cfg["SE_ratio"]
    se_ratio = se_ratio[0] if isinstance(se_ratio, (list, tuple)) else se_ratio
    return cls, dict(
        input_size=int(cfg["input_channel"]),
        outer_ratio=int(ratios[0]),
        inner_ratio=int(ratios[1]),
        kernel_size=3,
        dilation=int(cfg["dilation"]),
        se_ratio=int(se_ratio),
        se_min_channels=se_min_channels,
        activation=activation,
        pooling=cfg["pool_func"],
        n_out=int(cfg.get("n_output_logits", default_n_out)),
    )
