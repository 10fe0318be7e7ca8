"""The frame-level Nes2Net head and its segment objective."""

import pytest
import torch
import torch.nn.functional as F

from brains import recipe_settings

from speechbrain_nes2net.lobes.localization import Nes2NetLocalizer, pool_frame_logits
from speechbrain_nes2net.lobes.nes2net import Nes2NetX
from speechbrain_nes2net.training.config import RecipeConfigError, check_recipe_config
from speechbrain_nes2net.training.losses import SegmentLoss


def trained_bn(model, dim=32):
    """Non-trivial BatchNorm statistics, then eval mode."""
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(torch.randn(4, 25, dim, generator=torch.Generator().manual_seed(seed)))
    return model.eval()


@pytest.mark.parametrize("pooling", ["mean", "ASTP"])
def test_utterance_logits_are_those_of_the_wrapped_backend(pooling):
    torch.manual_seed(0)
    model = trained_bn(Nes2NetLocalizer(
        "Nes2NetX", input_size=32, outer_ratio=4, inner_ratio=4, pooling=pooling, n_out=2,
        attention_channels=8,
    ))  # fmt: skip
    plain = Nes2NetX(input_size=32, outer_ratio=4, inner_ratio=4, pooling=pooling, n_out=2,
                     attention_channels=8).eval()
    plain.load_state_dict(model.backend.state_dict())
    feats, lengths = torch.randn(3, 40, 32), torch.tensor([1.0, 0.6, 0.3])
    logits, _ = model.forward_with_frames(feats, lengths)
    assert torch.allclose(logits, plain(feats, lengths), atol=1e-5)
    assert torch.allclose(model(feats, lengths), plain(feats, lengths), atol=1e-6)


def test_frame_logits_of_a_padded_batch_are_those_of_each_file_alone():
    torch.manual_seed(1)
    model = trained_bn(Nes2NetLocalizer("Nes2Net", input_size=32, outer_ratio=4, inner_ratio=4))
    feats = torch.randn(2, 40, 32)
    _, batch = model.forward_with_frames(feats, torch.tensor([1.0, 0.5]))
    _, alone = model.forward_with_frames(feats[1:, :20])
    assert torch.allclose(batch[1, :20], alone[0], atol=1e-5)
    assert (batch[1, 20:] == 0).all()
    # The frame head is a linear layer on the D-dim frames: no reduction layer.
    assert model.frame_fc.in_features == 32 and model.frame_fc.out_features == 1
    frames = model.frames(feats[1:, :20])
    assert torch.allclose(alone, model.frame_fc(frames).squeeze(-1), atol=1e-6)


def test_segments_pool_frames_from_the_start_and_never_take_padding():
    logits = torch.tensor([[3.0, 1.0, 2.0, 5.0, -1.0, -7.0], [4.0, 2.0, -9.0, -9.0, -9.0, -9.0]])
    counts = torch.tensor([5, 2])  # frame 5 of row 0 and frames 2-5 of row 1 are padding
    pooled, segments = pool_frame_logits(logits, counts, 2, "min")
    assert pooled.tolist() == [[1.0, 2.0, -1.0], [2.0, 0.0, 0.0]] and segments.tolist() == [3, 1]
    mean, _ = pool_frame_logits(logits, counts, 2, "mean")
    assert mean.tolist() == [[2.0, 3.5, -1.0], [3.0, 0.0, 0.0]]


def test_segment_loss_is_class_weighted_bce_over_valid_segments():
    generator = torch.Generator().manual_seed(0)
    frame_logits = torch.randn(3, 12, generator=generator, dtype=torch.float64) * 2
    # Row 1: 9 frames make 5 segments for 6 labels; row 2: 6 frames make 3 segments
    # for 2 labels (the 9s are padding). The shorter decides.
    frame_counts = torch.tensor([12, 9, 6])
    targets = torch.tensor([[1, 1, 0, 0, 1, 1], [0, 0, 1, 1, 1, 0], [1, 0, 9, 9, 9, 9]])
    target_counts = torch.tensor([6, 6, 2])
    loss = SegmentLoss(segment_shift=0.04, spoof_weight=0.7, bonafide_weight=0.3)
    value = loss(frame_logits, frame_counts, targets, target_counts)
    # By hand: min of frame pairs; row 1 has ceil(9 / 2) = 5 segments.
    expected_num, expected_den = 0.0, 0.0
    for row, (n_frames, n_labels) in enumerate(zip([12, 9, 6], [6, 6, 2])):
        frames = frame_logits[row, :n_frames]
        segments = [frames[k : k + 2].min() for k in range(0, n_frames, 2)]
        for k in range(min(len(segments), n_labels)):
            y = float(targets[row, k])
            weight = 0.3 if y == 1 else 0.7
            bce = F.binary_cross_entropy_with_logits(segments[k], torch.tensor(y, dtype=torch.float64))
            expected_num += weight * bce
            expected_den += weight
    assert torch.allclose(value, expected_num / expected_den, rtol=1e-12)
    swapped = SegmentLoss(segment_shift=0.04, spoof_weight=0.3, bonafide_weight=0.7)
    assert not torch.allclose(value, swapped(frame_logits, frame_counts, targets, target_counts))


def test_segment_loss_trains_the_frame_head_and_the_trunk():
    torch.manual_seed(2)
    model = Nes2NetLocalizer("Nes2NetX", input_size=32, outer_ratio=4, inner_ratio=4)
    feats = torch.randn(2, 20, 32)
    _, frame_logits = model.forward_with_frames(feats)
    targets = torch.randint(0, 2, (2, 20))
    SegmentLoss()(frame_logits, torch.tensor([20, 20]), targets, torch.tensor([20, 20])).backward()
    assert model.frame_fc.weight.grad.abs().sum() > 0
    assert model.backend.blocks[0].conv_in.weight.grad.abs().sum() > 0
    assert model.backend.fc.weight.grad is None  # the utterance layer is not in this loss


def test_segment_loss_refuses_a_resolution_finer_than_the_frames():
    with pytest.raises(ValueError, match="whole multiple of the SSL frame shift"):
        SegmentLoss(segment_shift=0.01)


def _localization_config(folder, **changes):
    """The localisation demo's settings, with a segment objective at 0.02 s, then ``changes``."""
    base = {
        "segment_loss": SegmentLoss(segment_shift=0.02, frame_shift=0.02),
        "selection_metric": "segment_EER",
        "localization_shift": 0.16,
    }
    return recipe_settings("demo_localization.yaml", folder, **{**base, **changes})


@pytest.mark.parametrize(
    "changes, fragments",
    [
        ({"segment_loss": None}, ["selection_metric='segment_EER'", "needs a segment_loss"]),
        ({"backend": "plain"}, ["has none", "Nes2NetLocalizer"]),
        ({"localization_shift": 0.05}, ["localization_shift=0.05", "whole multiple"]),
    ],
    ids=["segment-metric-without-objective", "backend-without-frames", "shift-off-the-frames"],
)
def test_localisation_settings_are_checked_with_a_clear_message(changes, fragments, tmp_path):
    if changes.get("backend") == "plain":
        changes["backend"] = Nes2NetX(input_size=8, outer_ratio=2, inner_ratio=2)
    check_recipe_config(_localization_config(tmp_path))  # the base passes
    with pytest.raises(RecipeConfigError) as error:
        check_recipe_config(_localization_config(tmp_path, **changes))
    for fragment in fragments:
        assert fragment in str(error.value)
