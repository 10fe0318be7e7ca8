"""The frame-level part of :class:`~speechbrain_nes2net.training.brain.AntiSpoofBrain`.

A localisation back-end (:class:`~speechbrain_nes2net.lobes.localization.Nes2NetLocalizer`)
gives one bona fide logit per SSL frame besides the utterance logits. This
mixin holds what the Brain does with them: the frame logits of long
evaluation files by windows, the weighted sum of the utterance and segment
objectives, the frame scores kept for the score files and reports, and the
validation ``segment_EER``.

Authors
 * speechbrain-nes2net contributors
"""

import logging

import torch
from torch.nn.parallel import DistributedDataParallel

from speechbrain_nes2net.evaluation.localization import (
    fit_frames_to_duration,
    pool_frame_scores,
    segment_count,
    segment_eer,
)
from speechbrain_nes2net.lobes.ssl import ssl_frame_shift
from speechbrain_nes2net.lobes.windows import split_windows

logger = logging.getLogger(__name__)


def unwrap_ddp(module):
    """The module inside a DDP wrapper (evaluation must not trigger collectives)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


class FrameObjectives:
    """Frame-level training and evaluation of a ``sb.Brain`` with a localisation back-end.

    It expects the Brain's ``modules`` (``ssl``, ``backend``), ``hparams``
    (``segment_loss``, ``utterance_loss_weight``, ``segment_loss_weight``),
    ``sample_rate``, ``_model_forward`` and a ``frame_records`` list.
    """

    @property
    def localizes(self):
        """Whether the back-end gives frame logits (a localisation model)."""
        return hasattr(unwrap_ddp(self.modules["backend"]), "forward_with_frames")

    @property
    def segment_loss(self):
        """The segment objective (``segment_loss``), or None."""
        return getattr(self.hparams, "segment_loss", None)

    @property
    def frame_shift(self):
        """Hop of the SSL frames in seconds."""
        return ssl_frame_shift(self.modules["ssl"], self.sample_rate)

    def _evaluate_frames(self, wavs, lengths, window):
        """Utterance logits, frame logits and frame counts of an evaluation batch.

        A waveform longer than ``window`` samples goes by consecutive windows
        (:func:`~speechbrain_nes2net.lobes.windows.split_windows`): its logits
        are the mean of the windows' logits, its frames theirs one after the
        other, each window's fitted to its duration (the SSL model gives a
        window a frame or two fewer than it spans), so that frame ``t`` stays
        at ``t x frame shift`` across windows, as ``AntiSpoofModel.localize``
        joins them.
        """
        counts = torch.round(lengths.to(torch.float64) * wavs.shape[1]).long().tolist()
        if not window or max(counts) <= window:
            return self._model_forward(wavs, lengths, training=False, frames=True)
        logits, frames = [], []
        for wav, count in zip(wavs, counts):
            pieces = split_windows(wav[:count], window)
            parts = [
                self._model_forward(piece[None], torch.ones(1, device=wavs.device), False, True)
                for piece in pieces
            ]
            logits.append(torch.stack([part[0][0] for part in parts]).mean(dim=0))
            frames.append(torch.cat([
                torch.as_tensor(fit_frames_to_duration(
                    part[1][0, : part[2][0]].float().cpu(), self.frame_shift,
                    piece.shape[0] / self.sample_rate,
                ), dtype=torch.float32, device=wavs.device)
                for part, piece in zip(parts, pieces)
            ]))  # fmt: skip
        frame_counts = torch.tensor([f.shape[0] for f in frames], device=wavs.device)
        padded = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True)
        return torch.stack(logits), padded, frame_counts

    def _with_segment_loss(self, loss, frames, truth, usable):
        """``utterance_loss_weight`` x ``loss`` + ``segment_loss_weight`` x the segment loss."""
        frame_logits, counts = frames
        targets, target_lengths = truth
        target_counts = torch.round(target_lengths * targets.shape[1]).long()
        if usable.any():
            segment = self.segment_loss(
                frame_logits[usable], counts[usable], targets[usable], target_counts[usable]
            )
        else:
            segment = frame_logits.sum() * 0.0
        utterance_weight = getattr(self.hparams, "utterance_loss_weight", 1.0)
        segment_weight = getattr(self.hparams, "segment_loss_weight", 1.0)
        return utterance_weight * loss + segment_weight * segment

    def _record_frames(self, batch, frames, truth, usable):
        """Keeps (ID, frame scores, segment truth or None) of the usable utterances.

        The frames are fitted to the file's own duration (from the manifest,
        :func:`~speechbrain_nes2net.evaluation.localization.fit_frames_to_duration`):
        those of repeat-padding to ``eval_min_samples`` are cut, and the last
        frame is repeated over the tail the SSL model gives no frame for, so
        that frame ``t`` is the file's time ``[t, t + 1) x frame shift``; the
        segment truth (which followed the padding) is cut to the segments of
        that duration.
        """
        frame_logits, counts = frames
        frame_logits = frame_logits.detach().float().cpu()
        counts = counts.cpu().tolist()
        if truth is not None:
            targets, target_lengths = truth
            target_counts = torch.round(target_lengths * targets.shape[1]).long().tolist()
            targets = targets.cpu()
        durations = getattr(batch, "duration", None)
        if isinstance(durations, torch.Tensor):
            durations = durations.tolist()
        for i, (utt_id, ok) in enumerate(zip(batch.id, usable.cpu().tolist())):
            if not ok:
                continue
            scores = frame_logits[i, : counts[i]].numpy()
            target_count = None if truth is None else target_counts[i]
            if durations is not None:
                seconds = float(durations[i])
                scores = fit_frames_to_duration(scores, self.frame_shift, seconds)
                if truth is not None:
                    shift = self.segment_loss.segment_shift
                    target_count = min(target_count, segment_count(seconds, shift))
            labels = None if truth is None else targets[i, :target_count].numpy()
            self.frame_records.append((utt_id, scores, labels))

    def _segment_stats(self, frame_records):
        """``segment_EER`` (%): frames pooled to the segment objective's resolution vs the truth."""
        loss = self.segment_loss
        labelled = [(utt, frames, truth) for utt, frames, truth in frame_records if truth is not None]
        if loss is None or not labelled:
            return {}
        scores = {
            utt: pool_frame_scores(frames, self.frame_shift, loss.segment_shift, loss.pooling)
            for utt, frames, _ in labelled
        }
        truth = {utt: labels for utt, _, labels in labelled}
        try:
            return {"segment_EER": 100 * segment_eer(scores, truth)["eer"]}
        except ValueError as err:  # one class only (a debug run's few batches)
            logger.warning("No segment EER this validation: %s", err)
            return {"segment_EER": float("nan")}
