"""The predictor the node's parameters ask for (a checkpoint, or a preset with random weights, loudly), and the
memory a dropped one leaves."""
from __future__ import annotations

import gc
from concurrent.futures import Future
from typing import Callable

import torch

from avag_core import AffordancePredictor, build_model
from avag_core.inference.backends import backend_class
from avag_core.inference.view_reuse import ViewReuse

from .node_statistics import STATS_WINDOW_S
from .parameters import GroundingSettings
from .runtime.memory import return_freed_memory


def load_predictor(settings: GroundingSettings, log,
                   renew_on: Callable[[Callable[[], object]], Future]) -> tuple[AffordancePredictor, str]:
    """The predictor and a description of its model for the log and /diagnostics; its view reuse renews keyframes
    with `renew_on` (ViewReuse's). Raises ValueError that names the parameters at fault."""
    try:
        # Device, precision and the runtime package first: they fail in a second, the export in minutes.
        backend_class(settings.backend).resolve_target(settings.device, settings.precision)
    except ValueError as error:
        raise ValueError(f"parameters 'backend', 'device', 'precision': {error}") from None
    try:
        if settings.checkpoint:
            predictor = AffordancePredictor.from_checkpoint(settings.checkpoint, settings.device, settings.precision,
                                                            settings.threshold, settings.backend)
            description = f"{settings.checkpoint} ({predictor.config.backbone})"
        else:
            model = build_model(settings.model)  # an unknown preset fails here, before the warning
            log.warning("=" * 72)
            log.warning(f"NO CHECKPOINT: '{settings.model}' runs with RANDOM WEIGHTS. Its masks are "
                        "meaningless; set the 'checkpoint' parameter for real use.")
            log.warning("=" * 72)
            predictor = AffordancePredictor.from_model(model, settings.device, settings.precision,
                                                       settings.threshold, settings.backend)
            description = f"{settings.model} (RANDOM WEIGHTS)"
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"parameter '{'checkpoint' if settings.checkpoint else 'model'}': {error}") from None
    predictor.view_reuse = ViewReuse(settings.reuse_max_change, settings.reuse_max_age_s, STATS_WINDOW_S,
                                     renew_on=renew_on)
    return predictor, description


def free_dropped_model(device: torch.device | None) -> None:
    """After the last reference to a predictor on `device` is gone: the old model must be gone before a configure
    builds the next one."""
    gc.collect()
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()
    return_freed_memory()
