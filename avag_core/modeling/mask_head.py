"""Query-conditioned mask head: one mask-logit map per query."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Bound on the per-chunk activation [B, queries, dim, h, w], in elements (32 MiB in fp32).
CHUNK_ELEMENTS = 1 << 23


def _border_classes(size: int) -> torch.Tensor:
    """Which of (first, interior, last) each row/column is; a 3x3 zero-padded conv only sees these three cases."""
    if size <= 3:
        return torch.arange(size)
    return torch.cat([torch.zeros(1), torch.ones(size - 2), torch.full((1,), 2)]).long()


class QueryConditionedMaskHead(nn.Module):
    """Adds each projected query to the feature map, then conv3x3 -> ReLU -> conv1x1.

    Computed without materialising the per-query input of the 3x3 conv: the conv is linear, so
    conv(F + q) = conv(F) + conv(q broadcast), and a constant map's zero-padded conv takes only nine values
    (corners, edges, interior). Only ReLU and the 1x1 conv run per query, in bounded chunks.
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
        shared = self.conv(features)  # includes the bias, once
        q = self.query_proj(queries).reshape(batch * num_queries, dim, 1, 1)
        rows, cols = _border_classes(height), _border_classes(width)
        patch = q.expand(-1, -1, min(height, 3), min(width, 3))
        query_maps = F.conv2d(patch, self.conv.weight, padding=1).view(batch, num_queries, dim, *patch.shape[-2:])
        rows, cols = rows.to(features.device), cols.to(features.device)
        weight = self.predict.weight.view(dim)
        chunk = max(1, CHUNK_ELEMENTS // (batch * dim * height * width))
        logits = []
        for start in range(0, num_queries, chunk):
            per_query = query_maps[:, start:start + chunk][..., rows, :][..., cols]
            hidden = torch.relu(shared[:, None] + per_query)
            logits.append(torch.einsum("bnchw,c->bnhw", hidden, weight))
        return torch.cat(logits, 1) + self.predict.bias
