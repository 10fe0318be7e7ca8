"""Scoring files with any engine: the same reading, preprocessing, batching and windows.

Every engine (:class:`~speechbrain_nes2net.pretrained.interface.AntiSpoofModel` on
torch, :class:`~speechbrain_nes2net.pretrained.onnx_model.OnnxAntiSpoofModel` on
onnxruntime) inherits :class:`FileScoring`, so a file is judged the same way
whatever runs the network: read by :func:`~speechbrain_nes2net.audio.load_audio`
(bad files reported with the reason), coded by the engine's ``condition``
when set (:mod:`speechbrain_nes2net.codecs`: robustness evaluation), cropped or repeat-padded as the recipe
evaluates (:func:`~speechbrain_nes2net.audio.evaluation_crop`), batched by
duration (:func:`plan_batches`; the model masks the padding, so each file
gets the score it gets alone), and scored by windows when longer than
``eval_window_seconds``
(:func:`~speechbrain_nes2net.lobes.windows.forward_by_windows`).

Authors
 * speechbrain-nes2net contributors
"""

from dataclasses import dataclass, field

import torch
import torchaudio
from speechbrain.utils.data_utils import batch_pad_right

from speechbrain_nes2net.audio import AudioError, audio_info, evaluation_crop, load_audio
from speechbrain_nes2net.codecs import CodecError, apply_condition
from speechbrain_nes2net.lobes.windows import forward_by_windows
from speechbrain_nes2net.pretrained.modules import MonoWaveforms, prepare_waveforms
from speechbrain_nes2net.scores import LABELS

#: Padded audio per batch, in seconds, unless the caller says otherwise: at
#: In-the-Wild durations (4.3 s on average) batches of 8 stay well below it;
#: files of 30-60 s come 2-4 at a time, which bounds the attention memory.
DEFAULT_MAX_BATCH_SECONDS = 120.0


@dataclass
class WindowScores:
    """Scores of one recording in windows: bounds (``starts``, ``ends``, seconds), each
    window's bona fide score (``scores``) and their mean (``score``)."""

    starts: list
    ends: list
    scores: list
    score: float


@dataclass
class FileScore:
    """The outcome of scoring one file with :meth:`FileScoring.score_files`.

    Attributes
    ----------
    path : str
        The file.
    score : float or None
        Bona fide score (None when the file failed).
    label : str or None
        The model's decision, 'bonafide' or 'spoof' (None without a decision rule).
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


@dataclass
class BatchStats:
    """Padded ``batches`` run, ``samples`` of their waveforms and ``padded_samples`` computed
    (batch size x longest waveform, summed); windows of long files not counted."""

    batches: int = 0
    samples: int = 0
    padded_samples: int = 0

    @property
    def padding_fraction(self):
        """The share of the computed samples that were padding (0 when nothing ran)."""
        return 1.0 - self.samples / self.padded_samples if self.padded_samples else 0.0

    def add(self, lengths):
        """Counts one batch of waveforms of these lengths."""
        lengths = [int(length) for length in lengths]
        self.batches += 1
        self.samples += sum(lengths)
        self.padded_samples += len(lengths) * max(lengths)


def plan_batches(lengths, batch_size, max_batch_samples=None):
    """Batches of similar length: indices sorted by length, longest first, then cut.

    A batch closes at ``batch_size`` items, or before its padded size (items x
    its first, longest length) would exceed ``max_batch_samples``; a longer
    item gets a batch of its own. The sort is stable.

    Arguments
    ---------
    lengths : list of int
        Length of every item (samples).
    batch_size : int
        Most items per batch.
    max_batch_samples : int, optional
        Most padded samples per batch (no limit when None).

    Returns
    -------
    list of list of int

    Example
    -------
    >>> plan_batches([5, 9, 1, 7], 2)
    [[1, 3], [0, 2]]
    >>> plan_batches([5, 9, 1, 7], 4, max_batch_samples=16)
    [[1], [3, 0], [2]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batches = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        last = batches[-1] if batches else None
        if (
            last is not None
            and len(last) < batch_size
            and (max_batch_samples is None or (len(last) + 1) * lengths[last[0]] <= max_batch_samples)
        ):
            last.append(index)
        else:
            batches.append([index])
    return batches


class FileScoring:
    """Scores files and waveforms the same way on every engine (a mixin).

    The engine calls :meth:`_use_settings`, sets ``calibration`` (or None),
    and implements ``_forward_logits(wavs,
    wav_lens)`` (prepared, padded waveforms -> (batch, n_out) float32 CPU
    logits) and ``_log_odds(logits)`` (bona fide log-odds of its decision
    rule; None without one). :attr:`condition` (a name of
    :data:`~speechbrain_nes2net.codecs.CONDITIONS`, or None) codes every file read.
    """

    condition = None

    def _use_settings(self, settings):
        """Scores files by these resolved :class:`.modules.EvalSettings`."""
        self.settings, self.sample_rate = settings, settings.sample_rate
        self.num_samples, self.min_samples = settings.eval_samples, settings.eval_min_samples
        window = settings.eval_window_seconds
        self.eval_window = round(window * self.sample_rate) if window else None  # samples
        self.window_seconds = settings.window_seconds  # score_windows' defaults
        self.window_hop_seconds = settings.window_hop_seconds

    @property
    def batch_stats(self):
        """The :class:`BatchStats` of the batches this model ran."""
        if getattr(self, "_batch_stats", None) is None:
            self._batch_stats = BatchStats()
        return self._batch_stats

    def read_audio(self, path):
        """Reads a file as the recipe evaluates it (first ``num_samples`` only when set).

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
            Naming the file and the reason (also audio that :attr:`condition` cannot code).
        """
        max_seconds = None
        if self.num_samples is not None:
            max_seconds = self.num_samples / self.sample_rate
        wav = load_audio(path, sample_rate=self.sample_rate, max_seconds=max_seconds)
        if self.condition is None:
            return wav
        try:
            return apply_condition(wav, self.condition, self.sample_rate)
        except CodecError as err:
            raise AudioError(path, str(err)) from None

    def _prepare(self, wav):
        """The recipe's evaluation preprocessing of one (samples,) waveform."""
        return evaluation_crop(wav, self.num_samples, self.min_samples)

    def _finish(self, scores, calibrated):
        """Calibrated LLRs when asked and the model carries a calibration, else raw scores."""
        if calibrated and self.calibration is not None:
            return self.calibration.apply(scores)
        return scores

    @staticmethod
    def _bonafide(logits):
        """The raw bona fide scores of (batch, n_out) logits."""
        return logits[:, -1]

    def _window_scores(self, starts, ends, logits, calibrated):
        """The :class:`WindowScores` of window logits, bounds in samples."""
        scores = self._finish(self._bonafide(logits), calibrated)
        return WindowScores(
            starts=[start / self.sample_rate for start in starts],
            ends=[end / self.sample_rate for end in ends],
            scores=[float(score) for score in scores],
            score=float(scores.mean()),
        )

    def logits_batch(self, wavs, wav_lens=None, preprocess=True, windows=True):
        """Raw logits (batch, n_out) of waveforms at the model rate, on the CPU.

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) or (batch, samples, channels) waveforms.
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
        wavs = MonoWaveforms()(wavs.cpu())
        wav_lens = torch.ones(wavs.shape[0]) if wav_lens is None else wav_lens.cpu()
        if preprocess:
            wavs, wav_lens = prepare_waveforms(wavs, wav_lens, self.num_samples, self.min_samples)
        window = self.eval_window if windows else None
        return forward_by_windows(self._forward_logits, wavs, wav_lens, window)

    def score_batch(self, wavs, wav_lens=None, sample_rate=None, calibrated=True):
        """Bona fide scores of a batch of waveforms (any rate, any channel count).

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples) or (batch, samples, channels) waveforms.
        wav_lens : torch.Tensor, optional
            Relative lengths (SpeechBrain convention).
        sample_rate : int, optional
            Rate of ``wavs``; resampled to the model rate when different.
        calibrated : bool
            Map to calibrated LLRs when the model carries a calibration.

        Returns
        -------
        torch.Tensor
            (batch,) scores, higher = more bona fide.
        """
        wavs = MonoWaveforms()(wavs)
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            wavs = torchaudio.functional.resample(wavs, int(sample_rate), self.sample_rate)
        return self._finish(self._bonafide(self.logits_batch(wavs, wav_lens)), calibrated)

    def _evaluation_logits(self, wavs, calibrated, batch_size=8):
        """Logits of prepared waveforms as one padded batch (long ones by windows), and
        each one's :class:`WindowScores` (None when scored whole)."""
        batch, lengths = batch_pad_right(wavs)
        window = self.eval_window
        whole = [wav.shape[0] for wav in wavs if window is None or wav.shape[0] <= window]
        if whole:
            self.batch_stats.add(whole)
        logits, windowed = forward_by_windows(
            self._forward_logits, batch, lengths, self.eval_window, batch_size, keep_windows=True
        )
        windows = [None] * len(wavs)
        for index, (window_logits, sizes) in windowed.items():
            ends = torch.tensor(sizes).cumsum(0).tolist()
            windows[index] = self._window_scores([0] + ends[:-1], ends, window_logits, calibrated)
        return logits, windows

    def _file_score(self, path, logits, windows, calibrated):
        """The :class:`FileScore` of one file's logits."""
        score = float(self._finish(self._bonafide(logits[None]), calibrated)[0])
        log_odds = self._log_odds(logits[None])
        label = None if log_odds is None else LABELS[int(log_odds[0] >= 0)]
        return FileScore(str(path), score, label, windows=windows)

    def _score_one(self, path, calibrated):
        """Scores one file; raises on bad audio."""
        logits, windows = self._evaluation_logits([self._prepare(self.read_audio(path))], calibrated)
        return self._file_score(path, logits[0], windows[0], calibrated)

    def score_file(self, path, calibrated=True):
        """The bona fide score of one audio file.

        Arguments
        ---------
        path : str or Path
            Audio file (any sample rate and channel count).
        calibrated : bool
            Map to a calibrated LLR when the model carries a calibration.

        Returns
        -------
        float

        Raises
        ------
        AudioError
            Naming the file and the reason.
        """
        return self._score_one(path, calibrated).score

    def file_lengths(self, paths):
        """Per file, its prepared length in samples (from its header) or its ``AudioError``."""
        lengths = []
        for path in paths:
            try:
                seconds = audio_info(path).duration
            except AudioError as err:
                lengths.append(err)
                continue
            if self.num_samples is not None:
                lengths.append(self.num_samples)
            else:
                lengths.append(max(round(seconds * self.sample_rate), self.min_samples, 1))
        return lengths

    def plan(self, lengths, batch_size=8, max_batch_seconds=DEFAULT_MAX_BATCH_SECONDS):
        """The batches (indices into ``lengths``, longest first) of files of these prepared lengths.

        Files longer than the evaluation window come alone (scored by
        windows), the others by :func:`plan_batches`; failed files (non-int
        lengths) are left out.
        """
        usable = [i for i, length in enumerate(lengths) if isinstance(length, int)]
        windowed = [i for i in usable if self.eval_window and lengths[i] > self.eval_window]
        whole = [i for i in usable if i not in set(windowed)]
        budget = None
        if max_batch_seconds is not None:
            budget = max(1, round(float(max_batch_seconds) * self.sample_rate))
        batches = [[i] for i in sorted(windowed, key=lambda i: -lengths[i])]
        planned = plan_batches([lengths[i] for i in whole], batch_size, budget)
        return batches + [[whole[j] for j in batch] for batch in planned]

    def iter_scored(self, paths, batch_size=8, calibrated=True,
                    max_batch_seconds=DEFAULT_MAX_BATCH_SECONDS):  # fmt: skip
        """Scores files batch by batch (:meth:`plan`), the unreadable ones first.

        Arguments
        ---------
        paths : list of str or Path
            Audio files.
        batch_size : int
            Files per batch.
        calibrated : bool
            Map to calibrated LLRs when the model carries a calibration.
        max_batch_seconds : float, optional
            Most padded audio per batch (None: no limit).

        Yields
        ------
        (list of int, list of FileScore)
            The indices into ``paths`` of a batch and their results.
        """
        lengths = self.file_lengths(paths)
        failed = [i for i, length in enumerate(lengths) if isinstance(length, AudioError)]
        yield failed, [FileScore(str(paths[i]), error=lengths[i].reason) for i in failed]
        for batch in self.plan(lengths, batch_size, max_batch_seconds):
            yield batch, self.score_batch_files([paths[i] for i in batch], batch_size, calibrated)

    def score_files(
        self, paths, batch_size=8, calibrated=True, progress=None,
        max_batch_seconds=DEFAULT_MAX_BATCH_SECONDS,
    ):  # fmt: skip
        """Scores many files in batches of similar duration; bad files are reported.

        Batches of :meth:`iter_scored`; a file that cannot be read (missing,
        corrupt, empty, non-finite) is reported with the reason.

        Arguments
        ---------
        paths : list of str or Path
            Audio files.
        batch_size : int
            Files per batch.
        calibrated : bool
            Map to calibrated LLRs when the model carries a calibration.
        progress : callable, optional
            Called with the number of files just finished (e.g. a tqdm ``update``).
        max_batch_seconds : float, optional
            Most padded audio per batch (None: no limit).

        Returns
        -------
        list of FileScore
            In the order of ``paths``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        results = [None] * len(paths)
        for indices, scored in self.iter_scored(paths, batch_size, calibrated, max_batch_seconds):
            for index, result in zip(indices, scored):
                results[index] = result
            if progress is not None:
                progress(len(indices))
        return results

    def _guarded(self, path, calibrated):
        """Scores one file; a failure becomes its :class:`FileScore`."""
        try:
            return self._score_one(path, calibrated)
        except AudioError as err:
            return FileScore(str(path), error=err.reason)
        except (RuntimeError, ValueError) as err:
            return FileScore(str(path), error=f"scoring failed ({err})")

    def score_batch_files(self, paths, batch_size=8, calibrated=True):
        """Scores files as one padded batch (long ones alone by windows); bad files reported.

        If the batch fails, its files are retried one by one to find the culprit.

        Arguments
        ---------
        paths : list of str or Path
            The files of one batch of :meth:`plan`.
        batch_size : int
            Windows run at once for a long file.
        calibrated : bool
            Map to calibrated LLRs when the model carries a calibration.

        Returns
        -------
        list of FileScore
            In the order of ``paths``.
        """
        results, wavs, loaded = [None] * len(paths), [], []
        for position, path in enumerate(paths):
            try:
                wavs.append(self._prepare(self.read_audio(path)))
                loaded.append(position)
            except AudioError as err:
                results[position] = FileScore(str(path), error=err.reason)
        if not loaded:
            return results
        try:
            logits, windows = self._evaluation_logits(wavs, calibrated, batch_size)
        except (RuntimeError, ValueError) as err:
            for position in loaded:
                if len(loaded) == 1:
                    error = f"scoring failed ({err})"
                    results[position] = FileScore(str(paths[position]), error=error)
                else:  # find the culprit: retry one by one
                    results[position] = self._guarded(paths[position], calibrated)
            return results
        for position, file_logits, file_windows in zip(loaded, logits, windows):
            path = paths[position]
            results[position] = self._file_score(path, file_logits, file_windows, calibrated)
        return results
