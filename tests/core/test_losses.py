import pytest
import torch
import torch.nn.functional as F

from avag_core.modeling import AVAGOutput
from avag_core.training.losses import affordance_loss, dependency_loss, dice_loss, focal_dice, focal_loss


def test_dice_hand_computed():
    logits = torch.tensor([[[[0.0, 100.0]]]])  # p = 0.5, 1
    target = torch.tensor([[[[1.0, 1.0]]]])
    assert dice_loss(logits, target).item() == pytest.approx(1 - (2 * 1.5 + 1e-6) / (1.5 + 2 + 1e-6), abs=1e-6)


def test_focal_hand_computed():
    logits, target = torch.tensor([0.0]), torch.tensor([1.0])  # p = 0.5 on a positive
    expected = 0.25 * 0.5 ** 2 * -torch.log(torch.tensor(0.5))
    assert focal_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    logits, target = torch.tensor([0.0]), torch.tensor([0.0])  # on a negative: (1 - alpha) p^gamma
    assert focal_loss(logits, target).item() == pytest.approx(0.75 * 0.25 * 0.693147, rel=1e-5)


def test_focal_dice_weights():
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    assert focal_dice(logits, target) == pytest.approx(0.4 * dice_loss(logits, target)
                                                       + 0.6 * focal_loss(logits, target))


def test_dependency_loss_with_empty_batch_is_background_bce_only():
    logits = torch.randn(2, 1, 4, 4, requires_grad=True)
    empty = torch.zeros(2, 1, 4, 4)
    expected = 0.2 * F.binary_cross_entropy_with_logits(logits, empty)
    assert dependency_loss(logits, empty).item() == pytest.approx(expected.item(), rel=1e-6)
    dependency_loss(logits, empty).backward()
    assert logits.grad is not None


def test_dependency_loss_with_foreground_adds_focal_dice_over_whole_batch():
    logits = torch.randn(2, 1, 4, 4)
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, 1, 1] = 1  # one sample annotated, the other empty: still in the dice mean
    background = target == 0
    expected = focal_dice(logits, target) + 0.2 * F.binary_cross_entropy_with_logits(
        logits[background], torch.zeros_like(logits[background]))
    assert dependency_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_total_loss_adds_auxiliary_on_upsampled_query_mean():
    torch.manual_seed(0)
    out = AVAGOutput(torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16), torch.randn(2, 5, 2, 2),
                     torch.randn(2, 5, 2, 2))
    function_gt, dependency_gt = (torch.rand(2, 1, 16, 16) > 0.8).float(), torch.zeros(2, 1, 16, 16)
    terms = affordance_loss(out, function_gt, dependency_gt, aux_weight=0.1)
    aux_f = F.interpolate(out.function_query_logits.mean(1, keepdim=True), size=(16, 16), mode="bilinear")
    aux_d = F.interpolate(out.dependency_query_logits.mean(1, keepdim=True), size=(16, 16), mode="bilinear")
    expected_f = focal_dice(out.function_logits, function_gt) + 0.1 * focal_dice(aux_f, function_gt)
    expected_d = dependency_loss(out.dependency_logits, dependency_gt) + 0.1 * dependency_loss(aux_d, dependency_gt)
    assert terms.function.item() == pytest.approx(expected_f.item(), rel=1e-6)
    assert terms.total.item() == pytest.approx((expected_f + expected_d).item(), rel=1e-6)
