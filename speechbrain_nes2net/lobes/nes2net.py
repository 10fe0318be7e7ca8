"""Nes2Net and Nes2Net-X back-ends for SSL-feature anti-spoofing.

Nes2Net (Liu et al., IEEE T-IFS 2025) consumes high-dimensional speech
foundation model features directly, without a dimensionality-reduction layer.
The D input channels are split into ``outer_ratio`` groups; all but the last
group go through a chain of small Res2Net-style inner blocks that each see the
previous block's output added to their own group (the "outer" Res2Net), and
every inner block is itself a Res2Net on its group (the "inner" level).
Nes2Net-X replaces the inner additive chain with a growing stack of groups that
one shared convolution filters and a learnable weighted sum reads out.

The layout follows SpeechBrain lobes: ``forward(x, lengths=None)`` with ``x``
of shape (batch, time, channels) and relative ``lengths``; padded frames never
reach a temporal convolution, the squeeze-excitation averages or the pooling,
so a padded batch scores each utterance as if it were alone.

Speed (the function, the parameters, their names and shapes are those of the
straightforward channels-first implementation; only float32 summation order
differs, about 1e-7 relative):

- Memory stays time-major. The features arrive as (batch, time, channels) and
  stay so in memory all the way through: every module still receives the
  channels-first *view* (batch, channels, time) its type expects, but the 1x1
  convolutions run as one matrix product over channels
  (:class:`PointwiseConv1d`), the batch norms see a (frames, channels) matrix
  (:func:`batch_norm_frames`), and the temporal convolutions run channels-last
  (:class:`TemporalConv1d`, :class:`StackConv2d`).
- The Nes2Net-X stack is stored entry-major, (entries, batch, time, width):
  the shared (k x 1) convolution and the batch norm fold the entries into the
  batch, and the weighted read-out is one matrix-vector product.
- Each Nes2Net-X stack step (convolution, activation, batch norm, read-out,
  and appending the next group) is one autograd function with a hand-written
  backward pass (:class:`StackStep`): the next stack is written in place of a
  concatenation, padded frames are zeroed by index, and the backward pass
  calls ATen's batch-norm, activation and convolution kernels directly. The
  tail (batch norm over all D channels, activation, mean over time) runs
  group by group without the D-channel concatenation (:class:`GroupNormActPool`).
- Scoring (eval mode under ``torch.no_grad``): activations and batch norms run
  in place, and a ReLU followed by a batch norm with positive scales is folded
  into the preceding matrix product or convolution (the affine map, then a
  clamp at its shift); the folded weights are cached until a parameter or
  running statistic changes (:func:`cached_on`). A padded batch is scored
  packed: the utterances end to end with zero gaps, so the padded frames cost
  nothing (:class:`PackedUtterances`).
- Fixed-length batches (every relative length 1) skip the masking.

The fused paths are taken only where they compute exactly the modules'
function: plain module types, ReLU or SELU, autocast off, and no hooks on the
modules (forward hooks, e.g. a MAC counter's, see the ordinary module calls).

Authors
 * speechbrain-nes2net contributors
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from speechbrain.lobes.models.ECAPA_TDNN import SEBlock

from speechbrain_nes2net.lobes.pooling import (
    AttentiveStatisticsPooling,
    frame_mask,
    masked_mean,
)

ACTIVATIONS = {"relu": nn.ReLU, "selu": nn.SELU}
POOLINGS = ("mean", "ASTP")

# torch.nn.functional.selu's constants, for SELU's backward pass.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def make_activation(name):
    """Returns a fresh activation module for ``name`` ('relu' or 'selu').

    Example
    -------
    >>> make_activation("selu")
    SELU()
    """
    if name not in ACTIVATIONS:
        raise ValueError(
            f"activation={name!r} is not supported; choose one of {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]()


def zero_padded_frames(x, mask):
    """Zeroes the padded frames of a channels-first tensor.

    A temporal convolution pads its input with zeros at the utterance edges;
    zeroing the padded frames of a batch makes every valid output frame see
    exactly what it would see if the utterance were processed alone.

    Arguments
    ---------
    x : torch.Tensor
        Shape (batch, channels, time, ...) with time on axis 2.
    mask : torch.Tensor or None
        Boolean (batch, time) mask of valid frames.

    Returns
    -------
    torch.Tensor
        ``x`` with padded frames set to zero (``x`` itself when no mask).

    Example
    -------
    >>> zero_padded_frames(torch.ones(1, 1, 3), torch.tensor([[True, True, False]]))
    tensor([[[1., 1., 0.]]])
    """
    if mask is None:
        return x
    shape = (mask.shape[0], 1, mask.shape[1]) + (1,) * (x.dim() - 3)
    return x * mask.view(shape).to(x.dtype)


# ----------------------------------------------------------------- memory layout


def time_major(x):
    """The (batch, time, channels) view of a (batch, channels, time) tensor.

    Example
    -------
    >>> time_major(torch.zeros(2, 3, 5)).shape
    torch.Size([2, 5, 3])
    """
    return x.transpose(1, 2)


def is_time_major(x):
    """Whether (batch, channels, time) ``x`` is stored as contiguous (batch, time, channels).

    Example
    -------
    >>> is_time_major(torch.zeros(2, 5, 3).transpose(1, 2)), is_time_major(torch.zeros(2, 3, 5))
    (True, False)
    """
    return x.dim() == 3 and x.transpose(1, 2).is_contiguous()


def as_time_major(x):
    """``x`` itself if it is stored time-major, else a time-major copy of it.

    Example
    -------
    >>> x = torch.randn(2, 3, 5)
    >>> y = as_time_major(x)
    >>> torch.equal(x, y), is_time_major(y)
    (True, True)
    """
    if is_time_major(x):
        return x
    return time_major(x).contiguous().transpose(1, 2)


def split_channels(x, size):
    """Splits (batch, channels, time) ``x`` into channel groups of ``size``.

    The split is taken on the time-major view, so that autograd's backward
    pass, which concatenates the groups' gradients, is time-major too.

    Example
    -------
    >>> [tuple(g.shape) for g in split_channels(torch.zeros(2, 6, 5), 4)]
    [(2, 4, 5), (2, 2, 5)]
    """
    return [group.transpose(1, 2) for group in time_major(x).split(size, dim=2)]


def cat_channels(tensors):
    """Concatenates (batch, channels, time) tensors along channels, time-major.

    ``torch.cat`` of 3-D tensors always returns channels-first memory; doing
    the concatenation on the time-major views keeps every frame's channels
    contiguous, the layout the rest of the back-end computes in.

    Arguments
    ---------
    tensors : list of torch.Tensor
        Tensors of shape (batch, channels_i, time).

    Returns
    -------
    torch.Tensor
        (batch, sum(channels_i), time), stored time-major.

    Example
    -------
    >>> out = cat_channels([torch.zeros(2, 3, 5), torch.ones(2, 4, 5)])
    >>> out.shape, is_time_major(out)
    (torch.Size([2, 7, 5]), True)
    """
    return torch.cat([time_major(t) for t in tensors], dim=2).transpose(1, 2)


def time_mean(x, mask=None):
    """Mean of (batch, channels, time) ``x`` over its valid frames -> (batch, channels).

    Equals :func:`~speechbrain_nes2net.lobes.pooling.masked_mean`; for
    time-major ``x`` the masked mean is one batched matrix-vector product
    with the normalised frame weights, which neither materialises a masked
    copy nor, in the backward pass, a channels-first gradient.

    Example
    -------
    >>> x = torch.tensor([[[1.0, 3.0, 100.0]]])
    >>> time_mean(as_time_major(x), torch.tensor([[True, True, False]]))
    tensor([[2.]])
    """
    if mask is None:
        # sum / T rather than mean: mean's backward materialises a full-size
        # gradient, sum's is an expanded view.
        return x.sum(dim=-1) / x.shape[-1]
    if not is_time_major(x):
        return masked_mean(x, mask)
    weights = mask.to(x.dtype)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return torch.matmul(weights.unsqueeze(1), time_major(x)).squeeze(1)


def activate(activation, x):
    """``activation(x)``, in place when no autograd graph is being built.

    For scoring (under ``torch.no_grad``) this saves an allocation and a
    pass; ``x`` must be a fresh result that nothing else reads.

    Example
    -------
    >>> with torch.no_grad():
    ...     activate(nn.ReLU(), torch.tensor([-1.0, 2.0]))
    tensor([0., 2.])
    """
    if torch.is_grad_enabled():
        return activation(x)
    if isinstance(activation, nn.ReLU):
        return torch.relu_(x)
    if isinstance(activation, nn.SELU):
        return F.selu(x, inplace=True)
    return activation(x)


def batch_norm_frames_(norm, x):
    """:func:`batch_norm_frames` on a fresh result: in place when scoring.

    In eval mode under ``torch.no_grad`` a batch norm is a per-channel affine
    map, applied here in place (one pass, no allocation) with the module's
    running statistics; otherwise, and when hooks watch the module, the
    module is called. ``x`` must be a fresh result that nothing else reads.

    Example
    -------
    >>> norm = nn.BatchNorm1d(3).eval()
    >>> x = torch.randn(2, 5, 3).transpose(1, 2)
    >>> expected = norm(x.contiguous())
    >>> with torch.no_grad():
    ...     torch.allclose(batch_norm_frames_(norm, x), expected, atol=1e-6)
    True
    """
    if (
        torch.is_grad_enabled()
        or norm.training
        or norm.running_mean is None
        or type(norm) is not nn.BatchNorm1d
        or not norm.affine
        or not is_time_major(x)
        or not _plain_modules(norm)
    ):
        return batch_norm_frames(norm, x)
    scale, shift = cached_on(
        norm, "affine", [norm.weight, norm.bias, norm.running_mean, norm.running_var],
        lambda: _eval_affine(norm),
    )  # fmt: skip
    frames = time_major(x).view(-1, x.shape[1])
    torch.addcmul(shift, frames, scale, out=frames)
    return x


def _eval_affine(norm):
    """(scale, shift): the per-channel affine map of an eval-mode batch norm."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = norm.weight * scale
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = norm.bias + shift
    return scale, shift


def batch_norm_frames(norm, x):
    """Applies a 1-D batch norm to (batch, channels, time) ``x`` as frames x channels.

    Batch norm over (batch, channels, time) normalises each channel over all
    batch x time values, exactly as it does the (batch * time, channels)
    matrix of the frames; on time-major memory that matrix is a free view and
    PyTorch's kernel for it is several times faster than the strided 3-D
    path. The module itself is called, so training statistics and running
    averages are its own.

    Arguments
    ---------
    norm : torch.nn.Module
        A ``BatchNorm1d`` (or ``SyncBatchNorm``) over the channels.
    x : torch.Tensor
        (batch, channels, time).

    Returns
    -------
    torch.Tensor
        ``norm(x)``, time-major when ``x`` is.

    Example
    -------
    >>> norm = nn.BatchNorm1d(3)
    >>> x = torch.randn(2, 5, 3).transpose(1, 2)
    >>> torch.allclose(batch_norm_frames(norm, x), norm(x.contiguous()), atol=1e-6)
    True
    """
    if not is_time_major(x) or not isinstance(norm, (nn.BatchNorm1d, nn.SyncBatchNorm)):
        return norm(x)
    batch, channels, time = x.shape
    out = norm(time_major(x).reshape(batch * time, channels))
    return out.view(batch, time, channels).transpose(1, 2)


class PointwiseConv1d(nn.Conv1d):
    """A 1x1 ``Conv1d`` computed as a matrix product over channels.

    Same parameters (``weight`` of shape (out, in, 1), ``bias``) and same
    function as ``nn.Conv1d(in_channels, out_channels, 1)``: it takes and
    returns (batch, channels, time) tensors. The product runs on the
    time-major view, which is free for time-major inputs and gives a
    time-major output, and is two to three times faster on CPU than the
    convolution kernel for these shapes.

    Arguments
    ---------
    in_channels : int
        Input channels.
    out_channels : int
        Output channels.

    Example
    -------
    >>> conv = PointwiseConv1d(8, 4)
    >>> x = torch.randn(2, 8, 10)
    >>> torch.allclose(conv(x), nn.functional.conv1d(x, conv.weight, conv.bias), atol=1e-6)
    True
    """

    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels, kernel_size=1)

    def forward(self, x):
        """Maps (batch, in_channels, time) to (batch, out_channels, time)."""
        return F.linear(time_major(x), self.weight.squeeze(-1), self.bias).transpose(1, 2)


class TemporalConv1d(nn.Conv1d):
    """A ``Conv1d`` that convolves time-major inputs without copying them.

    A 3-D input has no channels-last format, so the convolution kernel first
    copies a time-major (batch, channels, time) view to channels-first
    memory; viewed as a (batch, channels, 1, time) image it is channels-last
    and is convolved as it is (a (1 x k) kernel along time is also faster
    than (k x 1) here). Other inputs take the ordinary path. Same parameters
    and function as ``nn.Conv1d``.

    Example
    -------
    >>> conv = TemporalConv1d(4, 4, 3, padding=2, dilation=2)
    >>> x = torch.randn(2, 9, 4).transpose(1, 2)
    >>> torch.allclose(conv(x), nn.Conv1d.forward(conv, x.contiguous()), atol=1e-6)
    True
    """

    def forward(self, x):
        """Convolves (batch, channels, time) ``x``."""
        if (
            not is_time_major(x)
            or isinstance(self.padding, str)
            or self.padding_mode != "zeros"
        ):
            return super().forward(x)
        out = F.conv2d(
            x.unsqueeze(2),
            self.weight.unsqueeze(2),
            self.bias,
            (1, self.stride[0]),
            (0, self.padding[0]),
            (1, self.dilation[0]),
            self.groups,
        )
        return out.squeeze(2)


class StackConv2d(nn.Conv2d):
    """The shared (k x 1) convolution of a Nes2Net-X stack.

    Same parameters and function as ``nn.Conv2d``; it takes the stack as
    (batch, width, time, entries). A kernel one entry wide filters each entry
    on its own, so a stack stored entry-major, (entries, batch, time, width),
    is convolved as one channels-last batch of entries x batch sequences,
    without copying it in or out. Other inputs take the ordinary path.

    Example
    -------
    >>> conv = StackConv2d(4, 4, (3, 1), padding=(1, 0))
    >>> stored = torch.randn(3, 2, 10, 4)  # (entries, batch, time, width)
    >>> stack = stored.permute(1, 3, 2, 0)  # (batch, width, time, entries)
    >>> torch.allclose(conv(stack), nn.Conv2d.forward(conv, stack.contiguous()), atol=1e-6)
    True
    """

    def forward(self, x):
        """Convolves a (batch, width, time, entries) stack along time."""
        if x.dim() != 4 or not self.runs_entry_major() or not x.permute(3, 0, 2, 1).is_contiguous():
            return super().forward(x)
        stored = x.permute(3, 0, 2, 1)
        out = _convolve_entries(stored, self.weight, self.bias, self.padding[0], self.dilation[0])
        return out.permute(1, 3, 2, 0)

    def runs_entry_major(self):
        """Whether the convolution is one entry wide with stride 1 and zero padding."""
        return (
            self.kernel_size[1] == 1
            and self.stride == (1, 1)
            and not isinstance(self.padding, str)
            and self.padding[1] == 0
            and self.dilation[1] == 1
            and self.groups == 1
            and self.padding_mode == "zeros"
        )


def _entries_as_images(stored):
    """(entries, batch, time, width) -> channels-last (entries*batch, width, 1, time) view."""
    entries, batch, time, width = stored.shape
    return stored.view(entries * batch, 1, time, width).permute(0, 3, 1, 2)


def _convolve_entries(stored, weight, bias, padding, dilation):
    """Convolves every entry of an entry-major stack along time with a (k x 1) kernel.

    Returns the (entries, batch, time, width) result; the kernel runs as
    (1 x k) over channels-last (entries * batch, width, 1, time) images.
    """
    entries, batch, time, _ = stored.shape
    out = F.conv2d(
        _entries_as_images(stored), weight.transpose(2, 3), bias, 1, (0, padding), (1, dilation)
    )
    return out.permute(0, 2, 3, 1).reshape(entries, batch, time, -1)


def batch_norm_entries(norm, stored):
    """Applies a ``BatchNorm2d`` to an entry-major (entries, batch, time, width) stack.

    The stack as the module sees it, (batch, width, time, entries), is
    normalised per width channel over all batch x time x entries values: the
    same values as the channels-last (entries * batch, width, 1, time) view,
    which the module takes without a copy. The module itself is called, so
    training statistics and running averages are its own.

    Arguments
    ---------
    norm : torch.nn.Module
        ``BatchNorm2d`` over the width channels.
    stored : torch.Tensor
        (entries, batch, time, width).

    Returns
    -------
    torch.Tensor
        The normalised stack, (entries, batch, time, width).

    Example
    -------
    >>> norm = nn.BatchNorm2d(4)
    >>> stored = torch.randn(3, 2, 10, 4)
    >>> expected = norm(stored.permute(1, 3, 2, 0).contiguous()).permute(3, 0, 2, 1)
    >>> torch.allclose(batch_norm_entries(norm, stored), expected, atol=1e-5)
    True
    """
    stored = stored.contiguous()
    out = norm(_entries_as_images(stored))
    return out.permute(0, 2, 3, 1).reshape(stored.shape)


# ------------------------------------------------------ fused Nes2Net-X stack step


def batch_norm_state(norm):
    """The running statistics, mode and averaging factor a batch norm call uses.

    Mirrors ``torch.nn.modules.batchnorm._BatchNorm.forward``, including the
    ``num_batches_tracked`` increment (and the cumulative average when
    ``momentum`` is None), so that a functional call with these arguments
    updates the module exactly as calling it would.

    Arguments
    ---------
    norm : torch.nn.modules.batchnorm._BatchNorm
        The module (its counter is incremented in training mode).

    Returns
    -------
    tuple
        (running_mean or None, running_var or None, use_batch_statistics, factor).

    Example
    -------
    >>> norm = nn.BatchNorm2d(3)
    >>> _, _, batch_stats, factor = batch_norm_state(norm)
    >>> batch_stats, factor, int(norm.num_batches_tracked)
    (True, 0.1, 1)
    """
    factor = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
    use_batch_statistics = norm.training or (
        norm.running_mean is None and norm.running_var is None
    )
    keep = not norm.training or norm.track_running_stats
    return (
        norm.running_mean if keep else None,
        norm.running_var if keep else None,
        use_batch_statistics,
        factor,
    )


def padded_rows(mask):
    """Indices of the padded frames in a flattened (batch * time) axis, or None.

    Example
    -------
    >>> padded_rows(torch.tensor([[True, True, False], [True, False, False]]))
    tensor([2, 4, 5])
    """
    if mask is None:
        return None
    return (~mask).flatten().nonzero().squeeze(1)


def zero_rows_(stored, rows):
    """Zeroes, in place, the frames ``rows`` of (entries, batch, time, width) ``stored``."""
    if rows is not None:
        entries, width = stored.shape[0], stored.shape[-1]
        stored.view(entries, -1, width).index_fill_(1, rows, 0)
    return stored


def _batch_norm_into(out, x, gamma, beta, running_mean, running_var, batch_statistics, momentum, eps):
    """Batch norm of (rows, channels) ``x`` written into ``out``; returns (save_mean, save_invstd).

    With running statistics (eval mode) it is the per-channel affine map
    ``x * scale + shift``, one fused pass (ATen's kernel is several times
    slower on these shapes); with batch statistics ATen's kernel computes
    them and updates the running averages.
    """
    if batch_statistics or running_mean is None:
        mean, invstd = x.new_empty(x.shape[1]), x.new_empty(x.shape[1])
        torch.ops.aten.native_batch_norm.out(
            x, gamma, beta, running_mean, running_var, True, momentum, eps,
            out=out, save_mean=mean, save_invstd=invstd,
        )  # fmt: skip
        return mean, invstd
    scale = torch.rsqrt(running_var + eps)
    if gamma is not None:
        scale = scale * gamma
    shift = -running_mean * scale
    if beta is not None:
        shift = shift + beta
    torch.addcmul(shift, x, scale, out=out)
    return x.new_empty(0), x.new_empty(0)


def fold_relu_norm(conv, norm):
    """``conv`` -> ReLU -> eval-mode ``norm`` as one affine map and a clamp, for scoring.

    ReLU followed by a per-channel affine map with positive scale is the map
    followed by a clamp at its shift: the map is folded into the convolution's
    weight (its own layout) and bias. Returns (weight, bias, clamp threshold),
    or None when the norm has no running statistics or a scale is not positive.

    Example
    -------
    >>> conv, norm = nn.Conv1d(2, 3, 1), nn.BatchNorm1d(3).eval()
    >>> weight, bias, shift = fold_relu_norm(conv, norm)
    >>> x = torch.randn(4, 2, 5)
    >>> folded = torch.clamp_min(F.conv1d(x, weight, bias), shift[:, None])
    >>> torch.allclose(folded, norm(torch.relu(conv(x))), atol=1e-6)
    True
    """
    if norm.running_mean is None:
        return None
    scale, shift = _eval_affine(norm)
    if not bool((scale > 0).all()):
        return None
    bias = shift if conv.bias is None else torch.addcmul(shift, conv.bias, scale)
    weight = conv.weight * scale.view((-1,) + (1,) * (conv.weight.dim() - 1))
    return weight, bias, shift


def cached_on(owner, slot, tensors, compute):
    """``compute()``, remembered on ``owner`` until one of ``tensors`` changes.

    Scoring folds batch norms into the weights before them; the folded
    weights depend on the parameters and running statistics only, so they are
    computed once and reused by every call until a tensor is replaced,
    moved, or modified in place (its version counter: optimiser steps,
    ``load_state_dict`` and in-place updates all increase it). Tensors without
    a version counter (created under ``torch.inference_mode``) disable the
    cache. The cache is a plain attribute: it is not part of the state dict.

    Example
    -------
    >>> owner, weight = nn.Module(), torch.ones(2)
    >>> cached_on(owner, "double", [weight], lambda: weight * 2)
    tensor([2., 2.])
    >>> with torch.no_grad():
    ...     _ = weight.add_(1)
    >>> cached_on(owner, "double", [weight], lambda: weight * 2)
    tensor([4., 4.])
    """
    try:
        key = tuple(
            None if t is None else (t._version, t.data_ptr(), t.dtype, t.device, t.shape)
            for t in tensors
        )
    except RuntimeError:  # inference tensors have no version counter
        return compute()
    cache = owner.__dict__.setdefault("_scoring_cache", {})
    hit = cache.get(slot)
    if hit is not None and hit[1] == key and all(a is b for a, b in zip(hit[0], tensors)):
        return hit[2]
    value = compute()
    cache[slot] = (tuple(tensors), key, value)
    return value


def score_stack_step(stored, next_group, rows, folded, readout, padding, dilation):
    """:class:`StackStep`'s function when scoring (eval, no autograd).

    ``folded`` is the step's convolution, ReLU and batch norm as one map and a
    clamp (:func:`fold_relu_norm`); the result is the same (next stack,
    read-out) pair, computed without the autograd function's per-call cost,
    the clamp writing straight into the next stack.
    """
    weight, bias, shift = folded
    entries, batch, time, width = stored.shape
    extra = 0 if next_group is None else 1
    out = stored.new_empty((entries + extra, batch, time, width))
    z = _convolve_entries(stored, weight, bias, padding, dilation)
    y = out[:entries].view(-1, width)
    torch.clamp_min(z.view(-1, width), shift, out=y)
    read = torch.matmul(readout, y.view(entries, -1)).view(batch, time, width)
    if next_group is not None:
        out[entries].copy_(next_group)
        zero_rows_(out, rows)
    return out, read


class StackStep(torch.autograd.Function):
    """One Nes2Net-X stack step, fused: conv, activation, batch norm, read-out, append.

    Forward: ``stored`` (entries, batch, time, width), whose padded frames are
    zero, is convolved along time, activated and batch-normalised into the new
    stack ``y``; the read-out is ``weights @ y``. When ``next_group`` is
    given, the result is ``y`` followed by the next group in one buffer, its
    padded frames (``rows``, see :func:`padded_rows`) zeroed, which is the
    next step's convolution input: nothing is concatenated, and masking
    touches the padded frames only.

    Backward: the gradient of the buffer (plus the read-out's outer product)
    goes through ATen's batch-norm, activation and convolution backward
    kernels directly. Not twice differentiable.

    Call it through :meth:`StackedRes2NetInnerBlock._group_chain`; the
    arguments after ``readout`` are the batch-norm state of
    :func:`batch_norm_state`, ``eps``, the convolution's padding and dilation
    along time, whether the activation is SELU (else ReLU), and whether a
    backward pass may follow (it needs ``y`` before masking).
    """

    @staticmethod
    def forward(
        ctx, stored, next_group, rows, weight, bias, gamma, beta, readout,
        running_mean, running_var, batch_statistics, momentum, eps, padding, dilation, selu,
        for_backward,
    ):  # fmt: skip
        # The last step's buffer is unused: let its gradient stay None rather
        # than a materialised block of zeros.
        ctx.set_materialize_grads(False)
        entries, batch, time, width = stored.shape
        extra = 0 if next_group is None else 1
        out = stored.new_empty((entries + extra, batch, time, width))
        masked = rows is not None and next_group is not None
        # y is written straight into the next step's input, which is then
        # masked in place, unless the backward pass will need y unmasked.
        separate = masked and for_backward
        y = stored.new_empty((entries * batch * time, width)) if separate else out[:entries].view(-1, width)
        z = _convolve_entries(stored, weight, bias, padding, dilation).view(-1, width)
        z = F.selu(z, inplace=True) if selu else torch.relu_(z)
        mean, invstd = _batch_norm_into(
            y, z, gamma, beta, running_mean, running_var, batch_statistics, momentum, eps
        )
        read = torch.matmul(readout, y.view(entries, -1)).view(batch, time, width)
        if separate:
            out[:entries].copy_(y.view(entries, batch, time, width))
        if next_group is not None:
            out[entries].copy_(next_group)
            zero_rows_(out, rows)
        ctx.save_for_backward(
            stored, z, y if separate else out, weight, gamma, readout,
            running_mean, running_var, mean, invstd, rows,
        )  # fmt: skip
        ctx.config = (batch_statistics, eps, padding, dilation, selu, extra)
        return out, read

    @staticmethod
    def backward(ctx, grad_out, grad_read):
        (stored, z, y, weight, gamma, readout, running_mean, running_var, mean, invstd,
         rows) = ctx.saved_tensors  # fmt: skip
        batch_statistics, eps, padding, dilation, selu, extra = ctx.config
        entries, batch, time, width = stored.shape
        y = y.reshape(-1)[: z.numel()].view(entries, -1)
        if grad_read is None:
            grad_read = torch.zeros((batch, time, width), dtype=z.dtype, device=z.device)
        grad_read = grad_read.reshape(-1)
        grad_next = None
        if grad_out is None:
            grad_y = torch.outer(readout, grad_read)
        else:
            if rows is not None and extra:
                grad_out = zero_rows_(grad_out.clone(), rows)
            if extra:
                grad_next = grad_out[entries]
            grad_y = torch.addr(grad_out[:entries].reshape(entries, -1), readout, grad_read)
        grad_readout = torch.mv(y, grad_read)
        grad_z, grad_gamma, grad_beta = torch.ops.aten.native_batch_norm_backward(
            grad_y.view(-1, width), z, gamma, running_mean, running_var, mean, invstd,
            batch_statistics, eps, [True, ctx.needs_input_grad[5], ctx.needs_input_grad[6]],
        )  # fmt: skip
        if selu:
            grad_z = torch.ops.aten.elu_backward(grad_z, SELU_ALPHA, SELU_SCALE, 1.0, True, z)
        else:
            grad_z = torch.ops.aten.threshold_backward(grad_z, z, 0)
        grad_stored, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            _entries_as_images(grad_z.view(entries, batch, time, width)),
            _entries_as_images(stored),
            weight.transpose(2, 3).contiguous(),
            [width], [1, 1], [0, padding], [1, dilation], False, [0, 0], 1,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4]],
        )  # fmt: skip
        if grad_stored is not None:
            grad_stored = grad_stored.permute(0, 2, 3, 1).reshape(entries, batch, time, width)
        if grad_weight is not None:
            grad_weight = grad_weight.transpose(2, 3)
        return (
            grad_stored, grad_next, None, grad_weight, grad_bias, grad_gamma, grad_beta,
            grad_readout, None, None, None, None, None, None, None, None, None,
        )  # fmt: skip


class GroupNormActPool(torch.autograd.Function):
    """The back-end's tail, fused: batch norm over D channels, activation, mean over time.

    The D channels of the final batch norm are the concatenated group outputs,
    and batch norm treats each channel on its own, so it is applied group by
    group (with the matching slices of the weights and running statistics)
    and never concatenated: the activation runs in place and only the pooled
    (batch, D) result is new. The backward pass calls ATen's batch-norm and
    activation backward kernels per group. Not twice differentiable.

    ``weights`` is None (plain mean over time) or (batch, time, K) frame
    weights, each column summing to one: K means per batch item, returned as
    (batch * K, D) (K > 1 only for a packed batch, see
    :class:`PackedUtterances`, and without a backward pass); the remaining arguments are the
    norm's parameters and state (see :func:`batch_norm_state`), whether the
    activation is SELU (else ReLU), and the (batch, time, C) time-major groups.
    """

    @staticmethod
    def forward(
        ctx, weights, gamma, beta, running_mean, running_var, batch_statistics,
        momentum, eps, selu, *groups,
    ):  # fmt: skip
        batch, time, size = groups[0].shape
        pooled, saved, start = [], [], 0
        for group in groups:
            part = slice(start, start + size)
            start += size
            stats = (None, None) if running_mean is None else (running_mean[part], running_var[part])
            y, mean, invstd = torch.ops.aten.native_batch_norm(
                group.reshape(batch * time, size), gamma[part], beta[part], *stats,
                batch_statistics, momentum, eps,
            )  # fmt: skip
            y = F.selu(y, inplace=True) if selu else torch.relu_(y)
            y = y.view(batch, time, size)
            if weights is None:
                pooled.append(y.sum(dim=1, keepdim=True) / time)
            else:
                pooled.append(torch.matmul(weights.transpose(1, 2), y))
            saved += [y, mean, invstd]
        ctx.save_for_backward(weights, gamma, running_mean, running_var, *groups, *saved)
        ctx.config = (batch_statistics, eps, selu, len(groups))
        return torch.cat(pooled, dim=2).flatten(0, 1)

    @staticmethod
    def backward(ctx, grad_pooled):
        batch_statistics, eps, selu, count = ctx.config
        weights, gamma, running_mean, running_var, *tensors = ctx.saved_tensors
        groups, saved = tensors[:count], tensors[count:]
        batch, time, size = groups[0].shape
        grads_in = []
        grad_gamma, grad_beta = [], []
        for index, group in enumerate(groups):
            part = slice(index * size, (index + 1) * size)
            y, mean, invstd = saved[3 * index: 3 * index + 3]
            grad = grad_pooled[:, None, part]
            # Scaled before it is expanded over time, so it is never materialised.
            grad = (grad / time).expand(batch, time, size) if weights is None else grad * weights
            if selu:
                grad = torch.ops.aten.elu_backward(grad, SELU_ALPHA, SELU_SCALE, 1.0, True, y)
            else:
                grad = torch.ops.aten.threshold_backward(grad, y, 0)
            stats = (None, None) if running_mean is None else (running_mean[part], running_var[part])
            grad_x, grad_g, grad_b = torch.ops.aten.native_batch_norm_backward(
                grad.reshape(batch * time, size), group.reshape(batch * time, size),
                gamma[part], *stats, mean, invstd, batch_statistics, eps,
                [ctx.needs_input_grad[9 + index], ctx.needs_input_grad[1], ctx.needs_input_grad[2]],
            )  # fmt: skip
            grads_in.append(None if grad_x is None else grad_x.view(batch, time, size))
            grad_gamma.append(grad_g)
            grad_beta.append(grad_b)
        grad_gamma = torch.cat(grad_gamma) if ctx.needs_input_grad[1] else None
        grad_beta = torch.cat(grad_beta) if ctx.needs_input_grad[2] else None
        return (None, grad_gamma, grad_beta, None, None, None, None, None, None, *grads_in)


def _plain_modules(*modules):
    """Whether no forward hooks watch ``modules`` (nor all modules) and autocast is off.

    The fused autograd functions compute several modules' functions without
    calling them; where hooks expect the calls (a MAC counter, say), or where
    autocast would pick per-op precisions, the ordinary module path runs.
    """
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return False
    if any(module._forward_hooks or module._forward_pre_hooks for module in modules):
        return False
    device = next(modules[0].parameters()).device.type
    return not torch.is_autocast_enabled(device)


class PackedUtterances:
    """The utterances of a padded batch laid end to end in one sequence, for scoring.

    A padded batch computes its padded frames like real ones; sorted batches
    of In-the-Wild-like durations are ~25% padding. Scoring (eval mode, no
    autograd) instead lays the valid frames of every utterance end to end,
    each followed by ``gap`` zero frames, in a batch of one: the temporal
    convolutions see the zeros they would see at the utterance's edges (the
    gap frames are re-zeroed before every convolution, as padded frames
    are), and every frame-wise layer sees exactly the frames it would see
    alone. Only the averages over time (squeeze-excitation, pooling) need to
    know where an utterance starts and ends: :meth:`means` and :meth:`spread`.

    Arguments
    ---------
    x : torch.Tensor
        Padded features (batch, time, channels).
    mask : torch.Tensor
        Boolean (batch, time) mask of the valid frames (a prefix of each row,
        see :func:`~speechbrain_nes2net.lobes.pooling.frame_mask`).
    gap : int
        Zero frames after each utterance: at least the largest temporal
        padding of the convolutions.

    Example
    -------
    >>> x = torch.arange(1.0, 7.0).view(2, 3, 1)
    >>> packed = PackedUtterances(x, torch.tensor([[True, True, True], [True, False, False]]), gap=1)
    >>> packed.frames.flatten().tolist()
    [1.0, 2.0, 3.0, 0.0, 4.0, 0.0]
    >>> packed.mask.tolist()
    [[True, True, True, False, True, False]]
    >>> packed.means(as_time_major(packed.frames.transpose(1, 2))).flatten().tolist()
    [2.0, 4.0]
    """

    def __init__(self, x, mask, gap):
        batch, _, channels = x.shape
        counts = mask.sum(dim=1)
        spans = counts + gap  # each utterance and the gap after it
        starts = spans.cumsum(0) - spans
        total = int(spans.sum())
        self.frames = x.new_zeros((1, total, channels))
        for utterance, (start, count) in enumerate(zip(starts.tolist(), counts.tolist())):
            self.frames[0, start : start + count] = x[utterance, :count]
        #: The utterance every packed frame belongs to (gap frames: the one before).
        self.index = torch.repeat_interleave(torch.arange(batch, device=x.device), spans)
        position = torch.arange(total, device=x.device) - starts[self.index]
        #: (1, total) valid frames: False on the gaps.
        self.mask = (position < counts[self.index]).unsqueeze(0)
        #: (batch, total) frame weights of each utterance's mean over time.
        member = self.index.unsqueeze(0) == torch.arange(batch, device=x.device).unsqueeze(1)
        self.weights = (member & self.mask).to(x.dtype) / counts.clamp(min=1).unsqueeze(1).to(x.dtype)

    def means(self, x):
        """(batch, channels) mean over time of each utterance of packed (1, channels, total) ``x``."""
        return torch.matmul(self.weights, time_major(x)[0])

    def spread(self, values):
        """(1, channels, total) time-major view of per-utterance ``values`` (batch, channels)."""
        return values.index_select(0, self.index).t().unsqueeze(0)


# ------------------------------------------------------------------------ blocks


class SqueezeExcitation(SEBlock):
    """Squeeze-excitation with a bottleneck of ``se_channels`` channels.

    SpeechBrain's :class:`SEBlock` computes exactly Nes2Net's SE function
    (mean over time, 1x1 conv, ReLU, 1x1 conv, sigmoid, rescale) and is reused
    for its layers. Only the averaging is overridden: it takes the frame mask
    built once per batch instead of rebuilding it from relative lengths (see
    :func:`frame_mask` for why).

    Arguments
    ---------
    channels : int
        Input and output channels.
    se_channels : int
        Bottleneck channels.

    Example
    -------
    >>> se = SqueezeExcitation(16, 4)
    >>> se(torch.rand(2, 16, 30)).shape
    torch.Size([2, 16, 30])
    """

    def __init__(self, channels, se_channels):
        super().__init__(channels, se_channels, channels)

    def forward(self, x, mask=None):
        """Rescales the channels of (batch, channels, time) ``x``."""
        return self.scales(x, mask) * x

    def scales(self, x, mask=None):
        """The (batch, channels, 1) channel weights of ``x``."""
        return self.excite(time_mean(x, mask))

    def excite(self, means):
        """The (batch, channels, 1) channel weights of (batch, channels) averages over time."""
        return self.sigmoid(self.conv2(self.relu(self.conv1(means.unsqueeze(-1)))))


class Res2NetInnerBlock(nn.Module):
    """Nes2Net inner block: a Res2Net bottleneck with squeeze-excitation.

    1x1 conv, activation, BN; split into ``scale`` groups of ``width`` channels;
    an additive chain of dilated temporal convolutions over the first
    ``scale - 1`` groups (each group plus the previous output); the last group
    passes through; 1x1 conv back to ``channels``, activation, BN, SE, and the
    block input is added.

    Arguments
    ---------
    channels : int
        Input (and output) channels.
    scale : int
        Number of groups (the inner ratio, >= 2).
    kernel_size : int
        Odd kernel size of the temporal convolutions.
    dilation : int
        Dilation of the temporal convolutions.
    se_channels : int
        Bottleneck channels of the squeeze-excitation.
    activation : str
        'relu' or 'selu' (the SE block always uses ReLU).

    Example
    -------
    >>> block = Res2NetInnerBlock(32, scale=4, se_channels=32)
    >>> block(torch.rand(2, 32, 20)).shape
    torch.Size([2, 32, 20])
    """

    def __init__(
        self,
        channels,
        scale=8,
        kernel_size=3,
        dilation=1,
        se_channels=None,
        activation="relu",
    ):
        super().__init__()
        self.width = channels // scale
        inner = self.width * scale
        padding = (kernel_size // 2) * dilation
        self.conv_in = PointwiseConv1d(channels, inner)
        self.bn_in = nn.BatchNorm1d(inner)
        self.convs = nn.ModuleList(
            self._temporal_conv(kernel_size, dilation, padding)
            for _ in range(scale - 1)
        )
        self.bns = nn.ModuleList(self._norm() for _ in range(scale - 1))
        self.conv_out = PointwiseConv1d(inner, channels)
        self.bn_out = nn.BatchNorm1d(channels)
        self.se = SqueezeExcitation(channels, se_channels or channels)
        self.activation = make_activation(activation)

    def _temporal_conv(self, kernel_size, dilation, padding):
        return TemporalConv1d(
            self.width,
            self.width,
            kernel_size,
            dilation=dilation,
            padding=padding,
        )

    def _norm(self):
        return nn.BatchNorm1d(self.width)

    def forward(self, x, mask=None, utterances=None):
        """Processes (batch, channels, time) ``x``; ``mask`` marks valid frames.

        ``utterances`` (a :class:`PackedUtterances`) says where the utterances
        of a packed batch start and end, for the squeeze-excitation averages.
        """
        out = self._pointwise_act_norm(self.conv_in, self.bn_in, x)
        groups = split_channels(out, self.width)
        outputs = self._group_chain(groups, mask)
        outputs.append(groups[-1])
        out = self._pointwise_act_norm(self.conv_out, self.bn_out, cat_channels(outputs))
        if utterances is None:
            scales = self.se.scales(out, mask)
        else:
            scales = utterances.spread(self.se.excite(utterances.means(out)).squeeze(-1))
        # x + se(out): one pass instead of a product and a sum.
        return torch.addcmul(x, out, scales)

    def _pointwise_act_norm(self, conv, norm, x):
        """norm(activation(conv(x))) for a 1x1 convolution and a 1-D batch norm.

        When scoring (eval mode, no autograd graph, no hooks) with ReLU and a
        positive batch-norm scale, ReLU then the norm's affine map is the map
        then a clamp at its shift: the map is folded into the matrix product
        and the clamp runs in place, one pass instead of two.
        """
        folded = None
        if (
            not torch.is_grad_enabled()
            and not norm.training
            and type(conv) is PointwiseConv1d
            and type(norm) is nn.BatchNorm1d
            and isinstance(self.activation, nn.ReLU)
            and is_time_major(x)
            and _plain_modules(conv, norm)
        ):
            folded = cached_on(
                norm, "folded_pointwise",
                [conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var],
                lambda: fold_relu_norm(conv, norm),
            )  # fmt: skip
        if folded is None:
            return batch_norm_frames_(norm, activate(self.activation, conv(x)))
        weight, bias, shift = folded
        out = F.linear(time_major(x), weight.squeeze(-1), bias)
        return torch.clamp_min_(out, shift).transpose(1, 2)

    def _group_chain(self, groups, mask):
        outputs = []
        carry = groups[0]
        for i, (conv, norm) in enumerate(zip(self.convs, self.bns)):
            if i > 0:
                carry = carry + groups[i]
            carry = as_time_major(zero_padded_frames(carry, mask))
            carry = batch_norm_frames_(norm, activate(self.activation, conv(carry)))
            outputs.append(carry)
        return outputs


class StackedRes2NetInnerBlock(Res2NetInnerBlock):
    """Nes2Net-X inner block: the additive chain becomes a growing stack.

    The stack starts as the last group. At step ``i`` group ``i`` joins the
    stack (along a new axis), one temporal convolution shared across the stack
    filters all of it, and a learnable weight vector (initialised uniform)
    sums the stack into output ``i``. The filtered stack, not the sum, is
    carried to the next step. This costs ``sum(i + 2)`` extra parameters.

    Arguments
    ---------
    channels : int
        Input (and output) channels.
    scale : int
        Number of groups (the inner ratio, >= 2).
    kernel_size : int
        Odd kernel size of the temporal convolutions.
    dilation : int
        Dilation of the temporal convolutions.
    se_channels : int
        Bottleneck channels of the squeeze-excitation.
    activation : str
        'relu' or 'selu' (the SE block always uses ReLU).

    Example
    -------
    >>> block = StackedRes2NetInnerBlock(32, scale=4, se_channels=32)
    >>> block(torch.rand(2, 32, 20)).shape
    torch.Size([2, 32, 20])
    >>> [tuple(w.shape) for w in block.stack_weights]
    [(2,), (3,), (4,)]
    """

    def __init__(self, channels, scale=8, **kwargs):
        super().__init__(channels, scale=scale, **kwargs)
        self.stack_weights = nn.ParameterList(
            nn.Parameter(torch.full((i + 2,), 1.0 / (i + 2)))
            for i in range(scale - 1)
        )

    def _temporal_conv(self, kernel_size, dilation, padding):
        # A (k x 1) 2-D convolution filters every stack entry with shared weights.
        return StackConv2d(
            self.width,
            self.width,
            (kernel_size, 1),
            dilation=(dilation, 1),
            padding=(padding, 0),
        )

    def _norm(self):
        return nn.BatchNorm2d(self.width)

    def _group_chain(self, groups, mask):
        # The modules see the stack as (batch, width, time, entries); it is
        # stored entry-major, (entries, batch, time, width) (see the module
        # docstring).
        stored = torch.stack((time_major(groups[-1]), time_major(groups[0])))
        if self.fused_steps():
            rows = padded_rows(mask)
            if rows is not None:
                stored = zero_rows_(stored, rows)  # a fresh tensor: in place is fine
            return self._fused_chain(stored, groups, rows)
        frames = None if mask is None else mask[None, :, :, None].to(groups[0].dtype)
        if frames is not None:
            stored = stored * frames
        outputs = []
        for i, (conv, norm) in enumerate(zip(self.convs, self.bns)):
            if i > 0:
                stored = torch.cat((stored, time_major(groups[i]).unsqueeze(0)))
                if frames is not None:
                    stored = stored * frames
            out = conv(stored.permute(1, 3, 2, 0)).permute(3, 0, 2, 1)
            stored = batch_norm_entries(norm, self.activation(out))
            entries, batch, time, width = stored.shape
            read = torch.matmul(self.stack_weights[i], stored.reshape(entries, -1))
            outputs.append(read.view(batch, time, width).transpose(1, 2))
        return outputs

    def _fused_chain(self, stored, groups, rows):
        outputs = []
        selu = isinstance(self.activation, nn.SELU)
        last = len(self.convs) - 1
        scoring = not (torch.is_grad_enabled() or selu or self.training)
        for i, (conv, norm) in enumerate(zip(self.convs, self.bns)):
            next_group = None if i == last else time_major(groups[i + 1])
            folded = None
            if scoring and not norm.training and norm.running_mean is not None:
                folded = cached_on(
                    norm, "folded_stack_conv",
                    [conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var],
                    lambda conv=conv, norm=norm: fold_relu_norm(conv, norm),
                )  # fmt: skip
            if folded is not None:
                stored, read = score_stack_step(
                    stored, next_group, rows, folded, self.stack_weights[i],
                    conv.padding[0], conv.dilation[0],
                )  # fmt: skip
                outputs.append(read.transpose(1, 2))
                continue
            running_mean, running_var, batch_statistics, factor = batch_norm_state(norm)
            stored, read = StackStep.apply(
                stored, next_group, rows, conv.weight, conv.bias, norm.weight, norm.bias,
                self.stack_weights[i], running_mean, running_var, batch_statistics, factor,
                norm.eps, conv.padding[0], conv.dilation[0], selu, torch.is_grad_enabled(),
            )  # fmt: skip
            outputs.append(read.transpose(1, 2))
        return outputs

    def fused_steps(self):
        """Whether the stack steps can run as :class:`StackStep`.

        They can when the convolutions and norms are the plain modules this
        block builds (not, say, SyncBatchNorm), no hooks watch them (hooks
        must see the module calls), the activation is ReLU or SELU and
        autocast is off.
        """
        return (
            all(type(conv) is StackConv2d and conv.runs_entry_major() for conv in self.convs)
            and all(type(norm) is nn.BatchNorm2d and norm.affine for norm in self.bns)
            and isinstance(self.activation, (nn.ReLU, nn.SELU))
            and _plain_modules(*self.convs, *self.bns)
        )


# ------------------------------------------------------------------- back-ends


class Nes2Net(nn.Module):
    """Nes2Net back-end: nested Res2Net over SSL features, then pooling.

    Arguments
    ---------
    input_size : int
        Channels D of the input features (1024 for WavLM-Large / XLS-R 300M).
    outer_ratio : int
        Number of outer groups s1 (>= 2); D must be divisible by it.
    inner_ratio : int
        Number of inner groups s2 (>= 2) of each inner block; D / s1 must be
        at least s2.
    kernel_size : int
        Odd kernel size of the inner temporal convolutions.
    dilation : int
        Dilation of the inner temporal convolutions.
    se_ratio : int
        Squeeze-excitation reduction: the SE bottleneck has
        ``max(D / s1 // se_ratio, se_min_channels)`` channels.
    se_min_channels : int
        Smallest SE bottleneck (the SeLU release uses 2).
    activation : str
        'relu' (Nes2Net, Nes2Net-X) or 'selu' (Nes2Net-X-SeLU).
    pooling : str
        'mean' (masked average over time) or 'ASTP' (attentive statistics).
    attention_channels : int
        Bottleneck of the ASTP attention.
    n_out : int
        Number of logits: 1 (score = logit) or 2 (score = logit of index 1).

    Example
    -------
    >>> model = Nes2Net(input_size=64, outer_ratio=4, inner_ratio=4)
    >>> feats = torch.rand(3, 50, 64)
    >>> model(feats, lengths=torch.tensor([1.0, 0.8, 0.5])).shape
    torch.Size([3, 1])
    >>> sum(p.numel() for p in Nes2Net().parameters())
    510769
    """

    inner_block = Res2NetInnerBlock

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
        _check_config(
            input_size=input_size,
            outer_ratio=outer_ratio,
            inner_ratio=inner_ratio,
            kernel_size=kernel_size,
            dilation=dilation,
            se_ratio=se_ratio,
            se_min_channels=se_min_channels,
            activation=activation,
            pooling=pooling,
            attention_channels=attention_channels,
            n_out=n_out,
        )
        self.input_size = input_size
        self.group_size = input_size // outer_ratio
        se_channels = max(self.group_size // se_ratio, se_min_channels)
        self.blocks = nn.ModuleList(
            self.inner_block(
                self.group_size,
                scale=inner_ratio,
                kernel_size=kernel_size,
                dilation=dilation,
                se_channels=se_channels,
                activation=activation,
            )
            for _ in range(outer_ratio - 1)
        )
        self.block_norms = nn.ModuleList(
            nn.BatchNorm1d(self.group_size) for _ in range(outer_ratio - 1)
        )
        self.norm = nn.BatchNorm1d(input_size)
        self.activation = make_activation(activation)
        self.pooling_type = pooling
        if pooling == "ASTP":
            self.pooling = AttentiveStatisticsPooling(input_size, attention_channels)
            pooled_size = 2 * input_size
        else:
            self.pooling = None
            pooled_size = input_size
        self.fc = nn.Linear(pooled_size, n_out)

    def forward(self, x, lengths=None):
        """Scores SSL features.

        Arguments
        ---------
        x : torch.Tensor
            Features of shape (batch, time, channels).
        lengths : torch.Tensor, optional
            Relative lengths (batch,) of the utterances in the padded batch.

        Returns
        -------
        torch.Tensor
            Logits of shape (batch, n_out).
        """
        return self.fc(self.embed(x, lengths))

    def embed(self, x, lengths=None):
        """Returns the pooled utterance embedding before the output layer."""
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"expected features of shape (batch, time, {self.input_size}), "
                f"got {tuple(x.shape)}"
            )
        batch, time = x.shape[:2]
        mask = None if lengths is None else frame_mask(lengths, time, x.device)
        if mask is not None and bool(mask.all()):
            mask = None  # e.g. fixed-length training crops: nothing to mask
        utterances = None
        if mask is not None and batch > 1 and self._packs():
            utterances = PackedUtterances(x, mask, self._temporal_padding())
            x, mask = utterances.frames, utterances.mask
            batch, time = x.shape[:2]
        # Channels-first views of time-major memory (see the module docstring).
        groups = split_channels(x.contiguous().transpose(1, 2), self.group_size)
        outputs = []
        carry = groups[0]
        for i, (block, norm) in enumerate(zip(self.blocks, self.block_norms)):
            if i > 0:
                carry = carry + groups[i]
            carry = batch_norm_frames_(norm, activate(self.activation, block(carry, mask, utterances)))
            outputs.append(carry)
        outputs.append(groups[-1])
        if self.pooling is None and self._fused_tail():
            weights = None
            if utterances is not None:
                # (1, time, utterances): one mean over time per utterance.
                weights = utterances.weights.t().unsqueeze(0)
            elif mask is not None:
                weights = mask.unsqueeze(-1).to(x.dtype)
                weights = weights / weights.sum(dim=1, keepdim=True)
            running_mean, running_var, batch_statistics, factor = batch_norm_state(self.norm)
            return GroupNormActPool.apply(
                weights, self.norm.weight, self.norm.bias, running_mean, running_var,
                batch_statistics, factor, self.norm.eps, isinstance(self.activation, nn.SELU),
                # The last group is a slice of the input, rows 1024 apart: batch
                # norm on strided rows is ~15x slower than on a contiguous copy.
                *[time_major(t).contiguous() for t in outputs],
            )  # fmt: skip
        features = torch.cat([time_major(t) for t in outputs], dim=2)
        out = self.norm(features.view(batch * time, self.input_size))
        out = self.activation(out.view(batch, time, self.input_size))
        if self.pooling is not None:
            return self.pooling(out.transpose(1, 2), mask)
        # Averaged over the time-major tensor, and as sum / T rather than
        # mean, so that the backward pass stays time-major and expands the
        # gradient instead of materialising it.
        if mask is None:
            return out.sum(dim=1) / time
        weights = mask.unsqueeze(-1).to(out.dtype)
        return (out * weights).sum(dim=1) / weights.sum(dim=1)


    def _packs(self):
        """Whether a padded batch is scored packed (see :class:`PackedUtterances`).

        Only for scoring (eval mode everywhere, no autograd graph), with the
        fused mean-pooling tail, and when no hooks watch any module (they see
        the ordinary padded calls).
        """
        return (
            not torch.is_grad_enabled()
            and self.pooling is None
            and self._fused_tail()
            and not any(module.training for module in self.modules())
            and _plain_modules(*self.modules())
        )

    def _temporal_padding(self):
        """The largest zero padding of the temporal convolutions (frames)."""
        return max(conv.padding[0] for block in self.blocks for conv in block.convs)

    def _fused_tail(self):
        """Whether the final norm, activation and mean run as :class:`GroupNormActPool`."""
        return (
            type(self.norm) is nn.BatchNorm1d
            and self.norm.affine
            and isinstance(self.activation, (nn.ReLU, nn.SELU))
            and _plain_modules(self.norm)
        )


class Nes2NetX(Nes2Net):
    """Nes2Net-X back-end: Nes2Net with stacked inner blocks.

    Takes the same arguments as :class:`Nes2Net`; ``activation='selu'`` with
    ``se_min_channels=2`` gives Nes2Net-X-SeLU.

    Example
    -------
    >>> model = Nes2NetX(input_size=64, outer_ratio=4, inner_ratio=4, n_out=2)
    >>> model(torch.rand(2, 30, 64)).shape
    torch.Size([2, 2])
    >>> sum(p.numel() for p in Nes2NetX().parameters())
    511014
    """

    inner_block = StackedRes2NetInnerBlock


def _check_config(**config):
    """Validates a back-end configuration, naming every wrong value."""
    problems = []
    for name in (
        "input_size",
        "outer_ratio",
        "inner_ratio",
        "kernel_size",
        "dilation",
        "se_ratio",
        "se_min_channels",
        "attention_channels",
        "n_out",
    ):
        value = config[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{name}={value!r} must be a positive integer")
    if problems:
        raise ValueError("invalid Nes2Net configuration: " + "; ".join(problems))
    d, s1, s2 = config["input_size"], config["outer_ratio"], config["inner_ratio"]
    if s1 < 2:
        problems.append(f"outer_ratio={s1} must be at least 2")
    elif d % s1:
        problems.append(f"input_size={d} is not divisible by outer_ratio={s1}")
    elif s2 < 2 or d // s1 < s2:
        problems.append(
            f"inner_ratio={s2} must be between 2 and the group size "
            f"input_size/outer_ratio={d // s1}"
        )
    if config["kernel_size"] % 2 == 0:
        problems.append(
            f"kernel_size={config['kernel_size']} must be odd to keep the frame count"
        )
    if config["activation"] not in ACTIVATIONS:
        problems.append(
            f"activation={config['activation']!r} must be one of {sorted(ACTIVATIONS)}"
        )
    if config["pooling"] not in POOLINGS:
        problems.append(f"pooling={config['pooling']!r} must be one of {list(POOLINGS)}")
    if config["n_out"] > 2:
        problems.append(f"n_out={config['n_out']} must be 1 or 2")
    if problems:
        raise ValueError("invalid Nes2Net configuration: " + "; ".join(problems))
