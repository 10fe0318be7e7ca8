"""Training objectives of the Nes2Net recipes (labels: 1 = bona fide, 0 = spoof).

One-logit models (CtrSVDD releases) train their bona fide log-odds with a
binary focal loss on soft labels, two-logit models (ASVspoof releases; index
1 is bona fide) with a class-weighted cross-entropy, localisation models their
frame logits with :class:`SegmentLoss` besides.

Authors
 * speechbrain-nes2net contributors
"""

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_nes2net.lobes.localization import pool_frame_logits


class BinaryFocalLoss(nn.Module):
    """Focal loss on a bona fide logit with soft targets (CtrSVDD recipe).

    ``loss = alpha * (1 - p_t) ** gamma * BCE``, with ``p_t = exp(-BCE)``,
    averaged over the batch. Hard labels {0, 1} become ``spoof_target`` and
    ``bonafide_target`` (0.05 / 0.95 in the Nes2Net release) before the loss.

    Arguments
    ---------
    alpha : float
        Constant weight of the loss.
    gamma : float
        Focusing exponent.
    spoof_target : float
        Soft target of spoof utterances.
    bonafide_target : float
        Soft target of bona fide utterances.

    Example
    -------
    >>> loss = BinaryFocalLoss()
    >>> value = loss(torch.tensor([[2.0], [-2.0]]), torch.tensor([1, 0]))
    >>> round(value.item(), 5)
    0.00234
    """

    def __init__(self, alpha=0.25, gamma=2.0, spoof_target=0.05, bonafide_target=0.95):
        super().__init__()
        if not 0 <= spoof_target < bonafide_target <= 1:
            raise ValueError(
                f"need 0 <= spoof_target < bonafide_target <= 1, got "
                f"{spoof_target} and {bonafide_target}"
            )
        self.alpha = alpha
        self.gamma = gamma
        self.spoof_target = spoof_target
        self.bonafide_target = bonafide_target

    def forward(self, logits, labels):
        """Computes the loss of (batch, 1) logits against (batch,) 0/1 labels."""
        if logits.dim() != 2 or logits.shape[1] != 1:
            raise ValueError(
                "BinaryFocalLoss needs one logit per utterance (n_out: 1), got "
                f"logits of shape {tuple(logits.shape)}"
            )
        labels = labels.to(logits.dtype).view(-1, 1)
        targets = self.spoof_target + labels * (self.bonafide_target - self.spoof_target)
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = torch.exp(-bce)
        return (self.alpha * (1 - p_t) ** self.gamma * bce).mean()


class WeightedCrossEntropy(nn.Module):
    """Class-weighted cross-entropy on two logits (ASVspoof recipes).

    The weights are a buffer, so they follow the module to the training device
    (those of a ``CrossEntropyLoss(weight=...)`` built in YAML would not).

    Arguments
    ---------
    spoof_weight : float
        Weight of the spoof class (index 0); 0.1 in the releases.
    bonafide_weight : float
        Weight of the bona fide class (index 1); 0.9 in the releases.

    Example
    -------
    >>> loss = WeightedCrossEntropy()
    >>> loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1])).item() == torch.log(torch.tensor(2.0)).item()
    True
    """

    def __init__(self, spoof_weight=0.1, bonafide_weight=0.9):
        super().__init__()
        if spoof_weight <= 0 or bonafide_weight <= 0:
            raise ValueError(
                f"class weights must be positive, got {spoof_weight}, {bonafide_weight}"
            )
        # float64, cast to the logits' dtype when used: float32 would round
        # 0.1 and 0.9 before a float64 loss sees them.
        self.register_buffer(
            "weight", torch.tensor([spoof_weight, bonafide_weight], dtype=torch.float64)
        )

    def forward(self, logits, labels):
        """Computes the loss of (batch, 2) logits against (batch,) 0/1 labels."""
        if logits.dim() != 2 or logits.shape[1] != 2:
            raise ValueError(
                "WeightedCrossEntropy needs two logits per utterance (n_out: 2), got "
                f"logits of shape {tuple(logits.shape)}"
            )
        weight = self.weight.to(device=logits.device, dtype=logits.dtype)
        return F.cross_entropy(logits, labels.long().view(-1), weight=weight)


class SegmentLoss(nn.Module):
    """Class-weighted binary cross-entropy on segment logits pooled from frames.

    The localisation objective: frame logits are pooled into segments of
    ``segment_shift`` seconds (:func:`~speechbrain_nes2net.lobes.localization.pool_frame_logits`),
    each a binary trial against its label (PartialSpoof's polarity), weighted
    by its class. The loss is the weighted mean over the valid segments of the
    batch (as ``F.cross_entropy`` with class weights normalises); padding
    never counts. Where the frame and label counts of an utterance differ
    (they round the duration differently), the shorter decides.

    Arguments
    ---------
    segment_shift : float
        Segment resolution of the labels in seconds (a whole multiple of
        ``frame_shift``: 0.02 to 0.64 s for PartialSpoof on 20 ms frames).
    frame_shift : float
        Frame hop of the SSL model in seconds.
    pooling : str
        How frame logits form a segment logit: 'min' (default), 'mean', 'max'.
    spoof_weight, bonafide_weight : float
        Class weights of spoof and bona fide segments.

    Example
    -------
    >>> loss = SegmentLoss(segment_shift=0.04)
    >>> frame_logits = torch.tensor([[2.0, 3.0, -2.0, 1.0, 0.0]])
    >>> targets = torch.tensor([[1, 0, 1]])
    >>> value = loss(frame_logits, torch.tensor([4]), targets, torch.tensor([3]))
    >>> round(value.item(), 4)  # segments min(2, 3) = 2 -> 1 and min(-2, 1) = -2 -> 0
    0.1269
    """

    def __init__(
        self, segment_shift=0.02, frame_shift=0.02, pooling="min", spoof_weight=1.0,
        bonafide_weight=1.0,
    ):  # fmt: skip
        super().__init__()
        ratio = segment_shift / frame_shift
        if round(ratio) < 1 or abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(
                f"segment_shift={segment_shift} s must be a whole multiple of the SSL frame "
                f"shift {frame_shift} s (PartialSpoof labels: 0.02, 0.04, ..., 0.64)"
            )
        if spoof_weight <= 0 or bonafide_weight <= 0:
            raise ValueError(
                f"class weights must be positive, got {spoof_weight}, {bonafide_weight}"
            )
        self.segment_shift = float(segment_shift)
        self.frame_shift = float(frame_shift)
        self.frames_per_segment = round(ratio)
        self.pooling = pooling
        self.spoof_weight = float(spoof_weight)
        self.bonafide_weight = float(bonafide_weight)

    def forward(self, frame_logits, frame_counts, targets, target_counts):
        """Computes the loss.

        Arguments
        ---------
        frame_logits : torch.Tensor
            (batch, frames) bona fide frame logits.
        frame_counts : torch.Tensor
            (batch,) valid frames per utterance.
        targets : torch.Tensor
            (batch, segments) 0/1 segment labels (padded).
        target_counts : torch.Tensor
            (batch,) valid labels per utterance.

        Returns
        -------
        torch.Tensor
            The scalar loss (0, still in the graph, when no segment is valid).
        """
        logits, counts = pool_frame_logits(
            frame_logits, frame_counts, self.frames_per_segment, self.pooling
        )
        width = min(logits.shape[1], targets.shape[1])
        logits, targets = logits[:, :width], targets[:, :width].to(logits.dtype)
        limit = torch.minimum(counts, target_counts.to(counts.device))
        valid = torch.arange(width, device=logits.device) < limit.unsqueeze(1)
        weights = torch.full_like(logits, self.spoof_weight)
        weights = torch.where(targets > 0.5, self.bonafide_weight, weights)
        weights = weights * valid.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        total = weights.sum()
        if total <= 0:
            return frame_logits.sum() * 0.0
        return (weights * bce).sum() / total
