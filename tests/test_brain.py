"""The Brain's training loop, in-process on the embedded demo: what a training step really does."""

import pytest
import torch
from brains import demo_brain, fit

from speechbrain_nes2net.lobes.ssl import make_tiny_ssl_model


@pytest.fixture(scope="module")
def ssl_with_dropout(tmp_path_factory):
    """A tiny WavLM whose dropout makes train mode and eval mode differ."""
    return make_tiny_ssl_model(tmp_path_factory.mktemp("ssl") / "tiny_dropout", dropout=0.3)


def record_ssl_modes(brain, hparams):
    """Records (epoch, training flag) of the transformers model at every call in a training stage."""
    calls = []
    model = hparams["ssl"].ssl.model

    def hook(module, _inputs):
        """Notes whether the SSL model runs in train mode (dropout on)."""
        if torch.is_grad_enabled() or brain.ssl_frozen:
            calls.append((brain.hparams.epoch_counter.current, module.training))

    model.register_forward_pre_hook(hook)
    return calls


@pytest.mark.slow
def test_a_frozen_ssl_model_runs_in_eval_mode_during_training(tmp_path, ssl_with_dropout):
    # Brain.fit puts every module in train mode; a frozen SSL model must still
    # run without dropout (and without a graph), or its features are noisy.
    brain, hparams, train, valid = demo_brain(
        tmp_path / "frozen", ssl_with_dropout, freeze_ssl=True, number_of_epochs=1
    )
    calls = record_ssl_modes(brain, hparams)
    before = {k: v.clone() for k, v in hparams["ssl"].state_dict().items()}
    fit(brain, hparams, train, valid)
    assert calls and not any(training for _, training in calls)
    after = hparams["ssl"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_ssl_frozen_for_the_first_epochs_then_fine_tuned(tmp_path, ssl_with_dropout):
    brain, hparams, train, valid = demo_brain(
        tmp_path / "warmup", ssl_with_dropout, ssl_frozen_epochs=1, number_of_epochs=2
    )
    calls = record_ssl_modes(brain, hparams)
    fit(brain, hparams, train, valid)
    assert {training for epoch, training in calls if epoch == 1} == {False}
    assert {training for epoch, training in calls if epoch == 2} == {True}


@pytest.mark.slow
def test_evaluation_averages_the_best_checkpoints_elementwise(tmp_path, ssl_with_dropout):
    brain, hparams, train, valid = demo_brain(
        tmp_path / "average", ssl_with_dropout, number_of_epochs=2, keep_checkpoints=2
    )
    fit(brain, hparams, train, valid)
    checkpoints = hparams["checkpointer"].list_checkpoints()
    assert len(checkpoints) == 2
    brain.hparams.average_checkpoints = 2
    brain.on_evaluate_start(min_key="EER")
    for name in ("aggregator", "backend"):
        first, second = (torch.load(ckpt.paramfiles[name]) for ckpt in checkpoints)
        loaded = hparams[name].state_dict()
        floats = [key for key in loaded if loaded[key].is_floating_point()]
        for key in floats:
            assert torch.allclose(loaded[key], (first[key] + second[key]) / 2, atol=1e-7), key
        assert any(not torch.equal(first[key], second[key]) for key in floats)
