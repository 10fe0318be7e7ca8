"""Training on several corpora at once: a mixture drawn by weight, epoch by epoch.

``train_data`` may name several ``<corpus>/<split>`` entries with sampling
weights (:func:`parse_data_spec`)::

    train_data: {asvspoof2019_la/train: 1.0, ctrsvdd/train: 0.5}
    --train_data="asvspoof2019_la/train:1.0,ctrsvdd/train:0.5"     # the same, as one string

The corpora are concatenated and :class:`CorpusMixtureSampler` draws each
epoch's utterances, each corpus its share ``epoch_length * weight /
sum(weights)``: without replacement (the default) as shuffled passes over it
(a small corpus is seen several times an epoch, a large one partly), with
replacement uniformly. The draw depends only on the seed and the epoch, so a
resumed run draws what an uninterrupted one would; under DDP each process
takes every ``world_size``-th position of it (the epoch length is a multiple
of the world size), so each drawn utterance goes to exactly one process.

Authors
 * speechbrain-nes2net contributors
"""

import numpy as np
import torch


def parse_data_spec(spec, what="train_data"):
    """``{<corpus>/<split>: weight}`` from a string, a list or a mapping.

    Arguments
    ---------
    spec : str, list or dict
        ``"a/train"``; ``"a/train:1.0,b/train:0.5"``; ``["a/train", "b/train"]``
        (equal weights); ``{"a/train": 1.0, "b/train": 0.5}``.
    what : str
        The key it came from, for messages.

    Returns
    -------
    dict
        Reference -> positive float weight, in the given order.

    Example
    -------
    >>> parse_data_spec("asvspoof2019_la/train:1.0, ctrsvdd/train:0.5")
    {'asvspoof2019_la/train': 1.0, 'ctrsvdd/train': 0.5}
    >>> parse_data_spec(["a/train", "b/train"])
    {'a/train': 1.0, 'b/train': 1.0}
    """
    if isinstance(spec, str):
        entries = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            reference, _, weight = part.partition(":")
            entries[reference.strip()] = weight.strip() or 1.0
    elif isinstance(spec, (list, tuple)):
        entries = {str(reference): 1.0 for reference in spec}
    elif isinstance(spec, dict):
        entries = {str(reference): weight for reference, weight in spec.items()}
    else:
        raise ValueError(f"{what}={spec!r} must name <corpus>/<split> entries")
    if not entries:
        raise ValueError(f"{what}={spec!r} names no <corpus>/<split> entry")
    parsed = {}
    for reference, weight in entries.items():
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            weight = float("nan")
        if not weight > 0:
            raise ValueError(f"{what}: the weight of {reference!r} must be a positive number")
        parsed[reference] = weight
    return parsed


class CorpusMixtureSampler(torch.utils.data.Sampler):
    """Draws an epoch of indices into concatenated corpora, by corpus weight.

    Arguments
    ---------
    sizes : sequence of int
        Utterances of each corpus, in concatenation order.
    weights : sequence of float
        Sampling weight of each corpus.
    epoch_length : int, optional
        Utterances an epoch (default: ``sum(sizes)``); rounded down to a
        multiple of ``world_size``.
    replacement : bool
        Draw with replacement within each corpus.
    seed : int
        Base seed; the epoch's draw uses ``seed`` and the epoch number.
    world_size : int
        DDP processes (default: as initialised, else 1).

    Example
    -------
    >>> sampler = CorpusMixtureSampler([4, 100], [1.0, 1.0], epoch_length=8, seed=0)
    >>> sampler.set_epoch(1)
    >>> indices = list(sampler)
    >>> len(indices), sum(i < 4 for i in indices), sampler.counts()
    (8, 4, [4, 4])
    """

    def __init__(self, sizes, weights, epoch_length=None, replacement=False, seed=0, world_size=None):
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(f"one weight per corpus: {len(sizes)} corpora, {len(weights)} weights")
        if min(sizes) < 1:
            raise ValueError(f"every corpus needs utterances, got sizes {list(sizes)}")
        if world_size is None:
            initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
            world_size = torch.distributed.get_world_size() if initialised else 1
        self.sizes = [int(size) for size in sizes]
        self.offsets = np.cumsum([0] + self.sizes[:-1]).tolist()
        total = float(sum(weights))
        self.shares = [float(w) / total for w in weights]
        length = int(epoch_length or sum(self.sizes))
        self.epoch_length = max(world_size, length - length % world_size)
        self.replacement = bool(replacement)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch):
        """Selects the epoch whose draw the sampler yields (SpeechBrain calls it every epoch)."""
        self.epoch = int(epoch)

    def counts(self):
        """Utterances of each corpus in the current epoch's draw.

        Largest-remainder apportionment: every corpus gets the whole part of
        its exact share ``epoch_length * weight / sum(weights)``, and the
        utterances left go one each to the largest fractional parts (the
        first corpus on a tie). The counts sum to the epoch length, none is
        negative, and each is within 1 of its exact share.
        """
        exact = np.array(self.shares, dtype=np.float64) * self.epoch_length
        counts = np.floor(exact).astype(int)
        left = self.epoch_length - int(counts.sum())
        # A stable sort keeps the first corpus first among equal remainders.
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:left]] += 1
        return counts.tolist()

    def draw(self):
        """The epoch's indices into the concatenated corpora (the same on every process)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        parts = []
        for size, offset, count in zip(self.sizes, self.offsets, self.counts()):
            if self.replacement:
                local = rng.integers(0, size, count)
            else:
                passes = max(1, -(-count // size))  # a share of 0 draws nothing
                local = np.concatenate([rng.permutation(size) for _ in range(passes)])[:count]
            parts.append(offset + local)
        indices = np.concatenate(parts)
        rng.shuffle(indices)  # the corpora mixed within the epoch
        return indices.tolist()

    def __iter__(self):
        return iter(self.draw())

    def __len__(self):
        return self.epoch_length
