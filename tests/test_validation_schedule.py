"""When the recipes validate, which checkpoints become selection candidates, and why.

- ``valid_epochs: cosine_minima`` is the CtrSVDD release's ``check_condition``
  (the lists its ``train.py`` gives, recorded in
  ``tests/data/official_training/ctrsvdd_nes2net_x.pt``); the recipe run that
  validates on those epochs, and resumes on schedule, is in ``test_recipes.py``.
- ``valid_augmented`` with ``selection_candidates: either_loss_improves`` is the
  ASVspoof 2019 release's dev selection (``main.py``: a dev loss with and one
  without RawBoost; an epoch is saved when either is at most its lowest so far).
"""

import types
from functools import partial

import pytest
from brains import demo_brain, fit, recipe_settings
from test_official_training import load_fixture
from torch.optim.lr_scheduler import CosineAnnealingLR

from speechbrain_nes2net.lobes.ssl import make_tiny_ssl_model
from speechbrain_nes2net.training.brain import AntiSpoofBrain
from speechbrain_nes2net.training.config import (
    RecipeConfigError,
    check_recipe_config,
    cosine_minima,
    validates,
)
from speechbrain_nes2net.training.recipe import (
    augmented_valid_dataset,
    prepare_corpora,
)

# ------------------------------------------------------------ valid_epochs


def test_cosine_minima_is_the_release_check_condition():
    recorded = load_fixture("ctrsvdd_nes2net_x.pt")["check_condition"]
    assert set(recorded) == {"1", "2", "3", "4", "5"}
    for period, epochs in recorded.items():
        assert [e for e in range(1, 76) if cosine_minima(e, int(period))] == epochs, period
    # The released schedule: T_max 5, 75 epochs.
    assert recorded["5"] == [1, 14, 15, 16, 24, 25, 26, 34, 35, 36, 44, 45, 46, 54, 55, 56,
                             64, 65, 66, 74, 75]  # fmt: skip


def test_the_period_is_the_cosine_t_max_unless_given():
    hparams = {
        "valid_epochs": "cosine_minima",
        "lr_scheduler": partial(CosineAnnealingLR, T_max=2),
        "lr_schedule_interval": "epoch",
    }
    assert [e for e in range(1, 13) if validates(hparams, e)] == [1, 6, 7, 9, 10, 11]
    hparams["valid_epochs_period"] = 5
    assert [e for e in range(1, 17) if validates(hparams, e)] == [1, 14, 15, 16]
    hparams["valid_epochs"] = "all"
    assert all(validates(hparams, e) for e in range(1, 17))
    # The Brain asks the same question of its namespace of hyperparameters.
    assert validates(types.SimpleNamespace(**hparams), 3)


CONFIG_ERRORS = [
    pytest.param(
        {"valid_epochs": "minima"}, ["valid_epochs", "'cosine_minima'"], id="unknown-policy"
    ),
    pytest.param(
        {"valid_epochs": "cosine_minima", "lr_scheduler": None},
        ["valid_epochs: cosine_minima", "T_max=None", "valid_epochs_period"],
        id="cosine-minima-without-a-cosine",
    ),
    pytest.param(
        {"valid_epochs": "cosine_minima", "lr_schedule_interval": "step",
         "lr_scheduler": partial(CosineAnnealingLR, T_max=100)},
        ["lr_schedule_interval='step'", "valid_epochs_period"],
        id="cosine-minima-on-a-per-step-cosine",
    ),
    pytest.param(
        {"valid_epochs": "cosine_minima", "valid_epochs_period": 0},
        ["valid_epochs_period=0", ">= 1"],
        id="period-zero",
    ),
    pytest.param(
        {"valid_augmented": True, "waveform_augment": None},
        ["valid_augmented: True", "RawBoost", "rawboost_algo: 0"],
        id="augmented-pass-without-augmentation",
    ),
    pytest.param(
        {"selection_metric": "aug_loss"},
        ["selection_metric='aug_loss'", "valid_augmented: True"],
        id="augmented-metric-without-the-pass",
    ),
    pytest.param(
        {"selection_candidates": "either_loss_improves"},
        ["either_loss_improves", "valid_augmented: True"],
        id="either-rule-without-the-pass",
    ),
    pytest.param(
        {"selection_candidates": "best"},
        ["selection_candidates='best'", "'either_loss_improves'"],
        id="unknown-candidate-rule",
    ),
    pytest.param(
        {"valid_pooling": "mean"}, ["valid_pooling='mean'", "'worst'"], id="unknown-pooling"
    ),
]


@pytest.mark.parametrize("hparams, fragments", CONFIG_ERRORS)
def test_validation_settings_are_checked_with_a_clear_message(hparams, fragments, tmp_path):
    check_recipe_config(recipe_settings("demo.yaml", tmp_path))  # the base passes
    with pytest.raises(RecipeConfigError) as error:
        check_recipe_config(recipe_settings("demo.yaml", tmp_path, **hparams))
    for fragment in fragments:
        assert fragment in str(error.value)


# ------------------------------------------------- the ASVspoof 2019 selection


def release_saved_epochs(dev_losses):
    """The epochs ASVspoof 2019 main.py saves (lines 331-332 and 389-397), transcribed.

    Its dev loss without augmentation is divided by twice the dev set size
    (``num_total`` is not reset between the two dev loops, lines 361-385), so
    it is half the mean loss; the rule compares it only with itself, which
    the factor does not change.
    """
    loss_min_w_aug = loss_min_wo_aug = 999
    saved = []
    for epoch, (clean, augmented) in enumerate(dev_losses, start=1):
        val_loss_w_aug, val_loss_wo_aug = augmented, clean / 2
        save_flag = False
        if val_loss_w_aug <= loss_min_w_aug:
            loss_min_w_aug = val_loss_w_aug
            save_flag = True
        if val_loss_wo_aug <= loss_min_wo_aug:
            loss_min_wo_aug = val_loss_wo_aug
            save_flag = True
        if save_flag:
            saved.append(epoch)
    return saved


def test_either_loss_improves_is_the_release_save_rule():
    # (clean, augmented) dev losses: both new, the augmented one only, a tie of
    # the augmented one, neither, a tie of the clean one, both.
    losses = [
        (0.50, 0.60), (0.55, 0.58), (0.55, 0.58), (0.52, 0.70), (0.50, 0.90), (0.40, 0.50)
    ]  # fmt: skip
    brain = types.SimpleNamespace(
        hparams=types.SimpleNamespace(selection_candidates="either_loss_improves"),
        selection_metric="loss",
        dev_lows={},
    )
    ours = [
        epoch
        for epoch, (clean, augmented) in enumerate(losses, start=1)
        if AntiSpoofBrain._is_candidate(brain, {"loss": clean, "aug_loss": augmented})
    ]
    assert ours == release_saved_epochs(losses) == [1, 2, 3, 5, 6]
    assert brain.dev_lows == {"loss": 0.40, "aug_loss": 0.50}
    # Whatever ranks the candidates (the release's README: the dev EER), the
    # dev losses decide which epochs are candidates.
    brain.selection_metric, brain.dev_lows = "EER", {}
    stats = [{"loss": c, "aug_loss": a, "EER": 1.0, "aug_EER": 1.0} for c, a in losses]
    assert [e for e, s in enumerate(stats, 1) if AntiSpoofBrain._is_candidate(brain, s)] == [
        1, 2, 3, 5, 6
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_ssl(tmp_path_factory):
    """The demo's tiny SSL model (no dropout)."""
    return make_tiny_ssl_model(tmp_path_factory.mktemp("ssl") / "tiny")


class Recorder:
    """Notes what every end-of-epoch checkpoint of a Brain was: epoch, statistics, candidate."""

    def __init__(self, brain):
        self.saves = []
        save = brain._save_epoch_checkpoint

        def recording_save(epoch, stats, candidate=False):
            """Records, then saves as the Brain would."""
            self.saves.append((epoch, dict(stats) if stats else None, candidate))
            return save(epoch, stats, candidate)

        brain._save_epoch_checkpoint = recording_save


def release_selection_brain(folder, ssl, epochs):
    """The demo Brain with the ASVspoof 2019 dev selection and an augmented dev set."""
    brain, hparams, train, valid = demo_brain(
        folder, ssl, number_of_epochs=epochs, keep_checkpoints=10, n_dev=8, lr_backend=0.05
    )
    from speechbrain_nes2net.training.rawboost import RawBoost

    settings = {
        "valid_augmented": True,
        "selection_candidates": "either_loss_improves",
        "selection_metric": "loss",
        "waveform_augment": RawBoost(algo=3),  # strong enough to change the dev loss
    }
    hparams.update(settings)
    for key, value in settings.items():
        setattr(brain.hparams, key, value)
    augmented = augmented_valid_dataset(hparams, prepare_corpora(hparams))
    return brain, hparams, train, valid, augmented


@pytest.mark.slow
def test_the_release_selection_runs_resumes_and_averages_by_it(tmp_path, tiny_ssl):
    folder = tmp_path / "run"
    brain, hparams, train, valid, augmented = release_selection_brain(folder, tiny_ssl, 3)
    recorder = Recorder(brain)
    fit(brain, hparams, train, valid, augmented_valid_set=augmented)
    # A run resumed from its last checkpoint (a new Brain, as after a restart).
    brain, hparams, train, valid, augmented = release_selection_brain(folder, tiny_ssl, 6)
    resumed = Recorder(brain)
    fit(brain, hparams, train, valid, augmented_valid_set=augmented)

    saves = recorder.saves + resumed.saves
    assert [epoch for epoch, _, _ in saves] == [1, 2, 3, 4, 5, 6]
    stats = [s for _, s, _ in saves]
    assert all(s["aug_loss"] != s["loss"] for s in stats)  # the augmented pass is another pass
    candidates = [epoch for epoch, _, candidate in saves if candidate]
    # The release's rule on the same dev losses, across the restart: the lowest
    # values so far came back from the checkpoint.
    assert candidates == release_saved_epochs([(s["loss"], s["aug_loss"]) for s in stats])
    assert candidates[0] == 1

    # Only candidates can be selected; the best by the clean dev loss first.
    checkpointer = hparams["checkpointer"]
    kept = {c.meta["epoch"]: c for c in checkpointer.list_checkpoints()}
    selectable = sorted(e for e, c in kept.items() if "loss" in c.meta)
    assert selectable == candidates
    assert all(kept[e].meta.get("candidate") is False for e in kept if e not in candidates)
    brain.hparams.average_checkpoints = 2
    brain.on_evaluate_start(min_key="loss")
    by_loss = sorted(candidates, key=lambda e: stats[e - 1]["loss"])[:2]
    assert sorted(kept[e].path.name for e in by_loss) == sorted(brain.evaluated_checkpoints)


def test_a_setting_missing_from_the_yaml_is_named(tmp_path):
    # The YAML is the one source of defaults: a YAML without a setting is refused, by name.
    hparams = recipe_settings("demo.yaml", tmp_path)
    del hparams["valid_pooling"]
    with pytest.raises(RecipeConfigError, match="the YAML has no 'valid_pooling': every setting"):
        check_recipe_config(hparams)
