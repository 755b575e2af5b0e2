"""Named AVAGFormer presets and the one function that builds a model from them.

| preset           | backbone  | head                                          | parameters (total / trainable*) |
|------------------|-----------|-----------------------------------------------|---------------------------------|
| avagformer_b5    | pvt_v2_b5 | the paper's: 6 encoder layers, 300 queries    | see PRESET_PARAMETERS           |
| avagformer_b2    | pvt_v2_b2 | the paper's                                   |                                 |
| avagformer_b0    | pvt_v2_b0 | light: 3 encoder layers (FFN 1024), 3 query   |                                 |
|                  |           | layers, 100 queries; for CPUs and tests       |                                 |

*trainable: everything but the frozen VGGish.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from .config import AVAGFormerConfig
from .modeling import AVAGFormer
from .weights import load_checkpoint, load_pvt_v2_weights, load_state_dict_strictly, load_vggish_weights

PRESETS: dict[str, AVAGFormerConfig] = {
    "avagformer_b5": AVAGFormerConfig(backbone="pvt_v2_b5"),
    "avagformer_b2": AVAGFormerConfig(backbone="pvt_v2_b2"),
    "avagformer_b0": AVAGFormerConfig(backbone="pvt_v2_b0", encoder_layers=3, encoder_ffn_dim=1024,
                                      query_layers=3, num_queries=100),
}


def preset_config(name: str, **overrides: Any) -> AVAGFormerConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def build_model(name: str, *, backbone_weights: str | os.PathLike | None = None,
                vggish_weights: str | os.PathLike | None = None, **overrides: Any) -> AVAGFormer:
    """Build a preset, optionally overriding config fields and loading local pretrained encoder weights.

    `backbone_weights` is an official PVT-v2 ImageNet `.pth`; `vggish_weights` the torchvggish
    `vggish-10086976.pth`. Without them those encoders keep their random initialisation.
    """
    model = AVAGFormer(preset_config(name, **overrides))
    if backbone_weights is not None:
        load_pvt_v2_weights(model.backbone, backbone_weights)
    if vggish_weights is not None:
        if model.config.audio_encoder != "vggish":
            raise ValueError(f"vggish_weights given but the audio encoder is {model.config.audio_encoder!r}")
        load_vggish_weights(model.audio_encoder, vggish_weights)
    return model


def load_model(checkpoint: str | os.PathLike, **overrides: Any) -> AVAGFormer:
    """The model a checkpoint of ours describes, with its weights; `overrides` replace config fields that do not
    change the weights (image_size)."""
    payload = load_checkpoint(checkpoint)
    model = AVAGFormer(dataclasses.replace(AVAGFormerConfig.from_dict(payload["config"]), **overrides))
    load_state_dict_strictly(model, payload["model"], str(checkpoint))
    return model
