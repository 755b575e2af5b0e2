"""AVAGFormer audio-visual affordance grounding: model, audio front-end, data and predictor. No ROS here.

The names below load on first use, so that importing a light submodule (avag_core.config) does not import torch,
and `python -m avag_core.<module>` does not find its module already imported by the package.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"PRESETS": "config", "AVAGFormerConfig": "config", "build_model": "checkpoints.build",
            "AffordancePrediction": "inference.predictor", "AffordancePredictor": "inference.predictor"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
