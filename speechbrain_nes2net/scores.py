"""The toolkit's label and score conventions: label ids 0 = spoof, 1 = bona fide,
and a score is higher for more bona fide input."""

BONAFIDE = "bonafide"
SPOOF = "spoof"
#: The two labels in logit order: the index is the class id everywhere (manifests'
#: ``label_id``, losses, the label encoder, ONNX logits, the official checkpoints).
LABELS = (SPOOF, BONAFIDE)
#: Class id of each label (1 = bona fide).
LABEL_IDS = {label: index for index, label in enumerate(LABELS)}


def bonafide_scores(logits):
    """Turns back-end logits into one bona fide score per utterance.

    Arguments
    ---------
    logits : torch.Tensor
        (batch, 1) bona fide log-odds (CtrSVDD releases) or (batch, 2) logits
        with bona fide at index 1 (ASVspoof releases).

    Returns
    -------
    torch.Tensor
        (batch,) scores: the bona fide logit, as the official ASVspoof scoring uses.

    Example
    -------
    >>> import torch
    >>> bonafide_scores(torch.tensor([[0.5], [-2.0]]))
    tensor([ 0.5000, -2.0000])
    >>> bonafide_scores(torch.tensor([[3.0, -1.0]]))
    tensor([-1.])
    """
    if logits.dim() != 2 or logits.shape[1] not in (1, 2):
        raise ValueError(f"expected logits of shape (batch, 1|2), got {tuple(logits.shape)}")
    return logits[:, -1]
