"""Per-task multi-scale decoder: each pixel cross-attends to the task's audio tokens, scales are summed."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ScaleDecoder(nn.Module):
    def __init__(self, visual_dim: int, audio_dim: int, dim: int, heads: int) -> None:
        super().__init__()
        self.visual_proj = nn.Conv2d(visual_dim, dim, kernel_size=1)
        self.audio_proj = nn.Linear(audio_dim, dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.fuse = nn.Sequential(nn.Conv2d(2 * dim, dim, kernel_size=3, padding=1), nn.GroupNorm(4, dim),
                                  nn.ReLU(inplace=True))

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        pixels = self.visual_proj(visual)
        batch, dim, height, width = pixels.shape
        tokens = self.audio_proj(audio)
        context = self.cross_attn(pixels.flatten(2).transpose(1, 2), tokens, tokens, need_weights=False)[0]
        context = context.transpose(1, 2).reshape(batch, dim, height, width)
        return self.fuse(torch.cat([pixels, context], 1))


class CrossAttentionDecoder(nn.Module):
    # The released decoder also builds FiLM layers for a "structure" input it is never given; they are left out.
    def __init__(self, visual_dim: int = 128, audio_dim: int = 256, dim: int = 16, heads: int = 4,
                 levels: int = 3) -> None:
        super().__init__()
        self.scales = nn.ModuleList(ScaleDecoder(visual_dim, audio_dim, dim, heads) for _ in range(levels))

    def forward(self, maps: list[torch.Tensor], audio: list[torch.Tensor]) -> torch.Tensor:
        """maps fine to coarse, one audio token set per scale -> [B, dim, h0, w0] at the finest scale."""
        decoded = [scale(m, a) for scale, m, a in zip(self.scales, maps, audio)]
        size = decoded[0].shape[-2:]
        out = decoded[0]
        for coarse in decoded[1:]:
            out = out + F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        return out
