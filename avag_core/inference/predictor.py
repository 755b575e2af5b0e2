"""The user-facing predictor: image + sound in, function and dependency masks out, at the image's own size."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoints.build import build_model, load_model
from ..config import AVAGFormerConfig
from ..modeling import AVAGFormer
from .backends import EXPORTED_BACKENDS, INT8_HELP, InferenceBackend, TorchBackend, backend_class
from .export import export_onnx, exported_checkpoint
from .preprocessing import prepare_audio, prepare_image
from .view_reuse import ViewReuse

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadOutput:
    """The head's logits for one keyframe's maps (the very list view reuse keeps) and one sound's embeddings."""
    maps: list[torch.Tensor]
    embeddings: torch.Tensor
    logits: tuple[torch.Tensor, torch.Tensor]


@dataclass
class AffordancePrediction:
    function_prob: np.ndarray  # float32 HxW in [0, 1]
    dependency_prob: np.ndarray
    function_mask: np.ndarray  # bool HxW
    dependency_mask: np.ndarray


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
    def embed(self, encode: Callable[[torch.Tensor], torch.Tensor], windows: torch.Tensor) -> torch.Tensor:
        """windows [n, 1, 96, 64] on the CPU -> embeddings [n, 128], each computed by `encode` at most once."""
        keys = [hashlib.blake2b(w.numpy().tobytes(), digest_size=16).digest() for w in windows]
        missing = list(dict.fromkeys(k for k in keys if k not in self._entries))
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            for key, embedding in zip(missing, encode(windows[[first[k] for k in missing]])):
                self._entries[key] = embedding
        for key in keys:
            self._entries.move_to_end(key)
        result = torch.stack([self._entries[k] for k in keys])
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return result


class AffordancePredictor:
    """Runs an AVAGFormer on raw inputs, through any backend (avag_core.inference.backends).

    Images are HxWx3 uint8 RGB of any size; HxW / HxWx1 gray and HxWx4 RGBA are converted to RGB (alpha is
    dropped). Audio is a waveform (1-D, or [samples, channels]) at any positive sample rate.
    """

    def __init__(self, backend: InferenceBackend | AVAGFormer, threshold: float = 0.5) -> None:
        """`backend` is what runs the model (avag_core.inference.backends), or a model, which then runs on the torch
        backend on the first GPU or the CPU in fp32 (from_model chooses the device, precision and backend)."""
        if isinstance(backend, AVAGFormer):
            backend = TorchBackend(backend)
        elif not isinstance(backend, InferenceBackend):
            raise TypeError(f"AffordancePredictor takes an AVAGFormer or an InferenceBackend, got "
                            f"{type(backend).__name__}; use AffordancePredictor.from_model, from_checkpoint or "
                            "from_preset")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.backend = backend
        self.threshold = threshold
        self.audio_cache = AudioEmbeddingCache()
        self.view_reuse: ViewReuse | None = None  # None: every frame runs the image side (see image_maps)
        self._last_head: HeadOutput | None = None
        self.last_head_reused = False

    @property
    def config(self) -> AVAGFormerConfig:
        return self.backend.config

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @classmethod
    def from_model(cls, model: AVAGFormer, device: str | torch.device = "auto", precision: str = "fp32",
                   threshold: float = 0.5, backend: str = "torch") -> "AffordancePredictor":
        """Run a model in memory; an exported backend gets it through a temporary export."""
        backend_type = backend_class(backend)
        if backend_type is TorchBackend:
            return cls(TorchBackend(model, device, precision), threshold)
        backend_type.resolve_target(str(device), precision)  # before the export, which takes a while
        with tempfile.TemporaryDirectory(prefix="avagformer-onnx-") as folder:
            return cls(backend_type(export_onnx(model, folder), str(device), precision), threshold)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto",
                        precision: str = "fp32", threshold: float = 0.5,
                        backend: str = "torch") -> "AffordancePredictor":
        """`path` is a `.pt` checkpoint, or for onnxruntime and openvino also an export folder. A checkpoint
        runs on those after a one-time export into the cache (avag_core.inference.export.exported_checkpoint)."""
        backend_type = backend_class(backend)
        path = Path(path)
        if backend_type is TorchBackend:
            if path.is_dir():
                raise ValueError(f"{path} is a folder: the torch backend needs the .pt checkpoint; an export "
                                 f"folder runs on {' or '.join(EXPORTED_BACKENDS)}")
            return cls(TorchBackend(load_model(path), device, precision), threshold)
        if path.is_dir():
            return cls(backend_type(path, str(device), precision), threshold)
        if precision == "int8":  # quantizing needs calibration data, so it is never done behind the user's back
            raise ValueError(f"{path} is a checkpoint; {INT8_HELP}, and pass that folder")
        backend_type.resolve_target(str(device), precision)
        return cls(backend_type(exported_checkpoint(path), str(device), precision), threshold)

    @classmethod
    def from_preset(cls, name: str, device: str | torch.device = "auto", precision: str = "fp32",
                    threshold: float = 0.5, backend: str = "torch", **overrides) -> "AffordancePredictor":
        """Random weights (plus any local encoder weights passed through): for tests and latency, not for use."""
        model = build_model(name, **overrides)  # an unknown preset is the error to see, not the warning
        logger.warning("AVAGFormer preset %s has RANDOM weights: its masks are meaningless. "
                       "Load a trained checkpoint for real use.", name)
        return cls.from_model(model, device, precision, threshold, backend)

    def prepare_image(self, image: np.ndarray) -> torch.Tensor:
        """-> [1, 3, S, S] normalised on the backend's device (avag_core.inference.preprocessing)."""
        return prepare_image(image, self.config, self.device)

    def prepare_audio(self, audio: np.ndarray | torch.Tensor, sample_rate: float) -> torch.Tensor:
        """-> [T, 1, 96, 64] log-mel windows on the CPU, by the same rule as training."""
        return prepare_audio(audio, sample_rate, self.config)

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
        maps = self.image_maps(image)
        embeddings = torch.stack([self.audio_cache.embed(self.backend.embed_audio, w) for w in windows])
        function_logits, dependency_logits = self._decode(maps, embeddings)
        function_prob = self._to_prediction(function_logits, height, width)
        dependency_prob = self._to_prediction(dependency_logits, height, width)
        return [AffordancePrediction(f, d, f > self.threshold, d > self.threshold)
                for f, d in zip(function_prob, dependency_prob)]

    def _decode(self, maps: list[torch.Tensor], embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's logits. A frame that reuses the keyframe while the sound is the last frame's (the node's clip
        moves on once per log-mel window, 0.96 s) has the last frame's inputs, so it gets the last frame's logits:
        what the head would compute again."""
        last = self._last_head
        self.last_head_reused = (last is not None and last.maps is maps and last.embeddings.shape == embeddings.shape
                                 and torch.equal(last.embeddings, embeddings))
        if self.last_head_reused:
            return last.logits
        logits = self.backend.decode(maps, embeddings)
        # without view reuse the maps are new every frame, so they would never match
        self._last_head = HeadOutput(maps, embeddings, logits) if self.view_reuse is not None else None
        return logits

    def image_maps(self, image: np.ndarray) -> list[torch.Tensor]:
        """The image side's FPN maps for `image`: the kept keyframe's while `view_reuse` judges the view unchanged
        (avag_core.inference.view_reuse), else computed."""
        def encode(frame: np.ndarray) -> list[torch.Tensor]:
            with torch.inference_mode():  # also on the renewal's thread, which predict's inference mode does not reach
                return self.backend.encode_image(self.prepare_image(frame))

        return encode(image) if self.view_reuse is None else self.view_reuse.maps_for(image, encode)

    def predict(self, image: np.ndarray, audio: np.ndarray | torch.Tensor,
                sample_rate: float) -> AffordancePrediction:
        return self.predict_many(image, [audio], sample_rate)[0]
