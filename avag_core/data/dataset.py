"""PyTorch dataset over a CSV index: image, log-mel windows and both masks per (image, clip) pair."""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..audio import SAMPLE_RATE, audio_to_model_input, fit_to_windows, load_audio, to_mono_16k
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


def crop_span(samples: int, sample_rate: float, min_s: float, generator: torch.Generator | None = None) -> slice:
    """A random crop of a clip of `samples`: its length uniform from `min_s` (or the whole clip, if shorter) to the
    whole clip, its start uniform over the places it fits."""
    shortest = min(samples, max(1, int(round(min_s * sample_rate))))
    length = shortest + int(torch.randint(samples - shortest + 1, (), generator=generator))
    start = int(torch.randint(samples - length + 1, (), generator=generator))
    return slice(start, start + length)


def load_cropped_log_mel(row: IndexRow, num_windows: int, min_s: float) -> torch.Tensor:
    """[T, 1, 96, 64] of a random crop of the row's clip (crop_span): what a stream shows the model at an onset,
    from `min_s` of a sound, zero-padded to 1 s as any short clip, up to the whole clip. Drawn from torch's RNG,
    which the DataLoader seeds per worker."""
    if not row.audio.is_file():
        raise ValueError(f"audio cropping needs the clip itself, but {row.audio} is not a file (an index of "
                         "precomputed log-mel only cannot be cropped)")
    waveform, rate = load_audio(row.audio)
    samples = to_mono_16k(waveform, rate)
    return audio_to_model_input(samples[crop_span(samples.numel(), SAMPLE_RATE, min_s)], SAMPLE_RATE, num_windows)


class AffordanceDataset(Dataset):
    def __init__(self, rows: list[IndexRow], image_size: int, num_windows: int, augment: bool,
                 audio_crop_min_s: float = 0.0) -> None:
        """`augment`: the training augmentation (spec section 9); without it, only resizing and normalisation.
        `audio_crop_min_s` > 0: each clip is a random crop of it, from that many seconds to the whole clip
        (load_cropped_log_mel); 0: the whole clip, as released."""
        if not rows:
            raise ValueError("the dataset index has no rows")
        self.rows = rows
        self.num_windows = num_windows
        self.audio_crop_min_s = audio_crop_min_s
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
        log_mel = (load_cropped_log_mel(row, self.num_windows, self.audio_crop_min_s) if self.audio_crop_min_s > 0
                   else load_log_mel(row, self.num_windows))
        return {"image": pixels, "log_mel": log_mel, "function_mask": function_mask,
                "dependency_mask": dependency_mask, "name": row.name, "index": index}
