"""Recipe steps shared by ``recipes/train.py`` and ``recipes/evaluate.py``.

A recipe YAML names its corpora under ``data_preparation`` (corpus name -> a
``!name:`` prepare function returning ``{split: manifest}``), picks the training
and validation manifests as ``<corpus>/<split>`` and lists its ``test_sets``
(docs/TRAINING.md shows one). A corpus whose ``data_folder`` is null is skipped
with a log line, and so are the test sets that use it.

Authors
 * speechbrain-nes2net contributors
"""

import importlib.util
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from speechbrain.utils.distributed import run_on_main

from speechbrain_nes2net.codecs import ChannelAugment
from speechbrain_nes2net.evaluation.files import (
    class_scores,
    decision_rates,
    fit_decision,
    write_decision,
)
from speechbrain_nes2net.training.config import RecipeConfigError
from speechbrain_nes2net.training.dataio import (
    audio_pipeline,
    localization_pipeline,
    manifest_dataset,
)
from speechbrain_nes2net.training.feature_cache import (
    FeatureCache,
    ssl_features_fingerprint,
)
from speechbrain_nes2net.training.sampling import CorpusMixtureSampler, parse_data_spec

logger = logging.getLogger(__name__)

#: Seconds a DDP process waits after destroying its process group (see finish_distributed).
FINISH_PAUSE_SECONDS = 0.5


@dataclass
class TestSet:
    """A test set of the recipe: its dataset, manifest and report settings."""

    name: str
    dataset: object
    manifest: str
    report: dict = field(default_factory=dict)
    eval_samples: int = None  # files cropped to their first eval_samples (None: full files)


def finish_distributed():
    """Ends a DDP run in order: a barrier, ``destroy_process_group``, then a short pause.

    A process that left while another was still in a collective left gloo's
    threads to die with the interpreter (SIGABRT at exit). The pause covers a
    second way to that abort: a gloo worker thread releases a finished
    collective's tensors just after the caller has seen it complete, and
    releasing them takes the GIL; a thread that asks for the GIL once the
    interpreter is shutting down ends the process with "terminate called
    without an active exception". With torch 2.14 on a loaded 2-core machine, a
    small two-process DDP script ended so in 5 of 105 runs without the pause
    and in 0 of 150 with it (``time.sleep`` lets that thread finish).

    Example
    -------
    >>> finish_distributed()  # a single process: nothing to do
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        time.sleep(FINISH_PAUSE_SECONDS)


def prepare_corpora(hparams):
    """Runs every data preparation (main process first) and returns the manifests.

    Returns
    -------
    dict
        ``"<corpus>/<split>"`` -> manifest path, for the corpora that are set.
    """
    manifests = {}
    for corpus, prepare in hparams["data_preparation"].items():
        keywords = getattr(prepare, "keywords", {})
        if "data_folder" in keywords and keywords["data_folder"] is None:
            logger.info("Corpus %s has no data_folder: skipped", corpus)
            continue
        # Preparation is idempotent: the other processes only read the result.
        run_on_main(prepare)
        for split, path in prepare().items():
            manifests[f"{corpus}/{split}"] = str(path)
    return manifests


def manifest_for(manifests, reference, what):
    """The manifest of ``<corpus>/<split>``, or an error saying what exists."""
    if reference not in manifests:
        raise RecipeConfigError(
            f"{what}={reference!r} has no manifest; prepared: {sorted(manifests)}"
        )
    return manifests[reference]


class CorpusMixture(torch.utils.data.ConcatDataset):
    """Several corpora concatenated; ``sampler`` draws each training epoch of them by weight.

    Arguments
    ---------
    datasets : list of Dataset
        One dataset per corpus.
    names : list of str
        Their ``<corpus>/<split>`` names.
    sampler : CorpusMixtureSampler, optional
        The training draw (None for validation: every utterance once).
    """

    def __init__(self, datasets, names, sampler=None):
        super().__init__(datasets)
        self.names = list(names)
        self.sampler = sampler


def corpus_datasets(hparams, manifests, key, pipeline, sort_by_duration=False, mixture=False):
    """The dataset of ``train_data`` / ``valid_data``: one corpus, or a :class:`CorpusMixture`.

    The mixture leaves out the corpora whose ``data_folder`` is null; for
    training (``mixture``) it draws with ``mixture_epoch_length``,
    ``mixture_replacement`` and ``seed``.
    """
    spec = parse_data_spec(hparams[key], key)
    if len(spec) > 1:
        prepared = {reference.split("/")[0] for reference in manifests}
        for reference in [r for r in spec if r.split("/")[0] not in prepared]:
            logger.info("%s: %s left out, its corpus is not set", key, reference)
            del spec[reference]
        if not spec:
            raise RecipeConfigError(f"{key}: none of its corpora is set (give their data folders)")
    datasets = [
        manifest_dataset(
            manifest_for(manifests, reference, key), pipeline(), sort_by_duration, corpus=reference
        )
        for reference in spec
    ]
    if len(datasets) == 1:
        return datasets[0]
    sampler = None
    if mixture:
        sampler = CorpusMixtureSampler(
            [len(dataset) for dataset in datasets],
            list(spec.values()),
            epoch_length=hparams["mixture_epoch_length"],
            replacement=hparams["mixture_replacement"],
            seed=hparams["seed"],
        )
        counts = ", ".join(f"{name} {count}" for name, count in zip(spec, sampler.counts()))
        logger.info(
            "Training on a mixture of %d corpora, %d utterances an epoch: %s",
            len(datasets), len(sampler), counts,
        )
    return CorpusMixture(datasets, list(spec), sampler)


def _pipeline(hparams, **options):
    """:func:`audio_pipeline`, or with a ``segment_loss`` the one that also cuts segment labels."""
    options["sample_rate"] = hparams["sample_rate"]
    segment_loss = hparams.get("segment_loss")
    if segment_loss is None:
        return audio_pipeline(**options)
    return localization_pipeline(segment_loss.segment_shift, **options)


def check_localization_data(hparams, manifests):
    """With a ``segment_loss``: every training and validation utterance has segment labels
    at its resolution (:func:`speechbrain_nes2net.segments.check_segment_labels`)."""
    segment_loss = hparams.get("segment_loss")
    if segment_loss is None:
        return
    from speechbrain_nes2net.segments import check_segment_labels

    for key in ("train_data", "valid_data"):
        for reference in parse_data_spec(hparams[key], key):
            if reference not in manifests:
                continue
            try:
                counts = check_segment_labels(manifests[reference], segment_loss.segment_shift)
            except ValueError as err:
                raise RecipeConfigError(f"{key} {reference}: {err}") from None
            logger.info(
                "%s: %d utterances, %d segments of %.2f s, %d of them spoofed", reference,
                counts["n_utterances"], counts["n_segments"], segment_loss.segment_shift,
                counts["n_spoof_segments"],
            )


def train_valid_datasets(hparams, manifests):
    """The training (cropped, augmented) and validation datasets; with a ``segment_loss``
    their items also carry the ``segment_truth`` of the waveform."""
    check_localization_data(hparams, manifests)
    augment = waveform_augmentation(hparams)
    if augment is not None:
        logger.info("Training utterances are augmented: %r", augment)
    train = corpus_datasets(
        hparams, manifests, "train_data", mixture=True,
        pipeline=lambda: _pipeline(
            hparams,
            num_samples=hparams["train_samples"],
            random_crop=hparams["train_random_crop"],
            augment=augment,
        ),
    )  # fmt: skip
    samples = hparams["valid_samples"]
    valid = corpus_datasets(
        hparams, manifests, "valid_data", sort_by_duration=samples is None,
        pipeline=lambda: _pipeline(
            hparams, num_samples=samples, min_samples=hparams["eval_min_samples"]
        ),
    )  # fmt: skip
    return train, valid


def augmented_valid_dataset(hparams, manifests):
    """The dev set through the RawBoost augmentation for ``valid_augmented: True``, else None.

    As the ASVspoof 2019 release's second dev loop: each utterance augmented
    whole, afresh at every validation, then cut to ``valid_samples``.
    """
    if not hparams["valid_augmented"]:
        return None
    samples = hparams["valid_samples"]
    return corpus_datasets(
        hparams, manifests, "valid_data", sort_by_duration=samples is None,
        pipeline=lambda: audio_pipeline(
            sample_rate=hparams["sample_rate"],
            num_samples=samples,
            min_samples=hparams["eval_min_samples"],
            augment=waveform_augmentation(hparams),
        ),
    )  # fmt: skip


def eval_dataset(hparams, manifest, eval_samples=None):
    """An evaluation dataset of a manifest: full utterances or the first ``eval_samples``."""
    return manifest_dataset(
        manifest,
        audio_pipeline(
            sample_rate=hparams["sample_rate"],
            num_samples=eval_samples,
            min_samples=hparams["eval_min_samples"],
        ),
        sort_by_duration=eval_samples is None,
    )


def dev_sets(hparams, manifests, dataset):
    """The development sets (one per ``valid_data`` corpus, ``<corpus>_<split>``), scored
    after training like test sets to fit the shipped decision rule (:func:`fit_run_decision`)."""
    if isinstance(dataset, CorpusMixture):
        parts = zip(dataset.names, dataset.datasets)
    else:
        parts = [(next(iter(parse_data_spec(hparams["valid_data"], "valid_data"))), dataset)]
    return [
        TestSet(
            reference.replace("/", "_"), part, manifest_for(manifests, reference, "valid_data"),
            {"corpus": "eer"},
        )  # fmt: skip
        for reference, part in parts
    ]


def fit_run_decision(hparams, devs):
    """Fits the run's decision rule on its (pooled) development scores; writes ``decision.json``.

    The rule (a calibration and its Bayes threshold at ``decision_prior``) is
    what an export of the run decides with; its error rates on each
    development set go into that set's metrics file as well.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters (``output_folder``, ``decision_prior``).
    devs : list of TestSet
        The development sets, already scored (:func:`dev_sets`).

    Returns
    -------
    DecisionRule
    """
    scores = Path(hparams["output_folder"]) / "scores"
    rule, rates = fit_decision(
        [scores / f"{dev.name}_scores.txt" for dev in devs],
        [dev.manifest for dev in devs],
        hparams["decision_prior"],
    )
    pooled = {"test_set": "+".join(dev.name for dev in devs), **rates}
    for dev in devs:
        path = scores / f"{dev.name}_metrics.json"
        metrics = json.loads(path.read_text())
        metrics.update(decision_rates(rule, *class_scores(scores / f"{dev.name}_scores.txt", dev.manifest)))
        metrics = {k: None if isinstance(v, float) and v != v else v for k, v in metrics.items()}
        path.write_text(json.dumps(metrics, indent=2) + "\n")
        if len(devs) == 1:
            pooled = metrics
    path = write_decision(hparams["output_folder"], rule, pooled)
    logger.info(
        "Decision rule (%s, prior %.3g): bona fide when the score is >= %.4g; on %s "
        "bona fide rejection %.2f%%, spoof acceptance %.2f%% -> %s",
        rule.source, rule.prior, rule.threshold, pooled["test_set"],
        100 * rates["bpcer"], 100 * rates["apcer"], path,
    )
    return rule


#: File of a localisation run holding its segment decision rule.
LOCALIZATION_FILE = "localization.json"


def run_summary(output_folder, tests, seen_attacks=(), debug=False):
    """The end-of-run lines of each test set: per-attack EER, the decision's rates, the EER.

    Attacks seen in training and unseen ones apart, so that the generalisation
    gap shows; at the shipped threshold, the shares of bona fide trials
    rejected and of spoofs accepted; the test EER line last.

    Arguments
    ---------
    output_folder : str or Path
        The run's output folder (holds ``scores/``).
    tests : list of TestSet
        The scored test sets.
    seen_attacks : collection of str
        Attacks of the training data.
    debug : bool
        Whether this was a ``--debug`` run.

    Returns
    -------
    list of str
    """
    lines = []
    scores = Path(output_folder) / "scores"
    percent = lambda value: "n/a" if value is None else f"{100 * value:.2f}%"  # noqa: E731
    for test_set in tests:
        metrics = json.loads((scores / f"{test_set.name}_metrics.json").read_text())
        report_path = scores / f"{test_set.name}_report.json"
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        groups = {True: [], False: []}
        for attack, block in sorted(report.get("breakdowns", {}).get("attack", {}).items()):
            groups[attack in seen_attacks].append(f"{attack} {percent(block.get('eer'))}")
        parts = [f"{', '.join(groups[True])} (seen in training)"] if groups[True] else []
        parts += [f"{', '.join(groups[False])} (unseen)"] if groups[False] else []
        if parts:
            lines.append(f"{test_set.name} EER per attack: " + "; ".join(parts))
        if metrics.get("decision_threshold") is not None:
            lines.append(
                f"{test_set.name} at the shipped threshold {metrics['decision_threshold']:.4g}: "
                f"{percent(metrics.get('bpcer'))} of bona fide rejected, "
                f"{percent(metrics.get('apcer'))} of spoofs accepted"
            )
        for shift, block in ((report.get("localization") or {}).get("resolutions") or {}).items():
            lines.append(
                f"{test_set.name} segments of {shift} s: segment EER {percent(block.get('eer'))}, "
                f"range EER {percent(block.get('range_eer'))}"
            )
        lines.append(
            f"{test_set.name}: EER {percent(metrics['eer'])} "
            f"({metrics['n_bonafide']} bona fide, {metrics['n_spoof']} spoof"
            + (", debug run: a few batches" if debug else "")
            + f") -> {scores}"
        )
    return lines


def scored_test_sets(hparams, manifests):
    """The test sets to score: the YAML's ``test_sets`` whose corpus is prepared, or instead
    the ``test_manifests`` (full utterances, ``eer`` report, named by their file)."""
    given = hparams["test_manifests"] or []
    if given:
        names = [Path(path).stem for path in given]
        if len(set(names)) != len(names):
            raise RecipeConfigError(f"test_manifests {given} have repeated file names {names}")
        return [
            TestSet(name, eval_dataset(hparams, path), str(path), {"corpus": "eer"})
            for name, path in zip(names, given)
        ]
    prepared = {key.split("/")[0] for key in manifests}
    sets = []
    for name, spec in (hparams["test_sets"] or {}).items():
        if spec["data"].split("/")[0] not in prepared:
            logger.info("Test set %s skipped: corpus %s is not set", name, spec["data"])
            continue
        manifest = manifest_for(manifests, spec["data"], f"test_sets.{name}.data")
        dataset = eval_dataset(hparams, manifest, spec.get("eval_samples"))
        sets.append(
            TestSet(name, dataset, manifest, dict(spec.get("report") or {}), spec.get("eval_samples"))
        )
    return sets


# Optional components, each switched on by a scalar key, so that the command
# line can turn it on (HyperPyYAML cannot override a null key with a mapping).


def waveform_augmentation(hparams):
    """The per-utterance training augmentation: RawBoost (``rawboost_algo``), then the codec
    and channel conditions (``codec_augment``), or None when both are off.

    Example
    -------
    >>> from speechbrain_nes2net.training.rawboost import RawBoost
    >>> waveform_augmentation({"waveform_augment": RawBoost(algo=0), "codec_augment": False}) is None
    True
    >>> waveform_augmentation({"waveform_augment": RawBoost(algo=4), "codec_augment": False})
    RawBoost(algo=4 (...), seed=None)
    """
    augments = []
    rawboost = hparams["waveform_augment"]
    if rawboost is not None and getattr(rawboost, "algo", None) != 0:
        augments.append(rawboost)
    if hparams["codec_augment"]:
        conditions, prob = hparams["codec_conditions"], hparams["codec_augment_prob"]
        augments.append(ChannelAugment(conditions, prob, hparams["sample_rate"]))
    if len(augments) > 1:
        return torch.nn.Sequential(*augments)
    return augments[0] if augments else None


def feature_cache(hparams):
    """The SSL feature cache in ``<save_folder>/ssl_states`` (``feature_cache: True``), or None.

    Example
    -------
    >>> feature_cache({"feature_cache": False}) is None
    True
    """
    if not hparams["feature_cache"]:
        return None
    dtype = hparams["feature_cache_dtype"]
    fingerprint = ssl_features_fingerprint(hparams["ssl_source"], hparams["ssl_normalize"], dtype)
    return FeatureCache(Path(hparams["save_folder"]) / "ssl_states", fingerprint, dtype)


def tensorboard_logger(hparams):
    """A TensorBoard logger writing to ``<output_folder>/tensorboard`` (``tensorboard: True``), or None.

    Example
    -------
    >>> tensorboard_logger({"tensorboard": False}) is None
    True
    """
    if not hparams["tensorboard"]:
        return None
    from speechbrain.utils.train_logger import TensorboardLogger

    if importlib.util.find_spec("tensorboard") is None:
        raise RecipeConfigError(
            "tensorboard: True needs the tensorboard package: "
            "pip install 'speechbrain-nes2net[tensorboard]'"
        )
    return TensorboardLogger(save_dir=str(Path(hparams["output_folder"]) / "tensorboard"))


def batch_augmentation(hparams):
    """Noise and reverberation on training batches from ``noise_csv`` / ``rir_csv``, or None.

    One of them is applied to a batch with probability ``batch_augment_prob``
    (the ASVspoof 5 release: MUSAN or RIR, 0.5); noise at 0-15 dB SNR (the
    release's range for MUSAN noise).

    Example
    -------
    >>> batch_augmentation({"noise_csv": None, "rir_csv": None}) is None
    True
    """
    from speechbrain.augment.augmenter import Augmenter
    from speechbrain.augment.time_domain import AddNoise, AddReverb

    augmentations = []
    if hparams["noise_csv"]:
        augmentations.append(AddNoise(csv_file=hparams["noise_csv"], snr_low=0, snr_high=15))
    if hparams["rir_csv"]:
        augmentations.append(AddReverb(csv_file=hparams["rir_csv"]))
    if not augmentations:
        return None
    return Augmenter(
        concat_original=False,
        augment_prob=hparams["batch_augment_prob"],
        min_augmentations=1,
        max_augmentations=1,
        augmentations=augmentations,
    )

