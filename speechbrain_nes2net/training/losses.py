"""Training objectives of the Nes2Net recipes.

Labels follow :mod:`speechbrain_nes2net.scores`: 1 = bona fide, 0 = spoof.

- One-logit models (CtrSVDD releases): the logit is the bona fide log-odds,
  trained with a binary focal loss on soft labels.
- Two-logit models (ASVspoof releases): index 1 is bona fide, trained with a
  class-weighted cross-entropy.

Authors
 * speechbrain-nes2net contributors
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


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

    The weights are a registered buffer, so they follow the module to the
    training device (a ``CrossEntropyLoss(weight=...)`` built in YAML would not).

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
