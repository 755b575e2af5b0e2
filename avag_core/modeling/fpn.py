"""Top-down feature pyramid without norms or activations, as in the released head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SimpleFPN(nn.Module):
    def __init__(self, in_dim: int = 256, out_dim: int = 128, levels: int = 3) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(in_dim, out_dim, kernel_size=1) for _ in range(levels))
        self.output = nn.ModuleList(nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1) for _ in range(levels))

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """maps ordered fine to coarse; returns the same order."""
        laterals = [conv(m) for conv, m in zip(self.lateral, maps)]
        for i in range(len(laterals) - 2, -1, -1):
            coarser = F.interpolate(laterals[i + 1], size=laterals[i].shape[-2:], mode="bilinear",
                                    align_corners=False)
            laterals[i] = laterals[i] + coarser
        return [conv(m) for conv, m in zip(self.output, laterals)]
