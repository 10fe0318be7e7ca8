"""SSL front-ends: SpeechBrain's HF lobes with the official Nes2Net state layout.

:class:`SSLFrontend` wraps SpeechBrain's ``WavLM`` / ``Wav2Vec2`` lobe and
returns the stacked hidden states (layers + 1, batch, frames, dim) that the
aggregation lobes take, exactly as the official Nes2Net front-ends hand them
over (s3prl WavLM, fairseq XLS-R): the input of every transformer layer, then
the encoder output *after* its final LayerNorm.

Authors
 * speechbrain-nes2net contributors
"""

import contextlib
import functools
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.parametrize as parametrize
import transformers
from speechbrain.integrations.huggingface.hubert import HuBERT
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
from speechbrain.integrations.huggingface.wavlm import WavLM

from speechbrain_nes2net.precision import autocast

#: The rate every supported SSL model (WavLM, wav2vec 2.0, HuBERT, data2vec) reads,
#: in Hz. The model does no audio I/O: callers resample files to it
#: (:func:`speechbrain_nes2net.audio.load_audio`).
SSL_SAMPLE_RATE = 16000


def normalize_waveforms(wavs, wav_lens=None, eps=1e-5):
    """Layer-normalises each waveform over its own samples, as s3prl does.

    SpeechBrain's lobes normalise a padded row including its padding; the
    official front-end normalises every waveform before padding. Padding is
    set to zero afterwards.

    Arguments
    ---------
    wavs : torch.Tensor
        (batch, samples) waveforms.
    wav_lens : torch.Tensor, optional
        Relative lengths (SpeechBrain convention); None means no padding.
    eps : float
        Added to the variance, as in ``F.layer_norm``.

    Returns
    -------
    torch.Tensor
        (batch, samples), zero mean and unit variance over each valid part.

    Example
    -------
    >>> wavs = torch.tensor([[1.0, 3.0, 0.0, 0.0], [1.0, 2.0, 3.0, 6.0]])
    >>> normalize_waveforms(wavs, torch.tensor([0.5, 1.0])).round(decimals=3)
    tensor([[-1.0000,  1.0000,  0.0000,  0.0000],
            [-1.0690, -0.5350,  0.0000,  1.6040]])
    """
    if wav_lens is None:
        return F.layer_norm(wavs, wavs.shape[1:], eps=eps)
    # Same rounding as speechbrain.integrations.huggingface.make_padding_masks.
    return normalize_valid_samples(wavs, torch.round(wav_lens * wavs.shape[1]), eps)


def normalize_valid_samples(wavs, counts, eps=1e-5):
    """:func:`normalize_waveforms` with sample counts instead of relative lengths.

    Written with shape-generic operators only (no Python-side sizes), so that
    it traces into graphs with dynamic batch and time axes (ONNX export).

    Arguments
    ---------
    wavs : torch.Tensor
        (batch, samples) waveforms.
    counts : torch.Tensor
        (batch,) valid samples of each waveform (any numeric dtype).
    eps : float
        Added to the variance.

    Returns
    -------
    torch.Tensor
        (batch, samples), padding set to zero.

    Example
    -------
    >>> normalize_valid_samples(torch.tensor([[1.0, 3.0, 9.0]]), torch.tensor([2]))
    tensor([[-1.0000,  1.0000,  0.0000]])
    """
    positions = torch.arange(wavs.shape[1], device=wavs.device)
    valid = positions.unsqueeze(0) < counts.to(wavs.device).unsqueeze(1)
    mask = valid.to(wavs.dtype)
    count = mask.sum(dim=1, keepdim=True)
    mean = (wavs * mask).sum(dim=1, keepdim=True) / count
    var = ((wavs - mean) ** 2 * mask).sum(dim=1, keepdim=True) / count
    return torch.where(valid, (wavs - mean) * torch.rsqrt(var + eps), 0.0)


def is_local_source(source):
    """Whether an SSL ``source`` names a local folder rather than a hub id.

    Example
    -------
    >>> is_local_source("microsoft/wavlm-large"), is_local_source("./models/wavlm")
    (False, True)
    """
    source = str(source)
    return source.startswith((".", "/", "~")) or Path(source).expanduser().exists()


def _model_type(source):
    """The transformers ``model_type`` of a folder or hub id, or a clear error."""
    if is_local_source(source) and not (Path(source).expanduser() / "config.json").is_file():
        raise FileNotFoundError(
            f"SSL model folder {source} has no config.json; set ssl_source to a "
            "transformers model folder (config.json, weights, preprocessor_config.json) "
            "or to a hub id such as microsoft/wavlm-large"
        )
    try:
        return transformers.AutoConfig.from_pretrained(source).model_type
    except OSError as err:
        raise FileNotFoundError(
            f"cannot load the SSL model {source!r} ({err.__class__.__name__}); without "
            "network access, download it elsewhere and set ssl_source to its local folder"
        ) from None


#: Warnings of the HF lobes that a user cannot act on, as (category, message
#: regex): SpeechBrain's lobe calls transformers' deprecated
#: ``gradient_checkpointing_disable``, and transformers' WavLM attention hands
#: torch a boolean padding mask beside its float position bias.
_LOBE_WARNINGS = (
    (FutureWarning, r"`gradient_checkpointing_disable` is deprecated"),
    (UserWarning, r"Support for mismatched key_padding_mask and attn_mask is deprecated"),
)


@contextlib.contextmanager
def transformers_quieted():
    """Silences exactly the harmless warnings of :data:`_LOBE_WARNINGS`, and transformers' bars.

    transformers draws a progress bar for loading and writing a few dozen
    weight tensors, which a run's console (``--noprogressbar`` included) does
    not need; hub downloads keep their own bars. Nothing else is filtered.

    Example
    -------
    >>> with transformers_quieted():
    ...     warnings.warn("`gradient_checkpointing_disable` is deprecated", FutureWarning)
    """
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            for category, message in _LOBE_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()


#: SpeechBrain lobe for each transformers ``model_type`` (data2vec audio
#: loads through the wav2vec 2.0 lobe, which builds any ``AutoModel``).
_LOBES = {"wavlm": WavLM, "wav2vec2": Wav2Vec2, "hubert": HuBERT, "data2vec-audio": Wav2Vec2}
#: The transformers model class of each ``model_type`` (tiny test models).
_HF_MODELS = {
    "wavlm": ("WavLMConfig", "WavLMModel"),
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel"),
}
#: The model types :class:`SSLFrontend` takes.
SSL_TYPES = tuple(_LOBES)


def ssl_config(source):
    """The transformers configuration of an SSL model folder or hub id.

    Example
    -------
    >>> import tempfile
    >>> folder = make_tiny_ssl_model(tempfile.mkdtemp() + "/tiny", hidden_size=32, num_layers=3)
    >>> config = ssl_config(folder)
    >>> config.model_type, config.hidden_size
    ('wavlm', 32)
    """
    _model_type(str(source))  # clear errors for a folder without config.json, or no network
    return transformers.AutoConfig.from_pretrained(str(source))


def ssl_dim(source):
    """The width of an SSL model's hidden states (the back-end's input size).

    1024 for WavLM-Large, XLS-R 300M and HuBERT-Large; 768 for Base models.
    Recipes size the aggregation and the back-end from it
    (``ssl_dim: !apply:speechbrain_nes2net.lobes.ssl.ssl_dim [!ref <ssl_source>]``),
    without a dimensionality-reduction layer, as Nes2Net intends.
    """
    return int(ssl_config(source).hidden_size)


def ssl_num_states(source):
    """How many hidden states :class:`SSLFrontend` returns: transformer layers + 1 (25 for Large)."""
    return int(ssl_config(source).num_hidden_layers) + 1


def wavlm_attention(attention, hidden_states, attention_mask, gated_position_bias):
    """WavLM's self-attention, computed from contiguous batch-first projections.

    transformers' WavLM attention (``F.multi_head_attention_forward``, time
    first) hands its projections a transposed batch: at batch > 1 those run
    as batched products over a weight copied once per frame, ~15x slower in
    bfloat16 on a CPU. This computes the same function with the same
    operators (scaled queries, the gated relative position bias and the
    padding mask added to the scores, softmax, weighted values); torch's
    ``scaled_dot_product_attention`` was 2x slower here (its CPU kernel at 200
    frames, bf16). :class:`SSLFrontend` installs it on every ``WavLMAttention``;
    no attention weights are returned.

    Example
    -------
    >>> attention = transformers.models.wavlm.modeling_wavlm.WavLMAttention(8, 2).eval()
    >>> x, bias = torch.randn(2, 5, 8), torch.randn(4, 5, 5)
    >>> mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    >>> ours, _ = wavlm_attention(attention, x, mask, bias)
    >>> with transformers_quieted():
    ...     theirs, _ = attention.torch_multi_head_self_attention(x, mask, bias)
    >>> torch.allclose(ours, theirs, atol=1e-6)
    True
    """
    batch, frames, dim = hidden_states.shape
    heads = attention.num_heads
    q, k, v = (
        proj(hidden_states).view(batch, frames, heads, -1).transpose(1, 2).reshape(batch * heads, frames, -1)
        for proj in (attention.q_proj, attention.k_proj, attention.v_proj)
    )
    bias = gated_position_bias
    if attention_mask is not None:
        padding = ~attention_mask.bool()[:, None, None, :]
        bias = bias.view(batch, heads, frames, frames).masked_fill(padding, float("-inf"))
    scores = torch.baddbmm(bias.view(-1, frames, frames), q * attention.scaling, k.transpose(1, 2))
    weights = F.dropout(scores.softmax(dim=-1), attention.dropout, attention.training)
    out = torch.bmm(weights, v).view(batch, heads, frames, -1).transpose(1, 2)
    return attention.out_proj(out.reshape(batch, frames, dim)), None


def time_last_conv_layer(layer, frames):
    """One LayerNorm convolution layer of a feature encoder, on (batch, time, channels) frames.

    transformers' layer convolves (batch, channels, time), transposes for the
    LayerNorm and back; on a CPU the two transposing copies and the
    convolution's own reordering of its transposed input took ~8% of a bf16
    WavLM-Large forward. Here the layer's windows are gathered with ``unfold``
    and multiplied with the convolution's weight (the same function: products
    in another order), and the layout never changes.

    Example
    -------
    >>> config = transformers.WavLMConfig(conv_dim=(4, 6), conv_kernel=(3, 2), conv_stride=(2, 2))
    >>> layer = transformers.models.wavlm.modeling_wavlm.WavLMLayerNormConvLayer(config, 1)
    >>> x = torch.randn(2, 4, 9)
    >>> torch.allclose(time_last_conv_layer(layer, x.transpose(1, 2)), layer(x).transpose(1, 2), atol=1e-6)
    True
    """
    conv = layer.conv
    windows = frames.unfold(1, conv.kernel_size[0], conv.stride[0])  # (batch, out, in_ch, kernel)
    batch, length = windows.shape[:2]
    # One 2-D product for the whole batch (a 3-D input ran as a batched product, slower).
    windows = windows.transpose(2, 3).reshape(batch * length, -1)
    weight = conv.weight.transpose(1, 2).reshape(conv.out_channels, -1)  # (out_ch, kernel * in_ch)
    out = F.linear(windows, weight, conv.bias).view(batch, length, -1)
    return layer.activation(layer.layer_norm(out))


def time_last_feature_encoder(encoder, input_values):
    """A LayerNorm feature encoder's output (batch, channels, frames), computed time-last.

    Installed by :class:`SSLFrontend` on the feature encoders whose layers are
    all LayerNorm convolutions (Large models); see :func:`time_last_conv_layer`.
    The result is a transposed view, which the model transposes back. An ONNX
    export traces transformers' layers instead: its exporter cannot take an
    ``unfold`` of a dynamic length.
    """
    if torch.onnx.is_in_onnx_export():
        hidden = input_values[:, None]
        for layer in encoder.conv_layers:
            hidden = type(layer).forward(layer, hidden)
        return hidden
    frames = input_values[:, :, None]
    for layer in encoder.conv_layers:
        frames = layer(frames)
    return frames.transpose(1, 2)


def plain_bf16_conv(conv):
    """A plain bfloat16 copy of a weight-normed convolution, its weight computed once.

    Example
    -------
    >>> conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 4, 3, groups=2), dim=2)
    >>> plain = plain_bf16_conv(conv)
    >>> plain.weight.dtype, parametrize.is_parametrized(plain)
    (torch.bfloat16, False)
    >>> torch.equal(plain.weight, conv.weight.detach().bfloat16())
    True
    """
    # A new module: removing the parametrization from a deep copy would also
    # strip the property from the class the copy shares with the original.
    plain = nn.Conv1d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
        bias=conv.bias is not None, padding_mode=conv.padding_mode,
        device=conv.weight.device, dtype=torch.bfloat16,
    )  # fmt: skip
    with torch.no_grad():
        plain.weight.copy_(conv.weight)
        if conv.bias is not None:
            plain.bias.copy_(conv.bias)
    return plain.requires_grad_(False)


class SSLFrontend(nn.Module):
    """An SSL front-end that returns its states as the official Nes2Net code does.

    Wraps SpeechBrain's ``WavLM`` / ``Wav2Vec2`` lobe (chosen from the folder's
    ``model_type``) with ``output_all_hiddens=True`` and returns L + 1 states:
    the input of every transformer layer, then the encoder output. transformers
    records the last layer's output *before* the encoder's final LayerNorm of a
    pre-LN (``do_stable_layer_norm``) model, while the official front-ends (s3prl
    hidden states, fairseq ``features_only`` ``x``) hand over the output *after*
    it, so that LayerNorm is applied to the last state here.

    Model types: WavLM (Base, Base+, Large), wav2vec 2.0 / XLS-R (any size),
    HuBERT and data2vec audio (:data:`SSL_TYPES`), chosen from the folder's or
    hub id's configuration.

    Padding: the waveform normalisation (when the folder's preprocessor says
    ``do_normalize``) is done per waveform over its valid samples, as s3prl
    does, instead of by the lobe over the padded row. With a ``layer`` feature
    encoder (Large models), the valid frames of a padded batch then equal those
    of each waveform alone. A ``group`` (GroupNorm) feature encoder (wav2vec 2.0
    and HuBERT Base) normalises over the whole padded row, and data2vec audio's
    stack of positional convolutions carries padded frames into the last valid
    ones: for those, padded batches score slightly otherwise than each waveform
    alone (score them in batches of one, or of equal lengths). Padded frames
    hold no meaningful values.

    Precision: with ``precision = "bf16"`` (an attribute, set by the scoring
    code, see :mod:`speechbrain_nes2net.precision`) the transformer runs under
    ``torch.autocast`` in bfloat16 and the states are returned in float32, so
    that the aggregation and the back-end (under 2% of the time) stay exact.

    Arguments
    ---------
    source : str or Path
        A transformers model folder (see :func:`write_hf_folder`) or hub name.
    save_path : str or Path, optional
        Cache folder for the lobe (defaults to ``source``).
    freeze : bool
        Freeze the SSL model (no gradients), as SpeechBrain's lobes do.
    normalize : bool, optional
        Normalise each waveform to zero mean and unit variance first. ``None``
        follows the folder's ``preprocessor_config.json`` (``do_normalize``);
        set it to match how the checkpoint was trained, not the hub default
        (the official XLS-R recipes feed raw waveforms: ``False``).

    Example
    -------
    >>> import tempfile
    >>> config = transformers.WavLMConfig(
    ...     hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
    ...     conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=4,
    ...     num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
    ...     layerdrop=0.0)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     transformers.WavLMModel(config).save_pretrained(folder)
    ...     _ = transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    ...     frontend = SSLFrontend(folder).eval()
    >>> frontend(torch.randn(2, 1600)).shape
    torch.Size([3, 2, 159, 16])
    """

    def __init__(self, source, save_path=None, freeze=False, normalize=None):
        super().__init__()
        self._precision = "fp32"
        self._bf16_weights = self._bf16_convs = None
        source = str(source)
        model_type = _model_type(source)
        if model_type not in _LOBES:
            raise ValueError(f"{source}: model_type {model_type!r} is not one of {sorted(_LOBES)}")
        with transformers_quieted():
            self.ssl = _LOBES[model_type](
                source,
                save_path=str(save_path if save_path is not None else source),
                output_norm=False,
                freeze=freeze,
                output_all_hiddens=True,
            )
        # The lobe would normalise over padding too; normalise per waveform here.
        self.normalize = bool(self.ssl.normalize_wav if normalize is None else normalize)
        self.ssl.normalize_wav = False
        # The masked-frame embedding only serves pre-training masking, which the
        # lobe turns off; left trainable, DDP would wait for its gradient forever.
        masked = getattr(self.ssl.model, "masked_spec_embed", None)
        if masked is not None:
            masked.requires_grad_(False)
        # With transformers 5 a dropped layer also vanishes from the hidden
        # states, so training would hand the aggregation fewer of them.
        self.ssl.model.config.layerdrop = 0.0
        for module in self.ssl.model.modules():
            if isinstance(module, transformers.models.wavlm.modeling_wavlm.WavLMAttention):
                module.torch_multi_head_self_attention = functools.partial(wavlm_attention, module)
        encoder = self.ssl.model.feature_extractor
        if all(isinstance(getattr(layer, "layer_norm", None), nn.LayerNorm) for layer in encoder.conv_layers):
            for layer in encoder.conv_layers:
                layer.forward = functools.partial(time_last_conv_layer, layer)
            encoder.forward = functools.partial(time_last_feature_encoder, encoder)

    def forward(self, wavs, wav_lens=None):
        """Computes the hidden states of a batch of 16 kHz waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) raw waveforms.
        wav_lens : torch.Tensor, optional
            Relative lengths (SpeechBrain convention).

        Returns
        -------
        torch.Tensor
            (layers + 1, batch, frames, dim).
        """
        if wavs.dim() != 2:
            raise ValueError(f"expected (batch, samples) waveforms, got shape {tuple(wavs.shape)}")
        if self.normalize:
            wavs = normalize_waveforms(wavs, wav_lens)
        with transformers_quieted(), autocast(self.precision, wavs.device), self._weights():
            states = self.ssl(wavs, wav_lens)
            # Pre-LN models (Large, do_stable_layer_norm) record their last state
            # before the final LayerNorm; post-LN models (Base) already after it.
            if getattr(self.ssl.model.config, "do_stable_layer_norm", False):
                final = self.ssl.model.encoder.layer_norm(states[-1]).to(states.dtype)
                if torch.is_grad_enabled():  # the LayerNorm's backward needs its input
                    states = torch.cat([states[:-1], final.unsqueeze(0)], dim=0)
                else:  # scoring: no copy of all the states
                    states[-1] = final
        # Our own bf16 hands float32 states on (the aggregation and back-end run
        # in float32); under an outer autocast (SpeechBrain's --precision) the
        # states stay as the lobe made them, as before.
        return states.float() if self.precision != "fp32" else states

    @property
    def precision(self):
        """'fp32' or 'bf16': the precision the transformer runs in (see :mod:`speechbrain_nes2net.precision`).

        The states come out in float32 either way. Not saved with the
        weights: scoring code sets it after the weights are loaded.
        """
        return self._precision

    @precision.setter
    def precision(self, value):
        """Sets 'fp32' or 'bf16'; bf16 casts the weight copies now, once."""
        if value not in ("fp32", "bf16"):
            raise ValueError(f"SSLFrontend.precision must be 'fp32' or 'bf16', got {value!r}")
        self._precision = value
        self._bf16_weights = self._bf16_convs = None
        if value == "bf16":
            with torch.no_grad():
                self._bf16_weights = [p.detach().to(torch.bfloat16) for p in self._matrix_weights()]
                self._bf16_convs = [
                    (self.ssl.model.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2],
                     plain_bf16_conv(conv))
                    for name, conv in self._normed_convs()
                ]  # fmt: skip

    def _matrix_weights(self):
        """The parameters of the transformer's linear and convolution layers (over 90% of its MACs).

        A weight-normed convolution (the positional one) is left out: its
        weight is computed from two parameters at every call, so bf16 swaps
        the whole module instead (:meth:`_normed_convs`).
        """
        return [
            param
            for module in self.ssl.model.modules()
            if isinstance(module, (nn.Linear, nn.Conv1d)) and not parametrize.is_parametrized(module)
            for param in module.parameters(recurse=False)
        ]

    def _normed_convs(self):
        """(name, module) of the weight-normed convolutions (WavLM's positional one)."""
        return [
            (name, module)
            for name, module in self.ssl.model.named_modules()
            if isinstance(module, nn.Conv1d) and parametrize.is_parametrized(module, "weight")
        ]

    @contextlib.contextmanager
    def _weights(self):
        """In bf16, the linear and convolution layers compute with bfloat16 copies of their weights.

        ``torch.autocast`` casts every weight of a frozen model to bfloat16
        again at every call (its cache only keeps weights that require
        gradients): for a Large model that is about a sixth of the bf16 time.
        The copies, cast when the precision is set, are swapped in for the
        forward pass only, so the module keeps its float32 weights
        (``state_dict``, training, fp32 again: exact) and its LayerNorm
        parameters stay float32. A weight-normed convolution is swapped, for the
        forward pass, for a plain one holding its weight computed once, in
        bfloat16 (the weight norm cost ~3% per call). Autocast would round each
        weight the same way, so the scores equal those of plain autocast.
        """
        if self._precision != "bf16":
            yield
            return
        params = self._matrix_weights()
        originals = [param.data for param in params]
        convs = [getattr(parent, attribute) for parent, attribute, _ in self._bf16_convs]
        try:
            for param, low in zip(params, self._bf16_weights):
                param.data = low
            for parent, attribute, plain in self._bf16_convs:
                setattr(parent, attribute, plain)
            yield
        finally:
            for param, original in zip(params, originals):
                param.data = original
            for (parent, attribute, _), conv in zip(self._bf16_convs, convs):
                setattr(parent, attribute, conv)


def ssl_frame_shift(ssl, sample_rate=SSL_SAMPLE_RATE):
    """The frame hop of an SSL front-end in seconds (the product of its CNN strides).

    Arguments
    ---------
    ssl : SSLFrontend
        The front-end (or anything with ``ssl.model.config.conv_stride``).
    sample_rate : int
        Rate of the waveforms.

    Returns
    -------
    float
        0.02 for WavLM, wav2vec 2.0, HuBERT and data2vec at 16 kHz.

    Example
    -------
    >>> from types import SimpleNamespace as NS
    >>> ssl_frame_shift(NS(ssl=NS(model=NS(config=NS(conv_stride=(5, 2, 2, 2, 2, 2, 2))))))
    0.02
    """
    ssl = getattr(ssl, "module", ssl)  # a DDP wrapper
    return math.prod(ssl.ssl.model.config.conv_stride) / sample_rate


def ssl_frame_lengths(ssl, wav_lens, num_samples, num_frames):
    """Relative lengths of the SSL frames, exact for every waveform of a padded batch.

    SpeechBrain's relative lengths refer to the padded waveform; turned into
    frame counts by rounding ``wav_lens * num_frames`` they can be one frame
    off the convolutional feature encoder's true output length (a valid frame
    dropped, or a padded one kept), which makes a score depend on the other
    waveforms in its batch. The true count follows from the encoder's kernel
    sizes and strides; the returned relative lengths round back to it.

    Arguments
    ---------
    ssl : torch.nn.Module
        An :class:`~speechbrain_nes2net.lobes.ssl.SSLFrontend` (any module with
        a transformers model at ``ssl.ssl.model``); other modules keep
        ``wav_lens``.
    wav_lens : torch.Tensor
        Relative waveform lengths (batch,).
    num_samples : int
        Padded waveform length.
    num_frames : int
        Padded number of SSL frames.

    Returns
    -------
    torch.Tensor
        (batch,) relative frame lengths: valid frames / ``num_frames``.

    Example
    -------
    >>> import transformers
    >>> config = transformers.WavLMConfig(conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2))
    >>> class Frontend(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.ssl = torch.nn.Module()
    ...         self.ssl.model = transformers.WavLMModel(config)
    >>> lengths = ssl_frame_lengths(Frontend(), torch.tensor([1.0, 0.9]), 1000, 99)
    >>> (lengths * 99).round().tolist()  # 1000 and 900 samples give 99 and 89 frames
    [99.0, 89.0]
    """
    model = getattr(getattr(ssl, "ssl", None), "model", None)
    output_lengths = getattr(model, "_get_feat_extract_output_lengths", None)
    if output_lengths is None:
        return wav_lens
    counts = torch.round(wav_lens.to(torch.float64) * num_samples).long()
    frames = output_lengths(counts).clamp(min=1, max=num_frames)
    return frames.to(wav_lens.dtype) / num_frames


# ---------------------------------------------------------- tiny local models

def make_tiny_ssl_model(
    folder,
    model_type="wavlm",
    hidden_size=64,
    num_layers=2,
    num_heads=2,
    intermediate_size=128,
    conv_channels=32,
    normalize_waveform=True,
    dropout=0.0,
    seed=0,
):
    """Writes a small randomly initialised SSL model folder (WavLM, wav2vec 2.0, HuBERT, data2vec).

    The folder holds ``config.json``, the weights and a
    ``preprocessor_config.json`` whose ``do_normalize`` tells SpeechBrain's
    lobe (and our front-end) whether to normalise waveforms, like the real
    hub folders. Layer drop is off (transformers 5 would drop hidden states).
    An existing folder with the same settings is reused. Under DDP the main
    process writes it while the others wait (every process loads the YAML).

    Arguments
    ---------
    folder : str or Path
        Output folder.
    model_type : str
        'wavlm', 'wav2vec2', 'hubert' or 'data2vec-audio'.
    hidden_size, num_layers, num_heads, intermediate_size : int
        Transformer size.
    conv_channels : int
        Channels of the 7 feature-encoder convolutions (20 ms hop).
    normalize_waveform : bool
        The preprocessor's ``do_normalize``.
    dropout : float
        Hidden, attention, activation and projection dropout (the released
        models train with 0.1; 0 makes train and eval mode compute the same).
    seed : int
        Seed of the random initialisation.

    Returns
    -------
    str
        The folder path.
    """
    from speechbrain.utils.distributed import run_on_main

    if model_type not in _HF_MODELS:
        raise ValueError(f"model_type={model_type!r} must be one of {sorted(_HF_MODELS)}")
    settings = dict(
        model_type=model_type, hidden_size=hidden_size, num_layers=num_layers,
        num_heads=num_heads, intermediate_size=intermediate_size,
        conv_channels=conv_channels, normalize_waveform=normalize_waveform, seed=seed,
    )
    if dropout:  # recorded only when set, so that existing folders stay valid
        settings["dropout"] = dropout
    run_on_main(_write_tiny_ssl_model, args=[Path(folder), settings])
    return str(folder)


def _write_tiny_ssl_model(folder, settings):
    stamp = folder / "tiny_ssl_settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return
    common = dict(
        hidden_size=settings["hidden_size"],
        num_hidden_layers=settings["num_layers"],
        num_attention_heads=settings["num_heads"],
        intermediate_size=settings["intermediate_size"],
        conv_dim=(settings["conv_channels"],) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        layerdrop=0.0,
        hidden_dropout=settings.get("dropout", 0.0),
        attention_dropout=settings.get("dropout", 0.0),
        activation_dropout=settings.get("dropout", 0.0),
        feat_proj_dropout=settings.get("dropout", 0.0),
        mask_time_prob=0.0,
    )
    # A generator of its own: whether the folder is written or reused must
    # not change the random stream of the run that asked for it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings["seed"])
        config_name, model_name = _HF_MODELS[settings["model_type"]]
        extra = {
            "wavlm": {"num_buckets": 32, "max_bucket_distance": 80},
            # data2vec's positional embedding is a stack of convolutions: 2 small ones.
            "data2vec-audio": {"num_conv_pos_embeddings": 2, "conv_pos_kernel_size": 5},
        }.get(settings["model_type"], {})
        config = getattr(transformers, config_name)(**{**common, **extra})
        model = getattr(transformers, model_name)(config)
    if folder.exists():
        shutil.rmtree(folder)  # a model with other settings
    folder.mkdir(parents=True)
    with transformers_quieted():
        model.save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SSL_SAMPLE_RATE, padding_value=0.0,
        do_normalize=settings["normalize_waveform"], return_attention_mask=True,
    ).save_pretrained(folder)
    stamp.write_text(json.dumps(settings))


@contextlib.contextmanager
def _quiet(*names):
    """Silences the named loggers (expected warnings of an empty initialisation)."""
    loggers = [logging.getLogger(name) for name in names]
    previous = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, previous):
            log.setLevel(level)


class SSLFrontendFromConfig(SSLFrontend):
    """An :class:`SSLFrontend` built from an inline transformers configuration.

    A model folder loaded with ``from_hparams`` only learns where its files
    are *after* ``hyperparams.yaml`` has been built, so a fine-tuned SSL model
    cannot name a folder as its ``source``. This front-end is built from the
    configuration written into the YAML (randomly initialised, in a temporary
    folder that is removed again) and receives its weights from the
    pretrainer (``ssl.ckpt``), like every other module.

    Arguments
    ---------
    model_type : str
        transformers ``model_type``: 'wavlm' or 'wav2vec2'.
    config : dict
        The remaining transformers configuration (``config.to_dict()``).
    normalize : bool
        Layer-normalise each waveform first (how the model was trained).
    freeze : bool
        Freeze the SSL model (inference).

    Example
    -------
    >>> config = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
    ...     intermediate_size=32, conv_dim=[8, 8], conv_kernel=[10, 3], conv_stride=[5, 2],
    ...     num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
    ...     feat_extract_norm="layer", do_stable_layer_norm=True, layerdrop=0.0)
    >>> frontend = SSLFrontendFromConfig("wavlm", config, normalize=True).eval()
    >>> frontend(torch.randn(1, 1600)).shape
    torch.Size([3, 1, 159, 16])
    """

    def __init__(self, model_type, config, normalize, freeze=True):
        config = {key: value for key, value in dict(config).items() if key != "model_type"}
        hf_config = transformers.AutoConfig.for_model(model_type, **config)
        with tempfile.TemporaryDirectory(prefix="nes2net_ssl_") as folder:
            hf_config.save_pretrained(folder)
            transformers.Wav2Vec2FeatureExtractor(
                feature_size=1,
                sampling_rate=SSL_SAMPLE_RATE,
                padding_value=0.0,
                do_normalize=bool(normalize),
                return_attention_mask=True,
            ).save_pretrained(folder)
            # A weights file without weights: SpeechBrain's lobe then builds the
            # model from its configuration instead of asking for a checkpoint.
            torch.save({}, os.path.join(folder, "empty_weights.ckpt"))
            with _quiet(
                "speechbrain.integrations.huggingface.huggingface",
                "speechbrain.integrations.huggingface.wav2vec2",
                "speechbrain.integrations.huggingface.wavlm",
            ):
                super().__init__(folder, save_path=folder, freeze=freeze, normalize=normalize)


def hf_cache_dir():
    """The Hugging Face hub cache folder (``HF_HUB_CACHE``, else the default).

    Exported models whose SSL front-end is referenced by hub id use it as the
    lobe's ``save_path``, so the weights land in (and are reused from) the
    user's usual cache rather than a folder in the working directory.

    Returns
    -------
    str

    Example
    -------
    >>> isinstance(hf_cache_dir(), str)
    True
    """
    from huggingface_hub import constants

    return str(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)
