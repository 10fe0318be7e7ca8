"""Pretrained anti-spoofing models: the exported modules and their interface.

An exported model folder (see :mod:`speechbrain_nes2net.pretrained.export`) is a SpeechBrain
``hyperparams.yaml`` whose four ``modules`` fill the slots of SpeechBrain's
``EncoderClassifier``, so that stock SpeechBrain loads and runs it:

- ``compute_features``: :class:`MonoWaveforms` (downmixes multi-channel input);
- ``mean_var_norm``: :class:`PassThrough` (``EncoderClassifier`` calls this slot
  with the waveform lengths; the normalisation the SSL model needs happens
  inside it, per waveform, so nothing is left to do here);
- ``embedding_model``: :class:`AntiSpoofEncoder`, the evaluation preprocessing
  of the training recipe (first ``eval_samples`` samples or the full
  utterance, repeat-padded to ``eval_min_samples``; waveforms longer than
  ``eval_window_seconds`` by windows), the SSL front-end, the layer
  aggregation and the back-end up to its pooled utterance embedding. The
  whole chain sits in this slot because the preprocessing changes the
  lengths, and ``EncoderClassifier`` hands this slot the caller's lengths;
- ``classifier``: :class:`AntiSpoofHead`, the back-end's output layer turned
  into log-posteriors in label-encoder order (0 spoof, 1 bonafide).

Everything runs padding-aware, so that a padded batch scores each waveform as
it would be scored alone.

:class:`AntiSpoofModel` is our richer interface on the same folder: the bona
fide score (calibrated LLR when the export carries a calibration), files at any
sample rate and channel count, batched scoring of many files with per-file
error reports, long recordings in overlapping windows, and frame-level scores
where the back-end allows an exact decomposition of its utterance score.

Score convention: higher = more bona fide. The raw score is the back-end's bona
fide logit (``logits[:, -1]``), what the training recipe writes to its score
files.

Authors
 * speechbrain-nes2net contributors
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torchaudio
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.data_utils import batch_pad_right

from speechbrain_nes2net.audio import (
    DEFAULT_SAMPLE_RATE,
    AudioError,
    audio_info,
    fixed_length,
    load_audio,
)
from speechbrain_nes2net.evaluation.calibration import ScoreCalibration
from speechbrain_nes2net.lobes.nes2net import Nes2Net
from speechbrain_nes2net.lobes.ssl import ssl_frame_lengths
from speechbrain_nes2net.scores import LABELS, class_log_probabilities

logger = logging.getLogger(__name__)



# --------------------------------------------------------------------- audio


class AudioNormalizer:
    """Downmixes and resamples audio exactly as :func:`~speechbrain_nes2net.audio.load_audio`.

    ``Pretrained.load_audio`` (used by ``EncoderClassifier.classify_file``)
    reads a file with soundfile and hands ``(audio, sample_rate)`` to the
    ``audio_normalizer`` of the hyperparameters. This one averages the
    channels and resamples with ``torchaudio.functional.resample``, as the
    toolkit's one audio loading path does, so that stock SpeechBrain sees the
    same waveform as training and evaluation did.

    Arguments
    ---------
    sample_rate : int
        The rate the model expects.

    Example
    -------
    >>> normalizer = AudioNormalizer(16000)
    >>> normalizer(torch.ones(8000, 2), 8000).shape
    torch.Size([16000])
    """

    def __init__(self, sample_rate=DEFAULT_SAMPLE_RATE):
        self.sample_rate = int(sample_rate)

    def __call__(self, audio, sample_rate):
        """Returns (samples,) float32 mono audio at ``self.sample_rate``.

        Arguments
        ---------
        audio : torch.Tensor
            (samples,) or (samples, channels).
        sample_rate : int
            Rate of ``audio``.

        Returns
        -------
        torch.Tensor
        """
        audio = audio.to(torch.float32)
        if audio.dim() == 2:
            if audio.device.type == "cpu":
                # NumPy's float32 mean, bit-identical to load_audio's downmix.
                audio = torch.from_numpy(np.ascontiguousarray(audio.numpy().mean(axis=1)))
            else:
                audio = audio.mean(dim=1)
        elif audio.dim() != 1:
            raise ValueError(
                f"expected (samples,) or (samples, channels) audio, got {tuple(audio.shape)}"
            )
        if int(sample_rate) != self.sample_rate:
            audio = torchaudio.functional.resample(audio, int(sample_rate), self.sample_rate)
        return audio.contiguous()


def prepare_waveforms(wavs, wav_lens=None, num_samples=None, min_samples=0):
    """Applies the recipe's evaluation preprocessing to each waveform of a batch.

    Each valid part is cropped to its first ``num_samples`` samples
    (repeat-padded when shorter), or, without ``num_samples``, repeat-padded
    to ``min_samples`` when shorter, exactly as
    :func:`speechbrain_nes2net.training.dataio.audio_pipeline` does for evaluation;
    the results are padded into a batch as SpeechBrain's ``PaddedBatch`` does.

    Arguments
    ---------
    wavs : torch.Tensor
        (batch, samples) waveforms.
    wav_lens : torch.Tensor, optional
        Relative lengths; None means no padding.
    num_samples : int, optional
        Fixed evaluation length ("first N samples" protocols).
    min_samples : int
        Shortest full-utterance input.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        The new (batch, samples) waveforms and relative lengths.

    Example
    -------
    >>> wavs = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 0.0, 0.0]])
    >>> prepare_waveforms(wavs, torch.tensor([1.0, 0.5]), min_samples=3)
    (tensor([[1., 2., 3., 4.],
            [5., 6., 5., 0.]]), tensor([1.0000, 0.7500]))
    """
    if wavs.dim() != 2:
        raise ValueError(f"expected (batch, samples) waveforms, got shape {tuple(wavs.shape)}")
    if wav_lens is None:
        wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
    counts = torch.round(wav_lens.to(torch.float64) * wavs.shape[1]).long().clamp(min=1).tolist()
    if num_samples is None and min(counts) >= min_samples:
        return wavs, wav_lens  # nothing to change: keep the caller's batch
    prepared = []
    for wav, count in zip(wavs, counts):
        wav = wav[:count]
        if num_samples is not None:
            wav = fixed_length(wav, int(num_samples))
        elif count < min_samples:
            wav = fixed_length(wav, int(min_samples))
        prepared.append(wav)
    batch, lengths = batch_pad_right(prepared)
    return batch, lengths.to(wavs.device)


# ------------------------------------------------------------------- modules


class MonoWaveforms(nn.Module):
    """The ``compute_features`` slot: (batch, samples[, channels]) -> mono (batch, samples).

    Example
    -------
    >>> MonoWaveforms()(torch.ones(2, 100, 2)).shape
    torch.Size([2, 100])
    """

    def forward(self, wavs):
        """Averages the channels of (batch, samples, channels) input."""
        if wavs.dim() == 3:
            wavs = wavs.mean(dim=-1)
        if wavs.dim() != 2:
            raise ValueError(
                f"expected (batch, samples) or (batch, samples, channels) waveforms, got "
                f"shape {tuple(wavs.shape)}"
            )
        return wavs.float()


class PassThrough(nn.Module):
    """The ``mean_var_norm`` slot: returns its input (takes ``(x, lengths)``).

    Example
    -------
    >>> PassThrough()(torch.ones(1, 3), torch.ones(1)).shape
    torch.Size([1, 3])
    """

    def forward(self, x, lengths=None):
        """Returns ``x`` unchanged."""
        return x


def split_windows(wav, window):
    """Cuts a waveform into consecutive windows as the recipe evaluates long files.

    Windows of ``window`` samples; a last window shorter than a quarter window
    joins the one before (``AntiSpoofBrain``'s rule for long test files).

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


class AntiSpoofEncoder(nn.Module):
    """Waveforms -> pooled utterance embeddings, as the recipe evaluates them.

    Each waveform is preprocessed as the recipe's evaluation does (first
    ``num_samples`` samples, or the full utterance repeat-padded to
    ``min_samples``); one longer than ``window_seconds`` is cut into windows
    (:func:`split_windows`) whose embeddings are averaged. The output layers
    are linear, so the averaged embedding gives the mean of the window
    logits, as ``AntiSpoofBrain`` scores long test files.

    Arguments
    ---------
    ssl : torch.nn.Module
        SSL front-end: (wavs, wav_lens) -> (layers, batch, frames, dim), e.g.
        :class:`~speechbrain_nes2net.lobes.ssl.SSLFrontend`.
    aggregator : torch.nn.Module
        (states, lengths) -> (batch, frames, dim).
    backend : torch.nn.Module
        A back-end with ``embed(features, lengths)`` (Nes2Net, Nes2Net-X, AASIST).
    num_samples : int, optional
        Score the first ``num_samples`` samples (repeat-padded); the full
        utterance when None.
    min_samples : int
        Repeat-pad shorter full utterances to this length.
    window_seconds : float, optional
        Score longer waveforms by windows of this length (None: never).
    sample_rate : int
        Rate of the waveforms.
    window_batch : int
        Windows run through the model at once.

    Example
    -------
    >>> from speechbrain_nes2net.lobes.aggregation import LastLayer
    >>> fake_ssl = lambda wavs, lens: wavs[None, :, ::320, None].expand(2, -1, -1, 8)
    >>> backend = Nes2Net(input_size=8, outer_ratio=2, inner_ratio=2)
    >>> encoder = AntiSpoofEncoder(fake_ssl, LastLayer(), backend, min_samples=6400).eval()
    >>> encoder(torch.rand(3, 3200), torch.tensor([1.0, 0.5, 0.25])).shape
    torch.Size([3, 8])
    """

    def __init__(
        self,
        ssl,
        aggregator,
        backend,
        num_samples=None,
        min_samples=0,
        window_seconds=None,
        sample_rate=DEFAULT_SAMPLE_RATE,
        window_batch=8,
    ):
        super().__init__()
        self.ssl = ssl
        self.aggregator = aggregator
        self.backend = backend
        self.num_samples = None if num_samples is None else int(num_samples)
        self.min_samples = int(min_samples or 0)
        self.window = None if not window_seconds else round(float(window_seconds) * sample_rate)
        self.window_batch = int(window_batch)

    def features(self, wavs, wav_lens=None, preprocess=True):
        """Aggregated SSL features of a batch (no windowing).

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) 16 kHz mono waveforms.
        wav_lens : torch.Tensor, optional
            Relative lengths.
        preprocess : bool
            Apply the evaluation preprocessing (crop / repeat-pad) first; off
            for inputs already cut to a chosen length (windows).

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            (batch, frames, dim) features and their relative lengths (exact
            frame counts, see :func:`speechbrain_nes2net.lobes.ssl.ssl_frame_lengths`).
        """
        if preprocess:
            wavs, wav_lens = prepare_waveforms(wavs, wav_lens, self.num_samples, self.min_samples)
        elif wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        states = self.ssl(wavs, wav_lens)
        frame_lens = ssl_frame_lengths(self.ssl, wav_lens, wavs.shape[1], states.shape[2])
        return self.aggregator(states, frame_lens), frame_lens

    def _embed(self, wavs, wav_lens):
        features, lengths = self.features(wavs, wav_lens, preprocess=False)
        return self.backend.embed(features, lengths)

    def forward(self, wavs, wav_lens=None, preprocess=True, windows=True):
        """Returns the (batch, embedding) back-end embeddings of a batch.

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) 16 kHz mono waveforms.
        wav_lens : torch.Tensor, optional
            Relative lengths.
        preprocess : bool
            Apply the evaluation preprocessing (crop / repeat-pad) first.
        windows : bool
            Score waveforms longer than ``window_seconds`` by windows; off to
            score every waveform whole (e.g. windows cut by the caller).

        Returns
        -------
        torch.Tensor
        """
        if preprocess:
            wavs, wav_lens = prepare_waveforms(wavs, wav_lens, self.num_samples, self.min_samples)
        elif wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        counts = torch.round(wav_lens.to(torch.float64) * wavs.shape[1]).long().tolist()
        long = [
            i for i, count in enumerate(counts) if windows and self.window and count > self.window
        ]
        if not long:
            return self._embed(wavs, wav_lens)
        embeddings = [None] * len(counts)
        short = [i for i in range(len(counts)) if i not in long]
        if short:
            top = max(counts[i] for i in short)
            lengths = torch.tensor([counts[i] / top for i in short], device=wavs.device)
            for i, embedding in zip(short, self._embed(wavs[short, :top], lengths)):
                embeddings[i] = embedding
        for i in long:
            pieces = split_windows(wavs[i, : counts[i]], self.window)
            parts = []
            for first in range(0, len(pieces), self.window_batch):
                batch, lengths = batch_pad_right(pieces[first : first + self.window_batch])
                parts.append(self._embed(batch, lengths.to(wavs.device)))
            embeddings[i] = torch.cat(parts).mean(dim=0)
        return torch.stack(embeddings)


class AntiSpoofHead(nn.Module):
    """The back-end's output layer as ``EncoderClassifier``'s ``classifier``.

    ``forward`` returns (batch, 2) log-posteriors in label-encoder order
    (index 0 spoof, 1 bonafide; :func:`~speechbrain_nes2net.scores.class_log_probabilities`),
    ``logits`` the raw back-end logits.

    Arguments
    ---------
    backend : torch.nn.Module
        The back-end whose output layer to use: ``fc`` (Nes2Net) or
        ``drop`` + ``out_layer`` (AASIST).

    Example
    -------
    >>> backend = Nes2Net(input_size=8, outer_ratio=2, inner_ratio=2)
    >>> log_probs = AntiSpoofHead(backend)(torch.rand(3, 8))
    >>> log_probs.shape, bool(torch.allclose(log_probs.exp().sum(dim=1), torch.ones(3)))
    (torch.Size([3, 2]), True)
    """

    def __init__(self, backend):
        super().__init__()
        if not (hasattr(backend, "fc") or hasattr(backend, "out_layer")):
            raise ValueError(
                f"{type(backend).__name__} has no output layer 'fc' or 'out_layer'; "
                "AntiSpoofHead supports the Nes2Net and AASIST back-ends"
            )
        self.backend = backend

    def logits(self, embeddings):
        """(batch, n_out) raw logits of pooled embeddings."""
        if hasattr(self.backend, "fc"):
            return self.backend.fc(embeddings)
        return self.backend.out_layer(self.backend.drop(embeddings))

    def forward(self, embeddings):
        """(batch, 2) class log-posteriors (0 spoof, 1 bonafide)."""
        return class_log_probabilities(self.logits(embeddings))


class LabelEncoder(CategoricalEncoder):
    """SpeechBrain's ``CategoricalEncoder`` for the two labels (``spoof`` = 0, ``bonafide`` = 1).

    It expects exactly two categories, so a wrong ``label_encoder.ckpt`` is an
    error rather than a warning.

    Example
    -------
    >>> encoder = LabelEncoder()
    >>> encoder.update_from_iterable(LABELS)
    >>> encoder.decode_torch(torch.tensor([1, 0]))
    ['bonafide', 'spoof']
    """

    def __init__(self):
        super().__init__()
        self.expect_len(len(LABELS))


# ----------------------------------------------------------------- interface


@dataclass
class WindowScores:
    """Scores of one recording in overlapping windows.

    Attributes
    ----------
    starts, ends : list of float
        Window boundaries in seconds.
    scores : list of float
        Bona fide score of each window.
    score : float
        The recording's score: the mean of the window scores.
    """

    starts: list
    ends: list
    scores: list
    score: float


@dataclass
class FrameScores:
    """Frame-level bona fide scores of one recording.

    Attributes
    ----------
    times : list of float
        Start of each frame in seconds.
    frame_shift : float
        Frame hop in seconds (20 ms for WavLM / wav2vec 2.0).
    scores : list of float
        Bona fide score of each frame.
    score : float
        The utterance score; equals the mean of the frame scores.
    """

    times: list
    frame_shift: float
    scores: list
    score: float


@dataclass
class FileScore:
    """The outcome of scoring one file with :meth:`AntiSpoofModel.score_files`.

    Attributes
    ----------
    path : str
        The file.
    score : float or None
        Bona fide score (None when the file failed).
    label : str or None
        The model's decision, 'bonafide' or 'spoof' (the label
        ``EncoderClassifier`` gives).
    error : str or None
        Why the file could not be scored.
    windows : WindowScores or None
        Per-window scores when the file was scored in windows.
    """

    path: str
    score: float = None
    label: str = None
    error: str = None
    windows: WindowScores = field(default=None, repr=False)

    @property
    def ok(self):
        """Whether the file was scored."""
        return self.error is None


class AntiSpoofModel(Pretrained):
    """Bona fide scores from an exported SSL + Nes2Net model folder.

    Load it like any SpeechBrain interface, from the same folder that
    ``EncoderClassifier`` loads::

        model = AntiSpoofModel.from_hparams(source="path/to/export", savedir="...")
        model.score_file("x.flac")          # float, higher = more bona fide

    or with ``foreign_class(source, pymodule_file="custom_interface.py",
    classname="AntiSpoofModel")``.

    Scores are the back-end's bona fide logit, mapped to a calibrated LLR when
    the export carries a ``calibration`` (``calibrated=False`` gives the raw
    score). Files are read through the toolkit's one audio path (any sample
    rate, any channel count). Files are scored as the training recipe
    evaluated them: the first ``eval_samples`` samples, else the full
    utterance repeat-padded to ``eval_min_samples``; a waveform longer than
    ``eval_window_seconds`` is cut into consecutive windows of that length (a
    last one shorter than a quarter window joins the one before) and gets
    the mean of their logits, as ``AntiSpoofBrain`` evaluates long test files.
    :meth:`score_windows` scores any recording in overlapping windows.

    Localisation: Nes2Net pools over time, so there is no frame-level head.
    With mean pooling, though, the utterance logit is the average of the
    output layer applied to each frame, which :meth:`frame_scores` returns
    (an exact decomposition of the utterance score, not a model trained on
    segment labels); otherwise :meth:`score_windows` gives window-level
    resolution.
    """

    MODULES_NEEDED = ["compute_features", "mean_var_norm", "embedding_model", "classifier"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        get = lambda name, default=None: getattr(self.hparams, name, default)
        self.sample_rate = int(get("sample_rate", DEFAULT_SAMPLE_RATE))
        self.eval_samples = get("eval_samples")
        self.window_seconds = float(get("window_seconds", 4.0))
        self.window_hop_seconds = float(get("window_hop_seconds", self.window_seconds / 2))
        self.eval_window = self.encoder.window
        calibration = get("calibration")
        self.calibration = None if not calibration else ScoreCalibration.from_dict(calibration)

    # ------------------------------------------------------------ internals

    @property
    def encoder(self):
        """The :class:`AntiSpoofEncoder` (``embedding_model``)."""
        return self.mods.embedding_model

    def _finish(self, scores, calibrated):
        if calibrated and self.calibration is not None:
            return self.calibration.apply(scores)
        return scores

    def logits_batch(self, wavs, wav_lens=None, preprocess=True, windows=True):
        """Raw back-end logits (batch, n_out) of 16 kHz mono waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) waveforms at the model rate.
        wav_lens : torch.Tensor, optional
            Relative lengths.
        preprocess : bool
            Apply the evaluation preprocessing (crop / repeat-pad).
        windows : bool
            Score waveforms longer than ``eval_window_seconds`` by windows
            (mean of their logits); off to score them whole.

        Returns
        -------
        torch.Tensor
        """
        wavs = self.mods.compute_features(wavs.to(self.device))
        if wav_lens is not None:
            wav_lens = wav_lens.to(self.device)
        with torch.no_grad():
            embeddings = self.encoder(wavs, wav_lens, preprocess=preprocess, windows=windows)
            return self.mods.classifier.logits(embeddings)

    @staticmethod
    def _bonafide(logits):
        return logits[:, -1]

    @staticmethod
    def _log_odds(logits):
        log_probs = class_log_probabilities(logits)
        return log_probs[:, 1] - log_probs[:, 0]

    def read_audio(self, path):
        """Reads a file as the recipe evaluates it (first ``eval_samples`` only when set).

        Arguments
        ---------
        path : str or Path
            Audio file, any rate and channel count soundfile reads.

        Returns
        -------
        torch.Tensor
            (samples,) mono waveform at the model rate.

        Raises
        ------
        AudioError
            Naming the file and the reason.
        """
        max_seconds = None
        if self.eval_samples is not None:
            max_seconds = self.eval_samples / self.sample_rate
        return load_audio(path, sample_rate=self.sample_rate, max_seconds=max_seconds)

    # ------------------------------------------------------------- scoring

    def score_batch(self, wavs, wav_lens=None, sample_rate=None, calibrated=True):
        """Bona fide scores of a batch of waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) or (batch, samples, channels) waveforms.
        wav_lens : torch.Tensor, optional
            Relative lengths (SpeechBrain convention).
        sample_rate : int, optional
            Rate of ``wavs``; resampled to the model rate when different.
        calibrated : bool
            Map to calibrated LLRs when the export carries a calibration.

        Returns
        -------
        torch.Tensor
            (batch,) scores, higher = more bona fide.
        """
        wavs = MonoWaveforms()(wavs)
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            wavs = torchaudio.functional.resample(wavs, int(sample_rate), self.sample_rate)
        scores = self._bonafide(self.logits_batch(wavs, wav_lens)).cpu()
        return self._finish(scores, calibrated)

    def forward(self, wavs, wav_lens=None):
        """Same as :meth:`score_batch` on 16 kHz waveforms."""
        return self.score_batch(wavs, wav_lens)

    def score_file(self, path, calibrated=True):
        """The bona fide score of one audio file.

        Arguments
        ---------
        path : str or Path
            Audio file (any sample rate and channel count).
        calibrated : bool
            Map to a calibrated LLR when the export carries a calibration.

        Returns
        -------
        float

        Raises
        ------
        AudioError
            When the file cannot be read (naming the file and the reason).
        """
        return self._score_one(path, calibrated).score

    def _prepare(self, wav):
        """The recipe's evaluation preprocessing of one (samples,) waveform."""
        encoder = self.encoder
        return prepare_waveforms(wav[None], None, encoder.num_samples, encoder.min_samples)[0][0]

    def _score_wav(self, wav, calibrated, batch_size=8):
        """Logits (n_out,) of one waveform, and its windows when it is scored by windows."""
        wav = self._prepare(wav)
        if self.eval_window is None or wav.shape[0] <= self.eval_window:
            return self.logits_batch(wav[None], preprocess=False)[0].cpu(), None
        pieces = split_windows(wav, self.eval_window)
        logits = []
        for first in range(0, len(pieces), batch_size):
            batch, lengths = batch_pad_right(pieces[first : first + batch_size])
            logits.append(self.logits_batch(batch, lengths, preprocess=False, windows=False).cpu())
        logits = torch.cat(logits)
        ends = torch.tensor([piece.shape[0] for piece in pieces]).cumsum(0).tolist()
        starts = [0] + ends[:-1]
        scores = self._finish(self._bonafide(logits), calibrated)
        windows = WindowScores(
            starts=[start / self.sample_rate for start in starts],
            ends=[end / self.sample_rate for end in ends],
            scores=[float(score) for score in scores],
            score=float(scores.mean()),
        )
        return logits.mean(dim=0), windows

    def _file_score(self, path, logits, windows, calibrated):
        score = float(self._finish(self._bonafide(logits[None]), calibrated)[0])
        label = LABELS[int(self._log_odds(logits[None])[0] > 0)]
        return FileScore(str(path), score, label, windows=windows)

    def _score_one(self, path, calibrated):
        """Scores one file; raises on bad audio."""
        logits, windows = self._score_wav(self.read_audio(path), calibrated)
        return self._file_score(path, logits, windows, calibrated)

    def _window_bounds(self, num_samples, window_seconds, hop_seconds):
        window = max(1, round(window_seconds * self.sample_rate))
        hop = max(1, round(hop_seconds * self.sample_rate))
        if num_samples <= window:
            return [(0, num_samples)]
        starts = list(range(0, num_samples - window + 1, hop))
        if starts[-1] + window < num_samples:
            starts.append(num_samples - window)  # the tail gets a window of its own
        return [(start, start + window) for start in starts]

    def score_windows(
        self, audio, window_seconds=None, hop_seconds=None, calibrated=True, batch_size=8
    ):
        """Scores a recording in overlapping windows.

        Windows of ``window_seconds`` start every ``hop_seconds``; a last
        window ends at the end of the recording so that the tail is covered.
        A recording no longer than one window is one window (preprocessed as
        :meth:`score_file` does). The recording's score is the mean of the
        window scores (for calibrated scores, the mean of the window LLRs).

        Arguments
        ---------
        audio : str, Path or torch.Tensor
            An audio file, or a (samples,) waveform at the model rate.
        window_seconds : float, optional
            Window length (default: the export's ``window_seconds``).
        hop_seconds : float, optional
            Window hop (default: the export's ``window_hop_seconds``).
        calibrated : bool
            Map to calibrated LLRs when the export carries a calibration.
        batch_size : int
            Windows scored at once.

        Returns
        -------
        WindowScores
        """
        window_seconds = self.window_seconds if window_seconds is None else float(window_seconds)
        hop_seconds = self.window_hop_seconds if hop_seconds is None else float(hop_seconds)
        if window_seconds <= 0 or hop_seconds <= 0:
            raise ValueError(
                f"window and hop must be positive, got {window_seconds} s and {hop_seconds} s"
            )
        if isinstance(audio, torch.Tensor):
            wav = MonoWaveforms()(audio.reshape(1, -1) if audio.dim() == 1 else audio)[0]
        else:
            wav = load_audio(audio, sample_rate=self.sample_rate)
        bounds = self._window_bounds(wav.shape[0], window_seconds, hop_seconds)
        if len(bounds) == 1:
            # One window, the whole recording: the evaluation preprocessing applies.
            logits = self.logits_batch(wav.unsqueeze(0)).cpu()
        else:
            logits = torch.cat(
                [
                    self.logits_batch(
                        torch.stack(
                            [wav[start:end] for start, end in bounds[first : first + batch_size]]
                        ),
                        preprocess=False,
                        windows=False,
                    ).cpu()
                    for first in range(0, len(bounds), batch_size)
                ]
            )
        scores = self._finish(self._bonafide(logits), calibrated)
        result = WindowScores(
            starts=[start / self.sample_rate for start, _ in bounds],
            ends=[end / self.sample_rate for _, end in bounds],
            scores=[float(score) for score in scores],
            score=float(scores.mean()),
        )
        return result

    def frame_scores(self, audio, calibrated=True):
        """Frame-level bona fide scores, where the back-end allows them.

        For a Nes2Net / Nes2Net-X back-end with mean pooling, the utterance
        logit is ``fc(mean_t h_t) = mean_t fc(h_t)``: the output layer applied
        to each frame's features gives frame scores whose mean is exactly the
        utterance score. They show which frames drive the decision; the model
        was not trained to localise (PartialSpoof-style segment labels), and
        each frame still sees context through the convolutions and the
        utterance-level squeeze-excitation.

        Arguments
        ---------
        audio : str, Path or torch.Tensor
            An audio file or a (samples,) waveform at the model rate; it is
            preprocessed as :meth:`score_file` does (without windowing).
        calibrated : bool
            Map to calibrated LLRs when the export carries a calibration.

        Returns
        -------
        FrameScores

        Raises
        ------
        NotImplementedError
            For back-ends that pool attentively (ASTP) or are not Nes2Net:
            their score has no frame decomposition; use :meth:`score_windows`.
        """
        backend = self.encoder.backend
        if not isinstance(backend, Nes2Net) or backend.pooling is not None:
            raise NotImplementedError(
                f"{type(backend).__name__} with "
                f"{getattr(backend, 'pooling_type', 'its')} pooling has no frame-level "
                "decomposition of its score; use score_windows for time resolution"
            )
        if isinstance(audio, torch.Tensor):
            wav = MonoWaveforms()(audio.reshape(1, -1) if audio.dim() == 1 else audio)
        else:
            wav = self.read_audio(audio).unsqueeze(0)
        captured = {}
        # The input of the last ReLU/SELU is the output of the back-end's final
        # BatchNorm1d; cloned, in case the activation runs in place.
        hook = backend.norm.register_forward_hook(
            lambda module, inputs, output: captured.__setitem__("norm", output.detach().clone())
        )
        try:
            logits = self.logits_batch(wav)
        finally:
            hook.remove()
        normed = captured["norm"]
        # BatchNorm1d takes (batch, channels, time) or (frames, channels).
        frames = normed[0].transpose(0, 1) if normed.dim() == 3 else normed
        with torch.no_grad():
            frame_logits = backend.fc(backend.activation(frames)).cpu()
        utterance = logits.cpu()[0]
        if not torch.allclose(frame_logits.mean(dim=0), utterance, atol=1e-4, rtol=1e-4):
            raise RuntimeError(
                "the frame scores do not average to the utterance score "
                f"({frame_logits.mean(dim=0).tolist()} vs {utterance.tolist()}); the back-end's "
                "layout has changed, frame_scores needs updating"
            )
        scores = self._finish(self._bonafide(frame_logits), calibrated)
        shift = self._frame_shift()
        return FrameScores(
            times=[index * shift for index in range(len(scores))],
            frame_shift=shift,
            scores=[float(score) for score in scores],
            score=float(self._finish(self._bonafide(logits.cpu()), calibrated)[0]),
        )

    def _frame_shift(self):
        config = self.encoder.ssl.ssl.model.config
        return math.prod(config.conv_stride) / self.sample_rate

    # ------------------------------------------------------- many files

    def score_files(self, paths, batch_size=8, calibrated=True, progress=None):
        """Scores many files in batches of similar duration; bad files are reported.

        Files are sorted by duration (from their headers) and scored
        ``batch_size`` at a time, padded and with lengths, as the training
        recipe evaluates (each file gets the score it gets alone); waveforms
        longer than ``eval_window_seconds`` are scored alone by windows. A
        file that cannot be read (missing, corrupt, empty, non-finite) is
        reported with the reason and the others are still scored; if a whole
        batch fails, its files are retried one by one.

        Arguments
        ---------
        paths : list of str or Path
            Audio files.
        batch_size : int
            Files per batch.
        calibrated : bool
            Map to calibrated LLRs when the export carries a calibration.
        progress : callable, optional
            Called with the number of files just finished (e.g. a tqdm
            ``update``).

        Returns
        -------
        list of FileScore
            In the order of ``paths``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        tick = progress or (lambda n: None)
        results = [None] * len(paths)
        durations = {}
        for index, path in enumerate(paths):
            try:
                durations[index] = audio_info(path).duration
            except AudioError as err:
                results[index] = FileScore(str(path), error=err.reason)
                tick(1)
        ordered = sorted(durations, key=lambda i: durations[i], reverse=True)
        for first in range(0, len(ordered), batch_size):
            chunk = ordered[first : first + batch_size]
            scored = self._score_chunk([paths[i] for i in chunk], calibrated, batch_size)
            for index, result in zip(chunk, scored):
                results[index] = result
            tick(len(chunk))
        return results

    def _guarded(self, path, calibrated):
        try:
            return self._score_one(path, calibrated)
        except AudioError as err:
            return FileScore(str(path), error=err.reason)
        except (RuntimeError, ValueError) as err:
            return FileScore(str(path), error=f"scoring failed ({err})")

    def _score_chunk(self, paths, calibrated, batch_size):
        results, wavs, loaded = [None] * len(paths), [], []
        for position, path in enumerate(paths):
            try:
                wav = self._prepare(self.read_audio(path))
            except AudioError as err:
                results[position] = FileScore(str(path), error=err.reason)
                continue
            if self.eval_window is not None and wav.shape[0] > self.eval_window:
                try:
                    logits, windows = self._score_wav(wav, calibrated, batch_size)
                    results[position] = self._file_score(path, logits, windows, calibrated)
                except (RuntimeError, ValueError) as err:
                    results[position] = FileScore(str(path), error=f"scoring failed ({err})")
                continue
            wavs.append(wav)
            loaded.append(position)
        if not loaded:
            return results
        try:
            batch, lengths = batch_pad_right(wavs)
            logits = self.logits_batch(batch, lengths, preprocess=False).cpu()
        except (RuntimeError, ValueError) as err:
            for position in loaded:
                if len(loaded) == 1:
                    error = f"scoring failed ({err})"
                    results[position] = FileScore(str(paths[position]), error=error)
                else:  # find the culprit: retry one by one
                    results[position] = self._guarded(paths[position], calibrated)
            return results
        for position, file_logits in zip(loaded, logits):
            results[position] = self._file_score(paths[position], file_logits, None, calibrated)
        return results


def is_export_folder(folder):
    """Whether ``folder`` looks like an exported model (has ``hyperparams.yaml``).

    Example
    -------
    >>> is_export_folder("/nonexistent")
    False
    """
    return (Path(folder) / "hyperparams.yaml").is_file()
