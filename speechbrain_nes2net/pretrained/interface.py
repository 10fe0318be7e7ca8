"""Bona fide scores from an exported model folder: :class:`AntiSpoofModel`.

The folder (:mod:`speechbrain_nes2net.pretrained.export`) loads in stock
SpeechBrain as an ``EncoderClassifier``; :class:`AntiSpoofModel` is the richer
interface on the same folder: bona fide scores (calibrated LLRs when the
export carries a calibration; higher = more bona fide), files at any rate and
channel count, many files with per-file errors, windows, frame scores and
localisation.

Authors
 * speechbrain-nes2net contributors
"""

import dataclasses
import math
import time

import torch
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.run_opts import RunOptions

from speechbrain_nes2net.audio import load_audio
from speechbrain_nes2net.evaluation.calibration import load_calibration
from speechbrain_nes2net.evaluation.localization import (
    fit_frames_to_duration,
    localize_frames,
)
from speechbrain_nes2net.lobes.nes2net import Nes2Net
from speechbrain_nes2net.lobes.ssl import SSLFrontend
from speechbrain_nes2net.lobes.windows import split_windows
from speechbrain_nes2net.precision import resolve_precision
from speechbrain_nes2net.pretrained.modules import (
    AntiSpoofEncoder,
    AntiSpoofHead,
    EvalSettings,
    MonoWaveforms,
    PassThrough,
    prepare_waveforms,
)
from speechbrain_nes2net.pretrained.scoring import FileScoring


@dataclasses.dataclass
class FrameScores:
    """Frame-level bona fide scores of one recording: frame starts (``times``, seconds), the
    ``frame_shift`` (20 ms for WavLM / wav2vec 2.0), each frame's score (``scores``) and the
    utterance ``score`` (their mean)."""

    times: list
    frame_shift: float
    scores: list
    score: float


def _resolved_run_opts(run_opts):
    """``run_opts`` with ``precision: auto`` resolved for its device (SpeechBrain knows no 'auto')."""
    if run_opts is None:
        return None
    if isinstance(run_opts, RunOptions):
        if getattr(run_opts, "precision", None) == "auto":  # a frozen dataclass
            precision = resolve_precision("auto", run_opts.device or "cpu")
            return dataclasses.replace(run_opts, precision=precision)
        return run_opts
    run_opts = dict(run_opts)
    if run_opts.get("precision") == "auto":
        run_opts["precision"] = resolve_precision("auto", run_opts.get("device") or "cpu")
    return run_opts


class AntiSpoofModel(FileScoring, Pretrained):
    """Bona fide scores from an exported SSL + Nes2Net model folder.

    Load it like any SpeechBrain interface, from the same folder that
    ``EncoderClassifier`` loads::

        model = AntiSpoofModel.from_hparams(source="path/to/export", savedir="...")
        model.score_file("x.flac")          # float, higher = more bona fide

    or with ``foreign_class(source, pymodule_file="custom_interface.py",
    classname="AntiSpoofModel")``.

    Scores are the back-end's bona fide logit (``logits[:, -1]``, what the
    recipe's score files hold), mapped to a calibrated LLR when the export
    carries a ``calibration`` (``calibrated=False``: the raw score). Labels
    follow the export's decision rule (:attr:`decision`), as
    ``EncoderClassifier`` labels the same folder; ``decision.fitted_on`` says
    where its threshold comes from (the run's development set, or a user's
    files): audio of another domain needs its own, from ``nes2net-calibrate``.
    Files are scored as the
    recipe evaluated them (:class:`~speechbrain_nes2net.pretrained.scoring.FileScoring`):
    the first ``eval_samples`` samples, else the full utterance repeat-padded
    to ``eval_min_samples``; longer than ``eval_window_seconds``: the mean
    logit of consecutive windows. :meth:`score_windows` scores overlapping
    windows, :meth:`frame_scores` decomposes a mean-pooled Nes2Net's score
    over frames, :meth:`localize` gives the spoofed time ranges of a
    localisation model (docs/LOCALIZATION.md).

    Precision: ``run_opts={"precision": "bf16"}`` (SpeechBrain's run option;
    also ``"auto"``: bf16 where the CPU or GPU computes it natively, see
    :mod:`speechbrain_nes2net.precision`) or :meth:`set_precision` runs the
    SSL front-end in bfloat16; the aggregation, back-end and scores stay in
    float32.
    """

    MODULES_NEEDED = ["compute_features", "mean_var_norm", "embedding_model", "classifier"]

    def __init__(self, modules=None, hparams=None, run_opts=None, freeze_params=True):
        super().__init__(modules, hparams, _resolved_run_opts(run_opts), freeze_params)
        names = [entry.name for entry in dataclasses.fields(EvalSettings)]
        self._use_settings(EvalSettings(**{n: getattr(self.hparams, n) for n in names}).resolved())
        #: The decision rule the export ships (bona fide when the raw score reaches its threshold;
        #: ``fitted_on``: the development set or the user's files it was fitted on).
        self.decision = self.mods.classifier.decision
        self.calibration = load_calibration(self.hparams.calibration)
        self.set_precision(self.precision)

    @classmethod
    def from_modules(cls, ssl, aggregator, backend, settings=None, decision=None, run_opts=None):
        """The model of live modules (e.g. a training run's), as their export would load.

        ``recipes/evaluate.py`` scores a run this way, so that a run and its
        export score files through the same code.

        Arguments
        ---------
        ssl, aggregator, backend : torch.nn.Module
            The SSL front-end, the layer aggregation and the back-end, with
            their weights (frozen and put in eval mode here).
        settings : EvalSettings, optional
            How files are read and cut (default: full utterances at 16 kHz).
        decision : DecisionRule or dict, optional
            The decision rule of the labels (None: scores only, no labels).
        run_opts : dict, optional
            SpeechBrain's run options (``device``, ``precision``).

        Returns
        -------
        AntiSpoofModel

        Example
        -------
        >>> from speechbrain_nes2net.lobes.aggregation import LastLayer
        >>> from speechbrain_nes2net.lobes.nes2net import Nes2Net
        >>> fake_ssl = lambda wavs, lens: wavs[None, :, ::320, None].expand(2, -1, -1, 8)
        >>> class FakeSSL(torch.nn.Module):
        ...     def forward(self, wavs, lens):
        ...         return fake_ssl(wavs, lens)
        >>> backend = Nes2Net(input_size=8, outer_ratio=2, inner_ratio=2)
        >>> model = AntiSpoofModel.from_modules(FakeSSL(), LastLayer(), backend,
        ...                                     EvalSettings(eval_min_samples=6400))
        >>> model.score_batch(torch.rand(2, 3200), calibrated=False).shape
        torch.Size([2])
        """
        settings = (settings or EvalSettings()).resolved()
        encoder = AntiSpoofEncoder(
            ssl, aggregator, backend, settings.eval_samples, settings.eval_min_samples,
            settings.eval_window_seconds, settings.sample_rate,
        )  # fmt: skip
        modules = {
            "compute_features": MonoWaveforms(),
            "mean_var_norm": PassThrough(),
            "embedding_model": encoder,
            "classifier": AntiSpoofHead(backend, decision),
        }
        hparams = dict(dataclasses.asdict(settings), calibration=None)
        return cls(modules=modules, hparams=hparams, run_opts=run_opts)

    def set_precision(self, precision):
        """Scores from now on in ``precision``: 'fp32', 'bf16' or 'auto'.

        bf16 runs the SSL front-end under ``torch.autocast`` in bfloat16
        (:mod:`speechbrain_nes2net.precision`); 'auto' picks bf16 where the
        device computes it natively, else fp32.

        Arguments
        ---------
        precision : str
            'fp32', 'bf16' or 'auto'.

        Returns
        -------
        str
            The precision now used ('fp32' or 'bf16').
        """
        resolved = resolve_precision(precision, self.device)
        ssl = self.encoder.ssl
        if resolved != "fp32" and not isinstance(ssl, SSLFrontend):
            raise ValueError(
                f"precision={precision!r} needs an SSLFrontend front-end; this model's is "
                f"{type(ssl).__name__}: score it in fp32"
            )
        if isinstance(ssl, SSLFrontend):
            ssl.precision = resolved
        self.precision = resolved
        return resolved

    def compile_frontend(self, batch_size=1, backend="inductor", seconds=4.0):
        """Compiles the SSL model with ``torch.compile`` now; returns the seconds it took.

        For long jobs (docs/DEPLOYING.md): compiling WavLM-Large takes a minute
        or two and then saves a few percent per file. Shapes are dynamic, so
        files of any duration run the same graph, one for single files and one
        for batches (a warm-up call of each class that ``batch_size`` uses
        compiles them here). In fp32, a single file under ~1.3 s gets its own
        graph (torch picks the first convolution's kernel by size). Set the
        precision first: another precision compiles again, at its first call.

        Arguments
        ---------
        batch_size : int
            Files per batch of the job to come.
        backend : str or callable
            ``torch.compile``'s backend.
        seconds : float
            Duration of the warm-up waveforms.

        Returns
        -------
        float
        """
        ssl = self.encoder.ssl
        if not isinstance(ssl, SSLFrontend):
            raise TypeError(f"compiling needs an SSLFrontend front-end, not {type(ssl).__name__}")
        ssl.ssl.model.compile(dynamic=True, backend=backend)
        started = time.perf_counter()
        for size in sorted({1, min(batch_size, 2)}):
            self._forward_logits(torch.zeros(size, round(seconds * self.sample_rate)), None)
        return time.perf_counter() - started

    # ------------------------------------------------------------ internals

    @property
    def encoder(self):
        """The :class:`AntiSpoofEncoder` (``embedding_model``)."""
        return self.mods.embedding_model

    def _forward_logits(self, wavs, wav_lens):
        """(batch, n_out) float32 CPU logits of prepared waveforms (the engine of :class:`FileScoring`)."""
        wav_lens = None if wav_lens is None else wav_lens.to(self.device)
        with torch.no_grad():
            embeddings = self.encoder(wavs.to(self.device), wav_lens, preprocess=False, windows=False)
            return self.mods.classifier.logits(embeddings).cpu().float()

    def _log_odds(self, logits):
        """(batch,) bona fide log-odds of the model's decision rule; None without one."""
        return None if self.decision is None else self.mods.classifier.log_odds_of(logits)

    def _waveform(self, audio, crop=False):
        """(samples,) mono waveform of a file (``crop``: as :meth:`read_audio`) or a tensor."""
        if isinstance(audio, torch.Tensor):
            return MonoWaveforms()(audio.reshape(1, -1) if audio.dim() == 1 else audio)[0]
        return self.read_audio(audio) if crop else load_audio(audio, sample_rate=self.sample_rate)

    # ------------------------------------------------------------- scoring

    def forward(self, wavs, wav_lens=None):
        """Same as :meth:`score_batch` on 16 kHz waveforms."""
        return self.score_batch(wavs, wav_lens)

    def _window_bounds(self, num_samples, window_seconds, hop_seconds):
        """(start, end) samples of windows covering ``num_samples``; the tail gets its own."""
        window = max(1, round(window_seconds * self.sample_rate))
        hop = max(1, round(hop_seconds * self.sample_rate))
        if num_samples <= window:
            return [(0, num_samples)]
        starts = list(range(0, num_samples - window + 1, hop))
        if starts[-1] + window < num_samples:
            starts.append(num_samples - window)
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
        wav = self._waveform(audio)
        bounds = self._window_bounds(wav.shape[0], window_seconds, hop_seconds)
        if len(bounds) == 1:
            # One window, the whole recording: the evaluation preprocessing applies.
            logits = self.logits_batch(wav.unsqueeze(0))
        else:
            pieces = [
                torch.stack([wav[start:end] for start, end in bounds[first : first + batch_size]])
                for first in range(0, len(bounds), batch_size)
            ]
            logits = torch.cat([self._forward_logits(piece, None) for piece in pieces])
        starts, ends = zip(*bounds)
        return self._window_scores(starts, ends, logits, calibrated)

    def frame_scores(self, audio, calibrated=True):
        """Frame-level bona fide scores, where the back-end allows them.

        For a Nes2Net / Nes2Net-X back-end with mean pooling, the utterance
        logit is ``fc(mean_t h_t) = mean_t fc(h_t)``: the output layer applied
        to each frame gives frame scores whose mean is exactly the utterance
        score (a decomposition, not a model trained on segment labels).

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
        wav = self._waveform(audio, crop=True).unsqueeze(0)
        with torch.no_grad():
            features, lengths = self.encoder.features(wav.to(self.device))
            frames = backend.frames(features, lengths)[0]  # (time, channels), one file
            frame_logits = backend.fc(frames).cpu()
            logits = backend.fc(frames.mean(dim=0, keepdim=True)).cpu()
        scores = self._finish(self._bonafide(frame_logits), calibrated)
        shift = self._frame_shift()
        return FrameScores(
            times=[index * shift for index in range(len(scores))],
            frame_shift=shift,
            scores=[float(score) for score in scores],
            score=float(self._finish(self._bonafide(logits.cpu()), calibrated)[0]),
        )

    @property
    def localizes(self):
        """Whether the back-end has a frame-level head trained on segment labels (:meth:`localize`)."""
        return hasattr(self.encoder.backend, "forward_with_frames")

    def localize(self, audio, segment_shift=None, threshold=None, return_frames=False):
        """Where a recording is spoofed: its decided segments as time ranges.

        For a localisation model (a
        :class:`~speechbrain_nes2net.lobes.localization.Nes2NetLocalizer`
        back-end): the frame scores of the whole file (repeat-padded to
        ``eval_min_samples``, the padding's frames cut; by consecutive windows
        when longer than ``eval_window_seconds``) are pooled to segments and
        decided by the export's ``localization`` rule
        (:func:`~speechbrain_nes2net.evaluation.localization.localize_frames`).

        Arguments
        ---------
        audio : str, Path or torch.Tensor
            An audio file (any rate and channel count) or a (samples,)
            waveform at the model rate.
        segment_shift : float, optional
            Decision resolution in seconds, a multiple of the 20 ms frames
            (default: the export's, e.g. 0.16).
        threshold : float, optional
            Bona fide when the segment score (raw, the pooled frame logits)
            is at least this (default: the export's).
        return_frames : bool
            Also return the raw frame scores the ranges were decided from.

        Returns
        -------
        list of TimeRange
            ``start``, ``end`` (seconds), ``label`` ('bonafide' / 'spoof'),
            ``score`` (the mean raw segment score of the range), covering the
            recording once; with ``return_frames``, a pair (ranges,
            :class:`FrameScores`).

        Raises
        ------
        NotImplementedError
            For a model without a frame-level head (use :meth:`frame_scores`
            or :meth:`score_windows`).
        """
        if not self.localizes:
            raise NotImplementedError(
                f"this model's back-end ({type(self.encoder.backend).__name__}) has no "
                "frame-level head trained on segment labels; train a localisation recipe "
                "(hparams/nes2net_x_partialspoof_localization.yaml), or use frame_scores / "
                "score_windows"
            )
        rule = dict(getattr(self.hparams, "localization", None) or {})
        shift = float(segment_shift or rule.get("segment_shift") or 0.16)
        if threshold is None:
            threshold = (rule.get("decision") or {}).get("threshold", 0.0)
        wav = self._waveform(audio)
        duration = wav.shape[0] / self.sample_rate
        frames, frame_shift = self._frame_logits(wav), self._frame_shift()
        ranges = localize_frames(
            frames, frame_shift, duration, shift, float(threshold), rule.get("pooling", "min"),
        )  # fmt: skip
        if not return_frames:
            return ranges
        scores = [float(score) for score in frames]
        times = [index * frame_shift for index in range(len(scores))]
        return ranges, FrameScores(times, frame_shift, scores, sum(scores) / len(scores))

    def _frame_logits(self, wav):
        """Frame logits (frames,) of a whole (samples,) waveform, by windows when long."""
        encoder, backend = self.encoder, self.encoder.backend
        pieces = [wav]
        if self.eval_window is not None and wav.shape[0] > self.eval_window:
            pieces = split_windows(wav, self.eval_window)
        frames = []
        with torch.no_grad():
            for piece in pieces:
                count = piece.shape[0]
                padded = prepare_waveforms(piece[None], None, None, encoder.min_samples)[0]
                features, lengths = encoder.features(padded.to(self.device), preprocess=False)
                logits = backend.forward_with_frames(features, lengths)[1][0].cpu()
                kept = max(1, round(count / padded.shape[1] * logits.shape[0]))
                seconds = count / self.sample_rate  # each window's frames cover it exactly
                frames.extend(fit_frames_to_duration(logits[:kept], self._frame_shift(), seconds))
        return frames

    def _frame_shift(self):
        """Seconds between SSL frames."""
        config = self.encoder.ssl.ssl.model.config
        return math.prod(config.conv_stride) / self.sample_rate
