"""Resumable, sharded scoring of a test manifest by a trained run (``recipes/evaluate.py``).

Each process scores its shard of the manifest (the positions ``p`` with
``p % world_size == rank``) chunk by chunk into its own score log
(:mod:`speechbrain_nes2net.evaluation.score_log`),
``<output_folder>/scores/<test_name>_scores.shard-R-of-N.log``, appending
every batch as it finishes. A rerun of the same command (one process or the
same ``torchrun`` launch) scores only what its log lacks, so a killed or
pre-empted process can be restarted alone. When every shard is complete, the
main process merges the logs and writes the score file, metrics and report
as :meth:`~speechbrain_nes2net.training.brain.AntiSpoofBrain.on_stage_end`
always did.

The log header holds a fingerprint of the loaded parameters (SHA-256 of the
model modules' tensors), the options that change scores (``eval_samples``,
``eval_min_samples``, ``eval_window_seconds``, sample rate, precision) and
a hash of the manifest's ``ID``/``wav`` columns; a rerun with anything else
is refused rather than mixed.

Memory: the scoring holds one chunk; the manifest table (read and validated
as before) and the merged records of the final metrics are one row per
utterance, as the metrics and reports need.

Authors
 * speechbrain-nes2net contributors
"""

import hashlib
import logging
import time
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.dataio.dataloader import make_dataloader
from speechbrain.dataio.dataset import DynamicItemDataset

from speechbrain_nes2net.evaluation.score_log import (
    DEFAULT_CHUNK_SIZE,
    FAILED,
    OK,
    ScoreLog,
    merged_records,
)
from speechbrain_nes2net.manifest import read_manifest
from speechbrain_nes2net.scores import bonafide_scores
from speechbrain_nes2net.training.checkpoints import MODEL_MODULES
from speechbrain_nes2net.training.dataio import audio_pipeline, label_pipeline

logger = logging.getLogger(__name__)


def parameter_fingerprint(modules):
    """SHA-256 over the names and values of the modules' parameters and buffers.

    Arguments
    ---------
    modules : dict
        Name -> torch module (DDP wrappers are looked through).

    Returns
    -------
    str

    Example
    -------
    >>> a = parameter_fingerprint({"m": torch.nn.Linear(2, 1)})
    >>> len(a)
    64
    """
    digest = hashlib.sha256()
    for name in sorted(modules):
        module = getattr(modules[name], "module", modules[name])
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}.{key}:{tuple(tensor.shape)}:{tensor.dtype}\0".encode())
            data = tensor.detach().cpu().contiguous()
            if data.dtype == torch.bfloat16:
                data = data.float()
            digest.update(data.numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def manifest_digest(frame):
    """SHA-256 of a manifest's ``ID<TAB>wav`` lines, in order."""
    digest = hashlib.sha256()
    for utt_id, wav in zip(frame["ID"], frame["wav"]):
        digest.update(f"{utt_id}\t{wav}\n".encode())
    return digest.hexdigest()


def shard_log_path(folder, name, rank, world_size):
    """``<folder>/<name>_scores.shard-R-of-N.log``."""
    return Path(folder) / f"{name}_scores.shard-{rank}-of-{world_size}.log"


class ShardedEvaluation:
    """Scores a manifest with a loaded :class:`AntiSpoofBrain`, resumably and by shards.

    Arguments
    ---------
    brain : AntiSpoofBrain
        With the checkpoint to evaluate already loaded (``on_evaluate_start``).
    manifest : str or Path
        The test manifest.
    name : str
        The test set name (output file names).
    eval_samples : int, optional
        Score the first N samples; full utterances when None.
    loader_options : dict
        ``eval_dataloader_options`` (batch size, workers).
    shard : (int, int)
        This process's ``(rank, world_size)``.
    restart : bool
        Discard this shard's log and score it again.
    chunk_size : int
        Manifest rows per chunk.
    """

    def __init__(self, brain, manifest, name, eval_samples, loader_options, shard,
                 restart=False, chunk_size=DEFAULT_CHUNK_SIZE):  # fmt: skip
        self.brain = brain
        self.name = name
        self.eval_samples = eval_samples
        self.loader_options = dict(loader_options)
        self.loader_options.pop("shuffle", None)
        self.rank, self.world_size = shard
        self.frame = read_manifest(manifest)
        self.folder = Path(brain.hparams.output_folder) / "scores"
        hparams = vars(brain.hparams)
        modules = {n: brain.modules[n] for n in MODEL_MODULES if n in brain.modules}
        self.header = {
            "tool": "recipes/evaluate.py",
            "model": "parameters:" + parameter_fingerprint(modules),
            "options": {
                "eval_samples": eval_samples,
                "eval_min_samples": hparams.get("eval_min_samples", 0),
                "eval_window_seconds": hparams.get("eval_window_seconds"),
                "sample_rate": brain.sample_rate,
                "precision": str(getattr(brain, "eval_precision", "fp32")),
            },
            "inputs": manifest_digest(self.frame),
            "n_inputs": len(self.frame),
            "chunk_size": int(chunk_size),
        }
        self.log = self.open_log(self.rank, restart=restart)

    def open_log(self, rank, restart=False, readonly=False):
        """The score log of shard ``rank`` (created when missing, unless ``readonly``)."""
        header = dict(self.header, shard=[rank, self.world_size])
        path = shard_log_path(self.folder, self.name, rank, self.world_size)
        return ScoreLog(path, header, restart, readonly=readonly)

    def _dataset(self, rows):
        records = {}
        for position in rows:
            row = self.frame.iloc[position].to_dict()
            row["corpus"] = ""
            row["position"] = position
            records[row.pop("ID")] = row
        dataset = DynamicItemDataset(records)
        dataset.add_dynamic_item(
            audio_pipeline(
                num_samples=self.eval_samples,
                min_samples=vars(self.brain.hparams).get("eval_min_samples", 0),
                sample_rate=self.brain.sample_rate,
            )
        )
        dataset.add_dynamic_item(label_pipeline)
        dataset.set_output_keys(
            ["id", "sig", "audio_error", "label_id", "label", "attack", "corpus", "position"]
        )
        if self.eval_samples is None and "duration" in self.frame.columns:
            dataset = dataset.filtered_sorted(sort_key="duration", reverse=True)
        return dataset

    def _score_rows(self, rows, append):
        """Scores manifest rows batch by batch, appending each batch's records."""
        loader = make_dataloader(self._dataset(rows), **self.loader_options)
        loss_fn = self.brain.hparams.loss
        for batch in loader:
            # SpeechBrain's evaluation context: autocast at --eval_precision.
            with torch.no_grad(), self.brain.evaluation_ctx:
                # Utterance scores only: frame logits (localisation models) are not logged.
                logits, labels, usable = self.brain.compute_forward(batch, sb.Stage.TEST)
                scores = bonafide_scores(logits).float().cpu().tolist()
                losses = [
                    float(loss_fn(logits[i : i + 1], labels[i : i + 1])) for i in range(len(scores))
                ]
            records = []
            for i, utt_id in enumerate(batch.id):
                position = int(batch.position[i])
                if bool(usable[i]):
                    fields = [repr(scores[i]), str(int(labels[i])), batch.corpus[i], repr(losses[i])]
                    records.append((position, utt_id, OK, fields))
                else:
                    records.append((position, utt_id, FAILED, [batch.audio_error[i]]))
            append(records)

    def score_shard(self, retry_failed=False):
        """Scores what this shard's log lacks (and failed files again with ``retry_failed``).

        Returns
        -------
        int
            Utterances scored by this call (0: the shard was complete).
        """
        log, before = self.log, self.log.n_done
        if log.complete and not (retry_failed and log.n_failed and log.failed_to_retry()):
            logger.info(
                "Shard %d of %d: nothing to score, all %d utterances are in %s",
                self.rank, self.world_size, log.n_expected, log.path,
            )  # fmt: skip
            return 0
        if log.n_done:
            logger.info("Shard %d of %d: resuming, %d of %d utterances already in %s",
                        self.rank, self.world_size, log.n_done, log.n_expected, log.path)  # fmt: skip
        self.brain.modules.eval()
        for chunk in range(log.n_chunks):
            rows = log.missing(chunk)
            if rows:
                self._score_rows(rows, log.append)
                log.sync()
        log.close()
        scored = log.n_done - before
        if retry_failed:
            failed = sorted(log.failed_to_retry())
            if failed:
                self._score_rows(failed, log.append_retries)
                scored += len(failed)
        return scored

    def incomplete_shards(self):
        """Ranks whose logs are missing or incomplete."""
        missing = []
        for rank in range(self.world_size):
            path = shard_log_path(self.folder, self.name, rank, self.world_size)
            if rank == self.rank:
                done = self.log.complete
            else:
                # Read only: that shard's process may be appending to it.
                done = path.exists() and self.open_log(rank, readonly=True).complete
            if not done:
                missing.append(rank)
        return missing

    def wait_for_shards(self, poll_seconds=30.0):
        """Waits (polling the logs, no collective that could time out) until every shard is complete.

        Under torchrun a process whose shard is done waits here for the
        others, however long a resumed shard takes; torchrun stops the job
        if any process dies.
        """
        pause = 0.2
        while self.incomplete_shards():
            time.sleep(pause)
            pause = min(2 * pause, poll_seconds)

    def merged(self):
        """``(records, failures, loss)`` of all shards: records ``(ID, score, label, corpus)``."""
        paths = [shard_log_path(self.folder, self.name, r, self.world_size) for r in range(self.world_size)]
        records, failures, losses = [], [], 0.0
        for _, utt_id, status, fields in merged_records(paths):
            if status == FAILED:
                failures.append((utt_id, fields[0]))
                continue
            score, label, corpus, loss = fields
            records.append((utt_id, float(score), int(label), corpus))
            losses += float(loss)
        return records, failures, losses / max(len(records), 1)
