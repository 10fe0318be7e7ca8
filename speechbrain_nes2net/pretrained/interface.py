"""Bona fide scores from an exported model folder: :class:`AntiSpoofModel`.

The folder (see :mod:`speechbrain_nes2net.pretrained.export`) loads in stock
SpeechBrain as an ``EncoderClassifier`` (its modules,
:mod:`speechbrain_nes2net.pretrained.modules`, fill that interface's slots).
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

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import torch
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.run_opts import RunOptions

from speechbrain_nes2net.audio import DEFAULT_SAMPLE_RATE, load_audio
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
from speechbrain_nes2net.pretrained.scoring import (  # noqa: F401  (FileScore: public here too)
    FileScore,
    FileScoring,
    WindowScores,
)

logger = logging.getLogger(__name__)


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

    Scores are the back-end's bona fide logit, mapped to a calibrated LLR when
    the export carries a ``calibration`` (``calibrated=False`` gives the raw
    score). Labels follow the export's decision rule (:attr:`decision`: bona
    fide when the raw score reaches its threshold, fitted on development
    scores), as ``EncoderClassifier`` labels the same folder. Files are read through the toolkit's one audio path (any sample
    rate, any channel count). Files are scored as the training recipe
    evaluated them: the first ``eval_samples`` samples, else the full
    utterance repeat-padded to ``eval_min_samples``; a waveform longer than
    ``eval_window_seconds`` is cut into consecutive windows of that length (a
    last one shorter than a quarter window joins the one before) and gets
    the mean of their logits, as ``AntiSpoofBrain`` evaluates long test files.
    :meth:`score_windows` scores any recording in overlapping windows.

    Localisation: a model trained on segment labels (a
    :class:`~speechbrain_nes2net.lobes.localization.Nes2NetLocalizer`
    back-end) returns where a file is spoofed, as time ranges:
    :meth:`localize` (docs/LOCALIZATION.md). A plain Nes2Net pools over time,
    so it has no frame-level head. With mean pooling, though, the utterance
    logit is the average of the output layer applied to each frame, which
    :meth:`frame_scores` returns (an exact decomposition of the utterance
    score, not a model trained on segment labels); otherwise
    :meth:`score_windows` gives window-level resolution.

    Precision: ``run_opts={"precision": "bf16"}`` (SpeechBrain's run option;
    also ``"auto"``: bf16 where the CPU or GPU computes it natively, see
    :mod:`speechbrain_nes2net.precision`) or :meth:`set_precision` runs the
    SSL front-end in bfloat16; the aggregation, back-end and scores stay in
    float32.
    """

    MODULES_NEEDED = ["compute_features", "mean_var_norm", "embedding_model", "classifier"]

    def __init__(self, modules=None, hparams=None, run_opts=None, freeze_params=True):
        super().__init__(modules, hparams, _resolved_run_opts(run_opts), freeze_params)
        get = lambda name, default=None: getattr(self.hparams, name, default)
        # Defaults of windows etc. come from one place: EvalSettings.
        settings = EvalSettings(
            sample_rate=get("sample_rate", DEFAULT_SAMPLE_RATE),
            eval_samples=get("eval_samples"),
            eval_min_samples=get("eval_min_samples", 0),
            eval_window_seconds=get("eval_window_seconds"),
            window_seconds=get("window_seconds"),
            window_hop_seconds=get("window_hop_seconds"),
        ).resolved()
        self.sample_rate = settings.sample_rate
        self.eval_samples = settings.eval_samples
        self.window_seconds = settings.window_seconds
        self.window_hop_seconds = settings.window_hop_seconds
        self.eval_window = self.encoder.window
        self.num_samples = self.encoder.num_samples
        self.min_samples = self.encoder.min_samples
        #: The decision rule the export ships (bona fide when the raw score reaches its threshold).
        self.decision = self.mods.classifier.decision
        self.calibration = load_calibration(get("calibration") or None)
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
        return cls(modules=modules, hparams=dataclasses.asdict(settings), run_opts=run_opts)

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

    def _forward_logits(self, wavs, wav_lens):
        """(batch, n_out) float32 CPU logits of prepared waveforms (the engine of :class:`FileScoring`)."""
        return self.logits_batch(wavs, wav_lens, preprocess=False, windows=False).cpu().float()

    def _log_odds(self, logits):
        """(batch,) bona fide log-odds of the model's decision rule (>= 0: bona fide); None without one."""
        if self.decision is None:
            return None
        return self.mods.classifier.log_odds_of(logits)

    # ------------------------------------------------------------- scoring

    def forward(self, wavs, wav_lens=None):
        """Same as :meth:`score_batch` on 16 kHz waveforms."""
        return self.score_batch(wavs, wav_lens)

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

    def localize(self, audio, segment_shift=None, threshold=None):
        """Where a recording is spoofed: its decided segments as time ranges.

        For a localisation model (a back-end trained on segment labels,
        :class:`~speechbrain_nes2net.lobes.localization.Nes2NetLocalizer`):
        the frame scores of the whole file (no crop; repeat-padded to
        ``eval_min_samples`` like scoring, the padding's frames cut; longer
        than ``eval_window_seconds``: consecutive windows, frames joined) are
        pooled to segments and decided by the rule the export ships (its
        ``localization`` entry, fitted on development segments by the
        recipe), as
        :func:`~speechbrain_nes2net.evaluation.localization.localize_frames`
        describes.

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

        Returns
        -------
        list of TimeRange
            ``start``, ``end`` (seconds), ``label`` ('bonafide' / 'spoof'),
            ``score`` (the mean raw segment score of the range), covering the
            recording once.

        Raises
        ------
        NotImplementedError
            For a model without a frame-level head (use :meth:`frame_scores`
            or :meth:`score_windows`).
        """
        backend = self.encoder.backend
        if not hasattr(backend, "forward_with_frames"):
            raise NotImplementedError(
                f"this model's back-end ({type(backend).__name__}) has no frame-level head "
                "trained on segment labels; train a localisation recipe "
                "(hparams/nes2net_x_partialspoof_localization.yaml), or use frame_scores / "
                "score_windows"
            )
        rule = dict(getattr(self.hparams, "localization", None) or {})
        shift = float(segment_shift or rule.get("segment_shift") or 0.16)
        if threshold is None:
            threshold = (rule.get("decision") or {}).get("threshold", 0.0)
        if isinstance(audio, torch.Tensor):
            wav = MonoWaveforms()(audio.reshape(1, -1) if audio.dim() == 1 else audio)[0]
        else:
            wav = load_audio(audio, sample_rate=self.sample_rate)
        duration = wav.shape[0] / self.sample_rate
        frames = self._frame_logits(wav)
        return localize_frames(
            frames, self._frame_shift(), duration, shift, float(threshold),
            rule.get("pooling", "min"),
        )  # fmt: skip

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
        config = self.encoder.ssl.ssl.model.config
        return math.prod(config.conv_stride) / self.sample_rate
