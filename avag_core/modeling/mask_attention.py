"""Mask-conditioned attention: the function mask steers the dependency features."""
from __future__ import annotations

import math

import torch
from torch import nn

# Rows of the [h*w, h*w] score matrix computed at once (per batch element).
ROW_CHUNK = 1024


class MaskConditionedAttention(nn.Module):
    """Single-head attention whose keys and values are 1x1 convs of a one-channel mask.

    With k_j = a*m_j and v_j = c*m_j + d, the output at pixel i is out_proj(c * E_i + d), where
    E_i = sum_j softmax_j(s_i m_j) m_j and s_i = q_i.a / sqrt(dim). That needs one scalar per (i, j) instead of
    the dim-wide product.
    """

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.dim = dim
        self.query = nn.Conv2d(dim, dim, kernel_size=1)
        # No key bias: it would add q_i.b to a whole softmax row, which cancels (the released one is inert).
        self.key = nn.Conv2d(1, dim, kernel_size=1, bias=False)
        self.value = nn.Conv2d(1, dim, kernel_size=1)
        self.out_proj = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """features [B, dim, h, w], mask_logits [B, 1, h, w] -> features + attention output."""
        batch, dim, height, width = features.shape
        queries = self.query(features).flatten(2)  # [B, dim, N]
        slopes = torch.einsum("bcn,c->bn", queries, self.key.weight.view(dim)) / math.sqrt(dim)
        mask = mask_logits.flatten(1)  # [B, N]
        expected = torch.cat([
            (torch.softmax(slopes[:, start:start + ROW_CHUNK, None] * mask[:, None, :], dim=-1)
             * mask[:, None, :]).sum(-1)
            for start in range(0, slopes.shape[1], ROW_CHUNK)
        ], dim=1)
        values = expected[:, None, :] * self.value.weight.view(1, dim, 1) + self.value.bias.view(1, dim, 1)
        return features + self.out_proj(values.view(batch, dim, height, width))
