"""Checkpoints trained with the authors' released AVAGFormer code (github.com/jscslld/AVAGFormer).

Our AVAGFormer computes what the released model computes, so its weights map onto ours by name alone: no tensor is
reshaped, split or merged. This module recognises such a file, infers the `AVAGFormerConfig` from the tensors
themselves and renames every tensor the released forward uses. The rest is dropped, because the released forward
never reads it:

| dropped                                      | why                                                        |
|----------------------------------------------|------------------------------------------------------------|
| `head.transformer.decoder.*`                 | built, never run                                           |
| `audio_proj1.*`                              | its only use is commented out                              |
| `head.in_proj.0.*`                           | the stride-4 backbone map it projects is discarded         |
| `head.decode_func/dep.film.*`                | the decoders are never given their FiLM input              |
| `head.mask_conditioned_attn.key_proj.bias`   | adds one constant to a whole softmax row, which cancels    |

The released code saves two formats: the best model flat (`model.module.state_dict()`) and the last checkpoint as
`{'net': model.state_dict(), 'optimizer': ...}` with DDP's `module.` prefixes. Both are read, with
`weights_only=True` (through `weights.load_file`).
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models.pvt_v2 import checkpoint_filter_fn

from ..config import AVAGFormerConfig
from ..errors import existing_file
from ..modeling import AVAGFormer
from ..modeling.backbone import PVT_V2_VARIANTS
from ..modeling.vggish import VGGish
from .weights import load_state_dict_strictly, load_vggish_weights

RELEASED_SOURCE = "released AVAGFormer"
# What the released code hard-wires rather than configures (its encoder layer, query generator and head
# constructors, and `AVAGFormer.forward`, which reshapes the audio with a literal 20).
RELEASED_FIXED = {"num_audio_windows": 20, "encoder_heads": 8, "encoder_points": 4, "query_heads": 8,
                  "decoder_heads": 4, "audio_encoder": "vggish", "freeze_audio_encoder": True,
                  "mixer_bias": "per_head", "foreground_prior": None}
# The paper trains and evaluates at 512 px; the weights do not record the size.
RELEASED_IMAGE_SIZE = 512

NEVER_USED = {
    "transformer decoder (head.transformer.decoder.*)": r"head\.transformer\.decoder\.",
    "audio_proj1": r"audio_proj1\.",
    "stride-4 input projection (head.in_proj.0.*)": r"head\.in_proj\.0\.",
    "FiLM layers (head.decode_*.film.*)": r"head\.decode_(func|dep)\.film\.",
    "mask attention key bias (head.mask_conditioned_attn.key_proj.bias)":
        r"head\.mask_conditioned_attn\.key_proj\.bias$",
}

# Present in every released AVAGFormer state_dict and in no other file this project reads.
HALLMARKS = ("head.transformer.encoder.layers.", "head.learnable_upsample_func.", "head.query_generator.")


def _task_rules(short: str, task: str) -> list[tuple[str, str]]:
    return [
        (rf"head\.decode_{short}\.proj_vis\.(\d+)\.", rf"decoders.{task}.scales.\1.visual_proj."),
        (rf"head\.decode_{short}\.proj_audio\.(\d+)\.", rf"decoders.{task}.scales.\1.audio_proj."),
        (rf"head\.decode_{short}\.cross_attn\.(\d+)\.", rf"decoders.{task}.scales.\1.cross_attn."),
        (rf"head\.decode_{short}\.conv_fuse\.(\d+)\.", rf"decoders.{task}.scales.\1.fuse.0."),
        (rf"head\.decode_{short}\.norms\.(\d+)\.", rf"decoders.{task}.scales.\1.fuse.1."),
        (rf"head\.{short}_head\.query_proj\.", rf"mask_heads.{task}.query_proj."),
        (rf"head\.{short}_head\.mask_head\.0\.", rf"mask_heads.{task}.conv."),
        (rf"head\.{short}_head\.mask_head\.2\.", rf"mask_heads.{task}.predict."),
        (rf"head\.learnable_upsample_{short}\.fuse\.reduce\.([01])\.", rf"compressors.{task}.squeeze.\1."),
        (rf"head\.learnable_upsample_{short}\.fuse\.se\.([13])\.", rf"compressors.{task}.squeeze.3.gate.\1."),
        (rf"head\.learnable_upsample_{short}\.fuse\.final\.", rf"compressors.{task}.squeeze.4."),
        # ProgressiveUpsample is one Sequential of (conv, BN, ReLU, Upsample) x 3 + a 1x1 conv; ours nests them.
        *((rf"head\.learnable_upsample_{short}\.upsample\.up\.{4 * stage + offset}\.",
           rf"compressors.{task}.upsample.{stage}.{offset}.") for stage in range(3) for offset in (0, 1)),
        (rf"head\.learnable_upsample_{short}\.upsample\.up\.12\.", rf"compressors.{task}.predict."),
    ]


# Released name (after the backbone and the DDP prefix are dealt with) -> ours; the first full match wins.
_FUSION = {"q_proj_audio": "audio_query", "k_proj_image": "image_key", "v_proj_image": "image_value",
           "q_proj_image": "image_query", "k_proj_audio": "audio_key", "v_proj_audio": "audio_value",
           "out_proj_audio": "out_proj_audio", "out_proj_image": "out_proj_image",
           "cond_proj_aud": "audio_bias_mlp", "cond_proj_img": "image_bias_mlp",
           "gate_fc_aud.0": "audio_gate", "gate_fc_img.0": "image_gate"}
RENAMES: list[tuple[str, str]] = [
    (r"vggish\.((features|embeddings)\.\d+\.(weight|bias))$", r"audio_encoder.\1"),
    (r"audio_proj\.(weight|bias)$", r"audio_proj.\1"),
    (r"head\.level_embed$", "encoder.level_embed"),
    *((rf"head\.in_proj\.{level + 1}\.", f"encoder.input_proj.{level}.") for level in range(3)),
    (r"head\.transformer\.encoder\.layers\.(\d+)\.(self_attn|norm1|norm2)\.", r"encoder.layers.\1.\2."),
    (r"head\.transformer\.encoder\.layers\.(\d+)\.linear1\.", r"encoder.layers.\1.ffn.0."),
    (r"head\.transformer\.encoder\.layers\.(\d+)\.linear2\.", r"encoder.layers.\1.ffn.3."),
    (r"head\.fpn\.lateral_convs\.", "fpn.lateral."),
    (r"head\.fpn\.output_convs\.", "fpn.output."),
    (r"head\.mixer\.vision_proj_(in|out)\.", r"mixer.vision_proj_\1."),
    (r"head\.mixer\.task_prompt_img\.weight$", "mixer.image_prompts"),
    (r"head\.mixer\.task_prompt_aud\.weight$", "mixer.audio_prompts"),
    *((rf"head\.mixer\.fusion\.0\.{re.escape(theirs)}\.", f"mixer.fusion.{ours}.") for theirs, ours in _FUSION.items()),
    (r"head\.query_generator\.query\.weight$", "query_generator.query_embed"),
    (r"head\.query_generator\.layers\.", "query_generator.layers."),
    (r"head\.learnable_query\.weight$", "learnable_queries"),
    *_task_rules("func", "function"),
    *_task_rules("dep", "dependency"),
    (r"head\.mask_conditioned_attn\.query_proj\.", "mask_attention.query."),
    (r"head\.mask_conditioned_attn\.key_proj\.weight$", "mask_attention.key.weight"),
    (r"head\.mask_conditioned_attn\.value_proj\.", "mask_attention.value."),
    (r"head\.mask_conditioned_attn\.out_proj\.", "mask_attention.out_proj."),
]
_COMPILED_RENAMES = [(re.compile(pattern), template) for pattern, template in RENAMES]
_COMPILED_UNUSED = {group: re.compile(pattern) for group, pattern in NEVER_USED.items()}


@dataclass
class ReleasedWeights:
    """A released checkpoint mapped onto ours: the config its tensors describe, our state_dict, what was left."""
    config: AVAGFormerConfig
    state_dict: dict[str, torch.Tensor]
    dropped: dict[str, int] = field(default_factory=dict)  # group -> tensors dropped
    dropped_values: int = 0
    vggish_file: Path | None = None  # where the audio encoder came from, for a file saved without it

    def summary(self) -> str:
        groups = ", ".join(f"{count} {group}" for group, count in self.dropped.items())
        return (f"kept {len(self.state_dict)} tensors, dropped {sum(self.dropped.values())} the released forward "
                f"never uses ({self.dropped_values / 1e6:.2f}M values: {groups or 'none'})")


def released_state_dict(payload: Any) -> dict[str, torch.Tensor] | None:
    """The released model's flat state_dict inside a loaded file (either saved format), or None if the file is
    not a released AVAGFormer checkpoint."""
    if isinstance(payload, dict) and isinstance(payload.get("net"), dict):
        payload = payload["net"]
    if not isinstance(payload, dict) or not payload or not all(isinstance(k, str) for k in payload):
        return None
    if all(k.startswith("module.") for k in payload):
        payload = {k[len("module."):]: v for k, v in payload.items()}
    if not all(any(k.startswith(h) for k in payload) for h in HALLMARKS):
        return None
    if not all(isinstance(v, torch.Tensor) for v in payload.values()):
        return None
    return payload


def _layer_count(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    if indices != set(range(len(indices))):
        raise ValueError(f"layers {sorted(indices)} under {prefix}* are not numbered 0..N-1")
    return len(indices)


def _required(state: dict[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state:
        raise ValueError(f"{source} lacks {key}: not a complete released AVAGFormer checkpoint")
    return state[key]


def _backbone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's tensors under timm's names (the released backbone is laid out like the official PVT-v2)."""
    return checkpoint_filter_fn({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")},
                                None)


def _backbone_variant(state: dict[str, torch.Tensor], source: str) -> str:
    """The timm PVT-v2 variant whose tensors (names and shapes) are exactly the file's backbone.* tensors, each
    variant built on the meta device to compare."""
    backbone = _backbone_state(state)
    original = _backbone_state({k: k for k in state if k.startswith("backbone.")})  # timm name -> the file's
    closest = None
    for variant in PVT_V2_VARIANTS:
        with torch.device("meta"):
            expected = {k: v.shape for k, v in timm.create_model(variant, num_classes=0).state_dict().items()}
        wrong = sorted(set(backbone) ^ set(expected)) + sorted(
            k for k in set(backbone) & set(expected) if backbone[k].shape != expected[k])
        if not wrong:
            return variant
        if closest is None or len(wrong) < len(closest[1]):
            closest = (variant, wrong)
    variant, wrong = closest
    first = wrong[0]
    described = (f"{original[first]} {tuple(backbone[first].shape)}" if first in backbone
                 else f"no tensor for timm's {first}")
    raise ValueError(f"{source}: the backbone fits no PVT-v2 variant; the closest, {variant}, differs in "
                     f"{len(wrong)} tensor(s), the first: {described}")


def infer_config(state: dict[str, torch.Tensor], source: str,
                 image_size: int = RELEASED_IMAGE_SIZE) -> AVAGFormerConfig:
    """The AVAGFormerConfig a released state_dict describes, read from its tensors' names and shapes."""
    def width(key: str) -> int:
        return int(_required(state, key, source).shape[0])

    num_queries = width("head.query_generator.query.weight")
    compressed = int(_required(state, "head.learnable_upsample_func.fuse.reduce.0.weight", source).shape[1])
    if compressed != num_queries:
        raise ValueError(f"{source}: head.learnable_upsample_func.fuse.reduce.0.weight takes {compressed} query "
                         f"maps but the query generator makes {num_queries}")
    return AVAGFormerConfig(
        backbone=_backbone_variant(state, source), image_size=image_size,
        embed_dim=width("audio_proj.weight"),
        encoder_layers=_layer_count(state, "head.transformer.encoder.layers."),
        encoder_ffn_dim=width("head.transformer.encoder.layers.0.linear1.weight"),
        fpn_dim=width("head.fpn.lateral_convs.0.weight"),
        mixer_heads=width("head.mixer.fusion.0.cond_proj_img.2.weight"),
        num_queries=num_queries,
        query_layers=_layer_count(state, "head.query_generator.layers."),
        query_ffn_dim=width("head.query_generator.layers.0.ffn.0.weight"),
        decoder_dim=width("head.func_head.query_proj.weight"),
        compressor_dim=width("head.learnable_upsample_func.fuse.reduce.0.weight"),
        **RELEASED_FIXED,
    )


def _rename(key: str) -> str | None:
    for pattern, template in _COMPILED_RENAMES:
        match = pattern.match(key)
        if match:
            return match.expand(template) + key[match.end():]
    return None


def convert_state_dict(state: dict[str, torch.Tensor], source: str,
                       image_size: int = RELEASED_IMAGE_SIZE) -> ReleasedWeights:
    """Map a released state_dict onto ours. Every tensor is either renamed or dropped as never used; one that is
    neither fits no AVAGFormer config and is an error naming it. Strict loading then checks every shape."""
    config = infer_config(state, source, image_size)
    mapped: dict[str, torch.Tensor] = {}
    dropped: dict[str, int] = {}
    dropped_values = 0
    mapped.update({f"backbone.body.{k}": v for k, v in _backbone_state(state).items()})
    for key, tensor in state.items():
        if key.startswith("backbone."):
            continue
        group = next((g for g, pattern in _COMPILED_UNUSED.items() if pattern.match(key)), None)
        if group is not None:
            dropped[group] = dropped.get(group, 0) + 1
            dropped_values += tensor.numel()
            continue
        ours = _rename(key)
        if ours is None:
            raise ValueError(f"{source}: tensor {key} {tuple(tensor.shape)} fits no AVAGFormer config "
                             "(it is no tensor of the released model)")
        mapped[ours] = tensor
    return ReleasedWeights(config, mapped, dropped, dropped_values)


def load_released(payload: Any, source: str | os.PathLike, vggish_weights: str | os.PathLike | None = None,
                  **overrides: Any) -> tuple[AVAGFormer, ReleasedWeights] | None:
    """The model a loaded file of the released code describes, with its weights, and what the mapping kept and
    dropped; None if `payload` is no released checkpoint. A file saved without the frozen VGGish takes it from
    `vggish_weights` (the torchvggish release file), which is otherwise not read. `overrides` replace config
    fields that do not change the weights; the file does not record the image size: RELEASED_IMAGE_SIZE unless
    `image_size` is given."""
    state = released_state_dict(payload)
    if state is None:
        return None
    weights = convert_state_dict(state, str(source), overrides.get("image_size", RELEASED_IMAGE_SIZE))
    if not has_audio_encoder(weights):
        if vggish_weights is None:
            raise ValueError(f"{source} is a released AVAGFormer checkpoint without its vggish.* tensors (saved "
                             f"without the frozen VGGish); convert it once, adding the torchvggish release file: "
                             f"python -m avag_core.convert_released --checkpoint {source} --out OUT.pt "
                             f"--vggish-weights vggish-10086976.pth")
        vggish = VGGish()
        load_vggish_weights(vggish, existing_file(vggish_weights, "VGGish weights"))
        weights.state_dict.update({f"audio_encoder.{k}": v for k, v in vggish.state_dict().items()})
        weights.vggish_file = Path(vggish_weights)
    model = AVAGFormer(dataclasses.replace(weights.config, **overrides))
    load_state_dict_strictly(model, weights.state_dict, str(source))
    return model, weights


def has_audio_encoder(weights: ReleasedWeights) -> bool:
    return any(k.startswith("audio_encoder.") for k in weights.state_dict)
