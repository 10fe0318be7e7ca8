"""Padding-aware temporal pooling shared by the back-ends.

All functions here work channels-first, (batch, channels, time), the layout the
convolutional back-ends use internally, and take a boolean frame mask built once
per batch by :func:`frame_mask`.

Authors
 * speechbrain-nes2net contributors
"""

import torch
import torch.nn as nn


def frame_mask(lengths, num_frames, device=None):
    """Builds a (batch, time) boolean mask of the valid frames.

    Relative lengths are turned into frame counts by rounding: ``lengths *
    num_frames`` is a float product that can land a hair above an integer, and
    SpeechBrain's ``length_to_mask`` would then count one padded frame as valid.

    Arguments
    ---------
    lengths : torch.Tensor
        Relative lengths in (0, 1], shape (batch,).
    num_frames : int
        The padded number of frames.
    device : torch.device, optional
        Where to build the mask (defaults to the device of ``lengths``).

    Returns
    -------
    torch.Tensor
        Boolean mask of shape (batch, num_frames).

    Example
    -------
    >>> frame_mask(torch.tensor([1.0, 0.5]), 4)
    tensor([[ True,  True,  True,  True],
            [ True,  True, False, False]])
    """
    device = lengths.device if device is None else device
    counts = torch.round(lengths.to(device) * num_frames).clamp(min=1)
    return torch.arange(num_frames, device=device) < counts.unsqueeze(1)


def masked_mean(x, mask=None):
    """Mean over the last (time) axis, ignoring padded frames.

    Arguments
    ---------
    x : torch.Tensor
        Shape (batch, channels, time).
    mask : torch.Tensor, optional
        Boolean (batch, time) mask of valid frames; all frames when ``None``.

    Returns
    -------
    torch.Tensor
        Shape (batch, channels).

    Example
    -------
    >>> x = torch.tensor([[[1.0, 3.0, 100.0]]])
    >>> masked_mean(x, torch.tensor([[True, True, False]]))
    tensor([[2.]])
    """
    if mask is None:
        return x.mean(dim=-1)
    weights = mask.unsqueeze(1).to(x.dtype)
    return (x * weights).sum(dim=-1) / weights.sum(dim=-1)


class AttentiveStatisticsPooling(nn.Module):
    """Attentive statistics pooling (ASTP) as used by the Nes2Net back-ends.

    A 1x1 convolution to ``attention_channels``, tanh, a 1x1 convolution back
    to ``channels``, and a softmax over time give per-channel frame weights; the
    output is the weighted mean and standard deviation. Unlike SpeechBrain's
    ECAPA pooling there is no TDNN block (ReLU + BatchNorm) inside the attention
    and no global context, matching the Nes2Net release.

    Arguments
    ---------
    channels : int
        Number of input channels.
    attention_channels : int
        Size of the attention bottleneck.

    Example
    -------
    >>> pool = AttentiveStatisticsPooling(64, attention_channels=16)
    >>> pool(torch.rand(2, 64, 50)).shape
    torch.Size([2, 128])
    """

    def __init__(self, channels, attention_channels=128):
        super().__init__()
        self.attention_in = nn.Conv1d(channels, attention_channels, kernel_size=1)
        self.attention_out = nn.Conv1d(attention_channels, channels, kernel_size=1)

    def forward(self, x, mask=None):
        """Pools (batch, channels, time) into (batch, 2 * channels).

        Arguments
        ---------
        x : torch.Tensor
            Shape (batch, channels, time).
        mask : torch.Tensor, optional
            Boolean (batch, time) mask of valid frames.

        Returns
        -------
        torch.Tensor
            Concatenated weighted mean and standard deviation.
        """
        scores = self.attention_out(torch.tanh(self.attention_in(x)))
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        alpha = torch.softmax(scores, dim=-1)
        mean = (alpha * x).sum(dim=-1)
        var = (alpha * x.pow(2)).sum(dim=-1) - mean.pow(2)
        std = var.clamp(min=1e-10).sqrt()
        return torch.cat([mean, std], dim=1)
