"""Aggregation of the hidden states of a speech foundation model.

SpeechBrain's HF lobes (``WavLM``, ``Wav2Vec2``) return the stacked hidden
states as (layers, batch, time, dim) when built with
``output_all_hiddens=True``. Every aggregator here turns that stack into a
single (batch, time, dim) feature sequence for the back-end, and takes the
same relative ``lengths`` as the rest of the model so that utterance-level
statistics ignore padded frames.

Authors
 * speechbrain-nes2net contributors
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from speechbrain_nes2net.lobes.pooling import frame_mask


def _check_stack(hidden_states, num_layers):
    if hidden_states.dim() != 4:
        raise ValueError(
            "expected stacked hidden states of shape (layers, batch, time, dim), "
            f"got {tuple(hidden_states.shape)}; build the SSL lobe with "
            "output_all_hiddens=True"
        )
    if num_layers is not None and hidden_states.shape[0] != num_layers:
        raise ValueError(
            f"the aggregator was built for num_layers={num_layers} but received "
            f"{hidden_states.shape[0]} hidden states; set num_layers to the SSL "
            "model's transformer layers + 1"
        )


def layer_time_means(hidden_states, lengths=None):
    """Mean of each layer over valid frames: (layers, batch, time, dim) -> (layers, batch, dim).

    Example
    -------
    >>> h = torch.ones(3, 2, 5, 4)
    >>> layer_time_means(h, torch.tensor([1.0, 0.4])).shape
    torch.Size([3, 2, 4])
    """
    if lengths is None:
        return hidden_states.mean(dim=2)
    mask = frame_mask(lengths, hidden_states.shape[2], hidden_states.device)
    weights = mask.to(hidden_states.dtype)[None, :, :, None]
    return (hidden_states * weights).sum(dim=2) / weights.sum(dim=2)


class LastLayer(nn.Module):
    """Uses the last hidden state only (the ASVspoof and ASVspoof 5 recipes).

    Arguments
    ---------
    num_layers : int, optional
        Expected number of stacked states, checked when given.

    Example
    -------
    >>> LastLayer()(torch.rand(4, 2, 10, 8)).shape
    torch.Size([2, 10, 8])
    """

    def __init__(self, num_layers=None):
        super().__init__()
        self.num_layers = num_layers

    def forward(self, hidden_states, lengths=None):
        """Returns the last of the stacked states."""
        _check_stack(hidden_states, self.num_layers)
        return hidden_states[-1]


class WeightedSum(nn.Module):
    """Softmax-weighted sum of all layers with learnable weights.

    Arguments
    ---------
    num_layers : int
        Number of stacked states (transformer layers + 1 for WavLM-Large: 25).

    Example
    -------
    >>> agg = WeightedSum(4)
    >>> h = torch.rand(4, 2, 10, 8)
    >>> torch.allclose(agg(h), h.mean(dim=0), atol=1e-6)
    True
    """

    def __init__(self, num_layers):
        super().__init__()
        self.num_layers = num_layers
        self.layer_weights = nn.Parameter(torch.ones(num_layers))

    def forward(self, hidden_states, lengths=None):
        """Returns the weighted sum over the layer axis."""
        _check_stack(hidden_states, self.num_layers)
        weights = F.softmax(self.layer_weights, dim=0)
        return torch.einsum("l,lbtd->btd", weights, hidden_states)


class SEA(nn.Module):
    """Squeeze-excitation aggregation (SEA) of the hidden states.

    Each layer is squeezed to its mean over time and dim, an excitation MLP
    (``num_layers -> num_layers // 3 -> num_layers``, no biases, ReLU then
    sigmoid) weights the layers per utterance, and the weighted layers are
    summed. The weights are not normalised, as in the Nes2Net release.

    Arguments
    ---------
    num_layers : int
        Number of stacked states (25 for WavLM-Large).
    reduction : int
        Bottleneck reduction of the excitation MLP.

    Example
    -------
    >>> agg = SEA(25)
    >>> agg(torch.rand(25, 2, 10, 8), lengths=torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 10, 8])
    """

    def __init__(self, num_layers, reduction=3):
        super().__init__()
        if num_layers // reduction < 1:
            raise ValueError(
                f"SEA needs num_layers >= reduction, got num_layers={num_layers}, "
                f"reduction={reduction}"
            )
        self.num_layers = num_layers
        self.excitation = nn.Sequential(
            nn.Linear(num_layers, num_layers // reduction, bias=False),
            nn.ReLU(),
            nn.Linear(num_layers // reduction, num_layers, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, hidden_states, lengths=None):
        """Returns the excitation-weighted sum over layers."""
        _check_stack(hidden_states, self.num_layers)
        squeezed = layer_time_means(hidden_states, lengths).mean(dim=-1)  # (L, B)
        weights = self.excitation(squeezed.transpose(0, 1))  # (B, L)
        return torch.einsum("bl,lbtd->btd", weights, hidden_states)


class AttM(nn.Module):
    """Attentive merging (AttM) of the hidden states.

    Each layer's time average is projected to one value (``dim -> 1``, SiLU),
    an MLP over layers (``num_layers -> num_layers // 2 -> num_layers``, SiLU
    then sigmoid, bias-free matrices) gives per-layer gates, the gated layers
    are concatenated per frame (dim-major, layer-minor, as in the Nes2Net
    release) and a linear layer projects them back to ``dim``.

    Arguments
    ---------
    num_layers : int
        Number of stacked states.
    dim : int
        Feature size of each state.

    Example
    -------
    >>> agg = AttM(5, 8)
    >>> agg(torch.rand(5, 2, 10, 8)).shape
    torch.Size([2, 10, 8])
    """

    def __init__(self, num_layers, dim):
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"AttM needs num_layers >= 2, got {num_layers}")
        self.num_layers = num_layers
        self.dim = dim
        self.feature_proj = nn.Parameter(torch.randn(dim, 1))
        self.layer_proj_in = nn.Parameter(torch.randn(num_layers, num_layers // 2))
        self.layer_proj_out = nn.Parameter(torch.randn(num_layers // 2, num_layers))
        self.output_proj = nn.Linear(num_layers * dim, dim)

    def forward(self, hidden_states, lengths=None):
        """Returns the projected concatenation of gated layers."""
        _check_stack(hidden_states, self.num_layers)
        if hidden_states.shape[-1] != self.dim:
            raise ValueError(
                f"AttM was built for dim={self.dim}, got states of dim "
                f"{hidden_states.shape[-1]}"
            )
        means = layer_time_means(hidden_states, lengths)  # (L, B, D)
        per_layer = F.silu(means @ self.feature_proj).squeeze(-1).transpose(0, 1)
        gates = torch.sigmoid(F.silu(per_layer @ self.layer_proj_in) @ self.layer_proj_out)
        gated = hidden_states * gates.transpose(0, 1)[:, :, None, None]  # (L, B, T, D)
        layers, batch, time, dim = gated.shape
        concatenated = gated.permute(1, 2, 3, 0).reshape(batch, time, dim * layers)
        return self.output_proj(concatenated)


AGGREGATORS = {
    "last": LastLayer,
    "weighted_sum": WeightedSum,
    "SEA": SEA,
    "AttM": AttM,
}


def build_aggregator(name, num_layers, dim):
    """Builds an aggregator by name with the SSL model's layer count and size.

    Arguments
    ---------
    name : str
        One of 'last', 'weighted_sum', 'SEA', 'AttM'.
    num_layers : int
        Number of stacked hidden states (transformer layers + 1).
    dim : int
        Hidden size of the SSL model.

    Returns
    -------
    torch.nn.Module

    Example
    -------
    >>> build_aggregator("SEA", 25, 1024)
    SEA(...)
    """
    if name not in AGGREGATORS:
        raise ValueError(
            f"unknown aggregation {name!r}; choose one of {sorted(AGGREGATORS)}"
        )
    if name == "AttM":
        return AttM(num_layers, dim)
    return AGGREGATORS[name](num_layers)
