"""Training losses of the released code (spec section 8): FocalDice on the final and the query-mean masks."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..modeling import AVAGOutput

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
DICE_WEIGHT = 0.4
BACKGROUND_WEIGHT = 0.2


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - (2 sum(pg) + eps) / (sum p + sum g + eps) per sample, averaged over the batch."""
    p = torch.sigmoid(logits).flatten(1)
    g = target.flatten(1)
    return (1 - (2 * (p * g).sum(1) + 1e-6) / (p.sum(1) + g.sum(1) + 1e-6)).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Focal-weighted BCE averaged over every pixel of the batch (alpha 0.25, gamma 2)."""
    p = torch.sigmoid(logits)
    weight = FOCAL_ALPHA * (1 - p) ** FOCAL_GAMMA * target + (1 - FOCAL_ALPHA) * p ** FOCAL_GAMMA * (1 - target)
    return (weight * F.binary_cross_entropy_with_logits(logits, target, reduction="none")).mean()


def focal_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return DICE_WEIGHT * dice_loss(logits, target) + (1 - DICE_WEIGHT) * focal_loss(logits, target)


def dependency_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """FocalDice when any pixel of the batch is foreground, plus 0.2 x BCE on the background pixels."""
    loss = focal_dice(logits, target) if target.any() else logits.sum() * 0
    background = target == 0
    if background.any():
        loss = loss + BACKGROUND_WEIGHT * F.binary_cross_entropy_with_logits(
            logits[background], torch.zeros_like(logits[background]))
    return loss


class LossTerms(NamedTuple):
    total: torch.Tensor
    function: torch.Tensor
    dependency: torch.Tensor


def query_mean_logits(query_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Mean over the queries, bilinearly upsampled to the mask size: the auxiliary prediction."""
    return F.interpolate(query_logits.mean(1, keepdim=True), size=size, mode="bilinear", align_corners=False)


def affordance_loss(output: AVAGOutput, function_target: torch.Tensor, dependency_target: torch.Tensor,
                    aux_weight: float = 0.1) -> LossTerms:
    """Targets are float {0, 1} of shape [B, 1, H, W], the size of the final logits."""
    size = function_target.shape[-2:]
    function = (focal_dice(output.function_logits.float(), function_target)
                + aux_weight * focal_dice(query_mean_logits(output.function_query_logits.float(), size),
                                          function_target))
    dependency = (dependency_loss(output.dependency_logits.float(), dependency_target)
                  + aux_weight * dependency_loss(query_mean_logits(output.dependency_query_logits.float(), size),
                                                 dependency_target))
    return LossTerms(function + dependency, function.detach(), dependency.detach())
