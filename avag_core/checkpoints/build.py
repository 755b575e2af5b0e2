"""Named AVAGFormer presets and the functions that build a model from a preset or a checkpoint.

| preset           | backbone  | head                                          | parameters (total / trainable*) |
|------------------|-----------|-----------------------------------------------|---------------------------------|
| avagformer_b5    | pvt_v2_b5 | the paper's: 6 encoder layers, 300 queries    | 169.53M / 97.39M                |
| avagformer_b2    | pvt_v2_b2 | the paper's                                   | 112.94M / 40.80M                |
| avagformer_b0    | pvt_v2_b0 | light: 3 encoder layers (FFN 1024), 3 query   | 82.75M / 10.61M                 |
|                  |           | layers, 100 queries; for CPUs and tests       |                                 |

*trainable: everything but the frozen VGGish.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from ..config import PRESETS, AVAGFormerConfig
from ..modeling import AVAGFormer
from .released import load_released
from .weights import checkpoint_payload, load_file, load_pvt_v2_weights, load_state_dict_strictly, load_vggish_weights

logger = logging.getLogger(__name__)

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
    """The model a checkpoint describes, with its weights: one of ours, or one trained with the authors' released
    code, converted in memory (avag_core.checkpoints.released). `overrides` replace config fields that do not
    change the weights (image_size; a released checkpoint does not record it and runs at 512 unless told
    otherwise)."""
    payload = load_file(checkpoint)
    released = load_released(payload, checkpoint, **overrides)
    if released is not None:
        model, weights = released
        logger.info("%s is a checkpoint of the released AVAGFormer code: converted in memory (%s, %d px; %s). "
                    "python -m avag_core.convert_released converts it once.", checkpoint, weights.config.backbone,
                    weights.config.image_size, weights.summary())
        return model
    payload = checkpoint_payload(payload, checkpoint)
    model = AVAGFormer(dataclasses.replace(AVAGFormerConfig.from_dict(payload["config"]), **overrides))
    load_state_dict_strictly(model, payload["model"], str(checkpoint))
    return model
