"""The optimiser side of the training recipe, shared by `training/train.py` and the tests that train.

The final path (per-task compressor and upsampler) learns at `final_lr_scale` times the base rate: from
scratch, at one shared rate, its bias drifts too slowly for the masks to leave sigmoid(initial bias) (README,
"Training recipe"). The schedule is a function of the step alone, so a resumed run needs no scheduler state.
"""
from __future__ import annotations

import torch

from .modeling import AVAGFormer


def parameter_groups(model: AVAGFormer, final_lr_scale: float) -> list[dict]:
    """Every trainable parameter (all but a frozen VGGish), the final path in its own group."""
    final = {id(p) for p in model.compressors.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in trainable if id(p) not in final], "lr_scale": 1.0},
            {"params": [p for p in trainable if id(p) in final], "lr_scale": final_lr_scale}]


def set_learning_rate(optimizer: torch.optim.Optimizer, base_lr: float, warmup_steps: int, step: int) -> None:
    """Linear warm-up over `warmup_steps` (0: none), then constant; each group scaled by its `lr_scale`."""
    warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group["lr_scale"] * warmup
