"""Semantic-conditioned cross-modal mixer (paper eq. 4-7): the released code's values, computed with less work
(its straightforward form: avag_core.modeling.reference)."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

TASKS = ("function", "dependency")


class TaskFeatures(NamedTuple):
    visual: list[torch.Tensor]  # per scale [B, fpn_dim, h, w]
    audio: list[torch.Tensor]  # per scale [B, T, dim]


class SemanticFusionBlock(nn.Module):
    """Audio attends to vision, then vision attends to the updated audio; task prompts gate both updates.

    The attention bias comes from a small MLP of the task prompt and the token magnitudes. With
    `bias="per_head"` (released code) it is one scalar per head, which softmax cancels: it has no effect and gets
    no gradient, but is kept so the computation and parameters match. With `bias="per_token"` each key token gets
    its own bias from its own magnitude, which is what the paper describes.
    """

    def __init__(self, dim: int = 256, heads: int = 8, bias: str = "per_head") -> None:
        super().__init__()
        self.heads, self.bias = heads, bias
        self.audio_query, self.image_key, self.image_value = (nn.Linear(dim, dim) for _ in range(3))
        self.image_query, self.audio_key, self.audio_value = (nn.Linear(dim, dim) for _ in range(3))
        self.out_proj_audio = nn.Linear(dim, dim)
        self.out_proj_image = nn.Linear(dim, dim)
        self.audio_bias_mlp = nn.Sequential(nn.Linear(dim + 2, dim), nn.ReLU(inplace=True), nn.Linear(dim, heads))
        self.image_bias_mlp = nn.Sequential(nn.Linear(dim + 2, dim), nn.ReLU(inplace=True), nn.Linear(dim, heads))
        self.audio_gate = nn.Linear(dim, dim)
        self.image_gate = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, heads, N, head_dim]

    def _head_weights(self, linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        """-> weight [heads, head_dim, dim] and bias [heads, 1, head_dim]: each head's rows of `linear`."""
        return linear.weight.unflatten(0, (self.heads, -1)), linear.bias.view(self.heads, 1, -1)

    # Both attentions below have a few audio tokens (T) on one side and up to h*w visual tokens (N) on the other.
    # Instead of projecting every visual token to queries, keys or values (N x dim x dim each), the projections
    # are moved onto the audio side by associativity: q.(W v + b) = (W^T q).v + q.b, and a softmax row's weights
    # sum to 1, so sum_j p_j (W v_j + b) = W (sum_j p_j v_j) + b. Same values, about heads*T/dim of the work.

    def audio_attends_to_vision(self, audio: torch.Tensor, vision: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """audio [B, T, dim] queries attend to vision [B, N, dim] keys and values -> [B, T, dim], before out_proj."""
        key_weight, key_bias = self._head_weights(self.image_key)
        value_weight, value_bias = self._head_weights(self.image_value)
        query = self._heads(self.audio_query(audio))  # [B, heads, T, head_dim]
        batch, heads, tokens, head_dim = query.shape
        scale = head_dim ** -0.5
        # q.b is constant along a softmax row, so it cancels; kept so the key bias is used as in the released code
        scores = ((query @ key_weight).flatten(1, 2) @ vision.transpose(1, 2)).view(batch, heads, tokens, -1)
        scores = (scores + query @ key_bias.transpose(1, 2)) * scale + bias.to(query.dtype)
        pooled = (scores.softmax(-1).flatten(1, 2) @ vision).view(batch, heads, tokens, -1)  # [B, heads, T, dim]
        out = pooled @ value_weight.transpose(1, 2) + value_bias  # [B, heads, T, head_dim]
        return out.transpose(1, 2).flatten(2)

    def vision_attends_to_audio(self, vision: torch.Tensor, audio: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """vision [B, N, dim] queries attend to audio [B, T, dim] -> [B, N, dim], out_proj included."""
        query_weight, query_bias = self._head_weights(self.image_query)
        key = self._heads(self.audio_key(audio))  # [B, heads, T, head_dim]
        value = self._heads(self.audio_value(audio))
        batch, heads, tokens, head_dim = key.shape
        scale = head_dim ** -0.5
        # [B, dim, heads*T]: each head's query projection folded into its keys
        folded_keys = (query_weight.transpose(1, 2) @ key.transpose(2, 3)).permute(0, 2, 1, 3).flatten(2)
        scores = (vision @ folded_keys).unflatten(-1, (heads, tokens)).transpose(1, 2)  # [B, heads, N, T]
        scores = (scores + query_bias @ key.transpose(2, 3)) * scale + bias.to(vision.dtype)
        # out_proj's columns for each head folded into that head's values: [B, heads*T, dim]
        out_weight = self.out_proj_image.weight.unflatten(1, (heads, head_dim)).permute(1, 2, 0)
        folded_values = (value @ out_weight).flatten(1, 2)
        weights = scores.softmax(-1).transpose(1, 2).flatten(2)  # [B, N, heads*T]
        return weights @ folded_values + self.out_proj_image.bias

    def _attention_bias(self, mlp: nn.Module, prompt: torch.Tensor, vision_magnitude: torch.Tensor,
                        audio_magnitude: torch.Tensor) -> torch.Tensor:
        """MLP of [prompt, visual magnitude, audio magnitude] -> bias [B, heads, 1, K].

        Each magnitude is [B, 1] (a mean) or [B, K] (one per key token); K is 1 for the per-head bias.
        """
        batch = vision_magnitude.shape[0]
        keys = max(vision_magnitude.shape[1], audio_magnitude.shape[1])
        inputs = torch.cat([prompt.expand(batch, keys, -1),
                            vision_magnitude[..., None].expand(batch, keys, 1),
                            audio_magnitude[..., None].expand(batch, keys, 1)], -1)
        return mlp(inputs).transpose(1, 2)[:, :, None, :]

    def forward(self, vision: torch.Tensor, audio: torch.Tensor, image_prompt: torch.Tensor,
                audio_prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """vision [B, N, dim], audio [B, T, dim] -> updated (vision, audio)."""
        vision_norms = vision.norm(dim=-1)  # [B, N]
        mean_vision = vision_norms.mean(1, keepdim=True)
        mean_audio = audio.norm(dim=-1).mean(1, keepdim=True)
        per_token = self.bias == "per_token"

        # Step A: audio queries attend to the visual tokens.
        audio_bias = self._attention_bias(self.audio_bias_mlp, audio_prompt,
                                          vision_norms if per_token else mean_vision, mean_audio)
        attended = self.out_proj_audio(self.audio_attends_to_vision(audio, vision, audio_bias))
        gate = torch.sigmoid(self.audio_gate(audio_prompt))
        audio = gate * attended + (1 - gate) * audio

        # Step B: visual queries attend to the updated audio tokens.
        image_bias = self._attention_bias(self.image_bias_mlp, image_prompt, mean_vision,
                                          audio.norm(dim=-1) if per_token else mean_audio)
        attended = self.vision_attends_to_audio(vision, audio, image_bias)
        gate = torch.sigmoid(self.image_gate(image_prompt))
        return gate * attended + (1 - gate) * vision, audio


class CrossModalMixer(nn.Module):
    """Runs one shared fusion block per (scale, task) and returns task-specific visual maps and audio tokens."""

    def __init__(self, visual_dim: int = 128, dim: int = 256, levels: int = 3, heads: int = 8,
                 bias: str = "per_head") -> None:
        super().__init__()
        self.vision_proj_in = nn.ModuleList(nn.Linear(visual_dim, dim) for _ in range(levels))
        self.vision_proj_out = nn.ModuleList(nn.Linear(dim, visual_dim) for _ in range(levels))
        self.image_prompts = nn.Parameter(torch.randn(len(TASKS), dim))
        self.audio_prompts = nn.Parameter(torch.randn(len(TASKS), dim))
        self.fusion = SemanticFusionBlock(dim, heads, bias)

    def forward(self, maps: list[torch.Tensor], audio: torch.Tensor) -> dict[str, TaskFeatures]:
        outputs = {task: TaskFeatures([], []) for task in TASKS}
        for proj_in, proj_out, visual in zip(self.vision_proj_in, self.vision_proj_out, maps):
            batch, _, height, width = visual.shape
            vision = proj_in(visual.flatten(2).transpose(1, 2))
            for index, task in enumerate(TASKS):
                fused_vision, fused_audio = self.fusion(vision, audio, self.image_prompts[index],
                                                        self.audio_prompts[index])
                outputs[task].visual.append(proj_out(fused_vision).transpose(1, 2).reshape(batch, -1, height, width))
                outputs[task].audio.append(fused_audio)
        return outputs
