"""Frame-level Nes2Net for spoof localisation (partially spoofed speech).

Nes2Net pools its frame features over time into one utterance score. Without
the pooling, the same network gives one feature vector per SSL frame (20 ms):
:meth:`~speechbrain_nes2net.lobes.nes2net.Nes2Net.frames`, the D channels
after the final BN and activation. :class:`Nes2NetLocalizer` wraps a Nes2Net
or Nes2Net-X back-end and adds a per-frame linear layer on those D channels
(``D + 1`` parameters, no dimensionality reduction anywhere: the DR-free
design is kept), which gives one bona fide logit per frame. The utterance
logits come from the same trunk, through the back-end's own pooling and
output layer, exactly as the wrapped back-end computes them; so an exported
localisation model scores and labels files like any other, and its frames
say where the spoofed stretches are.

Training uses both outputs: the utterance objective of the recipe on the
utterance logits, and :class:`~speechbrain_nes2net.training.losses.SegmentLoss`
on the frame logits pooled to the resolution of the segment labels
(:func:`pool_frame_logits`).

Authors
 * speechbrain-nes2net contributors
"""

import torch
import torch.nn as nn

from speechbrain_nes2net.lobes.nes2net import Nes2Net, Nes2NetX
from speechbrain_nes2net.lobes.pooling import frame_mask, masked_mean
from speechbrain_nes2net.segments import SEGMENT_POOLINGS

#: Back-ends a localiser wraps, by the name its ``variant`` argument takes.
VARIANTS = {"Nes2Net": Nes2Net, "Nes2NetX": Nes2NetX}


class Nes2NetLocalizer(nn.Module):
    """A Nes2Net / Nes2Net-X back-end with a frame-level bona fide head.

    Arguments
    ---------
    variant : str
        'Nes2Net' or 'Nes2NetX' (Nes2Net-X-SeLU: 'Nes2NetX' with
        ``activation='selu'`` and ``se_min_channels=2``).
    **backend_kwargs
        The wrapped back-end's arguments (``input_size``, ``outer_ratio``,
        ``inner_ratio``, ``dilation``, ``se_ratio``, ``pooling``, ``n_out``, ...;
        see :class:`~speechbrain_nes2net.lobes.nes2net.Nes2Net`).

    Example
    -------
    >>> model = Nes2NetLocalizer("Nes2NetX", input_size=64, outer_ratio=4, inner_ratio=4).eval()
    >>> feats, lengths = torch.rand(2, 30, 64), torch.tensor([1.0, 0.5])
    >>> logits, frame_logits = model.forward_with_frames(feats, lengths)
    >>> logits.shape, frame_logits.shape
    (torch.Size([2, 1]), torch.Size([2, 30]))
    >>> torch.allclose(logits, model(feats, lengths), atol=1e-6)  # one trunk, both outputs
    True
    >>> sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.backend.parameters())
    65
    """

    def __init__(self, variant="Nes2NetX", **backend_kwargs):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant={variant!r} must be one of {sorted(VARIANTS)}")
        self.variant = variant
        self.backend = VARIANTS[variant](**backend_kwargs)
        self.frame_fc = nn.Linear(self.backend.input_size, 1)

    @property
    def fc(self):
        """The utterance output layer (the wrapped back-end's)."""
        return self.backend.fc

    @property
    def input_size(self):
        """Channels of the input features."""
        return self.backend.input_size

    def forward(self, x, lengths=None, with_frames=False):
        """Utterance logits (batch, n_out) of (batch, time, channels) features.

        With ``with_frames``, :meth:`forward_with_frames` (a DDP-wrapped module
        is called through ``forward`` only).
        """
        if with_frames:
            return self.forward_with_frames(x, lengths)
        return self.backend(x, lengths)

    def embed(self, x, lengths=None):
        """The pooled utterance embedding (see :meth:`Nes2Net.embed`)."""
        return self.backend.embed(x, lengths)

    def frames(self, x, lengths=None):
        """Frame features (batch, time, channels), padded frames zero (see :meth:`Nes2Net.frames`)."""
        return self.backend.frames(x, lengths)

    def frame_logits(self, x, lengths=None):
        """One bona fide logit per frame, (batch, time); padded frames hold 0."""
        return self.forward_with_frames(x, lengths)[1]

    def forward_with_frames(self, x, lengths=None):
        """Utterance logits and frame logits from one pass of the trunk.

        Arguments
        ---------
        x : torch.Tensor
            Features (batch, time, channels).
        lengths : torch.Tensor, optional
            Relative lengths (batch,).

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            (batch, n_out) utterance logits, exactly those of :meth:`forward`,
            and (batch, time) frame logits (higher = more bona fide), 0 on
            padded frames.
        """
        frames = self.backend.frames(x, lengths)
        mask = None if lengths is None else frame_mask(lengths, x.shape[1], x.device)
        channels_first = frames.transpose(1, 2)
        if self.backend.pooling is None:
            pooled = masked_mean(channels_first, mask)
        else:
            pooled = self.backend.pooling(channels_first, mask)
        frame_logits = self.frame_fc(frames).squeeze(-1)
        if mask is not None:
            frame_logits = frame_logits * mask.to(frame_logits.dtype)
        return self.backend.fc(pooled), frame_logits


def pool_frame_logits(frame_logits, frame_counts, frames_per_segment, pooling="min"):
    """Frame logits of a padded batch pooled into segment logits.

    Segment ``k`` holds frames ``k * frames_per_segment`` to ``(k + 1) *
    frames_per_segment - 1`` of its utterance (a last segment may be
    partial); padded frames never enter a segment. The same grouping as
    :func:`~speechbrain_nes2net.evaluation.localization.pool_frame_scores`.

    Arguments
    ---------
    frame_logits : torch.Tensor
        (batch, frames) bona fide logits.
    frame_counts : torch.Tensor
        (batch,) valid frames of each utterance.
    frames_per_segment : int
        Frames per segment (segment shift / frame shift).
    pooling : str
        'min' (a segment is spoof when any part of it is, PartialSpoof's label
        rule), 'mean' or 'max'.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        (batch, segments) segment logits (0 where no segment) and the
        (batch,) number of segments of each utterance.

    Example
    -------
    >>> logits = torch.tensor([[3.0, 1.0, 2.0, 5.0, -1.0], [4.0, 2.0, 9.0, 9.0, 9.0]])
    >>> segments, counts = pool_frame_logits(logits, torch.tensor([5, 2]), 2)
    >>> segments.tolist(), counts.tolist()
    ([[1.0, 2.0, -1.0], [2.0, 0.0, 0.0]], [3, 1])
    """
    if pooling not in SEGMENT_POOLINGS:
        raise ValueError(f"pooling={pooling!r} must be one of {list(SEGMENT_POOLINGS)}")
    size = int(frames_per_segment)
    batch, n_frames = frame_logits.shape
    n_segments = -(-n_frames // size)
    pad = n_segments * size - n_frames
    valid = torch.arange(n_frames, device=frame_logits.device) < frame_counts.to(
        frame_logits.device
    ).unsqueeze(1)
    logits = nn.functional.pad(frame_logits, (0, pad)).view(batch, n_segments, size)
    valid = nn.functional.pad(valid, (0, pad)).view(batch, n_segments, size)
    if pooling == "min":
        pooled = logits.masked_fill(~valid, float("inf")).amin(dim=2)
    elif pooling == "max":
        pooled = logits.masked_fill(~valid, float("-inf")).amax(dim=2)
    else:
        weights = valid.to(logits.dtype)
        pooled = (logits * weights).sum(dim=2) / weights.sum(dim=2).clamp(min=1)
    has_frames = valid.any(dim=2)
    pooled = torch.where(has_frames, pooled, torch.zeros_like(pooled))
    return pooled, has_frames.sum(dim=1)
