"""Nes2Net and Nes2Net-X back-ends for SSL-feature anti-spoofing.

Nes2Net (Liu et al., IEEE T-IFS 2025) consumes high-dimensional speech
foundation model features directly, without a dimensionality-reduction layer.
The D input channels are cut into ``outer_ratio`` groups; all but the last go
through a chain of inner blocks, each of which sees the previous block's
output added to its own group (the "outer" Res2Net), and every inner block is
itself a Res2Net bottleneck on its group (the "inner" level). Nes2Net-X
replaces the inner additive chain with a growing stack of groups that one
shared convolution filters and a learnable weighted sum reads out.

The lobes follow SpeechBrain conventions: ``forward(x, lengths=None)`` with
``x`` of shape (batch, time, channels) and relative ``lengths``. Inside, the
computation is channels-first, (batch, channels, time). The boolean frame mask
is built once per batch and handed down: padded frames are zeroed before every
temporal convolution and left out of the squeeze-excitation averages and the
pooling, so a padded batch scores each utterance as it would be scored alone.

Authors
 * speechbrain-nes2net contributors
"""

import torch
import torch.nn as nn
from speechbrain.lobes.models.ECAPA_TDNN import SEBlock

from speechbrain_nes2net.lobes.pooling import (
    AttentiveStatisticsPooling,
    frame_mask,
    masked_mean,
)

ACTIVATIONS = {"relu": nn.ReLU, "selu": nn.SELU}
#: How the back-end pools its frames over time into the utterance embedding.
UTTERANCE_POOLINGS = ("mean", "ASTP")


def make_activation(name):
    """Returns a fresh activation module for ``name`` ('relu' or 'selu').

    Arguments
    ---------
    name : str
        A key of :data:`ACTIVATIONS`.

    Returns
    -------
    torch.nn.Module

    Example
    -------
    >>> make_activation("selu")
    SELU()
    """
    if name not in ACTIVATIONS:
        raise ValueError(
            f"activation={name!r} is not supported; choose one of {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]()


def zero_padded_frames(x, mask):
    """Zeroes the padded frames of a channels-first tensor.

    A temporal convolution pads its input with zeros at the utterance edges;
    zeroing the padded frames of a batch makes every valid output frame see
    exactly what it would see if the utterance were processed alone.

    Arguments
    ---------
    x : torch.Tensor
        Shape (batch, channels, time, ...) with time on axis 2.
    mask : torch.Tensor or None
        Boolean (batch, time) mask of valid frames.

    Returns
    -------
    torch.Tensor
        ``x`` with padded frames set to zero (``x`` itself when no mask).

    Example
    -------
    >>> zero_padded_frames(torch.ones(1, 1, 3), torch.tensor([[True, True, False]]))
    tensor([[[1., 1., 0.]]])
    """
    if mask is None:
        return x
    shape = (mask.shape[0], 1, mask.shape[1]) + (1,) * (x.dim() - 3)
    return x * mask.view(shape).to(x.dtype)


class SqueezeExcitation(SEBlock):
    """Squeeze-excitation with a bottleneck of ``se_channels`` channels.

    SpeechBrain's :class:`SEBlock` computes Nes2Net's SE function (mean over
    time, 1x1 conv, ReLU, 1x1 conv, sigmoid, rescale); only the average is
    taken here from the frame mask built once per batch, instead of being
    rebuilt from relative lengths (see :func:`frame_mask` for why).

    Arguments
    ---------
    channels : int
        Input and output channels.
    se_channels : int
        Bottleneck channels.

    Example
    -------
    >>> se = SqueezeExcitation(16, 4)
    >>> x = torch.rand(2, 16, 30)
    >>> se(x).shape
    torch.Size([2, 16, 30])
    >>> mask = torch.arange(30) < torch.tensor([[30], [12]])
    >>> torch.allclose(se(x, mask)[1:, :, :12], se(x[1:, :, :12]))
    True
    """

    def __init__(self, channels, se_channels):
        super().__init__(channels, se_channels, channels)

    def forward(self, x, mask=None):
        """Rescales the channels of (batch, channels, time) ``x``; ``mask`` marks valid frames."""
        s = masked_mean(x, mask).unsqueeze(-1)
        s = self.sigmoid(self.conv2(self.relu(self.conv1(s))))
        return s * x


class Res2NetInnerBlock(nn.Module):
    """Nes2Net inner block: a Res2Net bottleneck with squeeze-excitation.

    1x1 conv, activation, BN; split into ``scale`` groups of ``width``
    channels; an additive chain of dilated temporal convolutions over the
    first ``scale - 1`` groups (each group plus the previous output, then
    conv, activation, BN); the last group passes through; 1x1 conv back to
    ``channels``, activation, BN, SE, and the block input is added.

    Arguments
    ---------
    channels : int
        Input (and output) channels.
    scale : int
        Number of groups (the inner ratio, >= 2).
    kernel_size : int
        Odd kernel size of the temporal convolutions.
    dilation : int
        Dilation of the temporal convolutions.
    se_channels : int
        Bottleneck channels of the squeeze-excitation (``channels`` if None).
    activation : str
        'relu' or 'selu' (the SE block always uses ReLU).

    Example
    -------
    >>> block = Res2NetInnerBlock(32, scale=4, se_channels=32)
    >>> block(torch.rand(2, 32, 20)).shape
    torch.Size([2, 32, 20])
    """

    def __init__(
        self,
        channels,
        scale=8,
        kernel_size=3,
        dilation=1,
        se_channels=None,
        activation="relu",
    ):
        super().__init__()
        self.width = channels // scale
        inner = self.width * scale
        padding = (kernel_size // 2) * dilation
        self.conv_in = nn.Conv1d(channels, inner, kernel_size=1)
        self.bn_in = nn.BatchNorm1d(inner)
        self.convs = nn.ModuleList(
            self._temporal_conv(kernel_size, dilation, padding)
            for _ in range(scale - 1)
        )
        self.bns = nn.ModuleList(self._norm() for _ in range(scale - 1))
        self.conv_out = nn.Conv1d(inner, channels, kernel_size=1)
        self.bn_out = nn.BatchNorm1d(channels)
        self.se = SqueezeExcitation(channels, se_channels or channels)
        self.activation = make_activation(activation)

    def _temporal_conv(self, kernel_size, dilation, padding):
        return nn.Conv1d(
            self.width, self.width, kernel_size, dilation=dilation, padding=padding
        )

    def _norm(self):
        return nn.BatchNorm1d(self.width)

    def forward(self, x, mask=None):
        """Processes (batch, channels, time) ``x``; ``mask`` (batch, time) marks valid frames."""
        out = self.bn_in(self.activation(self.conv_in(x)))
        groups = torch.split(out, self.width, dim=1)
        outputs = self._group_chain(groups, mask)
        outputs.append(groups[-1])
        out = self.bn_out(self.activation(self.conv_out(torch.cat(outputs, dim=1))))
        return self.se(out, mask) + x

    def _group_chain(self, groups, mask):
        """The outputs of the chain over ``groups[:-1]`` (each (batch, width, time))."""
        outputs = []
        carry = groups[0]
        for i, (conv, norm) in enumerate(zip(self.convs, self.bns)):
            if i > 0:
                carry = carry + groups[i]
            carry = norm(self.activation(conv(zero_padded_frames(carry, mask))))
            outputs.append(carry)
        return outputs


class StackedRes2NetInnerBlock(Res2NetInnerBlock):
    """Nes2Net-X inner block: the additive chain becomes a growing stack.

    The stack starts as the last group. At step ``i`` group ``i`` joins the
    stack along a new trailing axis, one (k x 1) convolution shared across
    the stack entries filters all of it (then activation and a 2-D BN), and a
    learnable weight vector (initialised uniform) sums the entries into
    output ``i``. The filtered stack, not the sum, is carried to the next
    step. This costs ``sum(i + 2)`` extra parameters.

    Arguments
    ---------
    channels : int
        Input (and output) channels.
    scale : int
        Number of groups (the inner ratio, >= 2).
    **kwargs
        ``kernel_size``, ``dilation``, ``se_channels`` and ``activation``, as
        for :class:`Res2NetInnerBlock`.

    Example
    -------
    >>> block = StackedRes2NetInnerBlock(32, scale=4, se_channels=32)
    >>> block(torch.rand(2, 32, 20)).shape
    torch.Size([2, 32, 20])
    >>> [tuple(w.shape) for w in block.stack_weights]
    [(2,), (3,), (4,)]
    """

    def __init__(self, channels, scale=8, **kwargs):
        super().__init__(channels, scale=scale, **kwargs)
        self.stack_weights = nn.ParameterList(
            nn.Parameter(torch.full((i + 2,), 1.0 / (i + 2)))
            for i in range(scale - 1)
        )

    def _temporal_conv(self, kernel_size, dilation, padding):
        return nn.Conv2d(
            self.width,
            self.width,
            (kernel_size, 1),
            dilation=(dilation, 1),
            padding=(padding, 0),
        )

    def _norm(self):
        return nn.BatchNorm2d(self.width)

    def _group_chain(self, groups, mask):
        """The read-outs of the stack steps (each (batch, width, time))."""
        # The stack is (batch, width, time, entries).
        stack = groups[-1].unsqueeze(-1)
        outputs = []
        for i, (conv, norm) in enumerate(zip(self.convs, self.bns)):
            stack = torch.cat((stack, groups[i].unsqueeze(-1)), dim=-1)
            stack = norm(self.activation(conv(zero_padded_frames(stack, mask))))
            outputs.append(torch.matmul(stack, self.stack_weights[i]))
        return outputs


class Nes2Net(nn.Module):
    """Nes2Net back-end: nested Res2Net over SSL features, then pooling.

    Arguments
    ---------
    input_size : int
        Channels D of the input features (1024 for WavLM-Large / XLS-R 300M).
    outer_ratio : int
        Number of outer groups s1 (>= 2); D must be divisible by it.
    inner_ratio : int
        Number of inner groups s2 (>= 2) of each inner block; D / s1 must be
        at least s2.
    kernel_size : int
        Odd kernel size of the inner temporal convolutions.
    dilation : int
        Dilation of the inner temporal convolutions.
    se_ratio : int
        Squeeze-excitation reduction: the SE bottleneck has
        ``max(D / s1 // se_ratio, se_min_channels)`` channels.
    se_min_channels : int
        Smallest SE bottleneck (the SeLU release uses 2).
    activation : str
        'relu' (Nes2Net, Nes2Net-X) or 'selu' (Nes2Net-X-SeLU).
    pooling : str
        'mean' (masked average over time) or 'ASTP' (attentive statistics).
    attention_channels : int
        Bottleneck of the ASTP attention.
    n_out : int
        Number of logits: 1 (score = logit) or 2 (score = logit of index 1).

    Example
    -------
    >>> model = Nes2Net(input_size=64, outer_ratio=4, inner_ratio=4).eval()
    >>> feats = torch.rand(3, 50, 64)
    >>> lengths = torch.tensor([1.0, 0.8, 0.5])
    >>> model(feats, lengths).shape
    torch.Size([3, 1])
    >>> model.embed(feats, lengths).shape
    torch.Size([3, 64])
    >>> sum(p.numel() for p in Nes2Net().parameters())
    510769
    """

    inner_block = Res2NetInnerBlock

    def __init__(
        self,
        input_size=1024,
        outer_ratio=8,
        inner_ratio=8,
        kernel_size=3,
        dilation=1,
        se_ratio=1,
        se_min_channels=1,
        activation="relu",
        pooling="mean",
        attention_channels=128,
        n_out=1,
    ):
        super().__init__()
        _check_config(
            input_size=input_size,
            outer_ratio=outer_ratio,
            inner_ratio=inner_ratio,
            kernel_size=kernel_size,
            dilation=dilation,
            se_ratio=se_ratio,
            se_min_channels=se_min_channels,
            activation=activation,
            pooling=pooling,
            attention_channels=attention_channels,
            n_out=n_out,
        )
        self.input_size = input_size
        self.group_size = input_size // outer_ratio
        se_channels = max(self.group_size // se_ratio, se_min_channels)
        self.blocks = nn.ModuleList(
            self.inner_block(
                self.group_size,
                scale=inner_ratio,
                kernel_size=kernel_size,
                dilation=dilation,
                se_channels=se_channels,
                activation=activation,
            )
            for _ in range(outer_ratio - 1)
        )
        self.block_norms = nn.ModuleList(
            nn.BatchNorm1d(self.group_size) for _ in range(outer_ratio - 1)
        )
        self.norm = nn.BatchNorm1d(input_size)
        self.activation = make_activation(activation)
        self.pooling_type = pooling
        if pooling == "ASTP":
            self.pooling = AttentiveStatisticsPooling(input_size, attention_channels)
            pooled_size = 2 * input_size
        else:
            self.pooling = None
            pooled_size = input_size
        self.fc = nn.Linear(pooled_size, n_out)

    def forward(self, x, lengths=None):
        """Scores SSL features.

        Arguments
        ---------
        x : torch.Tensor
            Features of shape (batch, time, channels).
        lengths : torch.Tensor, optional
            Relative lengths (batch,) of the utterances in the padded batch.

        Returns
        -------
        torch.Tensor
            Logits of shape (batch, n_out).
        """
        return self.fc(self.embed(x, lengths))

    def embed(self, x, lengths=None):
        """Returns the pooled utterance embedding before the output layer.

        Takes the arguments of :meth:`forward`; the embedding has shape
        (batch, channels), or (batch, 2 * channels) with ASTP.
        """
        out, mask = self._encode(x, lengths)
        if self.pooling is None:
            return masked_mean(out, mask)
        return self.pooling(out, mask)

    def frames(self, x, lengths=None):
        """Returns the frame features after the final BN and activation.

        Takes the arguments of :meth:`forward`. These are the frames the
        pooling averages (or ASTP weighs) into :meth:`embed`.

        Returns
        -------
        torch.Tensor
            Shape (batch, time, channels); padded frames are zero.

        Example
        -------
        >>> model = Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4).eval()
        >>> feats, lengths = torch.rand(2, 40, 64), torch.tensor([1.0, 0.5])
        >>> frames = model.frames(feats, lengths)
        >>> frames.shape
        torch.Size([2, 40, 64])
        >>> mean = frames.sum(dim=1) / torch.tensor([[40.0], [20.0]])
        >>> torch.allclose(mean, model.embed(feats, lengths), atol=1e-6)
        True
        """
        out, mask = self._encode(x, lengths)
        return zero_padded_frames(out, mask).transpose(1, 2)

    def _encode(self, x, lengths):
        """The (batch, channels, time) frame features and the frame mask (or None)."""
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"expected features of shape (batch, time, {self.input_size}), "
                f"got {tuple(x.shape)}"
            )
        mask = None if lengths is None else frame_mask(lengths, x.shape[1], x.device)
        groups = torch.split(x.transpose(1, 2), self.group_size, dim=1)
        outputs = []
        carry = groups[0]
        for i, (block, norm) in enumerate(zip(self.blocks, self.block_norms)):
            if i > 0:
                carry = carry + groups[i]
            carry = norm(self.activation(block(carry, mask)))
            outputs.append(carry)
        outputs.append(groups[-1])
        return self.activation(self.norm(torch.cat(outputs, dim=1))), mask


class Nes2NetX(Nes2Net):
    """Nes2Net-X back-end: Nes2Net with stacked inner blocks.

    Takes the same arguments as :class:`Nes2Net`; ``activation='selu'`` with
    ``se_min_channels=2`` gives Nes2Net-X-SeLU.

    Example
    -------
    >>> model = Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4, n_out=2)
    >>> model(torch.rand(2, 30, 64)).shape
    torch.Size([2, 2])
    >>> sum(p.numel() for p in Nes2NetX().parameters())
    511014
    """

    inner_block = StackedRes2NetInnerBlock


def _check_config(**config):
    """Validates a back-end configuration, naming every wrong value."""
    problems = []
    for name in (
        "input_size",
        "outer_ratio",
        "inner_ratio",
        "kernel_size",
        "dilation",
        "se_ratio",
        "se_min_channels",
        "attention_channels",
        "n_out",
    ):
        value = config[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{name}={value!r} must be a positive integer")
    if problems:
        raise ValueError("invalid Nes2Net configuration: " + "; ".join(problems))
    d, s1, s2 = config["input_size"], config["outer_ratio"], config["inner_ratio"]
    if s1 < 2:
        problems.append(f"outer_ratio={s1} must be at least 2")
    elif d % s1:
        problems.append(f"input_size={d} is not divisible by outer_ratio={s1}")
    elif s2 < 2 or d // s1 < s2:
        problems.append(
            f"inner_ratio={s2} must be between 2 and the group size "
            f"input_size/outer_ratio={d // s1}"
        )
    if config["kernel_size"] % 2 == 0:
        problems.append(
            f"kernel_size={config['kernel_size']} must be odd to keep the frame count"
        )
    if config["activation"] not in ACTIVATIONS:
        problems.append(
            f"activation={config['activation']!r} must be one of {sorted(ACTIVATIONS)}"
        )
    if config["pooling"] not in UTTERANCE_POOLINGS:
        problems.append(f"pooling={config['pooling']!r} must be one of {list(UTTERANCE_POOLINGS)}")
    if config["n_out"] > 2:
        problems.append(f"n_out={config['n_out']} must be 1 or 2")
    if problems:
        raise ValueError("invalid Nes2Net configuration: " + "; ".join(problems))
