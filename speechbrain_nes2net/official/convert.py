"""Official Nes2Net checkpoints converted into export folders.

:func:`convert_official_checkpoint` takes a released checkpoint
(github.com/Liu-Tianchi/Nes2Net, github.com/Liu-Tianchi/Nes2Net_ASVspoof_ITW):
the back-end (``Nested_Res2Net_TDNN.*``) and the layer aggregation
(``ssl_model.*``) are rebuilt by :mod:`speechbrain_nes2net.official.backend`,
the SSL front-end by :mod:`speechbrain_nes2net.official.frontend`, and the
result is written by :func:`speechbrain_nes2net.pretrained.export.write_export`
as a folder that ``EncoderClassifier.from_hparams`` loads.

Authors
 * speechbrain-nes2net contributors
"""

from pathlib import Path

import torch

from speechbrain_nes2net.evaluation.calibration import DecisionRule, load_calibration
from speechbrain_nes2net.official.backend import (
    AGGREGATOR_PREFIX,
    AGGREGATORS,
    BACKEND_PREFIX,
    aggregator_from_official,
    backend_from_official,
    official_aggregator,
    official_backend_kwargs,
)
from speechbrain_nes2net.official.frontend import (
    OFFICIAL_PREFIXES,
    frontend_from_official,
    hf_config_from_official,
)
from speechbrain_nes2net.official.keys import OfficialWeightsError, raise_key_problems
from speechbrain_nes2net.lobes.aggregation import build_aggregator
from speechbrain_nes2net.pretrained.export import EvalSettings, write_export

#: The encoder the released SSL models share: the "Large" wav2vec 2.0 layout
#: (24 pre-LayerNorm layers of width 1024, a layer-normed CNN feature encoder).
_LARGE_ENCODER = {
    "extractor_mode": "layer_norm",
    "encoder_layers": 24,
    "encoder_embed_dim": 1024,
    "encoder_ffn_embed_dim": 4096,
    "encoder_attention_heads": 16,
    "activation_fn": "gelu",
    "layer_norm_first": True,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "dropout_input": 0.0,
}

#: Configuration of the released SSL models as the official code loads them:
#: s3prl's WavLM-Large (CtrSVDD) and fairseq's XLS-R 300M (ASVspoof, ITW).
WAVLM_LARGE_CONFIG = {
    **_LARGE_ENCODER,
    "conv_bias": False,
    "normalize": True,
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
}

XLSR_300M_CONFIG = {**_LARGE_ENCODER, "conv_bias": True}


#: The SSL model each official back-end name was released with.
OFFICIAL_SSL = {
    "WavLM": ("s3prl_wavlm", WAVLM_LARGE_CONFIG, "microsoft/wavlm-large"),
    "wav2vec2": ("fairseq_wav2vec2", XLSR_300M_CONFIG, "facebook/wav2vec2-xls-r-300m"),
}


def load_official_checkpoint(checkpoint):
    """Reads an official checkpoint into a flat ``{name: tensor}`` state dict.

    Accepts a path to a ``.pt`` / ``.pth`` file (``torch.save(model.state_dict())``
    as the official code writes) or an already loaded dict; unwraps a
    ``state_dict`` / ``model`` entry and a DataParallel ``module.`` prefix.

    Arguments
    ---------
    checkpoint : str, Path or dict

    Returns
    -------
    dict

    Example
    -------
    >>> sorted(load_official_checkpoint({"model": {"module.fc.weight": torch.zeros(1)}}))
    ['fc.weight']
    """
    state = checkpoint
    if isinstance(checkpoint, (str, Path)):
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OfficialWeightsError(
            f"{checkpoint if isinstance(checkpoint, (str, Path)) else 'the checkpoint'} is not "
            "a state dict of tensors (the official code saves model.state_dict())"
        )
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return dict(state)


def _official_aggregator_name(state, ssl_prefix):
    """The official aggregator a checkpoint holds, told by its marker key."""
    present = {
        key[len(AGGREGATOR_PREFIX) :]
        for key in state
        if key.startswith(AGGREGATOR_PREFIX) and not key.startswith(ssl_prefix)
    }
    names = {name for name, entry in AGGREGATORS.items() if entry.marker in present}
    if len(names) > 1:
        raise OfficialWeightsError(f"the checkpoint holds several aggregators: {sorted(names)}")
    return names.pop() if names else None


def _partition_official_keys(state, ssl_prefix, aggregator_name):
    """Checks that every key belongs to the back-end, the SSL model or the aggregator."""
    leftover = []
    for key in state:
        if key.startswith((BACKEND_PREFIX, ssl_prefix)):
            continue
        if key.startswith(AGGREGATOR_PREFIX) and aggregator_name is not None:
            continue  # aggregator_from_official refuses anything it does not map
        leftover.append(key)
    raise_key_problems(
        f"the model has a back-end {BACKEND_PREFIX}*, an SSL model {ssl_prefix}* and "
        + (f"an aggregator {AGGREGATOR_PREFIX}*" if aggregator_name else "no aggregator"),
        [("checkpoint keys that belong to no part of the model", leftover)],
    )


def convert_official_checkpoint(
    checkpoint,
    export_folder,
    backend_name,
    backend_config=None,
    ssl_name=None,
    ssl_config=None,
    aggregator_name="auto",
    ssl_source_note=None,
    eval_samples=None,
    eval_min_samples=0,
    calibration=None,
    card=None,
    overwrite=False,
    verify=True,
):
    """Converts an official Nes2Net checkpoint into an export folder.

    The back-end (``Nested_Res2Net_TDNN.*``) and the layer aggregation
    (``ssl_model.*``) go through :mod:`speechbrain_nes2net.official.backend`, the SSL
    front-end (s3prl WavLM under ``ssl_model.model.model.*``, fairseq
    wav2vec 2.0 / XLS-R under ``ssl_model.model.*``) through
    :mod:`speechbrain_nes2net.official.frontend` into transformers
    ``WavLMModel`` / ``Wav2Vec2Model``. Every key of the checkpoint must be
    used (pre-training heads of the SSL model excepted) and every parameter
    filled, or an :class:`OfficialWeightsError` lists the offending keys.

    Arguments
    ---------
    checkpoint : str, Path or dict
        The official ``.pt`` / ``.pth`` file or its state dict.
    export_folder : str or Path
        Where to write the export.
    backend_name : str
        Official model name: 'WavLM_Nes2Net', 'WavLM_Nes2Net_X',
        'WavLM_Nes2Net_X_SeLU' (CtrSVDD) or 'wav2vec2_Nes2Net_X' (ASVspoof).
    backend_config : dict, optional
        Official back-end arguments (``Nes_ratio``, ``dilation``, ``pool_func``,
        ``SE_ratio``, ``n_output_logits``); ``input_channel`` defaults to the
        SSL model's width.
    ssl_name : str, optional
        's3prl_wavlm' or 'fairseq_wav2vec2' (default: from ``backend_name``).
    ssl_config : dict, optional
        The SSL model's official configuration (default: WavLM-Large /
        XLS-R 300M, :data:`WAVLM_LARGE_CONFIG`, :data:`XLSR_300M_CONFIG`).
    aggregator_name : str or None
        'WavLM_SEA', 'WavLM_WeightedSum', 'WavLM_AttM', None (last layer) or
        'auto' (from the checkpoint's keys).
    ssl_source_note : str, optional
        What the SSL model is, for the model card (default: the released
        model's hub id).
    eval_samples : int, optional
        Score the first N samples (the release's "4 s" mode); full utterances
        when None, as the releases evaluate CtrSVDD and In-the-Wild.
    eval_min_samples : int
        Repeat-pad shorter full utterances to this length.
    calibration : ScoreCalibration, dict or path, optional
        Score calibration to ship (fitted on development scores of the
        converted model); the decision is its Bayes threshold at equal
        priors. Without it, labels follow the raw score's sign (a warning says so).
    card : dict, optional
        Extra model card facts (see :func:`model_card`).
    overwrite : bool
        Replace an existing export folder.
    verify : bool
        Check that the written folder reproduces the converted modules.

    Returns
    -------
    Path
        The export folder.
    """
    state = load_official_checkpoint(checkpoint)
    family = backend_name.split("_", 1)[0]
    if family not in OFFICIAL_SSL:
        raise ValueError(
            f"backend_name={backend_name!r} does not start with one of {sorted(OFFICIAL_SSL)}"
        )
    default_ssl, default_config, hub_id = OFFICIAL_SSL[family]
    ssl_name = ssl_name or default_ssl
    ssl_config = dict(default_config if ssl_config is None else ssl_config)
    ssl_prefix = OFFICIAL_PREFIXES[ssl_name]
    if aggregator_name == "auto":
        aggregator_name = _official_aggregator_name(state, ssl_prefix)
    our_aggregator = "last"
    if aggregator_name is not None:
        our_aggregator = official_aggregator(aggregator_name).ours  # refuses unknown names
    _partition_official_keys(state, ssl_prefix, aggregator_name)

    hf_config = hf_config_from_official(ssl_name, ssl_config)
    num_states, dim = hf_config.num_hidden_layers + 1, hf_config.hidden_size
    backend_config = {"input_channel": dim, **(backend_config or {})}
    if int(backend_config["input_channel"]) != dim:
        raise OfficialWeightsError(
            f"the back-end takes {backend_config['input_channel']} channels but the SSL model "
            f"gives {dim}"
        )
    backend = backend_from_official(backend_name, backend_config, state)
    _, backend_kwargs = official_backend_kwargs(backend_name, backend_config)
    if aggregator_name is None:
        aggregator = build_aggregator(our_aggregator, num_states, dim).eval()
    else:
        aggregator = aggregator_from_official(
            aggregator_name, {"n_layers": num_states, "dim": dim}, state
        )
    frontend = frontend_from_official(ssl_name, ssl_config, state, freeze=True)

    name = (
        checkpoint.name
        if isinstance(checkpoint, Path)
        else (Path(checkpoint).name if isinstance(checkpoint, str) else "a state dict")
    )
    released = ssl_config == dict(default_config)
    note = ssl_source_note or (
        f"{hub_id}, fine-tuned in the checkpoint"
        if released
        else f"a {ssl_name} model of the given configuration, weights from the checkpoint"
    )
    defaults = {
        "title": f"Nes2Net official release: {backend_name}"
        + (f" + {aggregator_name}" if aggregator_name else ""),
        "description": (
            "An official Nes2Net checkpoint (Liu et al., IEEE T-IFS 2025) converted to "
            "SpeechBrain with speechbrain-nes2net: the same weights, the SSL front-end as a "
            "transformers model."
        ),
        "origin": (
            f"Converted from the official checkpoint `{name}` (github.com/Liu-Tianchi/Nes2Net, "
            "github.com/Liu-Tianchi/Nes2Net_ASVspoof_ITW); check the licence of that release "
            "too."
        ),
        "ssl_source": note,
        "ssl_hub_id": hub_id if released else None,
        "ssl_fine_tuned": True,
    }
    settings = EvalSettings(eval_samples=eval_samples, eval_min_samples=eval_min_samples)
    return write_export(
        export_folder,
        frontend,
        aggregator,
        backend,
        backend_kwargs,
        settings=settings,
        decision=None if calibration is None else DecisionRule.from_calibration(
            load_calibration(calibration)
        ),
        card={**defaults, **(card or {})},
        overwrite=overwrite,
        verify=verify,
    )
