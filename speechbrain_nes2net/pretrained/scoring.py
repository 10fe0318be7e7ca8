"""Scoring files with any engine: the same reading, preprocessing, batching and windows.

Every engine that scores files (:class:`~speechbrain_nes2net.pretrained.interface.AntiSpoofModel`
on torch, :class:`~speechbrain_nes2net.pretrained.onnx_model.OnnxAntiSpoofModel` on
onnxruntime) inherits :class:`FileScoring`, so a file is judged the same way
whatever runs the network:

- reading: :func:`~speechbrain_nes2net.audio.load_audio` (any rate, any channel
  count; the first ``eval_samples`` samples only when the model scores a
  fixed length), bad files reported with the reason; then the engine's
  ``condition``, when set (a codec or channel of
  :mod:`speechbrain_nes2net.codecs`: robustness evaluation);
- preprocessing: the recipe's evaluation (first ``eval_samples`` samples
  repeat-padded, else the full utterance repeat-padded to ``eval_min_samples``:
  :func:`~speechbrain_nes2net.audio.evaluation_crop`, as the recipe's data
  pipeline);
- batching (:func:`plan_batches`): files sorted by duration, longest first,
  cut into batches of at most ``batch_size`` files and ``max_batch_seconds``
  of padded audio; each waveform gets the score it gets alone, because the
  model masks the padding (the SSL attention mask, exact frame lengths);
- windows: a waveform longer than ``eval_window_seconds`` is scored by
  consecutive windows and gets the mean of their logits: the batch runs
  through :func:`~speechbrain_nes2net.lobes.windows.forward_by_windows`, the
  forward path of the recipe's test scoring too.

Precision is the engine's: ``AntiSpoofModel`` runs its SSL front-end in
bf16 when asked (the rest in float32); the recipe's test scoring in
``train.py`` follows SpeechBrain's ``--eval_precision`` autocast instead.

An engine provides ``_forward_logits(wavs, wav_lens)`` (prepared, padded
waveforms and relative lengths -> (batch, n_out) float32 logits) and
``_log_odds(logits)`` (its decision rule).

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
from speechbrain_nes2net.pretrained.modules import MonoWaveforms
from speechbrain_nes2net.scores import LABELS

#: Padded audio per batch, in seconds, unless the caller says otherwise: at
#: In-the-Wild durations (4.3 s on average) batches of 8 stay well below it;
#: files of 30-60 s come 2-4 at a time, which bounds the attention memory.
DEFAULT_MAX_BATCH_SECONDS = 120.0


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
class FileScore:
    """The outcome of scoring one file with :meth:`FileScoring.score_files`.

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


@dataclass
class BatchStats:
    """How much padding the batches of a scoring run computed.

    Attributes
    ----------
    batches : int
        Padded batches run (windows of long files not counted).
    samples : int
        Samples of the waveforms in them.
    padded_samples : int
        Samples computed (batch size x longest waveform, summed).
    """

    batches: int = 0
    samples: int = 0
    padded_samples: int = 0

    @property
    def padding_fraction(self):
        """The share of the computed samples that were padding (0 when nothing ran)."""
        if not self.padded_samples:
            return 0.0
        return 1.0 - self.samples / self.padded_samples

    def add(self, lengths):
        """Counts one batch of waveforms of these lengths."""
        lengths = [int(length) for length in lengths]
        self.batches += 1
        self.samples += sum(lengths)
        self.padded_samples += len(lengths) * max(lengths)


def plan_batches(lengths, batch_size, max_batch_samples=None):
    """Batches of similar length: indices sorted by length, longest first, then cut.

    A batch closes at ``batch_size`` items, or before its padded size (items x
    its longest length, the first one) would exceed ``max_batch_samples``, so
    that long files come in smaller batches; an item longer than the budget
    gets a batch of its own. Sorting is stable (equal lengths keep their
    order), so the plan depends only on the lengths.

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
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches = []
    for index in order:
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

    The engine class sets ``sample_rate``, ``num_samples`` (the fixed
    evaluation length or None), ``min_samples``, ``eval_window`` (samples or
    None) and ``calibration`` (or None), and implements
    ``_forward_logits(wavs, wav_lens)`` and ``_log_odds(logits)``.
    :attr:`batch_stats` counts the padding of the batches run so far;
    :attr:`condition` (a name of :data:`~speechbrain_nes2net.codecs.CONDITIONS`,
    or None) codes every file read.
    """

    condition = None

    def _forward_logits(self, wavs, wav_lens):
        """(batch, n_out) float32 CPU logits of prepared, padded waveforms (no windows)."""
        raise NotImplementedError

    def _log_odds(self, logits):
        """(batch,) posterior log-odds of bona fide: >= 0 is the model's decision (None: no rule, no labels)."""
        raise NotImplementedError

    @property
    def batch_stats(self):
        """The :class:`BatchStats` of the batches this model ran."""
        if getattr(self, "_batch_stats", None) is None:
            self._batch_stats = BatchStats()
        return self._batch_stats

    # --------------------------------------------------------------- input

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

    def prepared_length(self, seconds):
        """The length in samples a file of ``seconds`` has after preprocessing."""
        if self.num_samples is not None:
            return self.num_samples
        return max(int(round(seconds * self.sample_rate)), self.min_samples, 1)

    def _finish(self, scores, calibrated):
        if calibrated and self.calibration is not None:
            return self.calibration.apply(scores)
        return scores

    @staticmethod
    def _bonafide(logits):
        return logits[:, -1]

    # ------------------------------------------------------------- one file

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
        scores = self._bonafide(self.logits_batch(wavs, wav_lens)).cpu()
        return self._finish(scores, calibrated)

    def _evaluation_logits(self, wavs, calibrated, batch_size=8):
        """Logits (files, n_out) of prepared waveforms run as one padded batch, long ones by windows.

        Returns
        -------
        (torch.Tensor, list)
            The logits, and per file its :class:`WindowScores` (None when
            scored whole).
        """
        batch, lengths = batch_pad_right(wavs)
        whole = [wav.shape[0] for wav in wavs if self.eval_window is None or wav.shape[0] <= self.eval_window]
        if whole:
            self.batch_stats.add(whole)
        logits, windowed = forward_by_windows(
            self._forward_logits, batch, lengths, self.eval_window, batch_size, keep_windows=True
        )
        windows = [None] * len(wavs)
        for index, (window_logits, sizes) in windowed.items():
            ends = torch.tensor(sizes).cumsum(0).tolist()
            starts = [0] + ends[:-1]
            scores = self._finish(self._bonafide(window_logits), calibrated)
            windows[index] = WindowScores(
                starts=[start / self.sample_rate for start in starts],
                ends=[end / self.sample_rate for end in ends],
                scores=[float(score) for score in scores],
                score=float(scores.mean()),
            )
        return logits, windows

    def _file_score(self, path, logits, windows, calibrated):
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
            When the file cannot be read (naming the file and the reason).
        """
        return self._score_one(path, calibrated).score

    # ------------------------------------------------------------ many files

    def file_lengths(self, paths):
        """Prepared lengths (samples) of files from their headers, or the reason they fail.

        Returns
        -------
        list
            Per file: an int, or an :class:`~speechbrain_nes2net.audio.AudioError`.
        """
        lengths = []
        for path in paths:
            try:
                lengths.append(self.prepared_length(audio_info(path).duration))
            except AudioError as err:
                lengths.append(err)
        return lengths

    def plan(self, lengths, batch_size=8, max_batch_seconds=DEFAULT_MAX_BATCH_SECONDS):
        """The batches :meth:`score_files` runs for files of these prepared lengths.

        Files longer than the evaluation window are scored alone, by windows;
        the others by :func:`plan_batches`. Failed files (non-int lengths) are
        left out.

        Returns
        -------
        list of list of int
            Indices into ``lengths``, longest files first.
        """
        usable = [i for i, length in enumerate(lengths) if isinstance(length, int)]
        windowed = [i for i in usable if self.eval_window and lengths[i] > self.eval_window]
        alone = set(windowed)
        whole = [i for i in usable if i not in alone]
        budget = None
        if max_batch_seconds is not None:
            budget = max(1, int(round(float(max_batch_seconds) * self.sample_rate)))
        batches = [[i] for i in sorted(windowed, key=lambda i: -lengths[i])]
        planned = plan_batches([lengths[i] for i in whole], batch_size, budget)
        return batches + [[whole[j] for j in batch] for batch in planned]

    def score_files(
        self, paths, batch_size=8, calibrated=True, progress=None,
        max_batch_seconds=DEFAULT_MAX_BATCH_SECONDS,
    ):  # fmt: skip
        """Scores many files in batches of similar duration; bad files are reported.

        Files are sorted by duration (from their headers) and scored in
        batches of at most ``batch_size`` files and ``max_batch_seconds`` of
        padded audio, padded and with lengths, as the training recipe
        evaluates (each file gets the score it gets alone); waveforms longer
        than ``eval_window_seconds`` are scored alone by windows. A file that
        cannot be read (missing, corrupt, empty, non-finite) is reported with
        the reason and the others are still scored; if a whole batch fails,
        its files are retried one by one. :attr:`batch_stats` counts the
        padding computed.

        Arguments
        ---------
        paths : list of str or Path
            Audio files.
        batch_size : int
            Files per batch.
        calibrated : bool
            Map to calibrated LLRs when the model carries a calibration.
        progress : callable, optional
            Called with the number of files just finished (e.g. a tqdm
            ``update``).
        max_batch_seconds : float, optional
            Most padded audio per batch (None: no limit).

        Returns
        -------
        list of FileScore
            In the order of ``paths``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        tick = progress or (lambda n: None)
        results = [None] * len(paths)
        lengths = self.file_lengths(paths)
        for index, length in enumerate(lengths):
            if isinstance(length, AudioError):
                results[index] = FileScore(str(paths[index]), error=length.reason)
                tick(1)
        for batch in self.plan(lengths, batch_size, max_batch_seconds):
            scored = self.score_batch_files([paths[i] for i in batch], batch_size, calibrated)
            for index, result in zip(batch, scored):
                results[index] = result
            tick(len(batch))
        return results

    def _guarded(self, path, calibrated):
        try:
            return self._score_one(path, calibrated)
        except AudioError as err:
            return FileScore(str(path), error=err.reason)
        except (RuntimeError, ValueError) as err:
            return FileScore(str(path), error=f"scoring failed ({err})")

    def score_batch_files(self, paths, batch_size=8, calibrated=True):
        """Scores files as one padded batch (long ones alone by windows); bad files reported.

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
            except AudioError as err:
                results[position] = FileScore(str(path), error=err.reason)
                continue
            loaded.append(position)
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
            results[position] = self._file_score(paths[position], file_logits, file_windows, calibrated)
        return results
