"""Audio front-end: any clip -> VGGish log-mel examples -> the model's fixed number of windows.

The log-mel follows the VGGish reference parameters (spec section 3): 16 kHz mono, 25 ms periodic-Hann frames
every 10 ms, 512-point FFT magnitude, 64 HTK-mel bands from 125 to 7500 Hz with triangles in the mel domain,
log(mel + 0.01), and non-overlapping 96-frame (0.96 s) examples.

Window rule (the same in training, evaluation and the ROS node): a clip gives its complete 0.96 s examples,
at least one because clips under 1 s are zero-padded to 1 s. The first `num_windows` examples are kept, and
missing windows are filled with log-mel 0.0, the released code's own padding convention.
"""
from __future__ import annotations

import math
import os
from functools import lru_cache

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

from .errors import existing_file
from .modeling.vggish import PADDING_VALUE

SAMPLE_RATE = 16000
STFT_WINDOW = 400  # 25 ms
STFT_HOP = 160  # 10 ms
FFT_SIZE = 512
MEL_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s
EXAMPLE_SECONDS = EXAMPLE_FRAMES * STFT_HOP / SAMPLE_RATE
# Examples start every 0.96 s, but an example's last analysis frame reaches this far past its 0.96 s.
EXAMPLE_OVERHANG_S = (STFT_WINDOW - STFT_HOP) / SAMPLE_RATE
MIN_SECONDS = STFT_WINDOW / SAMPLE_RATE  # shorter clips hold less than one analysis frame
MAX_CHANNELS = 32


def load_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode any file soundfile reads (wav, flac, mp3, ogg...) -> ([samples, channels] float32, sample rate).

    Samples are read as 16-bit PCM and scaled by 1/32768, as the VGGish reference does.
    """
    path = existing_file(path, "audio file")
    try:
        data, sample_rate = soundfile.read(path, dtype="int16", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise ValueError(f"cannot decode audio file {path}: {error}") from error
    return data.astype(np.float32) / 32768.0, int(sample_rate)


def to_mono_16k(waveform: np.ndarray | torch.Tensor, sample_rate: float) -> torch.Tensor:
    """Validate a waveform, average its channels and resample it to 16 kHz -> float32 [samples].

    `waveform` is 1-D, or 2-D as [samples, channels] (soundfile's layout).
    """
    if not (isinstance(sample_rate, (int, float, np.integer, np.floating)) and math.isfinite(sample_rate)
            and sample_rate > 0):
        raise ValueError(f"sample rate must be a positive number, got {sample_rate!r}")
    if isinstance(waveform, torch.Tensor):
        samples = waveform.detach().cpu()
    else:
        array = np.asarray(waveform)
        if array.dtype.kind not in "fiu":
            raise ValueError(f"audio must hold real numeric samples, got dtype {array.dtype}")
        samples = torch.from_numpy(np.ascontiguousarray(array))
    if samples.dtype.is_complex or samples.dtype == torch.bool:
        raise ValueError(f"audio must hold real numeric samples, got dtype {samples.dtype}")
    if samples.dtype == torch.int16:
        samples = samples.float() / 32768.0
    samples = samples.to(torch.float32)
    if samples.ndim == 2:
        if samples.shape[1] > MAX_CHANNELS:
            raise ValueError(f"audio of shape {tuple(samples.shape)} has {samples.shape[1]} channels; "
                             f"expected [samples, channels] with at most {MAX_CHANNELS} channels")
        samples = samples.mean(dim=1)
    elif samples.ndim != 1:
        raise ValueError(f"audio must be 1-D or [samples, channels], got shape {tuple(samples.shape)}")
    if samples.numel() == 0:
        raise ValueError("audio is empty")
    if not torch.isfinite(samples).all():
        bad = "NaN" if torch.isnan(samples).any() else "infinite"
        raise ValueError(f"audio contains {bad} samples")
    duration = samples.numel() / sample_rate
    if duration < MIN_SECONDS:
        raise ValueError(f"audio is too short: {duration * 1000:.1f} ms, need at least {MIN_SECONDS * 1000:.0f} ms")
    rate = int(round(sample_rate))
    if rate != SAMPLE_RATE:
        samples = AF.resample(samples, rate, SAMPLE_RATE)
    return samples


@lru_cache(maxsize=None)
def mel_filterbank(sample_rate: int = SAMPLE_RATE, fft_size: int = FFT_SIZE) -> torch.Tensor:
    """[fft_size // 2 + 1, 64] VGGish mel weights: HTK mel scale, triangles linear in mel, DC bin zeroed. The model's
    front end uses the defaults; other rates and sizes give the same bands for audio analysed at its own rate."""
    def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
        return 1127.0 * torch.log1p(hz / 700.0)

    bins_mel = hz_to_mel(torch.linspace(0.0, sample_rate / 2, fft_size // 2 + 1, dtype=torch.float64))
    edges = torch.linspace(hz_to_mel(torch.tensor(MEL_MIN_HZ, dtype=torch.float64)),
                           hz_to_mel(torch.tensor(MEL_MAX_HZ, dtype=torch.float64)), MEL_BANDS + 2,
                           dtype=torch.float64)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights[0] = 0.0
    return weights.float()


def log_mel_frames(samples: torch.Tensor) -> torch.Tensor:
    """16 kHz mono [samples] -> [frames, 64] log-mel; no centre padding, an incomplete last frame is dropped."""
    window = torch.hann_window(STFT_WINDOW, periodic=True)
    frames = samples.unfold(0, STFT_WINDOW, STFT_HOP) * window
    magnitude = torch.fft.rfft(frames, n=FFT_SIZE).abs()
    return torch.log(magnitude @ mel_filterbank() + LOG_OFFSET)


def waveform_to_examples(waveform: np.ndarray | torch.Tensor, sample_rate: float) -> torch.Tensor:
    """Any waveform -> float32 [n, 1, 96, 64]: its complete 0.96 s log-mel examples (n >= 1), unpadded."""
    samples = to_mono_16k(waveform, sample_rate)
    if samples.numel() < SAMPLE_RATE:
        samples = torch.nn.functional.pad(samples, (0, SAMPLE_RATE - samples.numel()))
    frames = log_mel_frames(samples)
    count = frames.shape[0] // EXAMPLE_FRAMES
    return frames[:count * EXAMPLE_FRAMES].reshape(count, 1, EXAMPLE_FRAMES, MEL_BANDS).contiguous()


def fit_to_windows(examples: torch.Tensor, num_windows: int) -> torch.Tensor:
    """The window rule: keep the first `num_windows` examples, fill the rest with the padding value."""
    examples = examples[:num_windows]
    missing = num_windows - examples.shape[0]
    if missing:
        filler = examples.new_full((missing, *examples.shape[1:]), PADDING_VALUE)
        examples = torch.cat([examples, filler])
    return examples


def audio_to_model_input(waveform: np.ndarray | torch.Tensor, sample_rate: float, num_windows: int) -> torch.Tensor:
    """Waveform -> [num_windows, 1, 96, 64], exactly what the model is trained on."""
    return fit_to_windows(waveform_to_examples(waveform, sample_rate), num_windows)
