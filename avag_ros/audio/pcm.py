"""PCM both ways: interleaved samples in the layouts audio_common's AudioInfo names <-> float32 in [-1, 1], and
whether an AudioInfo describes PCM that the node decodes."""
from __future__ import annotations

import numpy as np

# audio_common's AudioInfo.sample_format -> numpy dtype of one sample
PCM_FORMATS = {"S16LE": "<i2", "S32LE": "<i4", "F32LE": "<f4", "U8": "u1", "S16BE": ">i2", "S32BE": ">i4",
               "F32BE": ">f4"}
# AudioInfo.coding_format values that mean interleaved PCM (audio_capture's format:=wave sends "wave")
PCM_CODINGS = ("wave", "pcm", "raw")
RATES_HZ = (8000, 192000)


def _layout(sample_format: str) -> tuple[np.dtype, float, float]:
    """(dtype, full scale, offset): a sample is offset + value x full scale. Integers span their range, 2^(bits-1)
    either side of their middle (unsigned ones are offset by it); floats are the values themselves."""
    if sample_format not in PCM_FORMATS:
        raise ValueError(f"unsupported PCM sample format '{sample_format}'; supported: {sorted(PCM_FORMATS)}")
    dtype = np.dtype(PCM_FORMATS[sample_format])
    if dtype.kind == "f":
        return dtype, 1.0, 0.0
    full_scale = float(2 ** (8 * dtype.itemsize - 1))
    return dtype, full_scale, full_scale if dtype.kind == "u" else 0.0


def pcm_to_float(data: bytes, sample_format: str, channels: int) -> np.ndarray:
    """Interleaved PCM bytes -> mono float32 in [-1, 1], the channels mixed."""
    dtype, full_scale, offset = _layout(sample_format)
    samples = np.frombuffer(bytes(data), dtype=dtype)
    if channels < 1 or samples.size % channels:
        raise ValueError(f"{samples.size} samples do not split into {channels} channels")
    mono = samples.reshape(-1, channels).astype(np.float32).mean(axis=1)
    return (mono - np.float32(offset)) / np.float32(full_scale)


def float_to_pcm(mono: np.ndarray, sample_format: str, channels: int) -> bytes:
    """Mono float samples in [-1, 1] -> interleaved PCM bytes, the sample repeated in each of `channels`: the
    inverse of pcm_to_float, integers rounded and kept within their range (+1.0 is one step short of 2^(bits-1))."""
    dtype, full_scale, offset = _layout(sample_format)
    frames = np.repeat(np.clip(np.asarray(mono, np.float64), -1.0, 1.0)[:, None], channels, axis=1)
    if dtype.kind == "f":
        return frames.astype(dtype).tobytes()
    limits = np.iinfo(dtype)
    return np.clip(np.round(frames * full_scale + offset), limits.min, limits.max).astype(dtype).tobytes()


def check_audio_info(info) -> str | None:
    """Why this AudioInfo cannot be decoded, or None. `bitrate` is not checked: audio_capture sends its mp3
    encoder's setting (192) with wave too."""
    if info.coding_format.lower() not in PCM_CODINGS:
        return (f"coding_format '{info.coding_format}' is not PCM; run audio_capture with format:=wave "
                f"(its default, mp3, is not decoded here)")
    if info.sample_format not in PCM_FORMATS:
        return f"sample_format '{info.sample_format}' is not one of {', '.join(sorted(PCM_FORMATS))}"
    if info.channels < 1:
        return "channels is 0"
    if not RATES_HZ[0] <= info.sample_rate <= RATES_HZ[1]:
        return f"sample_rate {info.sample_rate} Hz is outside {RATES_HZ[0]} to {RATES_HZ[1]} Hz"
    return None
