"""Multi-scale deformable attention encoder (Deformable-DETR style), in pure PyTorch.

Sampling uses `grid_sample`, so it runs on any device without a compiled op.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .position_encoding import sine_position_encoding

SpatialShapes = list[tuple[int, int]]


def deformable_sample(value: torch.Tensor, spatial_shapes: SpatialShapes, locations: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """Weighted bilinear sampling of every head's value maps (zero padding, align_corners=False), summed with
    the attention weights.

    value [B, Nv, heads, head_dim]; locations [B, Nq, heads, levels, points, 2] in [0, 1] (x, y);
    weights [B, Nq, heads, levels, points]. Returns [B, Nq, heads * head_dim].

    Two exact forms: the gather is about twice as fast forward, `grid_sample` about twice as fast backward.
    ONNX export takes the `grid_sample` form: it maps to one standard GridSample op that every runtime fuses,
    where `embedding_bag` with weights has no ONNX equivalent.
    """
    needs_graph = torch.is_grad_enabled() and any(t.requires_grad for t in (value, locations, weights))
    use_grid = needs_graph or torch.onnx.is_in_onnx_export()
    return (sample_by_grid if use_grid else sample_by_gather)(value, spatial_shapes, locations, weights)


def sample_by_grid(value: torch.Tensor, spatial_shapes: SpatialShapes, locations: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """One `grid_sample` per level, weighted and summed over its points, then summed over levels
    (Deformable-DETR's PyTorch form, without stacking the levels' samples into one tensor first)."""
    batch, _, heads, head_dim = value.shape
    num_queries = locations.shape[1]
    grids = 2 * locations - 1
    point_weights = weights.transpose(1, 2).reshape(batch * heads, 1, num_queries, *weights.shape[-2:])
    out = 0
    for level, (values, (height, width)) in enumerate(zip(value.split([h * w for h, w in spatial_shapes], 1),
                                                         spatial_shapes)):
        v = values.permute(0, 2, 3, 1).reshape(batch * heads, head_dim, height, width)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out + (sampled * point_weights[:, :, :, level]).sum(-1)
    return out.view(batch, heads * head_dim, num_queries).transpose(1, 2)


def sample_by_gather(value: torch.Tensor, spatial_shapes: SpatialShapes, locations: torch.Tensor,
                     weights: torch.Tensor) -> torch.Tensor:
    """Every output is a weighted sum of value rows (4 bilinear corners per point): one `embedding_bag` over
    the flattened values of all levels."""
    batch, num_values, heads, head_dim = value.shape
    num_queries = locations.shape[1]
    device = value.device
    # Work in [B, heads, Nq, levels, points] order so that each (batch, head, query) bag is contiguous.
    locations = locations.permute(0, 2, 1, 3, 4, 5).contiguous()
    weights = weights.permute(0, 2, 1, 3, 4).contiguous()
    sizes = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=locations.dtype, device=device)
    pixels = locations * sizes[:, None, :] - 0.5  # continuous pixel coordinates, align_corners=False
    corner = pixels.floor()
    frac = pixels - corner
    x0, y0 = corner.unbind(-1)
    fx, fy = frac.unbind(-1)
    width, height = sizes[:, None, 0], sizes[:, None, 1]
    # Bilinear weight of the near and far corner along each axis; zero where that corner is off the map.
    wx = torch.stack([(1 - fx) * ((x0 >= 0) & (x0 < width)), fx * ((x0 >= -1) & (x0 < width - 1))], -1)
    wy = torch.stack([(1 - fy) * ((y0 >= 0) & (y0 < height)), fy * ((y0 >= -1) & (y0 < height - 1))], -1)
    corner_weights = (weights[..., None, None] * wy[..., :, None] * wx[..., None, :]).flatten(3)
    # Row of the top-left corner in the flattened multi-level value table; the other corners are +1, +W, +W+1.
    # A corner off the map has weight zero, so its row only needs to exist: clamp into the table.
    level_starts = torch.tensor([0] + [h * w for h, w in spatial_shapes][:-1], device=device).cumsum(0)
    top_left = (y0 * width + x0).long() + level_starts[:, None]
    steps = torch.stack([torch.zeros_like(sizes[:, 0]), torch.ones_like(sizes[:, 0]), sizes[:, 0], sizes[:, 0] + 1],
                        -1).long()
    rows = (top_left[..., None] + steps[:, None, :]).clamp_(0, num_values - 1).flatten(3)
    rows += (torch.arange(batch * heads, device=device) * num_values).view(batch, heads, 1, 1)
    table = value.permute(0, 2, 1, 3).reshape(batch * heads * num_values, head_dim)
    out = F.embedding_bag(rows.flatten(0, 2), table, per_sample_weights=corner_weights.flatten(0, 2).to(table.dtype),
                          mode="sum")
    return out.view(batch, heads, num_queries, head_dim).transpose(1, 2).flatten(2)


class MultiScaleDeformableAttention(nn.Module):
    def __init__(self, dim: int = 256, levels: int = 3, heads: int = 8, points: int = 4) -> None:
        super().__init__()
        self.levels, self.heads, self.points = levels, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Each head starts looking in its own direction, farther for each successive point.
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        grid = directions[:, None, None, :].repeat(1, self.levels, self.points, 1)
        grid *= torch.arange(1, self.points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for layer in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor,
                spatial_shapes: SpatialShapes) -> torch.Tensor:
        """query [B,Nq,C]; reference_points [B or 1,Nq,2] in [0,1]; value [B,Nv,C] covering all levels."""
        batch, num_queries, dim = query.shape
        value = self.value_proj(value).view(batch, -1, self.heads, dim // self.heads)
        offsets = self.sampling_offsets(query).view(batch, num_queries, self.heads, self.levels, self.points, 2)
        # Offsets are in pixels of each level; (W, H) turns them into normalised units.
        level_sizes = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, None, None, :] + offsets / level_sizes[:, None, :]
        weights = self.attention_weights(query).view(batch, num_queries, self.heads, self.levels * self.points)
        weights = weights.softmax(-1).view(batch, num_queries, self.heads, self.levels, self.points)
        return self.output_proj(deformable_sample(value, spatial_shapes, locations, weights))


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention, then a GELU feed-forward block."""

    def __init__(self, dim: int, levels: int, heads: int, points: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(dim, levels, heads, points)
        self.dropout = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: SpatialShapes) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.self_attn(x + pos, reference_points, x, spatial_shapes)))
        return self.norm2(x + self.dropout(self.ffn(x)))


def reference_points(spatial_shapes: SpatialShapes, device: torch.device) -> torch.Tensor:
    """[1, N, 2] pixel centres of every level, normalised to [0, 1] in (x, y) order."""
    points = []
    for height, width in spatial_shapes:
        y, x = torch.meshgrid(
            (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height,
            (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width,
            indexing="ij",
        )
        points.append(torch.stack([x.flatten(), y.flatten()], -1))
    return torch.cat(points)[None]


class DeformableEncoder(nn.Module):
    """Projects the backbone maps to `dim` channels and refines them jointly with deformable attention."""

    def __init__(self, in_channels: list[int], dim: int = 256, layers: int = 6, heads: int = 8, points: int = 4,
                 ffn_dim: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim = dim
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, kernel_size=1), nn.GroupNorm(32, dim)) for c in in_channels
        )
        self.level_embed = nn.Parameter(torch.randn(len(in_channels), dim))
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(dim, len(in_channels), heads, points, ffn_dim, dropout) for _ in range(layers)
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        maps = [proj(f) for proj, f in zip(self.input_proj, features)]
        spatial_shapes = [(m.shape[2], m.shape[3]) for m in maps]
        device = maps[0].device
        x = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)
        pos = torch.cat([
            (sine_position_encoding(h, w, self.dim, device) + self.level_embed[level, :, None, None]).flatten(1).t()
            for level, (h, w) in enumerate(spatial_shapes)
        ])[None].to(x.dtype)
        ref = reference_points(spatial_shapes, device).to(x.dtype)
        for layer in self.layers:
            x = layer(x, pos, ref, spatial_shapes)
        batch = x.shape[0]
        return [t.transpose(1, 2).reshape(batch, self.dim, h, w)
                for t, (h, w) in zip(x.split([h * w for h, w in spatial_shapes], dim=1), spatial_shapes)]
