"""Recipe plumbing shared by ``recipes/train.py`` and ``recipes/evaluate.py``.

A recipe YAML names its corpora under ``data_preparation`` (corpus name ->
a ``!name:`` prepare function returning ``{split: manifest}``), picks the
training and validation manifests as ``<corpus>/<split>`` (``train_data``,
``valid_data``), and lists its test sets under ``test_sets``::

    test_sets:
        asvspoof2021_la_eval:
            data: asvspoof2021_la/eval
            eval_samples: 64600      # first 64,600 samples, repeat-padded
            report:                  # optional corpus report (speechbrain_nes2net.reports)
                corpus: asvspoof2021_la
                keys_dir: !ref <asvspoof2021_folder>/keys
        in_the_wild:
            data: in_the_wild/eval   # full utterances
            report: {corpus: in_the_wild}

A corpus whose ``data_folder`` is null is skipped with a log line, and so are
the test sets that use it.

Authors
 * speechbrain-nes2net contributors
"""

import logging
from dataclasses import dataclass, field

from speechbrain.utils.distributed import run_on_main

from speechbrain_nes2net.dataio import audio_pipeline, manifest_dataset

logger = logging.getLogger(__name__)

TEST_SET_KEYS = {"data", "eval_samples", "report"}


@dataclass
class TestSet:
    """A test set of the recipe: its dataset, manifest and report settings."""

    name: str
    dataset: object
    manifest: str
    report: dict = field(default_factory=dict)


class RecipeConfigError(ValueError):
    """A recipe YAML that cannot work, with what to fix."""


def check_recipe_config(hparams):
    """Catches configuration mistakes before any data or model work.

    Arguments
    ---------
    hparams : dict
        The loaded recipe YAML.

    Raises
    ------
    RecipeConfigError
        Naming the key and what is expected.
    """
    preparation = hparams.get("data_preparation")
    if not isinstance(preparation, dict) or not preparation:
        raise RecipeConfigError(
            "data_preparation must map corpus names to !name: prepare functions"
        )
    for key in ("train_data", "valid_data"):
        _check_reference(hparams, key, hparams.get(key), preparation)
    for name, spec in (hparams.get("test_sets") or {}).items():
        if not isinstance(spec, dict) or "data" not in spec:
            raise RecipeConfigError(
                f"test_sets.{name} must be a mapping with a 'data: <corpus>/<split>' entry"
            )
        unknown = set(spec) - TEST_SET_KEYS
        if unknown:
            raise RecipeConfigError(
                f"test_sets.{name} has unknown keys {sorted(unknown)}; "
                f"allowed: {sorted(TEST_SET_KEYS)}"
            )
        _check_reference(hparams, f"test_sets.{name}.data", spec["data"], preparation)
        report = spec.get("report")
        if report is not None and not (isinstance(report, dict) and "corpus" in report):
            raise RecipeConfigError(
                f"test_sets.{name}.report must be a mapping with a 'corpus' entry "
                "(and that corpus' report options)"
            )


def _check_reference(hparams, key, value, preparation):
    if not isinstance(value, str) or value.count("/") != 1:
        raise RecipeConfigError(f"{key} must be '<corpus>/<split>', got {value!r}")
    corpus = value.split("/")[0]
    if corpus not in preparation:
        raise RecipeConfigError(
            f"{key}={value!r} names corpus {corpus!r}, which is not under "
            f"data_preparation (have: {sorted(preparation)})"
        )


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


def train_valid_datasets(hparams, manifests):
    """The training (cropped, augmented) and validation datasets."""
    train = manifest_dataset(
        manifest_for(manifests, hparams["train_data"], "train_data"),
        audio_pipeline(
            num_samples=hparams["train_samples"],
            random_crop=hparams.get("train_random_crop", True),
            augment=hparams.get("waveform_augment"),
        ),
    )
    valid = eval_dataset(hparams, manifests, hparams["valid_data"], hparams.get("valid_samples"))
    return train, valid


def eval_dataset(hparams, manifests, reference, eval_samples=None):
    """An evaluation dataset: full utterances or the first ``eval_samples``."""
    return manifest_dataset(
        manifest_for(manifests, reference, "evaluation data"),
        audio_pipeline(
            num_samples=eval_samples,
            min_samples=hparams.get("eval_min_samples", 0),
        ),
        sort_by_duration=eval_samples is None,
    )


def test_sets(hparams, manifests):
    """The YAML's test sets whose corpus is prepared, as :class:`TestSet` s."""
    prepared = {key.split("/")[0] for key in manifests}
    sets = []
    for name, spec in (hparams.get("test_sets") or {}).items():
        if spec["data"].split("/")[0] not in prepared:
            logger.info("Test set %s skipped: corpus %s is not set", name, spec["data"])
            continue
        manifest = manifest_for(manifests, spec["data"], f"test_sets.{name}.data")
        dataset = eval_dataset(hparams, manifests, spec["data"], spec.get("eval_samples"))
        sets.append(TestSet(name, dataset, manifest, dict(spec.get("report") or {})))
    return sets
