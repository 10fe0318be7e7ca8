"""The training objectives compute the official losses, and every recipe configures them as released."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml

from speechbrain_nes2net.lobes.ssl import make_tiny_ssl_model
from speechbrain_nes2net.training.losses import BinaryFocalLoss, WeightedCrossEntropy

ROOT = Path(__file__).resolve().parents[1]


def mixed_batch(n_out, seed=0):
    """Random logits and labels with both classes, more spoof than bona fide (as in the corpora)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(12, n_out, generator=generator, dtype=torch.float64) * 3
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    return logits, labels


def test_weighted_cross_entropy_weights_spoof_at_index_0():
    # The releases: weight 0.1 on spoof (index 0), 0.9 on bona fide (index 1).
    logits, labels = mixed_batch(2)
    expected = F.cross_entropy(logits, labels, weight=torch.tensor([0.1, 0.9], dtype=torch.float64))
    assert torch.allclose(WeightedCrossEntropy()(logits, labels), expected, rtol=1e-6)  # float32 weights
    swapped = F.cross_entropy(logits, labels, weight=torch.tensor([0.9, 0.1], dtype=torch.float64))
    assert not torch.allclose(expected, swapped, rtol=1e-3)  # the batch tells the two apart


def test_binary_focal_loss_is_the_official_formula():
    # Official BinaryFocalLoss: BCE on soft targets 0.05 / 0.95, times alpha (1 - p_t)^gamma.
    logits, labels = mixed_batch(1, seed=1)
    targets = torch.where(labels == 1, 0.95, 0.05).to(torch.float64).view(-1, 1)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    expected = (0.25 * (1 - torch.exp(-bce)) ** 2 * bce).mean()
    assert torch.allclose(BinaryFocalLoss()(logits, labels), expected, rtol=1e-12)


#: The objective each recipe trains with, as released (docs/DESIGN.md, section 4).
RELEASED_OBJECTIVES = {
    "nes2net_ctrsvdd.yaml": "focal",
    "nes2net_x_ctrsvdd.yaml": "focal",
    "nes2net_x_selu_ctrsvdd.yaml": "focal",
    "aasist_ctrsvdd.yaml": "focal",
    "demo.yaml": "focal",
    "demo_localization.yaml": "focal",
    "nes2net_x_custom.yaml": "focal",
    "nes2net_x_hubert_ctrsvdd.yaml": "focal",
    "nes2net_x_multi.yaml": "weighted_ce",
    "nes2net_x_asvspoof2019.yaml": "weighted_ce",
    "nes2net_x_asvspoof5.yaml": "weighted_ce",
    "nes2net_x_partialspoof.yaml": "weighted_ce",
    "nes2net_x_partialspoof_localization.yaml": "weighted_ce",
}


def test_every_recipe_is_listed():
    assert {p.name for p in (ROOT / "hparams").glob("*.yaml")} == set(RELEASED_OBJECTIVES)


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory):
    return make_tiny_ssl_model(tmp_path_factory.mktemp("ssl") / "tiny_wavlm")


@pytest.mark.parametrize("yaml_name", sorted(RELEASED_OBJECTIVES))
def test_recipe_loss_is_configured_as_released(yaml_name, tiny_wavlm, tmp_path):
    overrides = {
        "output_folder": str(tmp_path / "out"),
        "ssl_source": tiny_wavlm,
        "ssl_dim": 64,
        "ssl_layers": 3,
    }
    if re.search(r"^data_folder:", (ROOT / "hparams" / yaml_name).read_text(), re.M) and not yaml_name.startswith("demo"):
        overrides["data_folder"] = str(tmp_path / "data")
    with open(ROOT / "hparams" / yaml_name, encoding="utf-8") as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    loss, backend = hparams["loss"], hparams["backend"]
    n_out = backend.fc.out_features if hasattr(backend, "fc") else backend.out_layer.out_features
    if RELEASED_OBJECTIVES[yaml_name] == "focal":
        assert isinstance(loss, BinaryFocalLoss) and n_out == 1
        assert (loss.alpha, loss.gamma) == (0.25, 2.0)
        assert (loss.spoof_target, loss.bonafide_target) == (0.05, 0.95)
    else:
        assert isinstance(loss, WeightedCrossEntropy) and n_out == 2
        assert loss.weight.tolist() == pytest.approx([0.1, 0.9])
    # And the configured object computes that loss on a mixed batch.
    logits, labels = mixed_batch(n_out, seed=2)
    if n_out == 2:
        expected = F.cross_entropy(logits, labels, weight=torch.tensor([0.1, 0.9], dtype=torch.float64))
        assert torch.allclose(loss(logits, labels), expected, rtol=1e-6)
