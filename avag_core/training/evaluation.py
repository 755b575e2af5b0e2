"""Scoring a model on a dataset under the released protocol (see `metrics`)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from ..data.dataset import load_mask
from ..data.synthetic import SAMPLE_RATE
from ..inference.backends import autocast_for
from ..modeling import AVAGFormer
from .metrics import AffordanceScores

# Called per sample with (name, function_prob, dependency_prob) at the scored resolution.
PredictionSink = Callable[[str, torch.Tensor, torch.Tensor], None]


@torch.no_grad()
def score_model(model: AVAGFormer, loader: DataLoader, device: torch.device, precision: str = "fp32",
                original_size: bool = False, sink: PredictionSink | None = None,
                progress: Callable | None = None) -> AffordanceScores:
    """Masks are compared at the model's input size (as the released code does), or with `original_size` the
    probabilities are resized to each image's own size and compared with the original masks."""
    model.eval()
    dataset = loader.dataset.dataset if isinstance(loader.dataset, Subset) else loader.dataset  # its rows
    scores = AffordanceScores()
    for batch in (progress(loader) if progress else loader):
        with autocast_for(device, precision):
            output = model(batch["image"].to(device, non_blocking=True), batch["log_mel"].to(device))
        function_probs = torch.sigmoid(output.function_logits.float()).cpu()
        dependency_probs = torch.sigmoid(output.dependency_logits.float()).cpu()
        for i, name in enumerate(batch["name"]):
            function_prob, dependency_prob = function_probs[i, 0], dependency_probs[i, 0]
            function_gt, dependency_gt = batch["function_mask"][i, 0], batch["dependency_mask"][i, 0]
            if original_size:
                row = dataset.rows[int(batch["index"][i])]
                function_gt = torch.from_numpy(load_mask(row.function_mask)).float()
                dependency_gt = torch.from_numpy(load_mask(row.dependency_mask, tuple(function_gt.shape))).float()
                size = tuple(function_gt.shape)
                function_prob, dependency_prob = (
                    F.interpolate(p[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
                    for p in (function_prob, dependency_prob))
            scores.add(name, function_prob, function_gt, dependency_prob, dependency_gt)
            if sink is not None:
                sink(name, function_prob, dependency_prob)
    return scores


def score_predictor(predictor, pairs: list) -> tuple[AffordanceScores, list[tuple[np.ndarray, np.ndarray]]]:
    """An AffordancePredictor (any backend) on in-memory pairs (avag_core.data.synthetic.Pair), at each image's
    own size: the scores and every (function, dependency) probability map, to compare backends with."""
    scores = AffordanceScores()
    probabilities = []
    for index, pair in enumerate(pairs):
        prediction = predictor.predict(pair.image, pair.sound, SAMPLE_RATE)
        scores.add(str(index), torch.from_numpy(prediction.function_prob), torch.from_numpy(pair.function_mask).float(),
                   torch.from_numpy(prediction.dependency_prob), torch.from_numpy(pair.dependency_mask).float())
        probabilities.append((prediction.function_prob, prediction.dependency_prob))
    return scores, probabilities
