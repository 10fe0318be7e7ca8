"""The modules of an exported model: the slots of SpeechBrain's ``EncoderClassifier``.

An export's ``hyperparams.yaml`` fills the four slots so that stock SpeechBrain
runs the model: ``compute_features`` (:class:`MonoWaveforms`),
``mean_var_norm`` (:class:`PassThrough`: the SSL model normalises each
waveform itself), ``embedding_model`` (:class:`AntiSpoofEncoder`: the recipe's
evaluation preprocessing, which changes the lengths, then the SSL front-end,
aggregation and back-end up to its pooled embedding) and ``classifier``
(:class:`AntiSpoofHead`: log-posteriors, 0 spoof, 1 bonafide).
:class:`EvalSettings` says how the model reads its input. Everything is
padding-aware: a padded batch scores each waveform as it would be scored alone.

Authors
 * speechbrain-nes2net contributors
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.utils.data_utils import batch_pad_right

from speechbrain_nes2net.audio import DEFAULT_SAMPLE_RATE, evaluation_crop, to_mono
from speechbrain_nes2net.evaluation.calibration import DecisionRule
from speechbrain_nes2net.lobes.ssl import ssl_frame_lengths
from speechbrain_nes2net.lobes.windows import forward_by_windows
from speechbrain_nes2net.scores import LABELS, bonafide_scores


class AudioNormalizer:
    """Downmixes and resamples audio exactly as :func:`~speechbrain_nes2net.audio.load_audio`.

    ``EncoderClassifier.classify_file`` hands ``(audio, sample_rate)`` to the
    ``audio_normalizer`` slot; this one makes stock SpeechBrain see the
    waveform that training and evaluation saw.

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
            audio = to_mono(audio)  # as load_audio does, bit for bit
        if int(sample_rate) != self.sample_rate:
            audio = torchaudio.functional.resample(audio, int(sample_rate), self.sample_rate)
        return audio.contiguous()


def prepare_waveforms(wavs, wav_lens=None, num_samples=None, min_samples=0):
    """Applies the recipe's evaluation preprocessing to each waveform of a batch.

    Each valid part is cropped to its first ``num_samples`` samples
    (repeat-padded when shorter), or repeat-padded to ``min_samples``, as the
    recipe's evaluation data pipeline does
    (:func:`~speechbrain_nes2net.audio.evaluation_crop`), then padded into a
    batch as SpeechBrain's ``PaddedBatch`` does.

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
    if wav_lens is None:
        wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
    counts = torch.round(wav_lens.to(torch.float64) * wavs.shape[1]).long().clamp(min=1).tolist()
    if num_samples is None and min(counts) >= min_samples:
        return wavs, wav_lens  # nothing to change: keep the caller's batch
    prepared = [evaluation_crop(wav[:count], num_samples, min_samples) for wav, count in zip(wavs, counts)]
    batch, lengths = batch_pad_right(prepared)
    return batch, lengths.to(wavs.device)


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
            wavs = to_mono(wavs)
        if wavs.dim() != 2:
            raise ValueError(f"expected (batch, samples[, channels]), got {tuple(wavs.shape)}")
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


class AntiSpoofEncoder(nn.Module):
    """Waveforms -> pooled utterance embeddings, as the recipe evaluates them.

    Each waveform is preprocessed as the recipe's evaluation does
    (:func:`prepare_waveforms`); one longer than ``window_seconds`` is cut
    into windows whose embeddings are averaged (the output layers are linear:
    the mean of the window logits, as the recipe scores long test files).

    Arguments
    ---------
    ssl : torch.nn.Module
        SSL front-end: (wavs, wav_lens) -> (layers, batch, frames, dim), e.g.
        :class:`~speechbrain_nes2net.lobes.ssl.SSLFrontend`.
    aggregator : torch.nn.Module
        (states, lengths) -> (batch, frames, dim).
    backend : torch.nn.Module
        A back-end with ``embed(features, lengths)`` (Nes2Net, Nes2Net-X, AASIST).
    num_samples, min_samples : int
        The evaluation crop (:func:`prepare_waveforms`).
    window_seconds : float, optional
        Score longer waveforms by windows of this length (None: never).
    sample_rate : int
        Rate of the waveforms.

    Example
    -------
    >>> from speechbrain_nes2net.lobes.aggregation import LastLayer
    >>> from speechbrain_nes2net.lobes.nes2net import Nes2Net
    >>> fake_ssl = lambda wavs, lens: wavs[None, :, ::320, None].expand(2, -1, -1, 8)
    >>> backend = Nes2Net(input_size=8, outer_ratio=2, inner_ratio=2)
    >>> encoder = AntiSpoofEncoder(fake_ssl, LastLayer(), backend, min_samples=6400).eval()
    >>> encoder(torch.rand(3, 3200), torch.tensor([1.0, 0.5, 0.25])).shape
    torch.Size([3, 8])
    """

    def __init__(self, ssl, aggregator, backend, num_samples=None, min_samples=0,
                 window_seconds=None, sample_rate=DEFAULT_SAMPLE_RATE):  # fmt: skip
        super().__init__()
        self.ssl = ssl
        self.aggregator = aggregator
        self.backend = backend
        self.num_samples = None if num_samples is None else int(num_samples)
        self.min_samples = int(min_samples or 0)
        self.window = None if not window_seconds else round(float(window_seconds) * sample_rate)

    def features(self, wavs, wav_lens=None, preprocess=True):
        """Aggregated SSL features of a batch (no windowing).

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) 16 kHz mono waveforms.
        wav_lens : torch.Tensor, optional
            Relative lengths.
        preprocess : bool
            Apply the evaluation preprocessing (crop / repeat-pad) first.

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            (batch, frames, dim) features and their relative lengths (exact
            frame counts, :func:`~speechbrain_nes2net.lobes.ssl.ssl_frame_lengths`).
        """
        wavs, wav_lens = self._prepare(wavs, wav_lens, preprocess)
        states = self.ssl(wavs, wav_lens)
        frame_lens = ssl_frame_lengths(self.ssl, wav_lens, wavs.shape[1], states.shape[2])
        return self.aggregator(states, frame_lens), frame_lens

    def _prepare(self, wavs, wav_lens, preprocess):
        """The evaluation preprocessing (when asked), and lengths for unpadded input."""
        if preprocess:
            return prepare_waveforms(wavs, wav_lens, self.num_samples, self.min_samples)
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        return wavs, wav_lens

    def _embed(self, wavs, wav_lens):
        """Pooled back-end embeddings of prepared waveforms."""
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
        wavs, wav_lens = self._prepare(wavs, wav_lens, preprocess)
        return forward_by_windows(self._embed, wavs, wav_lens, self.window if windows else None)


class AntiSpoofHead(nn.Module):
    """The back-end's output layer as ``EncoderClassifier``'s ``classifier``.

    ``forward`` returns (batch, 2) log-posteriors in label-encoder order
    (0 spoof, 1 bonafide) of the model's decision rule
    (:class:`~speechbrain_nes2net.evaluation.calibration.DecisionRule`), so
    that ``EncoderClassifier``'s label (the larger one) is the rule's
    decision. ``logits`` gives the raw back-end logits.

    Arguments
    ---------
    backend : torch.nn.Module
        The back-end whose output layer to use: ``fc`` (Nes2Net) or
        ``drop`` + ``out_layer`` (AASIST).
    decision : dict or DecisionRule, optional
        The decision rule (every export writes one); without one, ``logits`` only.

    Example
    -------
    >>> from speechbrain_nes2net.lobes.nes2net import Nes2Net
    >>> backend = Nes2Net(input_size=8, outer_ratio=2, inner_ratio=2)
    >>> head = AntiSpoofHead(backend, {"threshold": -1.2, "source": "dev_eer"})
    >>> log_probs = head(torch.rand(3, 8))
    >>> log_probs.shape, bool(torch.allclose(log_probs.exp().sum(dim=1), torch.ones(3)))
    (torch.Size([3, 2]), True)
    >>> odds = head.log_odds_of(torch.tensor([[-1.5], [-1.0]]))
    >>> (odds >= 0).tolist()  # bona fide from the raw score -1.2 up
    [False, True]
    """

    def __init__(self, backend, decision=None):
        super().__init__()
        if not (hasattr(backend, "fc") or hasattr(backend, "out_layer")):
            raise ValueError(
                f"{type(backend).__name__} has no output layer 'fc' or 'out_layer'; "
                "AntiSpoofHead supports the Nes2Net and AASIST back-ends"
            )
        self.backend = backend
        if isinstance(decision, dict):
            decision = DecisionRule.from_dict(decision)
        self.decision = decision

    def logits(self, embeddings):
        """(batch, n_out) raw logits of pooled embeddings."""
        if hasattr(self.backend, "fc"):
            return self.backend.fc(embeddings)
        return self.backend.out_layer(self.backend.drop(embeddings))

    def log_odds_of(self, logits):
        """(batch,) posterior log-odds of bona fide: >= 0 is the model's bona fide decision."""
        if self.decision is None:
            raise ValueError(
                "this AntiSpoofHead has no decision rule: it gives logits only (an export "
                "writes the rule into hyperparams.yaml)"
            )
        return self.decision.log_odds(bonafide_scores(logits))

    def forward(self, embeddings):
        """(batch, 2) class log-posteriors (0 spoof, 1 bonafide)."""
        log_odds = self.log_odds_of(self.logits(embeddings))
        return torch.stack([F.logsigmoid(-log_odds), F.logsigmoid(log_odds)], dim=1)


class LabelEncoder(CategoricalEncoder):
    """SpeechBrain's ``CategoricalEncoder`` for the two labels (``spoof`` = 0, ``bonafide`` = 1).

    It expects exactly two categories: a wrong ``label_encoder.ckpt`` is an error.

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


@dataclass
class EvalSettings:
    """How the exported model reads its input (stored in ``hyperparams.yaml``).

    Arguments
    ---------
    sample_rate : int
        Model rate.
    eval_samples : int, optional
        Score the first ``eval_samples`` samples (repeat-padded); the full
        utterance when None.
    eval_min_samples : int
        Repeat-pad shorter full utterances to this many samples.
    eval_window_seconds : float, optional
        Longer waveforms get the mean logit of consecutive windows of this
        length (None: always whole).
    window_seconds : float, optional
        Default window of :meth:`AntiSpoofModel.score_windows` (default:
        the ``eval_samples`` length, else 4 s).
    window_hop_seconds : float, optional
        Its hop (default: half a window).
    """

    sample_rate: int = DEFAULT_SAMPLE_RATE
    eval_samples: int = None
    eval_min_samples: int = 0
    eval_window_seconds: float = 60.0
    window_seconds: float = None
    window_hop_seconds: float = None

    def resolved(self):
        """The settings with the window defaults filled in."""
        window = self.window_seconds
        if window is None:
            window = self.eval_samples / self.sample_rate if self.eval_samples else 4.0
        hop = self.window_hop_seconds if self.window_hop_seconds is not None else window / 2
        return EvalSettings(
            int(self.sample_rate),
            None if self.eval_samples is None else int(self.eval_samples),
            int(self.eval_min_samples or 0),
            float(self.eval_window_seconds) if self.eval_window_seconds else None,
            float(window),
            float(hop),
        )
