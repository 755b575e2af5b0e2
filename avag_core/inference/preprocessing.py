"""Raw image and sound -> what the model's image and audio encoders take, by the rules the model was trained
with. One piece of code for the predictor and for the quantizer's calibration, so that int8 graphs are calibrated
on exactly what they will be given."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..audio import audio_to_model_input
from ..config import AVAGFormerConfig
from ..image import IMAGENET_MEAN, IMAGENET_STD, as_rgb


def prepare_image(image: np.ndarray, config: AVAGFormerConfig, device: torch.device) -> torch.Tensor:
    """-> [1, 3, S, S] normalised on `device`, resized (aspect ratio not kept, as in training) to the model's
    size. Gray, gray with a channel axis and RGBA images are taken as avag_core.image.as_rgb takes them."""
    rgb = torch.from_numpy(as_rgb(image)).to(device)
    x = rgb.permute(2, 0, 1)[None].float()
    size = config.image_size
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    return (x - mean) / std


def prepare_audio(audio: np.ndarray | torch.Tensor, sample_rate: float, config: AVAGFormerConfig) -> torch.Tensor:
    """-> [T, 1, 96, 64] log-mel windows on the CPU, by the same rule as training."""
    return audio_to_model_input(audio, sample_rate, config.num_audio_windows)
