"""Hand-computed cases for every rule of the evaluation protocol."""
import pytest
import torch

from avag_core.training.metrics import AffordanceScores, sample_f_measure, sample_iou


def mask(rows, cols, size=(4, 4)):
    m = torch.zeros(size)
    m[rows, cols] = 1
    return m


def brute_force_f(prob, gt):
    best = 0.0
    for t in torch.linspace(0, 1 - 1e-10, 255, dtype=torch.float64):
        pred = prob.double() >= t
        tp = (pred & (gt > 0.5)).sum().item()
        precision, recall = tp / (pred.sum().item() + 1e-20), tp / ((gt > 0.5).sum().item() + 1e-20)
        f = 1.3 * precision * recall / (0.3 * precision + recall) if precision + recall else 0.0
        best = max(best, f)
    return best


def test_iou_perfect_partial_and_empty_prediction():
    gt = mask(slice(0, 2), slice(0, 2))  # 4 pixels
    assert sample_iou(gt.clone(), gt) == pytest.approx(1.0)
    half = mask(slice(0, 2), slice(0, 1))  # 2 of the 4, nothing outside
    assert sample_iou(half * 0.9, gt) == pytest.approx(0.5)
    assert sample_iou(torch.zeros(4, 4), gt) == 0.0


def test_iou_threshold_is_strictly_above_half():
    gt = mask(0, 0)
    assert sample_iou(gt * 0.5, gt) == 0.0
    assert sample_iou(gt * 0.51, gt) == pytest.approx(1.0)


def test_iou_empty_ground_truth_scores_true_negatives():
    empty = torch.zeros(4, 4)
    assert sample_iou(torch.zeros(4, 4), empty) == pytest.approx(1.0)
    assert sample_iou(mask(slice(0, 1), slice(0, 4)), empty) == pytest.approx(12 / 16)


def test_f_measure_perfect_one_pixel_and_all_zero():
    gt = mask(2, 3)
    assert sample_f_measure(gt.clone(), gt) == pytest.approx(1.0)
    assert sample_f_measure(torch.zeros(4, 4), gt) == pytest.approx(1.3 * (1 / 16) / (0.3 * (1 / 16) + 1))
    assert sample_f_measure(torch.zeros(4, 4), torch.zeros(4, 4)) == 0.0  # empty ground truth scores 0


def test_f_measure_takes_each_samples_best_threshold():
    gt = mask(slice(0, 2), slice(0, 2))
    prob = torch.full((4, 4), 0.2)
    prob[0:2, 0:2] = 0.3  # ranked correctly but below 0.5: the best threshold still separates them
    assert sample_f_measure(prob, gt) == pytest.approx(1.0)
    torch.manual_seed(0)
    for _ in range(5):
        prob, gt = torch.rand(6, 7), (torch.rand(6, 7) > 0.7).float()
        assert sample_f_measure(prob, gt) == pytest.approx(brute_force_f(prob, gt), abs=1e-9)


def test_dependency_metrics_only_count_non_empty_dependency_masks():
    scores = AffordanceScores()
    gt = mask(0, 0)
    scores.add("a", gt, gt, torch.zeros(4, 4), torch.zeros(4, 4))  # empty dependency: not counted
    scores.add("b", torch.zeros(4, 4), gt, gt, gt)
    scores.add("c", gt, torch.zeros(4, 4), torch.zeros(4, 4), gt)  # empty function GT: IoU 0 here, F 0
    result = scores.result()
    assert result["samples_f"] == 3 and result["samples_d"] == 2
    assert result["mIoU_f"] == pytest.approx(100 * (1 + 0 + 15 / 16) / 3)
    assert result["F_f"] == pytest.approx(100 * (1 + 1.3 * (1 / 16) / (0.3 / 16 + 1) + 0) / 3)
    assert result["mIoU_d"] == pytest.approx(100 * (1 + 0) / 2)


def test_scores_merge_through_tensor_for_distributed_reduction():
    scores = AffordanceScores()
    scores.add("a", mask(0, 0), mask(0, 0), mask(0, 0), mask(0, 0))
    merged = AffordanceScores.from_tensor(scores.as_tensor() * 2)
    assert merged.result() == {**scores.result(), "samples_f": 2, "samples_d": 2}


def test_no_dependency_samples_gives_nan_not_zero():
    scores = AffordanceScores()
    scores.add("a", mask(0, 0), mask(0, 0), torch.zeros(4, 4), torch.zeros(4, 4))
    assert scores.result()["samples_d"] == 0
    assert scores.result()["mIoU_d"] != scores.result()["mIoU_d"]  # NaN
