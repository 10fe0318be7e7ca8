#!/usr/bin/env python3
"""Trains a partial-spoof localisation model: Nes2Net-X with one bona fide score per frame.

Usage::

    python recipes/train_localization.py hparams/demo_localization.yaml     # CPU demo
    python recipes/train_localization.py hparams/nes2net_x_partialspoof_localization.yaml \\
        --data_folder=/data/PartialSpoof/database

The recipe is ``recipes/train.py`` with the Brain below: the back-end
(:class:`~speechbrain_nes2net.lobes.localization.Nes2NetLocalizer`) gives
utterance logits and one bona fide logit per SSL frame. With a
``segment_loss``, training adds the segment objective on the frame logits to
the utterance objective (``utterance_loss_weight`` x utterance loss +
``segment_loss_weight`` x segment loss) against the batch's ``segment_truth``;
validation reports ``segment_EER`` (frames pooled to the training resolution,
in %), which may be the ``selection_metric``; every evaluated set also gets
its frame scores, ``scores/<name>_frame_scores.npz`` (ID -> one bona fide
logit per SSL frame, ``__shift__`` the frame hop), which the ``partialspoof``
report turns into segment and range EERs. After the development sets are
scored, the segment decision rule is fitted on their frame scores
(``localization.json``) and ships with the export.

Authors
 * speechbrain-nes2net contributors
"""

import json
import logging
import sys
from pathlib import Path

# train.py (beside this script) holds the recipe; the repository root holds data_prep/.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import speechbrain as sb  # noqa: E402
import torch  # noqa: E402
import train  # noqa: E402

from speechbrain_nes2net.evaluation.calibration import decision_from_dev  # noqa: E402
from speechbrain_nes2net.evaluation.files import (  # noqa: E402
    decision_rates,
    load_segment_scores,
    write_frame_scores,
)
from speechbrain_nes2net.evaluation.localization import (  # noqa: E402
    fit_frames_to_duration,
    pool_frame_scores,
    segment_count,
    segment_eer,
    segment_trials,
)
from speechbrain_nes2net.evaluation.metrics import compute_eer  # noqa: E402
from speechbrain_nes2net.lobes.ssl import ssl_frame_shift  # noqa: E402
from speechbrain_nes2net.lobes.windows import split_windows  # noqa: E402
from speechbrain_nes2net.segments import load_segment_labels  # noqa: E402
from speechbrain_nes2net.training.brain import AntiSpoofBrain, gather, unwrap_ddp  # noqa: E402
from speechbrain_nes2net.training.recipe import LOCALIZATION_FILE  # noqa: E402

logger = logging.getLogger(__name__)


class LocalizationBrain(AntiSpoofBrain):
    """:class:`~speechbrain_nes2net.training.brain.AntiSpoofBrain` with frame outputs.

    The outputs of :meth:`forward_train` (with a ``segment_loss``) and
    :meth:`forward_eval` are ``(logits, frame logits, frame counts)``.
    """

    @property
    def segment_loss(self):
        """The segment objective (``segment_loss``), or None."""
        return self.hparams.segment_loss

    @property
    def frame_shift(self):
        """Hop of the SSL frames in seconds."""
        return ssl_frame_shift(self.modules["ssl"], self.sample_rate)

    def forward_train(self, wavs, lengths):
        """Logits, and with a ``segment_loss`` the frame logits and counts too."""
        if self.segment_loss is None:
            return super().forward_train(wavs, lengths)
        return self._forward_frames(wavs, lengths, training=True)

    def _forward_frames(self, wavs, lengths, training):
        features, lengths = self.features(wavs, lengths, training)
        backend = self.modules["backend"] if training else unwrap_ddp(self.modules["backend"])
        logits, frame_logits = backend(features, lengths, with_frames=True)
        counts = torch.round(lengths * features.shape[1]).long().clamp(min=1)
        return logits, frame_logits, counts

    def forward_eval(self, wavs, lengths, window):
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
            return self._forward_frames(wavs, lengths, training=False)
        logits, frames = [], []
        for wav, count in zip(wavs, counts):
            pieces = split_windows(wav[:count], window)
            parts = [
                self._forward_frames(piece[None], torch.ones(1, device=wavs.device), False)
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

    def objective(self, outputs, labels, usable, batch):
        """``utterance_loss_weight`` x the utterance loss + ``segment_loss_weight`` x the segment loss."""
        if not isinstance(outputs, tuple):
            return super().objective(outputs, labels, usable, batch)
        logits, frame_logits, counts = outputs
        loss = super().objective(logits, labels, usable, batch)
        truth = getattr(batch, "segment_truth", None)
        if truth is None or self.segment_loss is None:
            return loss
        targets, target_lengths = truth
        target_counts = torch.round(target_lengths * targets.shape[1]).long()
        if usable.any():
            segment = self.segment_loss(
                frame_logits[usable], counts[usable], targets[usable], target_counts[usable]
            )
        else:
            segment = frame_logits.sum() * 0.0
        return self.hparams.utterance_loss_weight * loss + self.hparams.segment_loss_weight * segment

    def record_scores(self, outputs, labels, usable, batch):
        """The utterance records, and (ID, frame scores, segment truth or None) of each file.

        The frames are fitted to the file's own duration (from the manifest,
        :func:`~speechbrain_nes2net.evaluation.localization.fit_frames_to_duration`):
        those of repeat-padding to ``eval_min_samples`` are cut, and the last
        frame is repeated over the tail the SSL model gives no frame for, so
        that frame ``t`` is the file's time ``[t, t + 1) x frame shift``; the
        segment truth (which followed the padding) is cut to the segments of
        that duration.
        """
        logits, frame_logits, counts = outputs
        super().record_scores(logits, labels, usable, batch)
        truth = getattr(batch, "segment_truth", None)
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
            labels_i = None if truth is None else targets[i, :target_count].numpy()
            self.frame_records.append((utt_id, scores, labels_i))

    def _reset_records(self):
        super()._reset_records()
        self.frame_records = []  # (ID, frame scores, segment truth)

    def _stage_stats(self, stage, stage_loss):
        stats, summary, records, failures = super()._stage_stats(stage, stage_loss)
        self.frame_records = gather(self.frame_records)
        if stage == sb.Stage.VALID:
            stats.update(self._segment_stats())
        return stats, summary, records, failures

    def _segment_stats(self):
        """``segment_EER`` (%): frames pooled to the segment objective's resolution vs the truth."""
        loss = self.segment_loss
        labelled = [(utt, frames, truth) for utt, frames, truth in self.frame_records if truth is not None]
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

    def write_frame_outputs(self, folder, name):
        """``<name>_frame_scores.npz``: each file's frame scores (for the ``partialspoof`` report)."""
        return write_frame_scores(
            folder, name, [(record[0], record[1]) for record in self.frame_records], self.frame_shift
        )


def fit_run_localization(hparams, devs):
    """Fits the segment decision rule of a localisation run on its development frame scores.

    The dev frame scores are pooled to ``localization_shift`` seconds (or the
    segment objective's resolution) with the objective's pooling, and a rule
    is fitted on them against the dev segment labels as the utterance rule is
    (:func:`~speechbrain_nes2net.evaluation.calibration.decision_from_dev`).
    Written to ``localization.json``, which exports ship for
    ``AntiSpoofModel.localize`` and ``nes2net-score --frames``.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters (``segment_loss``, ``localization_shift``,
        ``decision_prior``, ``output_folder``).
    devs : list of TestSet
        The development sets, already scored.

    Returns
    -------
    dict or None
        What ``localization.json`` holds (None without a ``segment_loss``).
    """
    segment_loss = hparams["segment_loss"]
    if segment_loss is None:
        return None
    shift = float(hparams["localization_shift"] or segment_loss.segment_shift)
    scores_folder = Path(hparams["output_folder"]) / "scores"
    bona, spoof, frame_shift = [], [], None
    for dev in devs:
        frames, frame_shift = load_segment_scores(scores_folder / f"{dev.name}_frame_scores.npz")
        templates = pd.read_csv(dev.manifest).set_index("ID")["segment_labels"]
        for utt_id, values in frames.items():
            labels = load_segment_labels(templates[utt_id], utt_id, shift)
            segments = pool_frame_scores(values, frame_shift, shift, segment_loss.pooling)
            b, s, _ = segment_trials(segments, labels, tolerance=1, utt_id=utt_id)
            bona.append(b)
            spoof.append(s)
    bona = np.concatenate(bona) if bona else np.empty(0)
    spoof = np.concatenate(spoof) if spoof else np.empty(0)
    rule = decision_from_dev(bona, spoof, hparams["decision_prior"])
    rates = decision_rates(rule, bona, spoof)
    eer = compute_eer(bona, spoof)[0] if bona.size and spoof.size else None
    result = {
        "segment_shift": shift,
        "frame_shift": frame_shift,
        "pooling": segment_loss.pooling,
        "decision": rule.to_dict(),
        "dev": {"segment_eer": eer, "n_bonafide": int(bona.size), "n_spoof": int(spoof.size),
                **{k: v for k, v in rates.items() if v == v}},
    }  # fmt: skip
    path = Path(hparams["output_folder"]) / LOCALIZATION_FILE
    path.write_text(json.dumps(result, indent=2) + "\n")
    logger.info(
        "Segment decision rule (%s, %.2f s segments): bona fide when the segment score is "
        ">= %.4g; dev segment EER %s -> %s", rule.source, shift, rule.threshold,
        "n/a" if eer is None else f"{100 * eer:.2f}%", path,
    )
    return result


if __name__ == "__main__":
    train.main(sys.argv[1:], brain_class=LocalizationBrain, fit_dev_rules=fit_run_localization)
