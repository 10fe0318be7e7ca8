"""Long recordings scored by consecutive windows, the one rule of the toolkit.

Attention cost grows with the square of the length, so a 30-minute recording
would exhaust memory in one pass. A waveform longer than ``window`` samples is
cut into consecutive windows of that length (:func:`split_windows`: a last
window shorter than a quarter of a window joins the one before), the windows
run through the model in small batches, and the recording gets the mean of
their outputs. The training recipe's evaluation
(:class:`~speechbrain_nes2net.training.brain.AntiSpoofBrain`) and the exported
models (:mod:`speechbrain_nes2net.pretrained`) both score long files this way.

Authors
 * speechbrain-nes2net contributors
"""

import torch
from speechbrain.utils.data_utils import batch_pad_right


def split_windows(wav, window):
    """Cuts a waveform into consecutive windows of ``window`` samples.

    A last window shorter than a quarter window joins the one before.

    Arguments
    ---------
    wav : torch.Tensor
        (samples,) waveform.
    window : int
        Window length in samples.

    Returns
    -------
    list of torch.Tensor

    Example
    -------
    >>> [len(piece) for piece in split_windows(torch.zeros(220), 100)]
    [100, 120]
    >>> [len(piece) for piece in split_windows(torch.zeros(250), 100)]
    [100, 100, 50]
    """
    pieces = list(wav.split(window))
    if len(pieces) > 1 and pieces[-1].shape[0] < window // 4:
        pieces[-2] = torch.cat(pieces[-2:])
        pieces.pop()
    return pieces


def window_outputs(forward, wav, window, batch_size=8):
    """Runs ``forward`` on the windows of one waveform.

    Arguments
    ---------
    forward : callable
        (wavs, relative lengths) of a padded batch -> (batch, ...) outputs.
    wav : torch.Tensor
        (samples,) waveform.
    window : int
        Window length in samples.
    batch_size : int
        Windows run at once.

    Returns
    -------
    (torch.Tensor, list of int)
        The (windows, ...) outputs and the window lengths in samples.

    Example
    -------
    >>> total = lambda wavs, lengths: wavs.sum(dim=1, keepdim=True)
    >>> outputs, sizes = window_outputs(total, torch.ones(250), 100, batch_size=2)
    >>> outputs.squeeze(1).tolist(), sizes
    ([100.0, 100.0, 50.0], [100, 100, 50])
    """
    pieces = split_windows(wav, window)
    outputs = []
    for first in range(0, len(pieces), batch_size):
        batch, lengths = batch_pad_right(pieces[first : first + batch_size])
        outputs.append(forward(batch, lengths.to(wav.device)))
    return torch.cat(outputs), [piece.shape[0] for piece in pieces]


def forward_by_windows(forward, wavs, lengths, window, batch_size=8, keep_windows=False):
    """Runs ``forward`` on a padded evaluation batch, long waveforms by windows.

    The one evaluation forward path of the toolkit: the recipe's test
    scoring (:meth:`AntiSpoofBrain.forward_eval
    <speechbrain_nes2net.training.brain.AntiSpoofBrain.forward_eval>`), the
    scoring of files by every engine
    (:class:`~speechbrain_nes2net.pretrained.scoring.FileScoring`) and the
    exported encoder (:class:`~speechbrain_nes2net.pretrained.modules.AntiSpoofEncoder`)
    all run it. Waveforms of at most ``window`` samples run together, as one
    padded batch; each longer one gets the mean of its windows' outputs
    (:func:`window_outputs`). With linear output layers, the mean of window
    embeddings gives the mean of the window logits.

    Arguments
    ---------
    forward : callable
        (wavs, relative lengths) of a padded batch -> (batch, ...) outputs.
    wavs : torch.Tensor
        (batch, samples) padded waveforms.
    lengths : torch.Tensor
        Relative lengths (batch,).
    window : int or None
        Window length in samples; None runs every waveform whole.
    batch_size : int
        Windows run at once.
    keep_windows : bool
        Also return the windows' outputs of the long waveforms.

    Returns
    -------
    torch.Tensor
        (batch, ...) outputs in the order of ``wavs``; with ``keep_windows``,
        a pair: those and a dict index -> ``(window outputs, window lengths)``
        of the waveforms run by windows.

    Example
    -------
    >>> total = lambda wavs, lengths: wavs.sum(dim=1, keepdim=True)
    >>> wavs = torch.ones(2, 250)
    >>> forward_by_windows(total, wavs, torch.tensor([1.0, 0.2]), window=100).squeeze(1).tolist()
    [83.33333587646484, 50.0]
    >>> _, windows = forward_by_windows(total, wavs, torch.tensor([1.0, 0.2]), 100, keep_windows=True)
    >>> windows[0][0].squeeze(1).tolist(), windows[0][1]
    ([100.0, 100.0, 50.0], [100, 100, 50])
    """
    counts = torch.round(lengths.to(torch.float64) * wavs.shape[1]).long().tolist()
    long = [i for i, count in enumerate(counts) if window and count > window]
    if not long:
        outputs = forward(wavs, lengths)
        return (outputs, {}) if keep_windows else outputs
    outputs, windows = [None] * len(counts), {}
    short = [i for i in range(len(counts)) if i not in long]
    if short:
        top = max(counts[i] for i in short)
        short_lengths = torch.tensor([counts[i] / top for i in short], device=wavs.device)
        for i, output in zip(short, forward(wavs[short, :top], short_lengths)):
            outputs[i] = output
    for i in long:
        windows[i] = window_outputs(forward, wavs[i, : counts[i]], window, batch_size)
        outputs[i] = windows[i][0].mean(dim=0)
    outputs = torch.stack(outputs)
    return (outputs, windows) if keep_windows else outputs
