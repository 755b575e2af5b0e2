"""DETR sine positional encoding, unnormalised, as the released encoder uses it."""
from __future__ import annotations

import torch


def sine_position_encoding(height: int, width: int, dim: int, device: torch.device,
                           temperature: float = 10000.0) -> torch.Tensor:
    """[dim, H, W] encoding: dim/2 channels for the row index, then dim/2 for the column index (1-based)."""
    half = dim // 2
    k = torch.arange(half, device=device, dtype=torch.float32)
    omega = temperature ** (-2 * torch.div(k, 2, rounding_mode="floor") / half)
    y = torch.arange(1, height + 1, device=device, dtype=torch.float32)[:, None] * omega  # [H, half]
    x = torch.arange(1, width + 1, device=device, dtype=torch.float32)[:, None] * omega  # [W, half]
    even = (k % 2 == 0)
    y = torch.where(even, y.sin(), y.cos())
    x = torch.where(even, x.sin(), x.cos())
    pos_y = y.t()[:, :, None].expand(half, height, width)
    pos_x = x.t()[:, None, :].expand(half, height, width)
    return torch.cat([pos_y, pos_x], dim=0)
