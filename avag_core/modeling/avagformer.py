"""AVAGFormer: segments the function and dependency regions that an action sound refers to in an image."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..config import AVAGFormerConfig
from .audio_cnn import LogMelCNN
from .backbone import PVTBackbone
from .compressor import MaskCompressor
from .decoder import CrossAttentionDecoder
from .deformable_encoder import DeformableEncoder
from .fpn import SimpleFPN
from .mask_attention import MaskConditionedAttention
from .mask_head import QueryConditionedMaskHead
from .mixer import TASKS, CrossModalMixer
from .query_generator import QueryGenerator
from .vggish import EMBEDDING_DIM, PADDING_VALUE, VGGish


class AVAGOutput(NamedTuple):
    """All logits. The final maps have the input's size; the query maps are at stride 8."""
    function_logits: torch.Tensor  # [B, 1, H, W]
    dependency_logits: torch.Tensor  # [B, 1, H, W]
    function_query_logits: torch.Tensor  # [B, num_queries, H/8, W/8], for the auxiliary loss
    dependency_query_logits: torch.Tensor


class AVAGFormer(nn.Module):
    def __init__(self, config: AVAGFormerConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.backbone = PVTBackbone(c.backbone, c.drop_path_rate)
        self.audio_encoder = VGGish() if c.audio_encoder == "vggish" else LogMelCNN()
        self.audio_encoder.requires_grad_(not c.freeze_audio_encoder)
        self.audio_proj = nn.Linear(EMBEDDING_DIM, c.embed_dim)
        self.encoder = DeformableEncoder(self.backbone.out_channels, c.embed_dim, c.encoder_layers, c.encoder_heads,
                                         c.encoder_points, c.encoder_ffn_dim, c.encoder_dropout)
        self.fpn = SimpleFPN(c.embed_dim, c.fpn_dim)
        self.mixer = CrossModalMixer(c.fpn_dim, c.embed_dim, heads=c.mixer_heads, bias=c.mixer_bias)
        self.query_generator = QueryGenerator(c.num_queries, c.embed_dim, c.query_layers, c.query_heads,
                                              c.query_ffn_dim)
        self.learnable_queries = nn.Parameter(torch.randn(c.num_queries, c.embed_dim))
        self.decoders = nn.ModuleDict(
            {t: CrossAttentionDecoder(c.fpn_dim, c.embed_dim, c.decoder_dim, c.decoder_heads) for t in TASKS})
        self.mask_heads = nn.ModuleDict({t: QueryConditionedMaskHead(c.embed_dim, c.decoder_dim) for t in TASKS})
        self.mask_attention = MaskConditionedAttention(c.decoder_dim)
        self.compressors = nn.ModuleDict({t: MaskCompressor(c.num_queries, c.compressor_dim) for t in TASKS})
        if c.foreground_prior is not None:
            for compressor in self.compressors.values():
                nn.init.constant_(compressor.predict.bias, math.log(c.foreground_prior / (1 - c.foreground_prior)))

    def encode_image(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[B, 3, H, W] ImageNet-normalised, H and W multiples of 32 -> FPN maps at strides 8, 16, 32."""
        return self.fpn(self.encoder(self.backbone(images)))

    def embed_audio(self, log_mel: torch.Tensor) -> torch.Tensor:
        """[B, T, 1, 96, 64] log-mel windows -> [B, T, 128] audio embeddings.

        Padding windows are all one constant, so their embedding is computed once, not once per window.
        """
        batch, windows = log_mel.shape[:2]
        examples = log_mel.flatten(0, 1)
        padding = (examples == PADDING_VALUE).flatten(1).all(1)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_audio_encoder):
            unique = torch.cat([examples[~padding], examples[padding][:1]])
            embedded = self.audio_encoder(unique)
        real = int((~padding).sum())
        index = torch.full((examples.shape[0],), real, dtype=torch.long, device=examples.device)
        index[~padding] = torch.arange(real, device=examples.device)
        return embedded[index].view(batch, windows, EMBEDDING_DIM)

    def decode(self, visual: list[torch.Tensor], audio_embeddings: torch.Tensor) -> AVAGOutput:
        """Everything after the image and audio encoders. Batch sizes of both inputs must match."""
        audio = self.audio_proj(audio_embeddings)
        mixed = self.mixer(visual, audio)
        # One shared generator for both tasks: run it once on the two token sets stacked along the batch.
        tokens = torch.cat([torch.cat([audio, *mixed[t].audio], dim=1) for t in TASKS])
        queries = (self.query_generator(tokens) + self.learnable_queries).chunk(len(TASKS))
        function_features = self.decoders["function"](mixed["function"].visual, mixed["function"].audio)
        dependency_features = self.decoders["dependency"](mixed["dependency"].visual, mixed["dependency"].audio)
        function_queries = self.mask_heads["function"](function_features, queries[0])
        dependency_features = self.mask_attention(dependency_features, function_queries.mean(1, keepdim=True))
        dependency_queries = self.mask_heads["dependency"](dependency_features, queries[1])
        return AVAGOutput(self.compressors["function"](function_queries),
                          self.compressors["dependency"](dependency_queries),
                          function_queries, dependency_queries)

    def forward(self, images: torch.Tensor, log_mel: torch.Tensor | None = None, *,
                audio_embeddings: torch.Tensor | None = None) -> AVAGOutput:
        """Give the audio as log-mel windows [B, T, 1, 96, 64] or as precomputed embeddings [B, T, 128]."""
        if (log_mel is None) == (audio_embeddings is None):
            raise ValueError("pass exactly one of log_mel and audio_embeddings")
        if audio_embeddings is None:
            audio_embeddings = self.embed_audio(log_mel)
        return self.decode(self.encode_image(images), audio_embeddings)
