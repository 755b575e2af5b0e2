"""PyTorch dataset over a CSV index: image, log-mel windows and both masks per (image, clip) pair."""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..audio import audio_to_model_input, fit_to_windows, load_audio
from ..image import load_image
from .avagd import IndexRow
from .transforms import apply_joint, evaluation_transform, training_transform


def load_mask(path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """0/255 gray PNG -> bool HxW. `None` means an empty mask of `shape`."""
    if path is None:
        return np.zeros(shape, bool)
    mask = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
    if mask is None:
        raise ValueError(f"cannot read mask {path}")
    if shape is not None and mask.shape != shape:
        raise ValueError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}")
    return mask > 127


def load_log_mel(row: IndexRow, num_windows: int) -> torch.Tensor:
    """[T, 1, 96, 64] from the precomputed file when the index has one, else decoded from the clip."""
    if row.log_mel is not None:
        examples = torch.load(row.log_mel, map_location="cpu", weights_only=True)
        if not isinstance(examples, torch.Tensor) or examples.shape[1:] != (1, 96, 64):
            raise ValueError(f"{row.log_mel} does not hold log-mel examples [n, 1, 96, 64]")
        return fit_to_windows(examples.float(), num_windows)
    waveform, rate = load_audio(row.audio)
    return audio_to_model_input(waveform, rate, num_windows)


class AffordanceDataset(Dataset):
    def __init__(self, rows: list[IndexRow], image_size: int, num_windows: int, augment: bool) -> None:
        """`augment`: the training augmentation (spec section 9); without it, only resizing and normalisation."""
        if not rows:
            raise ValueError("the dataset index has no rows")
        self.rows = rows
        self.num_windows = num_windows
        self.transform = training_transform(image_size) if augment else evaluation_transform(image_size)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        image = load_image(row.image)
        shape = image.shape[:2]
        function = load_mask(row.function_mask, shape)
        dependency = load_mask(row.dependency_mask, shape)
        pixels, function_mask, dependency_mask = apply_joint(
            self.transform, torch.from_numpy(image).permute(2, 0, 1),
            torch.from_numpy(function)[None], torch.from_numpy(dependency)[None])
        return {"image": pixels, "log_mel": load_log_mel(row, self.num_windows), "function_mask": function_mask,
                "dependency_mask": dependency_mask, "name": row.name, "index": index}
