"""The demo recipe's Brain built in the test process, for tests of what a training step does."""

from pathlib import Path

from hyperpyyaml import load_hyperpyyaml

from speechbrain_nes2net.training.brain import AntiSpoofBrain
from speechbrain_nes2net.training.recipe import prepare_corpora, train_valid_datasets

ROOT = Path(__file__).resolve().parents[1]


def demo_brain(folder, ssl_source, **overrides):
    """The demo recipe's Brain and datasets, built in this process."""
    overrides = {
        "output_folder": str(folder),
        "ssl_source": ssl_source,
        "n_train": 8,
        "n_dev": 4,
        "n_test": 4,
        **overrides,
    }
    with open(ROOT / "hparams" / "demo.yaml", encoding="utf-8") as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    Path(hparams["output_folder"]).mkdir(parents=True, exist_ok=True)
    train, valid = train_valid_datasets(hparams, prepare_corpora(hparams))
    brain = AntiSpoofBrain(
        modules=hparams["modules"],
        hparams=hparams,
        run_opts={"device": "cpu", "noprogressbar": True},
        checkpointer=hparams["checkpointer"],
    )
    return brain, hparams, train, valid


def recipe_settings(yaml_name, folder, **changes):
    """A shipped recipe YAML loaded whole (nothing prepared or trained), then ``changes`` set.

    Configuration checks read every setting of the recipe, so the tests of one
    rule start from a complete, valid YAML and change only what they test.
    """
    with open(ROOT / "hparams" / yaml_name, encoding="utf-8") as handle:
        hparams = load_hyperpyyaml(handle, {"output_folder": str(folder)})
    hparams.update(changes)
    return hparams


def fit(brain, hparams, train, valid, **options):
    """Trains with the demo's loader settings (``options``: more ``Brain.fit`` arguments)."""
    brain.fit(
        hparams["epoch_counter"], train, valid,
        train_loader_kwargs=hparams["train_dataloader_options"],
        valid_loader_kwargs=hparams["eval_dataloader_options"],
        **options,
    )  # fmt: skip
