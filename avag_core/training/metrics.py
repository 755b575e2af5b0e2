"""Evaluation protocol of the released code (spec section 10), scored one sample at a time.

- IoU at probability > 0.5. Empty ground truth: the fraction of pixels correctly left empty.
- F-measure with beta^2 = 0.3, each sample's best over 255 thresholds; 0 for empty ground truth.
- Function metrics over all samples; dependency metrics only over samples whose dependency mask is non-empty.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

BETA_SQUARED = 0.3
THRESHOLDS = torch.linspace(0, 1 - 1e-10, 255, dtype=torch.float64)


def sample_iou(prob: torch.Tensor, target: torch.Tensor) -> float:
    """prob, target: [H, W]; target in {0, 1}."""
    pred = prob > 0.5
    gt = target > 0.5
    if not gt.any():
        return (~pred).sum().item() / (pred.numel() + 1e-7)
    return (pred & gt).sum().item() / ((pred | gt).sum().item() + 1e-7)


def sample_f_measure(prob: torch.Tensor, target: torch.Tensor) -> float:
    """Best F over 255 thresholds for one sample; 0 when its ground truth is empty."""
    gt = (target > 0.5).flatten()
    if not gt.any():
        return 0.0
    p = prob.flatten().double()
    # For each threshold: predicted positives and true positives, via one sort instead of 255 passes.
    order = torch.argsort(p)
    sorted_p, sorted_gt = p[order], gt[order].double()
    first_kept = torch.searchsorted(sorted_p, THRESHOLDS.to(p.device), right=False)  # p >= t
    gt_suffix = torch.cat([sorted_gt.flip(0).cumsum(0).flip(0), sorted_gt.new_zeros(1)])
    predicted = (p.numel() - first_kept).double()
    true_pos = gt_suffix[first_kept]
    precision = true_pos / (predicted + 1e-20)
    recall = true_pos / (gt.sum().double() + 1e-20)
    f = (1 + BETA_SQUARED) * precision * recall / (BETA_SQUARED * precision + recall)
    return torch.nan_to_num(f, nan=0.0).max().item()


@dataclass
class AffordanceScores:
    """Running sums over samples; `result()` gives percentages as the paper reports them."""
    function_iou: float = 0.0
    function_f: float = 0.0
    dependency_iou: float = 0.0
    dependency_f: float = 0.0
    function_count: int = 0
    dependency_count: int = 0
    per_sample: list[dict] = field(default_factory=list)

    def add(self, name: str, function_prob: torch.Tensor, function_gt: torch.Tensor,
            dependency_prob: torch.Tensor, dependency_gt: torch.Tensor) -> None:
        record = {"name": name, "iou_f": sample_iou(function_prob, function_gt),
                  "f_f": sample_f_measure(function_prob, function_gt)}
        self.function_iou += record["iou_f"]
        self.function_f += record["f_f"]
        self.function_count += 1
        if (dependency_gt > 0.5).any():
            record["iou_d"] = sample_iou(dependency_prob, dependency_gt)
            record["f_d"] = sample_f_measure(dependency_prob, dependency_gt)
            self.dependency_iou += record["iou_d"]
            self.dependency_f += record["f_d"]
            self.dependency_count += 1
        self.per_sample.append(record)

    def as_tensor(self) -> torch.Tensor:
        """Sums and counts, for all-reducing across distributed ranks."""
        return torch.tensor([self.function_iou, self.function_f, self.dependency_iou, self.dependency_f,
                             self.function_count, self.dependency_count], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, sums: torch.Tensor) -> "AffordanceScores":
        values = sums.tolist()
        return cls(*values[:4], int(values[4]), int(values[5]))

    def result(self) -> dict[str, float]:
        def mean(total: float, count: int) -> float:
            return 100.0 * total / count if count else float("nan")
        return {"mIoU_f": mean(self.function_iou, self.function_count),
                "F_f": mean(self.function_f, self.function_count),
                "mIoU_d": mean(self.dependency_iou, self.dependency_count),
                "F_d": mean(self.dependency_f, self.dependency_count),
                "samples_f": self.function_count, "samples_d": self.dependency_count}
