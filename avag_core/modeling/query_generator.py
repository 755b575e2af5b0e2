"""Shared query generator: learned queries read the raw and task-fused audio tokens."""
from __future__ import annotations

import torch
from torch import nn


class QueryGeneratorLayer(nn.Module):
    """Post-norm: self-attention over queries, cross-attention to audio tokens, GELU feed-forward."""

    def __init__(self, dim: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, bias=False, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, bias=False, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        queries = self.norm1(queries + self.self_attn(queries, queries, queries, need_weights=False)[0])
        queries = self.norm2(queries + self.cross_attn(queries, tokens, tokens, need_weights=False)[0])
        return self.norm3(queries + self.ffn(queries))


class QueryGenerator(nn.Module):
    def __init__(self, num_queries: int = 300, dim: int = 256, layers: int = 6, heads: int = 8,
                 ffn_dim: int = 1024) -> None:
        super().__init__()
        self.query_embed = nn.Parameter(torch.empty(num_queries, dim))
        self.layers = nn.ModuleList(QueryGeneratorLayer(dim, heads, ffn_dim) for _ in range(layers))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, dim] -> queries [B, num_queries, dim]."""
        queries = self.query_embed[None].expand(tokens.shape[0], -1, -1)
        for layer in self.layers:
            queries = layer(queries, tokens)
        return queries
