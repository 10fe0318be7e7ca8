"""AASIST back-end with a dimensionality-reduction layer (the Nes2Net baseline).

AASIST (Jung et al., ICASSP 2022) as fitted to SSL features by Tak et al.
(Odyssey 2022, "SSL_Anti-spoofing"): a linear layer reduces the D = 1024 SSL
channels to 128, the (128 x time) map is treated as a one-channel image, a
3 x 3 max-pool and six residual 2-D convolution blocks encode it, a
spectral and a temporal attention turn it into two node sets (one node per
frequency bin, one per pooled frame), and graph attention with graph pooling,
two heterogeneous stacking graph attention branches (HS-GAL) with master nodes,
and a max/mean readout give the logits. This is the back-end the Nes2Net paper
compares against: 447,242 parameters in the released code and ~698 M
conv/linear multiply-accumulates for 200 frames (4 s), where Nes2Net-X needs
~88% fewer.

The layout follows SpeechBrain lobes: ``forward(x, lengths=None)`` with ``x``
of shape (batch, time, channels) and relative ``lengths``.

Padding. With ``lengths`` the model is built to score each utterance of a
padded batch as if it were alone (up to floating-point rounding): padded frames
are zeroed before every convolution that looks across time (so they act as
the convolution's own zero padding), the 3-frame max-pool keeps only windows
made of valid frames (the trailing ``length % 3`` frames are dropped, as for an
unpadded input), every batch normalisation takes its statistics from valid
positions only, the attention softmaxes and graph attention ignore padded
nodes, graph pooling keeps ``int(ratio * valid_nodes)`` nodes per utterance,
and the readouts skip padded nodes. In training mode this also means padding
never changes the batch statistics; dropout remains random, of course.

Authors
 * speechbrain-nes2net contributors
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from speechbrain_nes2net.lobes.graph_attention import (
    GraphAttentionLayer,
    GraphPool,
    HSGALBranch,
    ResidualBlock,
    SpectroTemporalAttention,
    masked_batch_norm,
    zero_padded,
)
from speechbrain_nes2net.lobes.pooling import frame_mask

# Frequency and time kernel of the max-pool applied to the reduced SSL map.
FIRST_POOL = 3


class AASIST(nn.Module):
    """AASIST back-end on SSL features, with a dimensionality-reduction layer.

    Linear D -> ``dr_size``; the (dr_size x time) map, as one channel, goes
    through a 3 x 3 max-pool, BN, SELU, six residual blocks (``filts[0..2]``,
    then ``filts[3]`` three times), BN, SELU; spectro-temporal attention gives
    ``dr_size // 3`` spectral nodes (plus a learnt positional embedding) and
    ``time // 3`` temporal nodes, each refined by a graph attention layer and
    graph pooling; two HS-GAL branches with their own master node run on
    both; their outputs are merged by an element-wise max and read out as
    [max |temporal|, mean temporal, max |spectral|, mean spectral, master],
    then a linear layer gives the logits.

    The default configuration is the XLS-R + AASIST model of the SSL
    anti-spoofing code (447,242 parameters there, of which the 512 of the
    never-applied pre-activation BNs are dropped here; see
    :class:`ResidualBlock` and ``pre_activation``).

    Padding: with ``lengths`` every utterance of a padded batch is scored as
    if it were alone, up to floating-point rounding, in eval mode; in training
    mode padding does not change the batch-norm statistics either (see the
    module docstring). Inputs shorter than 3 frames cannot be pooled and are
    rejected.

    Arguments
    ---------
    input_size : int
        Channels D of the SSL features (1024 for XLS-R 300M / WavLM-Large).
    dr_size : int
        Output size of the dimensionality-reduction linear layer (>= 3).
    n_out : int
        Number of logits (2 for the ASVspoof recipes: score = logit[:, 1]).
    filts : sequence of (int, int)
        (in, out) channels of the residual blocks: four pairs, chained, the
        first starting from 1 channel, the last with in == out (it is used for
        blocks 4 to 6).
    gat_dims : (int, int)
        Node size after the first graph attention layers, and inside the
        HS-GAL branches.
    pool_ratios : (float, float, float)
        Graph pooling ratios: spectral graph, temporal graph, HS-GAL branches.
        (The released configuration files list a 4th value that their code
        never reads.)
    temperatures : (float, float, float)
        Attention temperatures: spectral GAT, temporal GAT, HS-GAL layers.
    dropout : float
        Dropout before the output layer.
    branch_dropout : float
        Dropout on the branch outputs before they are merged.
    gat_dropout : float
        Input-node dropout of every graph attention layer.
    pool_dropout : float
        Dropout before the graph-pooling scores.
    attention_channels : int
        Bottleneck of the spectro-temporal attention.
    pre_activation : bool
        ``False`` computes what the released code computes; ``True`` adds the
        BN + SELU before the first convolution of residual blocks 2 to 6
        (giving exactly the released 447,242 parameters, all of them used).

    Example
    -------
    >>> model = AASIST(input_size=32, dr_size=24)
    >>> feats = torch.rand(2, 40, 32)
    >>> model(feats, lengths=torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 2])
    >>> sum(p.numel() for p in AASIST(pre_activation=True).parameters())
    447242
    """

    def __init__(
        self,
        input_size=1024,
        dr_size=128,
        n_out=2,
        filts=((1, 32), (32, 32), (32, 64), (64, 64)),
        gat_dims=(64, 32),
        pool_ratios=(0.5, 0.5, 0.5),
        temperatures=(2.0, 2.0, 100.0),
        dropout=0.5,
        branch_dropout=0.2,
        gat_dropout=0.2,
        pool_dropout=0.3,
        attention_channels=128,
        pre_activation=False,
    ):
        super().__init__()
        filts = [tuple(pair) for pair in filts] if _is_pairs(filts) else filts
        _check_config(
            input_size=input_size,
            dr_size=dr_size,
            n_out=n_out,
            filts=filts,
            gat_dims=gat_dims,
            pool_ratios=pool_ratios,
            temperatures=temperatures,
            dropouts={
                "dropout": dropout,
                "branch_dropout": branch_dropout,
                "gat_dropout": gat_dropout,
                "pool_dropout": pool_dropout,
            },
            attention_channels=attention_channels,
        )
        self.input_size = input_size
        channels = filts[-1][1]
        self.dr = nn.Linear(input_size, dr_size)
        self.first_bn = nn.BatchNorm2d(1)
        self.encoder = nn.ModuleList(
            ResidualBlock(c_in, c_out, pre_activation=pre_activation and i > 0)
            for i, (c_in, c_out) in enumerate(list(filts) + [filts[-1]] * 2)
        )
        self.encoder_bn = nn.BatchNorm2d(channels)
        self.selu = nn.SELU()
        self.attention = SpectroTemporalAttention(channels, attention_channels)
        self.pos_spectral = nn.Parameter(torch.randn(1, dr_size // FIRST_POOL, channels))
        self.gat_spectral = GraphAttentionLayer(
            channels, gat_dims[0], temperatures[0], gat_dropout
        )
        self.gat_temporal = GraphAttentionLayer(
            channels, gat_dims[0], temperatures[1], gat_dropout
        )
        self.pool_spectral = GraphPool(gat_dims[0], pool_ratios[0], pool_dropout)
        self.pool_temporal = GraphPool(gat_dims[0], pool_ratios[1], pool_dropout)
        self.masters = nn.ParameterList(
            nn.Parameter(torch.randn(1, 1, gat_dims[0])) for _ in range(2)
        )
        self.branches = nn.ModuleList(
            HSGALBranch(
                gat_dims[0],
                gat_dims[1],
                temperatures[2],
                pool_ratios[2],
                gat_dropout,
                pool_dropout,
            )
            for _ in range(2)
        )
        self.branch_drop = nn.Dropout(branch_dropout)
        self.drop = nn.Dropout(dropout)
        self.out_layer = nn.Linear(5 * gat_dims[1], n_out)

    def forward(self, x, lengths=None):
        """Scores SSL features.

        Arguments
        ---------
        x : torch.Tensor
            Features of shape (batch, time, input_size), time >= 3.
        lengths : torch.Tensor, optional
            Relative lengths (batch,) of the utterances in the padded batch.

        Returns
        -------
        torch.Tensor
            Logits of shape (batch, n_out).
        """
        return self.out_layer(self.drop(self.embed(x, lengths)))

    def embed(self, x, lengths=None):
        """Returns the (batch, 5 * gat_dims[1]) readout before the output layer."""
        mask = self._frame_mask(x, lengths)
        x = zero_padded(self.dr(x).transpose(1, 2).unsqueeze(1), mask)
        x = F.max_pool2d(x, FIRST_POOL)
        if mask is not None:
            # A pooled frame is valid only if its whole window was.
            n_pooled = mask.sum(dim=1) // FIRST_POOL
            mask = torch.arange(x.shape[-1], device=x.device) < n_pooled.unsqueeze(1)
        # Masked BN zeroes the padded frames (and SELU keeps them zero), also
        # the pooled windows that straddled the end of an utterance.
        x = self.selu(masked_batch_norm(self.first_bn, x, mask))
        for block in self.encoder:
            x = block(x, mask)
        x = self.selu(masked_batch_norm(self.encoder_bn, x, mask))

        spectral, temporal = self.attention(x, mask)
        spectral, _ = self.pool_spectral(
            self.gat_spectral(spectral + self.pos_spectral)
        )
        temporal, mask = self.pool_temporal(self.gat_temporal(temporal, mask), mask)

        outputs = []
        for branch, master in zip(self.branches, self.masters):
            *nodes, pooled_mask = branch(temporal, spectral, master, mask)
            outputs.append([self.branch_drop(n) for n in nodes])
        # Both branches keep the same number of nodes per utterance, so their
        # (best-first) nodes pair up and share pooled_mask.
        (t1, s1, m1), (t2, s2, m2) = outputs
        return torch.cat(
            _readout(torch.max(t1, t2), pooled_mask)
            + _readout(torch.max(s1, s2), None)
            + [torch.max(m1, m2).squeeze(1)],
            dim=1,
        )

    def _frame_mask(self, x, lengths):
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"expected features of shape (batch, time, {self.input_size}), "
                f"got {tuple(x.shape)}"
            )
        if x.shape[1] < FIRST_POOL:
            raise ValueError(
                f"AASIST needs at least {FIRST_POOL} frames (its first max-pool "
                f"spans {FIRST_POOL}), got {x.shape[1]}"
            )
        if lengths is None:
            return None
        if lengths.shape != (x.shape[0],):
            raise ValueError(
                f"lengths must have shape ({x.shape[0]},), got {tuple(lengths.shape)}"
            )
        mask = frame_mask(lengths, x.shape[1], x.device)
        shortest = int(mask.sum(dim=1).min())
        if shortest < FIRST_POOL:
            raise ValueError(
                f"relative lengths give an utterance of {shortest} frame(s); "
                f"AASIST needs at least {FIRST_POOL}"
            )
        return mask


def _readout(nodes, mask):
    """[max |node|, mean node] over the (valid) nodes."""
    if mask is None:
        return [nodes.abs().amax(dim=1), nodes.mean(dim=1)]
    weights = mask.unsqueeze(-1).to(nodes.dtype)
    # |x| >= 0, so zeroing the padded nodes leaves the maximum unchanged.
    peak = (nodes.abs() * weights).amax(dim=1)
    return [peak, (nodes * weights).sum(dim=1) / weights.sum(dim=1)]


def _is_pairs(value):
    try:
        return all(len(pair) == 2 for pair in value)
    except TypeError:
        return False


def _check_config(**config):
    """Validates an AASIST configuration, naming every wrong value."""
    problems = []
    for name in ("input_size", "dr_size", "n_out", "attention_channels"):
        if not _positive_int(config[name]):
            problems.append(f"{name}={config[name]!r} must be a positive integer")
    if _positive_int(config["dr_size"]) and config["dr_size"] < FIRST_POOL:
        problems.append(
            f"dr_size={config['dr_size']} must be at least {FIRST_POOL} "
            "(the first max-pool divides it by 3)"
        )
    problems += _check_filts(config["filts"])
    gat_dims = config["gat_dims"]
    if not (_sized(gat_dims, 2) and all(_positive_int(d) for d in gat_dims)):
        problems.append(f"gat_dims={gat_dims!r} must be two positive integers")
    ratios = config["pool_ratios"]
    if not (_sized(ratios, 3) and all(_number(r) and 0 < r <= 1 for r in ratios)):
        problems.append(
            f"pool_ratios={ratios!r} must be three ratios in (0, 1] (spectral, "
            "temporal, HS-GAL); the released configs' unused 4th value must be dropped"
        )
    temps = config["temperatures"]
    if not (_sized(temps, 3) and all(_number(t) and t > 0 for t in temps)):
        problems.append(
            f"temperatures={temps!r} must be three positive numbers (spectral GAT, "
            "temporal GAT, HS-GAL); the released configs' unused 4th value must be dropped"
        )
    for name, p in config["dropouts"].items():
        if not (_number(p) and 0 <= p < 1):
            problems.append(f"{name}={p!r} must be in [0, 1)")
    if problems:
        raise ValueError("invalid AASIST configuration: " + "; ".join(problems))


def _check_filts(filts):
    if not (_sized(filts, 4) and _is_pairs(filts)) or not all(
        _positive_int(c) for pair in filts for c in pair
    ):
        return [f"filts={filts!r} must be four (in, out) pairs of positive integers"]
    problems = []
    if filts[0][0] != 1:
        problems.append(f"filts[0]={filts[0]} must start from 1 channel (the input map)")
    for i in range(1, 4):
        if filts[i][0] != filts[i - 1][1]:
            problems.append(
                f"filts[{i}]={filts[i]} must start with filts[{i - 1}]'s "
                f"{filts[i - 1][1]} output channels"
            )
    if filts[3][0] != filts[3][1]:
        problems.append(
            f"filts[3]={filts[3]} must keep the channel count (it is repeated for blocks 4-6)"
        )
    return problems


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sized(value, n):
    try:
        return len(value) == n
    except TypeError:
        return False
