"""The SpeechBrain ``Brain`` that trains and evaluates SSL + Nes2Net models.

Its modules come from the YAML: ``ssl`` (stacked hidden states), ``aggregator``
(layers -> features) and ``backend`` (features -> logits). The SSL model and
the rest have their own optimisers and share a learning-rate schedule type;
the SSL model can be frozen for good or for the first epochs. Validation runs
after the epochs ``valid_epochs`` names (:func:`~speechbrain_nes2net.training.config.validates`);
every epoch ends with a checkpoint, and only those of validated epochs are
selection candidates. docs/TRAINING.md describes each setting. Under DDP the
validation and test sets are sharded over the processes, so nothing is scored
twice. Localisation models train with ``recipes/train_localization.py``, whose
Brain extends this one.

Authors
 * speechbrain-nes2net contributors
"""

import csv
import logging
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataloader import LoopedLoader
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from speechbrain_nes2net.evaluation.files import (
    score_summary,
    scoring_protocol,
    write_test_outputs,
)
from speechbrain_nes2net.evaluation.reports import write_corpus_report
from speechbrain_nes2net.lobes.ssl import ssl_frame_lengths
from speechbrain_nes2net.lobes.windows import forward_by_windows
from speechbrain_nes2net.manifest import read_manifest
from speechbrain_nes2net.scores import bonafide_scores
from speechbrain_nes2net.training.checkpoints import (
    MODEL_MODULES,
    evaluation_checkpoints,
    load_checkpoint_average,
)
from speechbrain_nes2net.training.config import (
    RecipeConfigError,
    schedules_whole_run,
    validates,
)
from speechbrain_nes2net.training.recipe import (
    CorpusMixture,
    batch_augmentation,
    feature_cache,
    tensorboard_logger,
    waveform_augmentation,
)

logger = logging.getLogger(__name__)

#: Unusable files named one by one in the log before they are only counted.
MAX_LOGGED_FAILURES = 20
#: Training utterances seen before the failure rate can stop an epoch early.
MIN_SEEN_FOR_EARLY_STOP = 200


class ShardSampler(torch.utils.data.Sampler):
    """Every ``world_size``-th index from ``rank``: a disjoint shard per process.

    Unlike :class:`DistributedSampler` it never repeats items to even out the
    shards, so every utterance is scored exactly once. While ``active()`` is
    false it yields nothing: the dev loader of an epoch that is not validated
    is empty (SpeechBrain's ``fit`` has no public hook that skips a validation).

    Arguments
    ---------
    data : Sized
        The dataset.
    rank, world_size : int
        This process and the number of processes.
    active : callable, optional
        Whether to yield the shard now (default: always).

    Example
    -------
    >>> list(ShardSampler(range(5), rank=1, world_size=2))
    [1, 3]
    >>> list(ShardSampler(range(5), active=lambda: False))
    []
    """

    def __init__(self, data, rank=0, world_size=1, active=None):
        self.indices = list(range(rank, len(data), world_size))
        self.active = active

    def __iter__(self):
        return iter(self.indices if self.active is None or self.active() else ())

    def __len__(self):
        return len(self.indices) if self.active is None or self.active() else 0


def unwrap_ddp(module):
    """The module inside a DDP wrapper (evaluation must not trigger collectives)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def ssl_states(ssl, wavs, lengths):
    """Hidden states and their exact relative frame lengths.

    Rounding ``lengths * frames`` can be one frame off the feature encoder's
    true output length, which would make a score depend on the other
    utterances of its batch; :func:`ssl_frame_lengths` computes it exactly.
    """
    states = ssl(wavs, lengths)
    return states, ssl_frame_lengths(unwrap_ddp(ssl), lengths, wavs.shape[1], states.shape[2])


def _world():
    """(rank, world size) of this process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather(items):
    """The list ``items`` of every process, concatenated in rank order (itself without DDP).

    Example
    -------
    >>> gather([1, 2])
    [1, 2]
    """
    world = _world()[1]
    if world == 1:
        return items
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


class AntiSpoofBrain(sb.Brain):
    """SSL front-end -> layer aggregation -> back-end, for anti-spoofing.

    Reads from the YAML, besides SpeechBrain's run options: ``loss``, the
    optimisers and schedule (``backend_opt_class``, ``ssl_opt_class``,
    ``lr_scheduler``, ``lr_schedule_interval``), ``freeze_ssl``,
    ``ssl_frozen_epochs``, the validation and selection settings
    (:mod:`speechbrain_nes2net.training.config`), ``average_checkpoints``,
    ``keep_checkpoints``, ``train_logger``, ``output_folder``, and the
    optional components of :mod:`speechbrain_nes2net.training.recipe`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mixture = None  # the CorpusMixture of a multi-corpus training set
        self.augmented_valid_loader = None  # fit's augmented_valid_set
        self.scored_as, self.test_decision = None, None  # evaluate()'s set and rule
        hparams = vars(self.hparams)
        self.feature_cache = feature_cache(hparams)
        self.tensorboard_logger = tensorboard_logger(hparams)
        self.batch_augment = batch_augmentation(hparams)

    # ------------------------------------------------------------ forward pass

    def compute_forward(self, batch, stage):
        """Scores a batch.

        Returns
        -------
        (outputs, labels, usable)
            ``outputs`` are the logits (:meth:`forward_train`,
            :meth:`forward_eval`); ``usable`` marks the utterances whose audio
            loaded: the others went through the model as silence (so that
            every DDP process runs the same batches) and are left out of the
            loss and the scores.
        """
        batch = batch.to(self.device)
        wavs, lengths = batch.sig
        labels = batch.label_id.data[:, 0]
        usable = torch.tensor([not error for error in batch.audio_error], device=self.device)
        self._record_failures(batch, usable, stage)
        augment = self.batch_augment
        if stage == sb.Stage.TRAIN and augment is not None:
            wavs, lengths = augment(wavs, lengths)
            labels = augment.replicate_labels(labels)
            usable = augment.replicate_labels(usable)
        if stage == sb.Stage.TRAIN:
            return self.forward_train(wavs, lengths), labels, usable
        # Long test files by windows, so that a 30-minute recording does not exhaust memory.
        seconds = self.hparams.eval_window_seconds
        window = int(seconds * self.sample_rate) if seconds else None
        return self.forward_eval(wavs, lengths, window), labels, usable

    def forward_train(self, wavs, lengths):
        """Logits of a training batch."""
        features, lengths = self.features(wavs, lengths, training=True)
        return self.modules["backend"](features, lengths)

    def forward_eval(self, wavs, lengths, window):
        """Logits of an evaluation batch; waveforms longer than ``window`` samples by windows.

        :func:`~speechbrain_nes2net.lobes.windows.forward_by_windows` is the
        forward path of every scoring engine; the crop came from the data
        pipeline, the precision from SpeechBrain's ``--eval_precision`` autocast.
        """

        def forward(wavs, lengths):
            """The back-end's logits of a padded batch (or of one window)."""
            features, lengths = self.features(wavs, lengths, training=False)
            return unwrap_ddp(self.modules["backend"])(features, lengths)

        return forward_by_windows(forward, wavs, lengths, window, batch_size=max(1, wavs.shape[0]))

    @property
    def sample_rate(self):
        """Sampling rate of the waveforms the model takes."""
        return self.hparams.sample_rate

    def features(self, wavs, lengths, training):
        """SSL front-end -> aggregation on a padded batch: (features, relative lengths).

        Outside training the modules run unwrapped from DDP; a frozen SSL
        model runs in eval mode and without a graph, from the feature cache
        when there is one.
        """
        unwrap = (lambda module: module) if training else unwrap_ddp
        ssl, aggregator = unwrap(self.modules["ssl"]), unwrap(self.modules["aggregator"])
        if training and not self.ssl_frozen:
            states, lengths = ssl_states(ssl, wavs, lengths)
        else:
            ssl.eval()
            with torch.no_grad():
                if self._use_feature_cache(training):
                    states, lengths = self.feature_cache.states(wavs, lengths, ssl)
                else:
                    states, lengths = ssl_states(ssl, wavs, lengths)
        return aggregator(states, lengths), lengths

    def _use_feature_cache(self, training):
        """Cached states serve inputs that repeat: evaluation, and training without
        random crops and augmentation."""
        if self.feature_cache is None:
            return False
        return not training or not (
            self.hparams.train_random_crop
            or waveform_augmentation(vars(self.hparams)) is not None
            or self.batch_augment is not None
        )

    def compute_objectives(self, predictions, batch, stage):
        """Computes the loss on usable utterances; outside training, records the scores."""
        outputs, labels, usable = predictions
        loss = self.objective(outputs, labels, usable, batch)
        if stage != sb.Stage.TRAIN:
            self.record_scores(outputs, labels, usable, batch)
        elif self.mixture is not None:
            self.drawn.extend(zip(batch.id, batch.corpus))
        return loss

    def objective(self, logits, labels, usable, batch):
        """The ``loss`` of the usable utterances."""
        if usable.any():
            return self.hparams.loss(logits[usable], labels[usable])
        # Nothing to learn from, but every parameter stays in the graph (DDP).
        return logits.sum() * 0.0

    def record_scores(self, logits, labels, usable, batch):
        """Keeps (ID, bona fide score, label id, corpus) of the usable utterances."""
        scores = bonafide_scores(logits).float().cpu().tolist()
        records = zip(batch.id, scores, labels.cpu().tolist(), batch.corpus)
        self.score_records.extend(record for record, ok in zip(records, usable.cpu().tolist()) if ok)

    def _record_failures(self, batch, usable, stage):
        """Counts utterances and keeps (ID, reason) of the unusable ones."""
        self.utterances_seen += len(batch.id)
        for utt_id, error, ok in zip(batch.id, batch.audio_error, usable.tolist()):
            if ok:
                continue
            self.failures.append((utt_id, error))
            if len(self.failures) <= MAX_LOGGED_FAILURES:
                logger.warning("Skipping %s: %s", utt_id, error)
            elif len(self.failures) == MAX_LOGGED_FAILURES + 1:
                logger.warning("More unusable files; the rest are only counted")
        if stage == sb.Stage.TRAIN:
            self._check_failure_rate(final=False)

    def _check_failure_rate(self, final):
        """Stops training when more than ``max_failed_fraction`` of the files fail (a wrong
        folder, a broken disk): at the end of each epoch, and early after a few hundred."""
        limit = self.hparams.max_failed_fraction
        if not final and self.utterances_seen < MIN_SEEN_FOR_EARLY_STOP:
            return
        if len(self.failures) > limit * self.utterances_seen:
            examples = "; ".join(error for _, error in self.failures[:3])
            raise RuntimeError(
                f"{len(self.failures)} of {self.utterances_seen} training files could not be "
                f"used, more than max_failed_fraction={limit}; fix or remove them (or raise "
                f"max_failed_fraction) and rerun. Examples: {examples}"
            )

    @property
    def selection_metric(self):
        """Validation statistic (lower is better) that picks checkpoints."""
        return self.hparams.selection_metric

    @property
    def ssl_frozen(self):
        """Whether the SSL model is frozen in the current epoch."""
        if self.hparams.freeze_ssl:
            return True
        return self.hparams.epoch_counter.current <= self.hparams.ssl_frozen_epochs

    # -------------------------------------------------------------- optimisers

    def on_fit_start(self):
        """SpeechBrain's start of ``fit``, with this recipe's DDP wrapping.

        As SpeechBrain's own: wrap the modules, build the optimisers, resume
        from the newest checkpoint; besides, the feature cache is checked and
        the lowest dev losses so far recovered. The wrapping is ours because
        SpeechBrain's converts every BatchNorm to SyncBatchNorm, which gloo on
        a CPU cannot run (see :meth:`wrap_modules`).
        """
        if self.feature_cache is not None:
            if not self.hparams.freeze_ssl:
                raise ValueError(
                    "feature_cache needs freeze_ssl: True (cached states of a fine-tuned, or "
                    "later unfrozen, SSL model would be stale); set feature_cache: False"
                )
            if not self._use_feature_cache(training=True):
                logger.info(
                    "Feature cache: training inputs vary (random crops or augmentation), so "
                    "only validation and test use %s", self.feature_cache.folder,
                )  # fmt: skip
        self.wrap_modules()
        self.init_optimizers()
        self.dev_lows = {}  # the lowest dev statistics so far (either_loss_improves)
        if self.checkpointer is not None:
            self.checkpointer.recover_if_possible()
            latest = self.checkpointer.find_checkpoint(
                ckpt_predicate=lambda ckpt: "dev_lows" in ckpt.meta
            )
            if latest is not None:
                self.dev_lows = dict(latest.meta["dev_lows"])

    def init_optimizers(self):
        """One optimiser (and scheduler) for the SSL model, one for the rest."""
        groups = {
            "backend": [
                p
                for name in ("aggregator", "backend")
                for p in self.modules[name].parameters()
                if p.requires_grad
            ],
            "ssl": [p for p in self.modules["ssl"].parameters() if p.requires_grad],
        }
        factories = {"backend": self.hparams.backend_opt_class, "ssl": self.hparams.ssl_opt_class}
        scheduler_factory = self.hparams.lr_scheduler
        self.optimizers_dict, self.schedulers = {}, {}
        for name, params in groups.items():
            if not params:
                continue
            optimizer = factories[name](params)
            self.optimizers_dict[name] = optimizer
            if self.checkpointer is not None:
                self.checkpointer.add_recoverable(f"{name}_optimizer", optimizer)
            if scheduler_factory is not None:
                scheduler = scheduler_factory(optimizer, **self._schedule_length(scheduler_factory))
                self.schedulers[name] = scheduler
                if self.checkpointer is not None:
                    self.checkpointer.add_recoverable(f"{name}_scheduler", scheduler)
        self.optimizer = self.optimizers_dict["backend"]

    def fit(self, epoch_counter, train_set, valid_set=None, progressbar=None,
            train_loader_kwargs={}, valid_loader_kwargs={},  # noqa: B006 (SpeechBrain's signature)
            augmented_valid_set=None):  # fmt: skip
        """SpeechBrain's ``fit``, remembering how many optimiser steps an epoch has.

        A schedule over the whole run (``T_max: null``, :meth:`_schedule_length`)
        needs that number when the optimisers are built, inside ``fit``.
        ``augmented_valid_set`` (``valid_augmented: True``) is the dev set
        through the training augmentation, scored before ``valid_set`` at every
        validation (:func:`~speechbrain_nes2net.training.recipe.augmented_valid_dataset`).
        """
        if not isinstance(train_set, (DataLoader, LoopedLoader)) and not self.test_only:
            train_set = self.make_dataloader(train_set, stage=sb.Stage.TRAIN, **train_loader_kwargs)
        if isinstance(train_set, DataLoader):
            # SpeechBrain steps after every grad_accumulation_factor batches; the
            # batches of an incomplete last group are not stepped in that epoch.
            self.optimizer_steps_per_epoch = max(1, len(train_set) // self.grad_accumulation_factor)
        if valid_set is not None and self.hparams.valid_augmented and augmented_valid_set is None:
            raise RecipeConfigError(
                "valid_augmented: True but fit() got no augmented_valid_set "
                "(recipe.augmented_valid_dataset builds it)"
            )
        if augmented_valid_set is not None and not isinstance(
            augmented_valid_set, (DataLoader, LoopedLoader)
        ):
            augmented_valid_set = self.make_dataloader(
                augmented_valid_set, stage=sb.Stage.VALID, ckpt_prefix=None, **valid_loader_kwargs
            )
        self.augmented_valid_loader = augmented_valid_set
        super().fit(epoch_counter, train_set, valid_set, progressbar, train_loader_kwargs,
                    valid_loader_kwargs)  # fmt: skip

    def _schedule_length(self, scheduler_factory):
        """``T_max`` of a scheduler factory whose ``T_max`` is null: the whole run.

        With ``lr_schedule_interval: step``, every optimiser step of the run:
        ``number_of_epochs`` x the optimiser steps per epoch (per process under
        DDP), as the ASVspoof 5 release anneals its cosine per batch over all
        epochs. Other factories are called as they are.
        """
        if not schedules_whole_run(scheduler_factory, self.hparams.lr_schedule_interval):
            return {}
        steps = getattr(self, "optimizer_steps_per_epoch", None)
        if steps is None:
            raise RecipeConfigError(
                "lr_scheduler has T_max: null (the whole run in optimiser steps), which is "
                "known only in fit(); set T_max to a number to build the optimisers otherwise"
            )
        return {"T_max": self.hparams.number_of_epochs * steps}

    def freeze_optimizers(self, optimizers):
        """Leaves the SSL optimiser out while the SSL model is frozen."""
        if self.ssl_frozen:
            return {k: v for k, v in optimizers.items() if k != "ssl"}
        return optimizers

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Steps per-step schedulers."""
        if should_step and self.hparams.lr_schedule_interval == "step":
            self._step_schedulers()

    def _step_schedulers(self):
        """Steps the schedulers of the optimisers that step now."""
        for name, scheduler in self.schedulers.items():
            if name in self.freeze_optimizers(self.optimizers_dict):
                scheduler.step()

    def _learning_rates(self):
        """Each optimiser's current learning rate, for the log."""
        return {
            f"lr_{name}": optimizer.param_groups[0]["lr"]
            for name, optimizer in self.optimizers_dict.items()
        }

    # -------------------------------------------------- validation and selection

    def validates(self, epoch):
        """Whether ``epoch`` ends with a validation (``valid_epochs``)."""
        return validates(self.hparams, epoch)

    def augmented_dev_pass(self, epoch):
        """Scores the dev set through the training augmentation (``valid_augmented``).

        As in the ASVspoof 2019 release, this pass runs before the clean one
        at every validation (from :meth:`on_stage_start`, with SpeechBrain's
        public ``evaluate_batch``).

        Returns
        -------
        dict
            Its statistics, prefixed ``aug_`` (``aug_loss``, ``aug_EER``, ``aug_minDCF``).
        """
        self.modules.eval()
        self.step, loss = 0, 0.0
        with torch.no_grad():
            for batch in self.augmented_valid_loader:
                self.step += 1
                loss = self.update_average(self.evaluate_batch(batch, sb.Stage.VALID), loss)
                if self.debug and self.step == self.debug_batches:
                    break
        self.step = 0
        stats, _, _, _ = self._stage_stats(sb.Stage.VALID, loss)
        return {f"aug_{name}": value for name, value in stats.items()}

    def _is_candidate(self, stats):
        """Whether validated statistics make their checkpoint a selection candidate.

        ``selection_candidates: either_loss_improves`` (the ASVspoof 2019
        release's save rule): the clean or the augmented dev loss is at most
        its lowest so far (a tie counts), and the lowest values are updated.
        Otherwise every validated epoch is a candidate.
        """
        if self.hparams.selection_candidates != "either_loss_improves":
            return True
        improved = False
        for key in ("loss", "aug_loss"):
            if stats[key] <= self.dev_lows.get(key, float("inf")):
                self.dev_lows[key] = stats[key]
                improved = True
        return improved

    def _save_epoch_checkpoint(self, epoch, stats, candidate=False):
        """The end-of-epoch checkpoint: a candidate (statistics in its meta data) or not.

        A checkpoint that is no candidate has no statistic in its meta data,
        so no selection (``min_key``) ever picks it; it lets a run resume.
        """
        if candidate:
            meta = {**stats, "epoch": epoch}
        else:
            meta = {"epoch": epoch, "candidate": False}
            if stats is not None:
                meta["stats"] = stats
        if self.hparams.selection_candidates == "either_loss_improves":
            meta["dev_lows"] = dict(self.dev_lows)  # for a resumed run
        self.checkpointer.save_and_keep_only(
            meta=meta, min_keys=[self.selection_metric], num_to_keep=self.hparams.keep_checkpoints
        )

    # ------------------------------------------------------------ DDP handling

    def wrap_modules(self):
        """DDP (or DataParallel) around each trainable module; SyncBatchNorm on CUDA only.

        On CUDA the BatchNorm layers become SyncBatchNorm when ``sync_batchnorm``
        is true, so that their statistics cover the global batch; on a CPU
        (gloo) each process normalises with its own statistics.
        """
        if not self.distributed_launch and not self.data_parallel_backend:
            return
        sync = self.hparams.sync_batchnorm and self.device_type == "cuda"
        for name, module in self.modules.items():
            if not any(p.requires_grad for p in module.parameters()):
                continue
            if not self.distributed_launch:
                self.modules[name] = torch.nn.DataParallel(module)
                continue
            if sync:
                module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
            self.modules[name] = DistributedDataParallel(
                module,
                device_ids=[self.device] if self.device_type == "cuda" else None,
                find_unused_parameters=self.find_unused_parameters,
            )

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """Shards validation and test sets over the DDP processes; draws corpus mixtures.

        A training :class:`~speechbrain_nes2net.training.recipe.CorpusMixture`
        is read in the order its sampler draws (SpeechBrain calls the
        sampler's ``set_epoch`` every epoch, and under DDP hands each process
        every ``world_size``-th position of the draw). The dev loader yields
        nothing after an epoch that ``valid_epochs`` does not validate.
        """
        if isinstance(dataset, torch.utils.data.ConcatDataset):
            loader_kwargs = dict(loader_kwargs, collate_fn=PaddedBatch)
        if stage == sb.Stage.TRAIN and isinstance(dataset, CorpusMixture):
            self.mixture = dataset
            self.train_sampler = dataset.sampler
            loader_kwargs = dict(loader_kwargs, sampler=dataset.sampler, shuffle=False)
        if stage != sb.Stage.TRAIN and "sampler" not in loader_kwargs:
            rank, world = _world()
            active = None
            if stage == sb.Stage.VALID:
                active = lambda: self.validates(self.hparams.epoch_counter.current)  # noqa: E731
            loader_kwargs = dict(loader_kwargs, sampler=ShardSampler(dataset, rank, world, active))
        return super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)

    # -------------------------------------------------------------- evaluation

    def evaluate(self, test_set, max_key=None, min_key=None, progressbar=None,
                 test_loader_kwargs={}, scored_as=None, decision=None):  # noqa: B006 (SpeechBrain's signature)
        """SpeechBrain's ``evaluate``, told what the scored set is and how to decide.

        Arguments
        ---------
        test_set, max_key, min_key, progressbar, test_loader_kwargs
            As SpeechBrain's ``evaluate`` takes them.
        scored_as : TestSet, optional
            The set's name, manifest, report rules and crop, which name and
            describe the score, metrics and report files (default: ``test``,
            no report).
        decision : DecisionRule, optional
            The rule fitted on the development scores: the metrics then give
            the error rates at its threshold.

        Returns
        -------
        float
            The average test loss.
        """
        self.scored_as, self.test_decision = scored_as, decision
        return super().evaluate(
            test_set, max_key=max_key, min_key=min_key, progressbar=progressbar,
            test_loader_kwargs=test_loader_kwargs,
        )  # fmt: skip

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Loads the test checkpoint(s) (:func:`~speechbrain_nes2net.training.checkpoints.evaluation_checkpoints`).

        The best by ``min_key`` (the selection metric), or the parameter
        average of the best ``average_checkpoints``; the newest, with a
        warning, when no epoch was validated.
        """
        self.evaluated_checkpoints = []
        if self.checkpointer is None:
            return
        checkpoints = evaluation_checkpoints(
            self.checkpointer, min_key or self.selection_metric,
            int(self.hparams.average_checkpoints or 1),
        )  # fmt: skip
        self.evaluated_checkpoints = [ckpt.path.name for ckpt in checkpoints]
        if len(checkpoints) == 1:
            chosen = checkpoints[0].path
            self.checkpointer.recover_if_possible(ckpt_predicate=lambda ckpt: ckpt.path == chosen)
        elif checkpoints:
            modules = {name: unwrap_ddp(self.modules[name]) for name in MODEL_MODULES}
            load_checkpoint_average(modules, checkpoints, MODEL_MODULES)
            logger.info("Evaluating the average of %s", ", ".join(self.evaluated_checkpoints))

    # ------------------------------------------------------------------ stages

    def on_stage_start(self, stage, epoch=None):
        """Resets the score records and failure counts of a stage.

        A validation stage of a validated epoch first runs the augmented dev
        pass when there is one (:meth:`augmented_dev_pass`).
        """
        self._reset_records()
        self.augmented_stats = {}
        validated = stage == sb.Stage.VALID and self.validates(epoch)
        if validated and self.augmented_valid_loader is not None:
            self.augmented_stats = self.augmented_dev_pass(epoch)
            self._reset_records()

    def _reset_records(self):
        """Empties what a stage records."""
        self.score_records = []
        self.drawn = []  # (ID, corpus) of the utterances a mixture epoch trained on
        self.failures = []
        self.utterances_seen = 0
        cache = self.feature_cache
        self._cache_counts = (cache.hits, cache.misses) if cache is not None else None

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, checkpoints by the selection metric, and writes test scores and metrics."""
        if self._cache_counts is not None:
            cache = self.feature_cache
            logger.info(
                "Feature cache, %s stage: %d hits, %d misses", stage.name.lower(),
                cache.hits - self._cache_counts[0], cache.misses - self._cache_counts[1],
            )  # fmt: skip
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            if self.failures:
                logger.warning(
                    "Epoch %s: %d of %d training files skipped as unusable",
                    epoch, len(self.failures), self.utterances_seen,
                )  # fmt: skip
            self._check_failure_rate(final=True)
            if self.mixture is not None:
                self._record_mixture_epoch(epoch)
            if self.hparams.lr_schedule_interval == "epoch":
                self._step_schedulers()
            return
        if stage == sb.Stage.VALID and not self.validates(epoch):
            # The dev loader was empty (ShardSampler's gate): log and checkpoint only.
            self._log_stats(
                stats_meta={"epoch": epoch, **self._learning_rates()},
                train_stats={"loss": self.train_loss},
            )
            if self.checkpointer is not None:
                self._save_epoch_checkpoint(epoch, stats=None)
            return
        stats, summary, records, failures = self._stage_stats(stage, stage_loss)
        if stage == sb.Stage.VALID:
            stats.update(self.augmented_stats)
            self._log_stats(
                stats_meta={"epoch": epoch, **self._learning_rates()},
                train_stats={"loss": self.train_loss},
                valid_stats=stats,
            )
            if self.checkpointer is not None:
                self._save_epoch_checkpoint(epoch, stats, candidate=self._is_candidate(stats))
            if hasattr(self.hparams.epoch_counter, "update_metric"):
                self.hparams.epoch_counter.update_metric(stats[self.selection_metric])
            return
        test_set = self.scored_as
        name = test_set.name if test_set is not None else "test"
        self._log_stats(
            stats_meta={"test set": name, "epoch loaded": self.hparams.epoch_counter.current},
            test_stats=stats,
        )
        if sb.utils.distributed.if_main_process():
            folder = Path(self.hparams.output_folder) / "scores"
            protocol = self._scoring_protocol(test_set, len(records), len(failures))
            scores_path, _ = write_test_outputs(folder, name, records, summary, failures, protocol)
            frames_path = self.write_frame_outputs(folder, name)
            if test_set is not None and test_set.report:
                # A debug run scores a few batches: the rest is left out and counted.
                allow_missing = bool(failures) or self.debug
                write_corpus_report(
                    folder, name, scores_path, test_set, allow_missing, frames_path, protocol
                )

    def _scoring_protocol(self, test_set, n_scored, n_failed):
        """How this test set was scored (crop, checkpoints, subset, precision), for its metrics."""
        manifest = test_set.manifest if test_set is not None else None
        return scoring_protocol(
            eval_samples=test_set.eval_samples if test_set is not None else None,
            window_seconds=self.hparams.eval_window_seconds,
            checkpoints=getattr(self, "evaluated_checkpoints", []),
            precision=str(self.eval_precision),
            manifest=manifest,
            n_rows=len(read_manifest(manifest)) if manifest else n_scored + n_failed,
            n_scored=n_scored,
            n_failed=n_failed,
            min_samples=self.hparams.eval_min_samples,
            sample_rate=self.sample_rate,
            partial=f"--debug: the first {self.debug_batches} batches only" if self.debug else None,
        )

    def _stage_stats(self, stage, stage_loss):
        """The statistics of an evaluation stage, over every process's records.

        Returns
        -------
        (dict, dict, list, list)
            Statistics (loss, EER in %, minDCF; on dev also per corpus, and
            a subclass's), the score summary, the gathered records and failures.
        """
        records, failures = gather(self.score_records), gather(self.failures)
        if _world()[1] > 1:  # the loss averaged over every process's utterances
            parts = gather([(float(stage_loss), len(self.score_records))])
            stage_loss = sum(loss * n for loss, n in parts) / max(sum(n for _, n in parts), 1)
        # Test sets are also scored at the decision rule fitted on dev (train.py).
        summary = score_summary(records, self.test_decision if stage == sb.Stage.TEST else None)
        summary["n_failed"] = len(failures)
        stats = {"loss": float(stage_loss), "EER": 100 * summary["eer"], "minDCF": summary["min_dcf"]}
        if stage == sb.Stage.VALID:
            stats.update(self._per_corpus_stats(records, stats))
        return stats, summary, records, failures

    def write_frame_outputs(self, folder, name):
        """Frame-level outputs of a test set: none for an utterance-level model (see
        ``recipes/train_localization.py``); returns the file written, or None."""
        return None

    def _per_corpus_stats(self, records, pooled):
        """EER and minDCF of each validation corpus, when there are several.

        ``valid_pooling: worst`` makes the selection statistics (``EER``,
        ``minDCF``) those of the worst corpus instead of the pooled ones; the
        pooled values are kept as ``EER_pooled`` / ``minDCF_pooled``.
        """
        corpora = sorted({record[3] for record in records})
        if len(corpora) < 2:
            return {}
        stats = {}
        for corpus in corpora:
            summary = score_summary([r for r in records if r[3] == corpus])
            stats[f"EER_{corpus}"] = 100 * summary["eer"]
            stats[f"minDCF_{corpus}"] = summary["min_dcf"]
        if self.hparams.valid_pooling == "worst":
            stats["EER_pooled"], stats["minDCF_pooled"] = pooled["EER"], pooled["minDCF"]
            stats["EER"] = max(stats[f"EER_{c}"] for c in corpora)
            stats["minDCF"] = max(stats[f"minDCF_{c}"] for c in corpora)
        return stats

    def _record_mixture_epoch(self, epoch):
        """Logs the epoch's draw per corpus; writes who trained on what (``mixture/epoch_N.csv``)."""
        rank = _world()[0]
        drawn = gather([(utt, corpus, rank) for utt, corpus in self.drawn])
        if not sb.utils.distributed.if_main_process():
            return
        counts = {name: 0 for name in self.mixture.names}
        for _, corpus, _ in drawn:
            counts[corpus] += 1
        logger.info(
            "Epoch %s trained on %s", epoch,
            ", ".join(f"{count} utterances of {name}" for name, count in counts.items()),
        )  # fmt: skip
        folder = Path(self.hparams.output_folder) / "mixture"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"epoch_{epoch}.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["ID", "corpus", "process"])
            writer.writerows(drawn)

    def _log_stats(self, **stats):
        """Logs to the train log and, when configured, to TensorBoard."""
        self.hparams.train_logger.log_stats(**stats)
        if self.tensorboard_logger is not None:
            self.tensorboard_logger.log_stats(**stats)
