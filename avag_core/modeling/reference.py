"""The straightforward forms of the computations that AVAGFormer rewrites for speed.

They are what the released code computes, kept for two uses: tests check that each rewrite agrees with its
straightforward form, and `bench/forms.py` times the model both ways on the same machine. The deformable
sampling's straightforward form, `sample_by_grid`, lives in the encoder because training uses it.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F

from . import deformable_encoder
from .avagformer import AVAGFormer
from .compressor import MaskCompressor
from .mask_attention import MaskConditionedAttention
from .mask_head import QueryConditionedMaskHead
from .mixer import SemanticFusionBlock
from .vggish import EMBEDDING_DIM


def mask_head(head: QueryConditionedMaskHead, features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Materialise [B*N, dim, h, w] (each query added to the map) and convolve it."""
    batch, dim, height, width = features.shape
    z = (features[:, None] + head.query_proj(queries)[..., None, None]).flatten(0, 1)
    return head.predict(torch.relu(head.conv(z))).view(batch, -1, height, width)


def mask_attention(module: MaskConditionedAttention, features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Full [h*w, h*w] single-head attention with dim-wide keys and values."""
    batch, dim, height, width = features.shape
    q = module.query(features).flatten(2).transpose(1, 2)
    k = module.key(mask_logits).flatten(2).transpose(1, 2)
    v = module.value(mask_logits).flatten(2).transpose(1, 2)
    attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dim), dim=-1)
    out = (attention @ v).transpose(1, 2).reshape(batch, dim, height, width)
    return features + module.out_proj(out)


def attend(block: SemanticFusionBlock, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
           bias: torch.Tensor) -> torch.Tensor:
    """Multi-head attention of already projected queries, keys and values, heads concatenated."""
    out = F.scaled_dot_product_attention(block._heads(query), block._heads(key), block._heads(value),
                                         attn_mask=bias.to(query.dtype))
    return out.transpose(1, 2).flatten(2)


def audio_attends_to_vision(block: SemanticFusionBlock, audio: torch.Tensor, vision: torch.Tensor,
                            bias: torch.Tensor) -> torch.Tensor:
    """Every visual token projected to a key and a value."""
    return attend(block, block.audio_query(audio), block.image_key(vision), block.image_value(vision), bias)


def vision_attends_to_audio(block: SemanticFusionBlock, vision: torch.Tensor, audio: torch.Tensor,
                            bias: torch.Tensor) -> torch.Tensor:
    """Every visual token projected to a query, and every output through out_proj."""
    return block.out_proj_image(attend(block, block.image_query(vision), block.audio_key(audio),
                                       block.audio_value(audio), bias))


def compress(compressor: MaskCompressor, query_logits: torch.Tensor) -> torch.Tensor:
    """Every upsampling stage on all its channels, the 1x1 predict conv on the full-size map."""
    x = compressor.squeeze(query_logits)
    for stage in compressor.upsample:
        x = F.interpolate(stage(x), scale_factor=2, mode="bilinear", align_corners=False)
    return compressor.predict(x)


def embed_audio(model: AVAGFormer, log_mel: torch.Tensor) -> torch.Tensor:
    """The audio encoder on every window, padding included."""
    batch, windows = log_mel.shape[:2]
    with torch.set_grad_enabled(torch.is_grad_enabled() and not model.config.freeze_audio_encoder):
        return model.audio_encoder(log_mel.flatten(0, 1)).view(batch, windows, EMBEDDING_DIM)


@contextlib.contextmanager
def straightforward_forms(model: AVAGFormer) -> Iterator[AVAGFormer]:
    """Within the block, `model` computes every rewritten step the straightforward way."""
    fast_sample = deformable_encoder.deformable_sample
    heads = list(model.mask_heads.values())
    deformable_encoder.deformable_sample = deformable_encoder.sample_by_grid
    for head in heads:
        head.forward = lambda f, q, head=head: mask_head(head, f, q)
    model.mask_attention.forward = lambda f, m: mask_attention(model.mask_attention, f, m)
    compressors = list(model.compressors.values())
    for compressor in compressors:
        compressor.forward = lambda q, compressor=compressor: compress(compressor, q)
    fusion = model.mixer.fusion
    fusion.audio_attends_to_vision = lambda a, v, b: audio_attends_to_vision(fusion, a, v, b)
    fusion.vision_attends_to_audio = lambda v, a, b: vision_attends_to_audio(fusion, v, a, b)
    model.embed_audio = lambda log_mel: embed_audio(model, log_mel)
    try:
        yield model
    finally:
        deformable_encoder.deformable_sample = fast_sample
        for module in (*heads, model.mask_attention, *compressors):
            del module.forward
        del fusion.audio_attends_to_vision, fusion.vision_attends_to_audio, model.embed_audio
