"""The user-facing predictor: image + sound in, function and dependency masks out, at the image's own size."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .audio import audio_to_model_input
from .build import build_model
from .config import AVAGFormerConfig
from .image import IMAGENET_MEAN, IMAGENET_STD, as_rgb
from .modeling import AVAGFormer
from .weights import load_checkpoint, load_state_dict_strictly

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for fp16/bf16; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


@dataclass
class AffordancePrediction:
    function_prob: np.ndarray  # float32 HxW in [0, 1]
    dependency_prob: np.ndarray
    function_mask: np.ndarray  # bool HxW
    dependency_mask: np.ndarray


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks the first GPU when there is one; also accepts 'cpu', 'cuda', 'cuda:N'."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"invalid device {device!r}; use auto, cpu, cuda or cuda:N") from error
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    return resolved


class AudioEmbeddingCache:
    """LRU of audio-encoder embeddings keyed by the bytes of each log-mel window.

    A stream re-analysed every frame shares most windows with the previous call, and every padding window is
    the same, so the encoder only runs on windows it has not seen. Valid while the encoder is a fixed function:
    frozen, or in eval mode (the predictor's), not while it trains.
    """

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @torch.no_grad()
    def embed(self, model: AVAGFormer, windows: torch.Tensor, device: torch.device) -> torch.Tensor:
        """windows [n, 1, 96, 64] on the CPU -> embeddings [n, 128] on `device`."""
        keys = [hashlib.blake2b(w.numpy().tobytes(), digest_size=16).digest() for w in windows]
        missing = list(dict.fromkeys(k for k in keys if k not in self._entries))
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            batch = windows[[first[k] for k in missing]].to(device)
            for key, embedding in zip(missing, model.audio_encoder(batch).float()):
                self._entries[key] = embedding
        for key in keys:
            self._entries.move_to_end(key)
        result = torch.stack([self._entries[k] for k in keys])
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return result


class AffordancePredictor:
    """Runs an AVAGFormer on raw inputs.

    Images are HxWx3 uint8 RGB of any size; HxW / HxWx1 gray and HxWx4 RGBA are converted to RGB (alpha is
    dropped). Audio is a waveform (1-D, or [samples, channels]) at any positive sample rate.
    """

    def __init__(self, model: AVAGFormer, device: str | torch.device = "auto", precision: str = "fp32",
                 threshold: float = 0.5) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.device = resolve_device(device)
        if precision != "fp32" and self.device.type != "cuda":
            raise ValueError(f"precision {precision!r} needs a CUDA device; on {self.device} use fp32")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.model = model.to(self.device).eval()
        self.precision = precision
        self.threshold = threshold
        self.audio_cache = AudioEmbeddingCache()
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255
        self._normalise = (mean, std)

    @property
    def config(self) -> AVAGFormerConfig:
        return self.model.config

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto",
                        precision: str = "fp32", threshold: float = 0.5) -> "AffordancePredictor":
        payload = load_checkpoint(path)
        model = AVAGFormer(AVAGFormerConfig.from_dict(payload["config"]))
        load_state_dict_strictly(model, payload["model"], str(path))
        return cls(model, device, precision, threshold)

    @classmethod
    def from_preset(cls, name: str, device: str | torch.device = "auto", precision: str = "fp32",
                    threshold: float = 0.5, **overrides) -> "AffordancePredictor":
        """Random weights (plus any local encoder weights passed through): for tests and latency, not for use."""
        logger.warning("AVAGFormer preset %s has RANDOM weights: its masks are meaningless. "
                       "Load a trained checkpoint for real use.", name)
        return cls(build_model(name, **overrides), device, precision, threshold)

    def prepare_image(self, image: np.ndarray) -> torch.Tensor:
        """-> [1, 3, S, S] normalised, resized (aspect ratio not kept, as in training) to the model's size."""
        rgb = torch.from_numpy(as_rgb(image)).to(self.device)
        x = rgb.permute(2, 0, 1)[None].float()
        size = self.config.image_size
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        mean, std = self._normalise
        return (x - mean) / std

    def prepare_audio(self, audio: np.ndarray | torch.Tensor, sample_rate: float) -> torch.Tensor:
        """-> [T, 1, 96, 64] log-mel windows on the CPU, by the same rule as training."""
        return audio_to_model_input(audio, sample_rate, self.config.num_audio_windows)

    def _to_prediction(self, logits: torch.Tensor, height: int, width: int) -> np.ndarray:
        resized = F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False)
        return torch.sigmoid(resized)[:, 0].cpu().numpy()

    @torch.inference_mode()
    def predict_many(self, image: np.ndarray, audios: Sequence[np.ndarray | torch.Tensor],
                     sample_rate: float | Sequence[float]) -> list[AffordancePrediction]:
        """One image, several sounds: the image side (backbone, encoder, FPN) runs once."""
        if len(audios) == 0:
            raise ValueError("predict_many needs at least one audio clip")
        rates = [sample_rate] * len(audios) if np.isscalar(sample_rate) else list(sample_rate)
        if len(rates) != len(audios):
            raise ValueError(f"got {len(audios)} audio clips but {len(rates)} sample rates")
        windows = [self.prepare_audio(a, r) for a, r in zip(audios, rates)]
        height, width = np.asarray(image).shape[:2]
        pixels = self.prepare_image(image)
        with autocast_for(self.device, self.precision):
            embeddings = torch.stack([self.audio_cache.embed(self.model, w, self.device) for w in windows])
            visual = self.model.encode_image(pixels)
            visual = [v.expand(len(audios), -1, -1, -1) for v in visual]
            output = self.model.decode(visual, embeddings)
        function_prob = self._to_prediction(output.function_logits, height, width)
        dependency_prob = self._to_prediction(output.dependency_logits, height, width)
        return [AffordancePrediction(f, d, f > self.threshold, d > self.threshold)
                for f, d in zip(function_prob, dependency_prob)]

    def predict(self, image: np.ndarray, audio: np.ndarray | torch.Tensor,
                sample_rate: float) -> AffordancePrediction:
        return self.predict_many(image, [audio], sample_rate)[0]
