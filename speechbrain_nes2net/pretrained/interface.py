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

import logging
import math
from dataclasses import dataclass, field

import torch
import torchaudio
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.data_utils import batch_pad_right

from speechbrain_nes2net.audio import (
    DEFAULT_SAMPLE_RATE,
    AudioError,
    audio_info,
    load_audio,
)
from speechbrain_nes2net.evaluation.calibration import load_calibration
from speechbrain_nes2net.evaluation.localization import fit_frames_to_duration, localize_frames
from speechbrain_nes2net.lobes.nes2net import Nes2Net
from speechbrain_nes2net.lobes.windows import split_windows, window_outputs
from speechbrain_nes2net.pretrained.modules import (
    EvalSettings,
    MonoWaveforms,
    prepare_waveforms,
)
from speechbrain_nes2net.scores import LABELS

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------- audio


# ------------------------------------------------------------------- modules


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
    """

    MODULES_NEEDED = ["compute_features", "mean_var_norm", "embedding_model", "classifier"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
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
        #: The decision rule (None in folders exported before version 0.2:
        #: then the back-end's own posteriors decide, as before).
        self.decision = self.mods.classifier.decision
        self.calibration = load_calibration(get("calibration") or None)

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
        logits, sizes = window_outputs(
            lambda w, l: self.logits_batch(w, l, preprocess=False, windows=False).cpu(),
            wav, self.eval_window, batch_size,
        )  # fmt: skip
        ends = torch.tensor(sizes).cumsum(0).tolist()
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
        label = LABELS[int(self.mods.classifier.log_odds_of(logits[None])[0] >= 0)]
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
