"""Query-conditioned mask head: one mask-logit map per query."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Bound on the per-chunk activation [B, queries, h, w, dim], in elements (32 MiB in fp32).
CHUNK_ELEMENTS = 1 << 23


def _border_regions(size: int) -> list[tuple[slice, int]]:
    """Split an axis into (first, interior, last): the only cases a zero-padded 3x3 conv distinguishes.

    Returns (pixel slice, index of the case in a conv over a min(size, 3)-long constant input).
    """
    if size <= 3:
        return [(slice(i, i + 1), i) for i in range(size)]
    return [(slice(0, 1), 0), (slice(1, size - 1), 1), (slice(size - 1, size), 2)]


class QueryConditionedMaskHead(nn.Module):
    """Adds each projected query to the feature map, then conv3x3 -> ReLU -> conv1x1.

    Computed without materialising the per-query input of the 3x3 conv: the conv is linear, so
    conv(F + q) = conv(F) + conv(q broadcast), and the zero-padded conv of a constant map is constant on each of
    nine regions (corners, edges, interior). Only ReLU and the 1x1 conv run per query, region by region and in
    bounded chunks of queries.
    """

    def __init__(self, query_dim: int = 256, dim: int = 16) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_dim, dim)
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.predict = nn.Conv2d(dim, 1, kernel_size=1)

    def forward(self, features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """features [B, dim, h, w], queries [B, N, query_dim] -> logits [B, N, h, w]."""
        batch, dim, height, width = features.shape
        num_queries = queries.shape[1]
        shared = self.conv(features).permute(0, 2, 3, 1)  # [B, h, w, dim], conv bias included once
        q = self.query_proj(queries).reshape(batch * num_queries, dim, 1, 1)
        patch = q.expand(-1, -1, min(height, 3), min(width, 3))
        # [B, N, 3, 3, dim]: the conv of each query's constant map, one value per region
        region_values = F.conv2d(patch, self.conv.weight, padding=1).view(
            batch, num_queries, dim, *patch.shape[-2:]).permute(0, 1, 3, 4, 2)
        weight = self.predict.weight.view(dim, 1)
        chunk = max(1, CHUNK_ELEMENTS // (batch * dim * height * width))
        rows = []
        for row_pixels, row_case in _border_regions(height):
            columns = []
            for col_pixels, col_case in _border_regions(width):
                region = shared[:, None, row_pixels, col_pixels]  # [B, 1, hr, wr, dim]
                columns.append(torch.cat([
                    ((region + region_values[:, start:start + chunk, None, None, row_case, col_case]).relu_()
                     @ weight).squeeze(-1)
                    for start in range(0, num_queries, chunk)
                ], dim=1))
            rows.append(torch.cat(columns, dim=-1))
        return torch.cat(rows, dim=-2) + self.predict.bias
