"""Imports the SSL front-end of an official Nes2Net checkpoint into SpeechBrain.

The official Nes2Net recipes wrap two third-party front-ends:

* ``s3prl_wavlm`` (CtrSVDD): s3prl's WavLM (``s3prl.hub.wavlm_large``), stored
  under ``ssl_model.model.model.*``. It layer-normalises every waveform when its
  configuration says ``normalize=True`` and hands the aggregation L + 1 states:
  the input of every transformer layer, then the encoder output (after the
  encoder's final LayerNorm when ``layer_norm_first=True``).
* ``fairseq_wav2vec2`` (ASVspoof 2019/2021/In-the-Wild): fairseq's
  ``Wav2Vec2Model`` (XLS-R), stored under ``ssl_model.model.*``, fed raw
  waveforms; the back-end sees ``features_only`` output ``x``, the last layer
  after the encoder's final LayerNorm.

This module rebuilds both as transformers models (``WavLMModel`` /
``Wav2Vec2Model``) inside SpeechBrain's HF lobes, so that every downstream piece
(fine-tuning, export, ``from_hparams``) sees an ordinary SpeechBrain front-end:

* :func:`hf_config_from_official` translates the official configuration;
* :func:`hf_state_dict_from_official` renames the weights with explicit rules
  (:data:`OFFICIAL_TO_HF_RULES`) and refuses anything left over or missing;
* :func:`write_hf_folder` writes a model folder (weights, ``config.json``,
  ``preprocessor_config.json``) that SpeechBrain's lobes load;
* :class:`SSLFrontend` runs a lobe on such a folder and returns the states
  in the official layout, (layers + 1, batch, frames, dim);
* :func:`frontend_from_official` chains the above.

Authors
 * speechbrain-nes2net contributors
"""

import ast
import tempfile
from pathlib import Path

import torch  # noqa: F401  (used by the doctests)
import transformers

from speechbrain_nes2net.lobes.ssl import SSLFrontend
from speechbrain_nes2net.official.keys import (
    OfficialWeightsError,
    raise_key_problems,
    rename,
    rename_keys,
)

MODEL_NAMES = ("s3prl_wavlm", "fairseq_wav2vec2")

#: Where each front-end's weights live in a full official checkpoint.
OFFICIAL_PREFIXES = {
    "s3prl_wavlm": "ssl_model.model.model.",
    "fairseq_wav2vec2": "ssl_model.model.",
}

#: Renaming rules, official name (prefix stripped) -> transformers name, as
#: templates of :mod:`speechbrain_nes2net.official.keys`: ``{i}`` is a layer
#: index, ``{p}`` weight or bias, ``{proj}`` q, k, v or out.
#: The first rule that matches a name wins, in both directions.
OFFICIAL_TO_HF_RULES = {
    "common": (
        # Feature encoder: conv_layers.i = Sequential(conv, dropout, [norm], GELU);
        # the norm follows the extractor mode (EXTRACTOR_NORM_RULES).
        ("feature_extractor.conv_layers.{i}.0.{p}", "feature_extractor.conv_layers.{i}.conv.{p}"),
        # LayerNorm over the CNN features, then the projection to the encoder width.
        ("layer_norm.{p}", "feature_projection.layer_norm.{p}"),
        ("post_extract_proj.{p}", "feature_projection.projection.{p}"),
        # The learned vector that replaces masked frames (training-time masking).
        ("mask_emb", "masked_spec_embed"),
        # Weight-normed positional convolution: g is original0, v is original1.
        (
            "encoder.pos_conv.0.weight_g",
            "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
        ),
        (
            "encoder.pos_conv.0.weight_v",
            "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
        ),
        # Checkpoints saved with torch's parametrised weight_norm.
        (
            "encoder.pos_conv.0.parametrizations.weight.original0",
            "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
        ),
        (
            "encoder.pos_conv.0.parametrizations.weight.original1",
            "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
        ),
        ("encoder.pos_conv.0.bias", "encoder.pos_conv_embed.conv.bias"),
        ("encoder.layer_norm.{p}", "encoder.layer_norm.{p}"),
        # Transformer layers.
        (
            "encoder.layers.{i}.self_attn.{proj}_proj.{p}",
            "encoder.layers.{i}.attention.{proj}_proj.{p}",
        ),
        ("encoder.layers.{i}.self_attn_layer_norm.{p}", "encoder.layers.{i}.layer_norm.{p}"),
        ("encoder.layers.{i}.fc1.{p}", "encoder.layers.{i}.feed_forward.intermediate_dense.{p}"),
        ("encoder.layers.{i}.fc2.{p}", "encoder.layers.{i}.feed_forward.output_dense.{p}"),
        ("encoder.layers.{i}.final_layer_norm.{p}", "encoder.layers.{i}.final_layer_norm.{p}"),
    ),
    "s3prl_wavlm": (
        # Gated relative position bias (gru_rel_pos), bucket table in layer 0 only.
        ("encoder.layers.{i}.self_attn.grep_a", "encoder.layers.{i}.attention.gru_rel_pos_const"),
        (
            "encoder.layers.{i}.self_attn.grep_linear.{p}",
            "encoder.layers.{i}.attention.gru_rel_pos_linear.{p}",
        ),
        (
            "encoder.layers.{i}.self_attn.relative_attention_bias.weight",
            "encoder.layers.{i}.attention.rel_attn_embed.weight",
        ),
    ),
    "fairseq_wav2vec2": (),
}

#: Feature-encoder normalisation rules, by transformers ``feat_extract_norm``:
#: with extractor_mode=layer_norm every layer has
#: Sequential(TransposeLast, LayerNorm, TransposeLast) at index 2; with
#: extractor_mode=default only layer 0 has a GroupNorm there.
EXTRACTOR_NORM_RULES = {
    "layer": (
        (
            "feature_extractor.conv_layers.{i}.2.1.{p}",
            "feature_extractor.conv_layers.{i}.layer_norm.{p}",
        ),
    ),
    "group": (
        ("feature_extractor.conv_layers.0.2.{p}", "feature_extractor.conv_layers.0.layer_norm.{p}"),
    ),
}

#: Official parameters with no encoder counterpart: the pre-training heads of
#: wav2vec 2.0 (quantiser, its projection, the context projection and the
#: optional GLU on the targets). They never touch the features, so they are
#: dropped; any other unmapped name is an error.
PRETRAINING_HEADS = ("quantizer.", "project_q.", "final_proj.", "target_glu.")

_EXTRACTOR_MODES = {"default": "group", "layer_norm": "layer"}
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_accurate": "gelu_accurate",
    "gelu_fast": "gelu_accurate",  # fairseq's deprecated alias
    "relu": "relu",
    "tanh": "tanh",
    "linear": "linear",
    "swish": "swish",
}
# Defaults of the official configuration dataclasses (fairseq Wav2Vec2Config,
# unilm/s3prl WavLMConfig) for the fields that shape the network, used when a
# checkpoint's configuration omits them.
_OFFICIAL_DEFAULTS = {
    "extractor_mode": "default",
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2",
    "conv_bias": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "dropout_input": 0.0,
    "mask_prob": 0.65,
    "mask_length": 10,
    "mask_channel_prob": 0.0,
    "mask_channel_length": 10,
    "normalize": False,
    # WavLM only
    "relative_position_embedding": False,
    "num_buckets": 320,
    "max_distance": 1280,
    "gru_rel_pos": False,
    # fairseq only
    "layer_type": "transformer",
    "pos_conv_depth": 1,
    "quantize_input": False,
}


def _check_model_name(model_name):
    """Refuses a front-end name other than those of :data:`MODEL_NAMES`."""
    if model_name not in MODEL_NAMES:
        raise ValueError(f"model_name={model_name!r} is not supported; choose one of {MODEL_NAMES}")


def _field(config, name):
    """A field of an official configuration, or its official default."""
    return config.get(name, _OFFICIAL_DEFAULTS[name])


def _eval_layer_spec(node, spec):
    """Evaluates the list/tuple/int/+/* subset of Python that conv specs use."""
    if isinstance(node, ast.Expression):
        return _eval_layer_spec(node.body, spec)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_eval_layer_spec(item, spec) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _eval_layer_spec(node.left, spec), _eval_layer_spec(node.right, spec)
        return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError(f"conv_feature_layers={spec!r}: unsupported expression {ast.dump(node)}")


def parse_conv_feature_layers(spec):
    """Parses fairseq's ``conv_feature_layers`` string without ``eval``.

    Arguments
    ---------
    spec : str
        A Python expression of lists of ``(dim, kernel, stride)`` tuples joined
        by ``+`` and repeated by ``*``, as in fairseq and s3prl configurations.

    Returns
    -------
    list of tuple
        One ``(dim, kernel, stride)`` per convolution layer.

    Example
    -------
    >>> parse_conv_feature_layers("[(512, 10, 5)] + [(512, 3, 2)] * 2")
    [(512, 10, 5), (512, 3, 2), (512, 3, 2)]
    """
    try:
        tree = ast.parse(spec, mode="eval")
    except SyntaxError as err:
        raise ValueError(
            f"conv_feature_layers={spec!r} is not a Python expression: {err}"
        ) from None
    layers = _eval_layer_spec(tree, spec)
    if not isinstance(layers, list) or not layers:
        raise ValueError(
            f"conv_feature_layers={spec!r} must be a non-empty list of (dim, kernel, stride)"
        )
    for layer in layers:
        if not (
            isinstance(layer, tuple) and len(layer) == 3 and all(isinstance(v, int) for v in layer)
        ):
            raise ValueError(
                f"conv_feature_layers={spec!r}: {layer!r} is not a (dim, kernel, stride) tuple"
            )
    return layers


def _require(model_name, config, name, supported):
    """A configuration field, refused unless transformers can represent its value."""
    value = _field(config, name)
    if value not in supported:
        raise OfficialWeightsError(
            f"{model_name} config has {name}={value!r}, which transformers cannot represent "
            f"(supported: {sorted(supported, key=str)})"
        )
    return value


def hf_config_from_official(model_name, config):
    """Translates an official front-end configuration into a transformers one.

    Dropout probabilities are carried over; LayerDrop is always 0 because with
    transformers 5 a dropped layer also vanishes from the hidden states that the
    layer aggregation reads. Fields that the transformers models cannot express
    (e.g. WavLM without gated relative position bias, fairseq conformer layers)
    raise :class:`OfficialWeightsError`.

    Arguments
    ---------
    model_name : str
        ``s3prl_wavlm`` or ``fairseq_wav2vec2``.
    config : dict
        The official configuration (s3prl ``WavLMConfig`` / fairseq
        ``Wav2Vec2Config`` fields); missing fields take the official defaults.

    Returns
    -------
    transformers.WavLMConfig or transformers.Wav2Vec2Config

    Example
    -------
    >>> config = dict(extractor_mode="layer_norm", layer_norm_first=True, encoder_layers=2,
    ...     encoder_embed_dim=16, encoder_ffn_embed_dim=32, encoder_attention_heads=2,
    ...     conv_feature_layers="[(8, 10, 5)] + [(8, 3, 2)]", conv_pos=4, conv_pos_groups=2)
    >>> hf_config = hf_config_from_official("fairseq_wav2vec2", config)
    >>> hf_config.feat_extract_norm, hf_config.do_stable_layer_norm, hf_config.conv_stride
    ('layer', True, [5, 2])
    """
    _check_model_name(model_name)
    conv_layers = parse_conv_feature_layers(_field(config, "conv_feature_layers"))
    hidden_size = _field(config, "encoder_embed_dim")
    if conv_layers[-1][0] == hidden_size:
        # fairseq then has no post_extract_proj while transformers always projects.
        raise OfficialWeightsError(
            f"{model_name} config: the feature encoder width equals "
            f"encoder_embed_dim={hidden_size}, so the official model has no post_extract_proj; "
            "transformers cannot represent that"
        )
    kwargs = dict(
        hidden_size=hidden_size,
        num_hidden_layers=_field(config, "encoder_layers"),
        num_attention_heads=_field(config, "encoder_attention_heads"),
        intermediate_size=_field(config, "encoder_ffn_embed_dim"),
        hidden_act=_ACTIVATIONS[_require(model_name, config, "activation_fn", _ACTIVATIONS)],
        feat_extract_norm=_EXTRACTOR_MODES[
            _require(model_name, config, "extractor_mode", _EXTRACTOR_MODES)
        ],
        feat_extract_activation="gelu",  # hard-coded GELU in the official CNN and positional conv
        conv_dim=[dim for dim, _, _ in conv_layers],
        conv_kernel=[kernel for _, kernel, _ in conv_layers],
        conv_stride=[stride for _, _, stride in conv_layers],
        conv_bias=bool(_field(config, "conv_bias")),
        num_conv_pos_embeddings=_field(config, "conv_pos"),
        num_conv_pos_embedding_groups=_field(config, "conv_pos_groups"),
        do_stable_layer_norm=bool(_field(config, "layer_norm_first")),
        hidden_dropout=_field(config, "dropout"),
        attention_dropout=_field(config, "attention_dropout"),
        activation_dropout=_field(config, "activation_dropout"),
        feat_proj_dropout=_field(config, "dropout_input"),
        final_dropout=0.0,
        layerdrop=0.0,
        layer_norm_eps=1e-5,  # fairseq LayerNorm default
        mask_time_prob=_field(config, "mask_prob"),
        mask_time_length=_field(config, "mask_length"),
        mask_feature_prob=_field(config, "mask_channel_prob"),
        mask_feature_length=_field(config, "mask_channel_length"),
    )
    if model_name == "s3prl_wavlm":
        _require(model_name, config, "relative_position_embedding", {True})
        _require(model_name, config, "gru_rel_pos", {True})
        return transformers.WavLMConfig(
            num_buckets=_field(config, "num_buckets"),
            max_bucket_distance=_field(config, "max_distance"),
            **kwargs,
        )
    _require(model_name, config, "layer_type", {"transformer"})
    _require(model_name, config, "pos_conv_depth", {1})
    _require(model_name, config, "quantize_input", {False})
    return transformers.Wav2Vec2Config(**kwargs)


def official_normalizes_waveform(model_name, config):
    """Whether the official front-end layer-normalises each waveform first.

    s3prl normalises when the WavLM configuration says ``normalize``; the
    official ASVspoof code feeds fairseq raw waveforms whatever the
    pre-training task did.

    Arguments
    ---------
    model_name : str
        ``s3prl_wavlm`` or ``fairseq_wav2vec2``.
    config : dict
        The official configuration.

    Returns
    -------
    bool

    Example
    -------
    >>> official_normalizes_waveform("s3prl_wavlm", {"normalize": True})
    True
    >>> official_normalizes_waveform("fairseq_wav2vec2", {"normalize": True})
    False
    """
    _check_model_name(model_name)
    return model_name == "s3prl_wavlm" and bool(_field(config, "normalize"))


def hf_feature_extractor_from_official(model_name, config):
    """Builds the preprocessor (``preprocessor_config.json``) matching the checkpoint.

    SpeechBrain's HF lobes normalise the waveform exactly when ``do_normalize``
    is set, so it must follow the official front-end, not a hub default.

    Arguments
    ---------
    model_name : str
        ``s3prl_wavlm`` or ``fairseq_wav2vec2``.
    config : dict
        The official configuration.

    Returns
    -------
    transformers.Wav2Vec2FeatureExtractor

    Example
    -------
    >>> hf_feature_extractor_from_official("fairseq_wav2vec2", {}).do_normalize
    False
    """
    return transformers.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=official_normalizes_waveform(model_name, config),
        # Only the group-norm-free feature encoder is safe with padding masks.
        return_attention_mask=_field(config, "extractor_mode") == "layer_norm",
    )


def _rules(model_name, hf_config):
    """The renaming rules of one front-end and feature-encoder layout."""
    return (
        OFFICIAL_TO_HF_RULES["common"]
        + EXTRACTOR_NORM_RULES[hf_config.feat_extract_norm]
        + OFFICIAL_TO_HF_RULES[model_name]
    )


def hf_state_dict_from_official(model_name, hf_model, state_dict):
    """Renames the front-end weights of an official checkpoint for transformers.

    Only the keys under the front-end prefix (:data:`OFFICIAL_PREFIXES`) are
    read; the back-end and aggregation weights of a full checkpoint are left to
    their own importers. Every front-end key must be renamed by
    :data:`OFFICIAL_TO_HF_RULES` or be a pre-training head
    (:data:`PRETRAINING_HEADS`; also ``mask_emb`` when the configuration
    disables masking, so that transformers has no ``masked_spec_embed``), and
    every parameter of ``hf_model`` must be filled with a tensor of its shape.

    Arguments
    ---------
    model_name : str
        ``s3prl_wavlm`` or ``fairseq_wav2vec2``.
    hf_model : transformers.WavLMModel or transformers.Wav2Vec2Model
        The model to fill (built from :func:`hf_config_from_official`).
    state_dict : dict
        Official weights under their full checkpoint names.

    Returns
    -------
    dict
        Weights for ``hf_model.load_state_dict(..., strict=True)``.

    Raises
    ------
    OfficialWeightsError
        Listing the unmapped official keys, the missing transformers keys and
        the shape mismatches.

    Example
    -------
    >>> config = dict(extractor_mode="layer_norm", layer_norm_first=True, encoder_layers=1,
    ...     encoder_embed_dim=16, encoder_ffn_embed_dim=32, encoder_attention_heads=2,
    ...     conv_feature_layers="[(8, 10, 5)]", conv_pos=4, conv_pos_groups=2)
    >>> hf_model = transformers.Wav2Vec2Model(hf_config_from_official("fairseq_wav2vec2", config))
    >>> weights = {"ssl_model.model.mask_emb": torch.zeros(16)}
    >>> hf_state_dict_from_official("fairseq_wav2vec2", hf_model, weights)
    Traceback (most recent call last):
    ...
    speechbrain_nes2net.official.keys.OfficialWeightsError: fairseq_wav2vec2 checkpoint ...
    """
    _check_model_name(model_name)
    prefix = OFFICIAL_PREFIXES[model_name]
    expected = hf_model.state_dict()
    rules = _rules(model_name, hf_model.config)
    frontend_keys = [key for key in state_dict if key.startswith(prefix)]
    if not frontend_keys:
        raise OfficialWeightsError(
            f"{model_name} checkpoint has no key under {prefix!r}; is it the right front-end? "
            f"first keys: {list(state_dict)[:5]}"
        )

    mapped, sources, unmapped, mismatched, wrong_shape = {}, {}, [], [], set()
    for key in frontend_keys:
        name = key[len(prefix) :]
        if name.startswith(PRETRAINING_HEADS):
            continue
        hf_name = rename(name, rules)
        if hf_name == "masked_spec_embed" and hf_name not in expected:
            continue  # masking disabled: transformers keeps no mask vector
        if hf_name is None or hf_name not in expected:
            unmapped.append(
                key if hf_name is None else f"{key} -> {hf_name} (not in transformers model)"
            )
            continue
        if hf_name in mapped:
            unmapped.append(f"{key} -> {hf_name} (already filled from {sources[hf_name]})")
            continue
        tensor = state_dict[key]
        if tuple(tensor.shape) != tuple(expected[hf_name].shape):
            mismatched.append(
                f"{key} {tuple(tensor.shape)} -> {hf_name} {tuple(expected[hf_name].shape)}"
            )
            wrong_shape.add(hf_name)
            continue
        mapped[hf_name], sources[hf_name] = tensor, key
    missing = [
        f"{name} (official {prefix}{rename(name, rules, reverse=True)})"
        for name in expected
        if name not in mapped and name not in wrong_shape
    ]
    raise_key_problems(
        f"{model_name} checkpoint does not match its configuration",
        [
            ("official keys with no transformers counterpart", unmapped),
            ("transformers parameters missing from the checkpoint", missing),
            ("shape mismatches (check the config)", mismatched),
        ],
    )
    return mapped


def official_state_dict_from_hf(model_name, hf_model):
    """Names transformers front-end weights as a full official checkpoint does.

    The inverse of :func:`hf_state_dict_from_official` (pre-training heads
    excluded), for round-trip checks and examples.

    Arguments
    ---------
    model_name : str
        ``s3prl_wavlm`` or ``fairseq_wav2vec2``.
    hf_model : transformers.WavLMModel or transformers.Wav2Vec2Model
        The model whose weights to rename (its config picks the
        feature-encoder layout).

    Returns
    -------
    dict
        The same tensors under the official names (with the checkpoint prefix);
        the weight-normed positional convolution uses ``weight_g``/``weight_v``.

    Example
    -------
    >>> config = dict(extractor_mode="default", encoder_layers=1, encoder_embed_dim=16,
    ...     encoder_ffn_embed_dim=32, encoder_attention_heads=2,
    ...     conv_feature_layers="[(8, 10, 5)] + [(8, 3, 2)]", conv_pos=4, conv_pos_groups=2)
    >>> hf_model = transformers.Wav2Vec2Model(hf_config_from_official("fairseq_wav2vec2", config))
    >>> for name in sorted(official_state_dict_from_hf("fairseq_wav2vec2", hf_model)):
    ...     if ".conv_layers." in name:
    ...         print(name)
    ssl_model.model.feature_extractor.conv_layers.0.0.weight
    ssl_model.model.feature_extractor.conv_layers.0.2.bias
    ssl_model.model.feature_extractor.conv_layers.0.2.weight
    ssl_model.model.feature_extractor.conv_layers.1.0.weight
    """
    _check_model_name(model_name)
    renamed = rename_keys(
        hf_model.state_dict(),
        _rules(model_name, hf_model.config),
        f"{model_name} transformers model",
        reverse=True,
    )
    return {OFFICIAL_PREFIXES[model_name] + name: tensor for name, tensor in renamed.items()}


_HF_MODELS = {
    "s3prl_wavlm": transformers.WavLMModel,
    "fairseq_wav2vec2": transformers.Wav2Vec2Model,
}


def write_hf_folder(model_name, config, state_dict, folder):
    """Writes an official front-end as a transformers model folder.

    The folder holds ``config.json``, the weights and a
    ``preprocessor_config.json`` whose ``do_normalize`` follows the official
    front-end, so ``speechbrain.integrations.huggingface`` lobes load it as is.

    Arguments
    ---------
    model_name : str
        ``s3prl_wavlm`` or ``fairseq_wav2vec2``.
    config : dict
        The official configuration.
    state_dict : dict
        Official weights under their full checkpoint names.
    folder : str or Path
        Where to write (created if needed).

    Returns
    -------
    Path
        ``folder``.

    Example
    -------
    >>> import tempfile
    >>> config = dict(extractor_mode="layer_norm", layer_norm_first=True, encoder_layers=1,
    ...     encoder_embed_dim=16, encoder_ffn_embed_dim=32, encoder_attention_heads=2,
    ...     conv_feature_layers="[(8, 10, 5)]", conv_pos=4, conv_pos_groups=2)
    >>> hf_model = transformers.Wav2Vec2Model(hf_config_from_official("fairseq_wav2vec2", config))
    >>> weights = official_state_dict_from_hf("fairseq_wav2vec2", hf_model)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     written = write_hf_folder("fairseq_wav2vec2", config, weights, folder)
    ...     sorted(path.name for path in written.iterdir())
    ['config.json', 'model.safetensors', 'preprocessor_config.json']
    """
    hf_config = hf_config_from_official(model_name, config)
    hf_model = _HF_MODELS[model_name](hf_config)
    hf_model.load_state_dict(
        hf_state_dict_from_official(model_name, hf_model, state_dict), strict=True
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(folder)
    hf_feature_extractor_from_official(model_name, config).save_pretrained(folder)
    return folder


def frontend_from_official(model_name, config, state_dict, save_path=None, freeze=False):
    """Builds the SSL front-end of an official Nes2Net checkpoint.

    Arguments
    ---------
    model_name : str
        ``s3prl_wavlm`` (CtrSVDD) or ``fairseq_wav2vec2`` (ASVspoof XLS-R).
    config : dict
        The original model's configuration (s3prl ``WavLMConfig`` / fairseq
        ``Wav2Vec2Config`` fields).
    state_dict : dict
        Weights under the full checkpoint's names (``ssl_model.model.model.*``
        for s3prl WavLM, ``ssl_model.model.*`` for fairseq wav2vec 2.0); other
        keys (back-end, aggregation) are ignored.
    save_path : str or Path, optional
        Folder to keep the transformers model in (reusable as a lobe
        ``source``); by default a temporary folder removed once loaded.
    freeze : bool
        Freeze the SSL model.

    Returns
    -------
    SSLFrontend
        In eval mode; ``forward(wavs, wav_lens=None)`` gives
        (layers + 1, batch, frames, dim).

    Example
    -------
    >>> config = dict(extractor_mode="layer_norm", layer_norm_first=True, encoder_layers=2,
    ...     encoder_embed_dim=16, encoder_ffn_embed_dim=32, encoder_attention_heads=2,
    ...     conv_feature_layers="[(8, 10, 5)] + [(8, 3, 2)]", conv_pos=4, conv_pos_groups=2,
    ...     relative_position_embedding=True, gru_rel_pos=True, normalize=True)
    >>> hf_model = transformers.WavLMModel(hf_config_from_official("s3prl_wavlm", config))
    >>> weights = official_state_dict_from_hf("s3prl_wavlm", hf_model)
    >>> frontend = frontend_from_official("s3prl_wavlm", config, weights)
    >>> frontend(torch.randn(2, 1600)).shape
    torch.Size([3, 2, 159, 16])
    """
    if save_path is not None:
        folder = write_hf_folder(model_name, config, state_dict, save_path)
        return SSLFrontend(folder, freeze=freeze).eval()
    with tempfile.TemporaryDirectory(prefix="official_frontend_") as tmp:
        folder = write_hf_folder(model_name, config, state_dict, tmp)
        return SSLFrontend(folder, freeze=freeze).eval()
