"""The building blocks of the AASIST baseline: padding-aware graph attention and its encoder.

Graph attention over spectral and temporal nodes (:class:`GraphAttentionLayer`),
its heterogeneous stacking variant with a master node
(:class:`HtrgGraphAttentionLayer`, :class:`HSGALBranch`), graph pooling
(:class:`GraphPool`), and the residual 2-D encoder with spectro-temporal
attention (:class:`ResidualBlock`, :class:`SpectroTemporalAttention`) that
:class:`~speechbrain_nes2net.lobes.aasist.AASIST` composes. Every block takes a
mask of valid positions, so that padding never changes an utterance's result.

Authors
 * speechbrain-nes2net contributors
"""

import torch
import torch.nn as nn


def masked_batch_norm(norm, x, mask=None):
    """Batch-normalises ``x`` using only its valid positions.

    In training mode the statistics come from the valid positions alone, so
    padding never shifts them; padded positions of the output are zero.

    Arguments
    ---------
    norm : torch.nn.BatchNorm1d or torch.nn.BatchNorm2d
        A BatchNorm1d for node tensors (batch, nodes, features), or a
        BatchNorm2d for maps (batch, channels, freq, time).
    x : torch.Tensor
        Node tensor or map, as above.
    mask : torch.Tensor, optional
        Boolean (batch, nodes) or (batch, time) mask of valid positions.

    Returns
    -------
    torch.Tensor
        Normalised tensor of the shape of ``x``.

    Example
    -------
    >>> norm = nn.BatchNorm1d(4)
    >>> x = torch.rand(2, 5, 4)
    >>> mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    >>> out = masked_batch_norm(norm, x, mask)
    >>> out.shape, bool(out[1, 2:].eq(0).all())
    (torch.Size([2, 5, 4]), True)
    """
    if x.dim() == 3:
        if mask is None:
            return norm(x.reshape(-1, x.shape[-1])).view_as(x)
        return torch.zeros_like(x).index_put((mask,), norm(x[mask]))
    if mask is None:
        return norm(x)
    frames = x.permute(0, 3, 1, 2)  # (batch, time, channels, freq)
    # BatchNorm2d wants 4-D input: each valid frame is a (channels, freq, 1) image.
    valid = norm(frames[mask].unsqueeze(-1)).squeeze(-1)
    return torch.zeros_like(frames).index_put((mask,), valid).permute(0, 2, 3, 1)


def masked_softmax(scores, mask, dim):
    """Softmax over ``dim`` where ``False`` entries of ``mask`` get zero weight.

    Arguments
    ---------
    scores : torch.Tensor
        Attention scores.
    mask : torch.Tensor or None
        Boolean mask broadcastable to ``scores``; plain softmax when ``None``.
    dim : int
        Axis to normalise over (must hold at least one valid entry).

    Returns
    -------
    torch.Tensor
        Weights of the shape of ``scores``.

    Example
    -------
    >>> masked_softmax(torch.zeros(1, 3), torch.tensor([[True, True, False]]), -1)
    tensor([[0.5000, 0.5000, 0.0000]])
    """
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=dim)


def pairwise_products(x):
    """Element-wise products of every pair of nodes: (batch, n, n, dim).

    Example
    -------
    >>> pairwise_products(torch.rand(2, 5, 8)).shape
    torch.Size([2, 5, 5, 8])
    """
    return x.unsqueeze(2) * x.unsqueeze(1)


class GraphAttentionLayer(nn.Module):
    """Graph attention over a fully connected node set (AASIST's GAT).

    The attention score of node ``i`` for neighbour ``j`` is
    ``w . tanh(A (x_i * x_j)) / temperature``, normalised over ``j``; the output
    is ``P_att (sum_j a_ij x_j) + P (x_i)``, batch-normalised and SELU-activated.

    Arguments
    ---------
    in_dim : int
        Node feature size.
    out_dim : int
        Output node feature size.
    temperature : float
        Softmax temperature (larger = flatter attention).
    dropout : float
        Dropout on the input nodes.

    Example
    -------
    >>> layer = GraphAttentionLayer(16, 8, temperature=2.0)
    >>> layer(torch.rand(3, 10, 16)).shape
    torch.Size([3, 10, 8])
    """

    def __init__(self, in_dim, out_dim, temperature=1.0, dropout=0.2):
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(out_dim, 1)))
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(dropout)
        self.act = nn.SELU()
        self.temperature = temperature

    def forward(self, x, mask=None):
        """Updates (batch, nodes, in_dim) ``x``; ``mask`` marks valid nodes.

        Arguments
        ---------
        x : torch.Tensor
            Nodes, shape (batch, nodes, in_dim).
        mask : torch.Tensor, optional
            Boolean (batch, nodes) mask of valid nodes.

        Returns
        -------
        torch.Tensor
            Nodes, shape (batch, nodes, out_dim).
        """
        x = self.input_drop(x)
        hidden = torch.tanh(self.att_proj(pairwise_products(x)))
        scores = torch.matmul(hidden, self.att_weight).squeeze(-1) / self.temperature
        neighbours = None if mask is None else mask.unsqueeze(1)
        att = masked_softmax(scores, neighbours, dim=-1)
        x = self.proj_with_att(torch.matmul(att, x)) + self.proj_without_att(x)
        return self.act(masked_batch_norm(self.bn, x, mask))


class HtrgGraphAttentionLayer(nn.Module):
    """Heterogeneous graph attention over two node types plus a master node.

    Both node sets are projected (one linear layer per type) and joined into
    one graph. Pair scores use one weight vector for type-1 pairs, one for
    type-2 pairs and a shared one for mixed pairs. The master node attends to
    all nodes with its own projections and is updated alongside.

    Arguments
    ---------
    in_dim : int
        Node feature size of both types and of the master node.
    out_dim : int
        Output node feature size.
    temperature : float
        Softmax temperature of node and master attention.
    dropout : float
        Dropout on the joined input nodes.

    Example
    -------
    >>> layer = HtrgGraphAttentionLayer(16, 8, temperature=100.0)
    >>> x1, x2, master = layer(torch.rand(2, 7, 16), torch.rand(2, 5, 16), torch.rand(2, 1, 16))
    >>> x1.shape, x2.shape, master.shape
    (torch.Size([2, 7, 8]), torch.Size([2, 5, 8]), torch.Size([2, 1, 8]))
    """

    def __init__(self, in_dim, out_dim, temperature=1.0, dropout=0.2):
        super().__init__()
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_projM = nn.Linear(in_dim, out_dim)
        self.att_weight11 = self._attention_vector(out_dim)
        self.att_weight22 = self._attention_vector(out_dim)
        self.att_weight12 = self._attention_vector(out_dim)
        self.att_weightM = self._attention_vector(out_dim)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_attM = nn.Linear(in_dim, out_dim)
        self.proj_without_attM = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(dropout)
        self.act = nn.SELU()
        self.temperature = temperature

    @staticmethod
    def _attention_vector(size):
        return nn.Parameter(nn.init.xavier_normal_(torch.empty(size, 1)))

    def forward(self, x1, x2, master, mask1=None):
        """Updates both node sets and the master node.

        Arguments
        ---------
        x1 : torch.Tensor
            Type-1 nodes (batch, n1, in_dim); the only type that may be padded.
        x2 : torch.Tensor
            Type-2 nodes (batch, n2, in_dim).
        master : torch.Tensor
            Master node (batch or 1, 1, in_dim).
        mask1 : torch.Tensor, optional
            Boolean (batch, n1) mask of valid type-1 nodes.

        Returns
        -------
        tuple of torch.Tensor
            Type-1 nodes (batch, n1, out_dim), type-2 nodes (batch, n2,
            out_dim) and master node (batch, 1, out_dim).
        """
        n1, n2 = x1.shape[1], x2.shape[1]
        x = torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1)
        x = self.input_drop(x)
        mask = None
        if mask1 is not None:
            mask = torch.cat([mask1, mask1.new_ones(mask1.shape[0], n2)], dim=1)

        master = self._update_master(x, master, mask)

        hidden = torch.tanh(self.att_proj(pairwise_products(x)))
        scores = (hidden * self._pair_weights(n1, n2)).sum(-1) / self.temperature
        neighbours = None if mask is None else mask.unsqueeze(1)
        att = masked_softmax(scores, neighbours, dim=-1)
        x = self.proj_with_att(torch.matmul(att, x)) + self.proj_without_att(x)
        x = self.act(masked_batch_norm(self.bn, x, mask))
        return x[:, :n1], x[:, n1:], master

    def _pair_weights(self, n1, n2):
        """(n, n, out_dim) attention vector for every node pair, by pair type."""
        is_type1 = torch.arange(n1 + n2, device=self.att_weight11.device) < n1
        same_type = is_type1.unsqueeze(1) == is_type1.unsqueeze(0)
        # 0: both type 1, 1: both type 2, 2: mixed (one shared vector both ways).
        pair_type = torch.where(same_type, (~is_type1).long().unsqueeze(1), 2)
        vectors = torch.stack(
            [self.att_weight11[:, 0], self.att_weight22[:, 0], self.att_weight12[:, 0]]
        )
        return vectors[pair_type]

    def _update_master(self, x, master, mask):
        hidden = torch.tanh(self.att_projM(x * master))
        scores = torch.matmul(hidden, self.att_weightM) / self.temperature
        att = masked_softmax(scores, None if mask is None else mask.unsqueeze(-1), dim=1)
        summary = torch.matmul(att.transpose(1, 2), x)
        return self.proj_with_attM(summary) + self.proj_without_attM(master)


class GraphPool(nn.Module):
    """Keeps the highest-scoring ``ratio`` of the nodes, scaled by their score.

    Scores are ``sigmoid(linear(node))``. With a mask, each utterance keeps
    ``max(int(ratio * valid_nodes), 1)`` of its own valid nodes; the result is
    padded to the largest count in the batch and a new mask is returned.

    Arguments
    ---------
    in_dim : int
        Node feature size.
    ratio : float
        Fraction of nodes kept, in (0, 1].
    dropout : float
        Dropout on the nodes before scoring (the kept nodes are not dropped).

    Example
    -------
    >>> pool = GraphPool(16, ratio=0.5)
    >>> nodes, mask = pool(torch.rand(2, 9, 16), torch.tensor([[True] * 9, [True] * 4 + [False] * 5]))
    >>> nodes.shape, mask.sum(dim=1).tolist()
    (torch.Size([2, 4, 16]), [4, 2])
    """

    def __init__(self, in_dim, ratio, dropout=0.3):
        super().__init__()
        self.ratio = ratio
        self.proj = nn.Linear(in_dim, 1)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def kept(self, n_nodes):
        """Number of nodes kept out of ``n_nodes`` (int or integer tensor)."""
        if torch.is_tensor(n_nodes):
            # Float64 product + floor matches Python's int(ratio * n) exactly.
            return (n_nodes.double() * self.ratio).floor().long().clamp(min=1)
        return max(int(n_nodes * self.ratio), 1)

    def forward(self, h, mask=None):
        """Pools (batch, nodes, in_dim) ``h``.

        Arguments
        ---------
        h : torch.Tensor
            Nodes, shape (batch, nodes, in_dim).
        mask : torch.Tensor, optional
            Boolean (batch, nodes) mask of valid nodes.

        Returns
        -------
        tuple
            The kept nodes (batch, kept, in_dim), best first, and their
            boolean (batch, kept) mask (``None`` when no mask was given).
        """
        scores = torch.sigmoid(self.proj(self.drop(h))).squeeze(-1)
        if mask is None:
            n_kept = self.kept(h.shape[1])
            ranking = scores
        else:
            per_utt = self.kept(mask.sum(dim=1))
            n_kept = int(per_utt.max())
            # Scores lie in (0, 1), so -1 ranks every padded node last.
            ranking = scores.masked_fill(~mask, -1.0)
        _, idx = torch.topk(ranking, n_kept, dim=1)
        kept = torch.gather(h, 1, idx.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        kept = kept * torch.gather(scores, 1, idx).unsqueeze(-1)
        if mask is None:
            return kept, None
        new_mask = torch.arange(n_kept, device=h.device) < per_utt.unsqueeze(1)
        return kept, new_mask


class ResidualBlock(nn.Module):
    """2-D residual convolution block of the AASIST encoder.

    conv (2 x 3, frequency grows by one), BN, SELU, conv (2 x 3, frequency
    back), plus the input (through a 1 x 3 conv when the channels change).
    The frequency and time sizes are kept.

    The released AASIST code builds a pre-activation BN for every block but
    the first and then convolves the raw input, so that BN never acts.
    ``pre_activation=False`` reproduces that computation without the dead
    layer; ``pre_activation=True`` applies BN + SELU before the first
    convolution, as the block was evidently meant to.

    Arguments
    ---------
    in_channels : int
        Input channels.
    out_channels : int
        Output channels.
    pre_activation : bool
        Whether to batch-normalise and activate the input first.

    Example
    -------
    >>> block = ResidualBlock(1, 8)
    >>> block(torch.rand(2, 1, 12, 20)).shape
    torch.Size([2, 8, 12, 20])
    """

    def __init__(self, in_channels, out_channels, pre_activation=False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels) if pre_activation else None
        self.conv1 = nn.Conv2d(in_channels, out_channels, (2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, (2, 3), padding=(0, 1))
        self.conv_downsample = None
        if in_channels != out_channels:
            self.conv_downsample = nn.Conv2d(
                in_channels, out_channels, (1, 3), padding=(0, 1)
            )
        self.selu = nn.SELU()

    def forward(self, x, mask=None):
        """Encodes (batch, channels, freq, time) ``x``.

        Arguments
        ---------
        x : torch.Tensor
            Map of shape (batch, in_channels, freq, time), zero at padded frames.
        mask : torch.Tensor, optional
            Boolean (batch, time) mask of valid frames.

        Returns
        -------
        torch.Tensor
            Map of shape (batch, out_channels, freq, time), zero at padded
            frames when a mask is given.
        """
        out = x
        if self.bn1 is not None:
            out = self.selu(masked_batch_norm(self.bn1, out, mask))
        out = self.conv1(out)
        # Masked BN zeroes the padded frames, and SELU(0) = 0, so conv2 sees
        # zeros there just like the zero padding of a lone utterance.
        out = self.selu(masked_batch_norm(self.bn2, out, mask))
        out = self.conv2(out)
        identity = x if self.conv_downsample is None else self.conv_downsample(x)
        return zero_padded(out + identity, mask)


class SpectroTemporalAttention(nn.Module):
    """Summarises a (channels, freq, time) map into spectral and temporal nodes.

    1 x 1 conv, SELU, BN, 1 x 1 conv give attention logits for every position;
    a softmax over time weights the map into one node per frequency bin, and a
    softmax over frequency weights it into one node per frame.

    Arguments
    ---------
    channels : int
        Channels of the map (= node feature size).
    hidden : int
        Channels of the attention bottleneck.

    Example
    -------
    >>> att = SpectroTemporalAttention(8, hidden=16)
    >>> spectral, temporal = att(torch.rand(2, 8, 5, 30))
    >>> spectral.shape, temporal.shape
    (torch.Size([2, 5, 8]), torch.Size([2, 30, 8]))
    """

    def __init__(self, channels, hidden=128):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.act = nn.SELU()
        self.bn = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x, mask=None):
        """Returns spectral (batch, freq, channels) and temporal (batch, time, channels) nodes.

        Arguments
        ---------
        x : torch.Tensor
            Map of shape (batch, channels, freq, time), zero at padded frames.
        mask : torch.Tensor, optional
            Boolean (batch, time) mask of valid frames.

        Returns
        -------
        tuple of torch.Tensor
            Spectral nodes and temporal nodes (padded frames give padded nodes).
        """
        logits = self.conv2(masked_batch_norm(self.bn, self.act(self.conv1(x)), mask))
        frames = None if mask is None else mask[:, None, None, :]
        spectral = (x * masked_softmax(logits, frames, dim=-1)).sum(dim=-1)
        temporal = (x * torch.softmax(logits, dim=-2)).sum(dim=-2)
        return spectral.transpose(1, 2), temporal.transpose(1, 2)


class HSGALBranch(nn.Module):
    """One inference branch of AASIST: HS-GAL, graph pooling, HS-GAL, residual.

    Arguments
    ---------
    in_dim : int
        Node feature size of the temporal and spectral graphs.
    out_dim : int
        Node feature size inside the branch.
    temperature : float
        Temperature of both heterogeneous layers.
    pool_ratio : float
        Fraction of temporal and of spectral nodes kept between the layers.
    dropout : float
        Input-node dropout of the heterogeneous layers.
    pool_dropout : float
        Dropout before the graph-pooling scores.

    Example
    -------
    >>> branch = HSGALBranch(16, 8, temperature=100.0, pool_ratio=0.5)
    >>> t, s, m, mask = branch(torch.rand(2, 10, 16), torch.rand(2, 6, 16), torch.rand(1, 1, 16))
    >>> t.shape, s.shape, m.shape, mask
    (torch.Size([2, 5, 8]), torch.Size([2, 3, 8]), torch.Size([2, 1, 8]), None)
    """

    def __init__(
        self, in_dim, out_dim, temperature, pool_ratio, dropout=0.2, pool_dropout=0.3
    ):
        super().__init__()
        self.first = HtrgGraphAttentionLayer(in_dim, out_dim, temperature, dropout)
        self.pool_spectral = GraphPool(out_dim, pool_ratio, pool_dropout)
        self.pool_temporal = GraphPool(out_dim, pool_ratio, pool_dropout)
        self.second = HtrgGraphAttentionLayer(out_dim, out_dim, temperature, dropout)

    def forward(self, temporal, spectral, master, mask=None):
        """Returns temporal nodes, spectral nodes, master node and temporal mask.

        Arguments
        ---------
        temporal : torch.Tensor
            Temporal nodes (batch, n_t, in_dim).
        spectral : torch.Tensor
            Spectral nodes (batch, n_s, in_dim).
        master : torch.Tensor
            Master node (batch or 1, 1, in_dim).
        mask : torch.Tensor, optional
            Boolean (batch, n_t) mask of valid temporal nodes.

        Returns
        -------
        tuple
            Pooled temporal nodes, pooled spectral nodes, master node (all with
            ``out_dim`` features) and the mask of the pooled temporal nodes.
        """
        temporal, spectral, master = self.first(temporal, spectral, master, mask)
        spectral, _ = self.pool_spectral(spectral)
        temporal, mask = self.pool_temporal(temporal, mask)
        t_aug, s_aug, m_aug = self.second(temporal, spectral, master, mask)
        return temporal + t_aug, spectral + s_aug, master + m_aug, mask


def zero_padded(x, mask):
    """Zeroes the padded frames of a (batch, channels, freq, time) map.

    Example
    -------
    >>> zero_padded(torch.ones(1, 1, 1, 3), torch.tensor([[True, True, False]]))
    tensor([[[[1., 1., 0.]]]])
    """
    if mask is None:
        return x
    return x * mask[:, None, None, :].to(x.dtype)
