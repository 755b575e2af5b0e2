"""Per-task fusion of the query masks into one map, and learned x8 upsampling to the input size."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels // reduction, 1),
                                  nn.ReLU(inplace=True), nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class MaskCompressor(nn.Module):
    """[B, num_queries, h, w] query logits -> [B, 1, 8h, 8w] final logits.

    The queries act as channels, so query order matters (there is no set matching).
    """

    def __init__(self, num_queries: int = 300, dim: int = 64, upsample_stages: int = 3) -> None:
        super().__init__()
        if upsample_stages < 1:
            raise ValueError(f"upsample_stages must be at least 1, got {upsample_stages}")
        self.squeeze = nn.Sequential(nn.Conv2d(num_queries, dim, 1), nn.BatchNorm2d(dim), nn.ReLU(inplace=True),
                                     SqueezeExcite(dim), nn.Conv2d(dim, 1, 1))
        stages = []
        for i in range(upsample_stages):
            channels = 2 ** i
            stages.append(nn.Sequential(nn.Conv2d(channels, 2 * channels, 3, padding=1),
                                        nn.BatchNorm2d(2 * channels), nn.ReLU(inplace=True)))
        self.upsample = nn.ModuleList(stages)
        self.predict = nn.Conv2d(2 ** upsample_stages, 1, 1)

    def forward(self, query_logits: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(query_logits)
        *stages, last = self.upsample
        for stage in stages:
            x = F.interpolate(stage(x), scale_factor=2, mode="bilinear", align_corners=False)
        # The 1x1 predict conv before the last upsampling, not after: both are linear and bilinear weights sum to
        # 1, so they commute, and the largest map is then interpolated with one channel instead of 2**stages.
        return F.interpolate(self.predict(last(x)), scale_factor=2, mode="bilinear", align_corners=False)
