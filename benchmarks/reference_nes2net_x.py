"""A straightforward Nes2Net-X: the baseline the library's lobe is timed against.

This is a plain port of the structure described in docs/DESIGN.md (architecture),
written the way the reference code is organised: channels-first tensors, the
inner stack grown by ``torch.cat`` along a trailing axis, one ``(k x 1)``
Conv2d + activation + BatchNorm2d over the whole stack per step, the stack
read out with ``torch.matmul``, and masks applied with plain multiplications.
It has exactly the parameter and buffer names of
:class:`speechbrain_nes2net.lobes.nes2net.Nes2NetX`, so it loads that model's
``state_dict`` and the two can be compared output for output before timing.

It is benchmark code, not part of the library: nothing imports it except
``benchmarks/`` and the performance test.

Example
-------
>>> from speechbrain_nes2net.lobes.nes2net import Nes2NetX
>>> lobe = Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4).eval()
>>> plain = ReferenceNes2NetX(input_size=64, outer_ratio=4, inner_ratio=4).eval()
>>> _ = plain.load_state_dict(lobe.state_dict())
>>> x = torch.randn(2, 30, 64)
>>> bool((plain(x) - lobe(x)).abs().max() < 1e-5)
True
"""

import torch
import torch.nn as nn

_ACTIVATIONS = {"relu": nn.ReLU, "selu": nn.SELU}


def _valid_frames(lengths, num_frames):
    """(batch, 1, time) float mask of valid frames (counts rounded, at least 1)."""
    counts = torch.round(lengths * num_frames).clamp(min=1)
    return (torch.arange(num_frames) < counts.unsqueeze(1)).float().unsqueeze(1)


def _masked_time_mean(x, mask):
    """Mean of (batch, channels, time) over valid frames."""
    if mask is None:
        return x.mean(dim=-1)
    return (x * mask).sum(dim=-1) / mask.sum(dim=-1)


class _AttentiveStatistics(nn.Module):
    """Attentive statistics pooling, written here from its definition.

    Per channel c and frame t: e = V tanh(W x_t + b) + k (two 1x1 convolutions,
    no normalisation or global context, as in the Nes2Net release), weights
    alpha = softmax of e over the valid frames, output [mu, sigma] with
    mu = sum_t alpha x_t and sigma = sqrt(sum_t alpha (x_t - mu)^2), floored at
    sqrt(1e-10) as the release does. Written independently of the library's
    ``AttentiveStatisticsPooling`` (whose variance is E[x^2] - mu^2), with its
    parameter names so that it loads the lobe's state dict.
    """

    def __init__(self, channels, attention_channels):
        super().__init__()
        self.attention_in = nn.Conv1d(channels, attention_channels, kernel_size=1)
        self.attention_out = nn.Conv1d(attention_channels, channels, kernel_size=1)

    def forward(self, x, mask):
        energy = self.attention_out(torch.tanh(self.attention_in(x)))
        if mask is not None:
            energy = energy.masked_fill(mask == 0, float("-inf"))
        alpha = torch.softmax(energy, dim=-1)
        mu = torch.einsum("bct,bct->bc", alpha, x)
        spread = torch.einsum("bct,bct->bc", alpha, (x - mu.unsqueeze(-1)) ** 2)
        return torch.cat([mu, spread.clamp(min=1e-10).sqrt()], dim=1)


class _PointwiseConv(nn.Module):
    """A 1x1 Conv1d kept under ``.conv`` (the SE parameter names of the lobe)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class _SqueezeExcitation(nn.Module):
    def __init__(self, channels, se_channels):
        super().__init__()
        self.conv1 = _PointwiseConv(channels, se_channels)
        self.conv2 = _PointwiseConv(se_channels, channels)

    def forward(self, x, mask):
        s = _masked_time_mean(x, mask).unsqueeze(-1)
        s = torch.sigmoid(self.conv2(torch.relu(self.conv1(s))))
        return x * s


class _StackedInnerBlock(nn.Module):
    """The Nes2Net-X inner block, grown by concatenation step after step."""

    def __init__(self, channels, scale, kernel_size, dilation, se_channels, activation):
        super().__init__()
        self.width = channels // scale
        inner = self.width * scale
        self.conv_in = nn.Conv1d(channels, inner, kernel_size=1)
        self.bn_in = nn.BatchNorm1d(inner)
        self.convs = nn.ModuleList(
            nn.Conv2d(
                self.width,
                self.width,
                (kernel_size, 1),
                dilation=(dilation, 1),
                padding=((kernel_size // 2) * dilation, 0),
            )
            for _ in range(scale - 1)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(self.width) for _ in range(scale - 1))
        self.stack_weights = nn.ParameterList(
            nn.Parameter(torch.full((i + 2,), 1.0 / (i + 2))) for i in range(scale - 1)
        )
        self.conv_out = nn.Conv1d(inner, channels, kernel_size=1)
        self.bn_out = nn.BatchNorm1d(channels)
        self.se = _SqueezeExcitation(channels, se_channels)
        self.activation = _ACTIVATIONS[activation]()

    def forward(self, x, mask):
        out = self.bn_in(self.activation(self.conv_in(x)))
        groups = torch.split(out, self.width, dim=1)
        stack = groups[-1].unsqueeze(-1)
        outputs = []
        for i in range(len(self.convs)):
            stack = torch.cat([stack, groups[i].unsqueeze(-1)], dim=-1)
            if mask is not None:
                stack = stack * mask.unsqueeze(-1)
            stack = self.bns[i](self.activation(self.convs[i](stack)))
            outputs.append(torch.matmul(stack, self.stack_weights[i]))
        outputs.append(groups[-1])
        out = self.bn_out(self.activation(self.conv_out(torch.cat(outputs, dim=1))))
        return self.se(out, mask) + x


class ReferenceNes2NetX(nn.Module):
    """Plain Nes2Net-X with the parameter names of the library lobe.

    Arguments
    ---------
    input_size, outer_ratio, inner_ratio, kernel_size, dilation, se_ratio,
    se_min_channels, activation, pooling, attention_channels, n_out
        As for :class:`speechbrain_nes2net.lobes.nes2net.Nes2NetX`.
    """

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
        self.group_size = input_size // outer_ratio
        se_channels = max(self.group_size // se_ratio, se_min_channels)
        self.blocks = nn.ModuleList(
            _StackedInnerBlock(
                self.group_size, inner_ratio, kernel_size, dilation, se_channels, activation
            )
            for _ in range(outer_ratio - 1)
        )
        self.block_norms = nn.ModuleList(
            nn.BatchNorm1d(self.group_size) for _ in range(outer_ratio - 1)
        )
        self.norm = nn.BatchNorm1d(input_size)
        self.activation = _ACTIVATIONS[activation]()
        self.pooling = (
            _AttentiveStatistics(input_size, attention_channels)
            if pooling == "ASTP"
            else None
        )
        self.fc = nn.Linear(2 * input_size if pooling == "ASTP" else input_size, n_out)

    def forward(self, x, lengths=None):
        """Logits (batch, n_out) of (batch, time, channels) features."""
        x = x.transpose(1, 2)
        mask = None if lengths is None else _valid_frames(lengths, x.shape[-1])
        groups = torch.split(x, self.group_size, dim=1)
        outputs = []
        carry = None
        for i in range(len(self.blocks)):
            carry = groups[i] if i == 0 else carry + groups[i]
            carry = self.block_norms[i](self.activation(self.blocks[i](carry, mask)))
            outputs.append(carry)
        outputs.append(groups[-1])
        out = self.activation(self.norm(torch.cat(outputs, dim=1)))
        if self.pooling is None:
            pooled = _masked_time_mean(out, mask)
        else:
            pooled = self.pooling(out, mask)
        return self.fc(pooled)
