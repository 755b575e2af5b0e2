import re

import numpy as np
import pytest
import soundfile
import torch

from avag_core import audio
from avag_core.errors import InputFileNotFoundError

from conftest import sample_dir


def numpy_vggish_log_mel(samples_16k: np.ndarray) -> np.ndarray:
    """Independent reference from the published VGGish parameters, in float64 numpy."""
    window_length, hop, fft = 400, 160, 512
    count = 1 + (len(samples_16k) - window_length) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window_length) / window_length)  # periodic Hann
    frames = np.stack([samples_16k[i * hop:i * hop + window_length] for i in range(count)]) * window
    spectrum = np.abs(np.fft.rfft(frames, fft))
    mel = lambda hz: 1127.0 * np.log(1.0 + hz / 700.0)  # noqa: E731 (HTK)
    bin_mel = mel(np.linspace(0.0, 8000.0, fft // 2 + 1))
    edges = np.linspace(mel(125.0), mel(7500.0), 66)
    weights = np.zeros((fft // 2 + 1, 64))
    for band in range(64):
        low, centre, high = edges[band:band + 3]
        weights[:, band] = np.maximum(0.0, np.minimum((bin_mel - low) / (centre - low),
                                                      (high - bin_mel) / (high - centre)))
    weights[0, :] = 0.0
    log_mel = np.log(spectrum @ weights + 0.01)
    examples = (len(log_mel) - 96) // 96 + 1
    return log_mel[:examples * 96].reshape(examples, 1, 96, 64)


def chirp(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    return (0.4 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_log_mel_matches_independent_numpy_reference():
    wave = chirp(3.2)
    ours = audio.waveform_to_examples(wave, 16000)
    expected = numpy_vggish_log_mel(wave.astype(np.float64))
    assert ours.shape == expected.shape == (3, 1, 96, 64)
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), expected, atol=2e-4)


def test_silence_is_log_offset():
    examples = audio.waveform_to_examples(np.zeros(16000, np.float32), 16000)
    assert torch.allclose(examples, torch.full_like(examples, np.log(0.01)))


@pytest.mark.parametrize("seconds, expected", [(0.5, 1), (1.0, 1), (1.9, 1), (1.94, 2), (13.53, 14), (14.5, 15)])
def test_example_count_follows_framing_rule(seconds, expected):
    assert audio.waveform_to_examples(np.ones(int(seconds * 16000), np.float32) * 0.1, 16000).shape[0] == expected


def test_window_rule_pads_with_zero_and_truncates():
    examples = torch.randn(3, 1, 96, 64)
    padded = audio.fit_to_windows(examples, 20)
    assert padded.shape == (20, 1, 96, 64)
    assert torch.equal(padded[:3], examples) and (padded[3:] == 0).all()
    long_clip = torch.randn(25, 1, 96, 64)
    assert torch.equal(audio.fit_to_windows(long_clip, 20), long_clip[:20])
    assert audio.audio_to_model_input(chirp(2.5), 16000, 20).shape == (20, 1, 96, 64)


def test_stereo_is_averaged_and_other_rates_are_resampled():
    mono = chirp(2.0, 48000)
    stereo = np.stack([mono * 1.5, mono * 0.5], axis=1)
    assert torch.allclose(audio.to_mono_16k(stereo, 48000), audio.to_mono_16k(mono, 48000), atol=1e-6)
    # A 1 kHz tone at 44.1 kHz must land in the mel band around 1 kHz after resampling.
    t = np.arange(44100 * 2) / 44100
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    resampled = audio.to_mono_16k(tone, 44100)
    assert abs(resampled.numel() - 32000) <= 1
    band = audio.waveform_to_examples(tone, 44100)[0, 0].mean(0).argmax().item()
    centres = audio.mel_filterbank().argmax(0)  # FFT bin at each band's peak
    assert abs(centres[band].item() * 8000 / 256 - 1000) < 60


def test_int16_input_is_scaled():
    wave = (chirp(1.5) * 32767).astype(np.int16)
    np.testing.assert_allclose(audio.to_mono_16k(wave, 16000).numpy(), wave / 32768.0, atol=1e-6)


@pytest.mark.parametrize("waveform, rate, message", [
    (np.zeros(0, np.float32), 16000, "empty"),
    (np.full(16000, np.nan, np.float32), 16000, "NaN"),
    (np.array([0.1, np.inf] * 8000, np.float32), 16000, "infinite"),
    (np.zeros(100, np.float32), 16000, "too short"),
    (np.zeros(16000, np.float32), 0, "sample rate"),
    (np.zeros(16000, np.float32), -8000, "sample rate"),
    (np.zeros(16000, np.float32), float("nan"), "sample rate"),
    (np.zeros((2, 16000), np.float32), 16000, "channels"),
    (np.zeros((4, 4, 1000), np.float32), 16000, "1-D"),
    (np.array(["a", "b"]), 16000, "real numeric samples"),
])
def test_bad_audio_raises_value_error_naming_the_problem(waveform, rate, message):
    with pytest.raises(ValueError, match=message):
        audio.waveform_to_examples(waveform, rate)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputFileNotFoundError, match="not found"):
        audio.load_audio(tmp_path / "nope.wav")
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ValueError, match="cannot decode"):
        audio.load_audio(corrupt)


def test_wav_round_trip_any_rate_and_channels(tmp_path):
    wave = np.stack([chirp(2.0, 22050)] * 3, axis=1)
    path = tmp_path / "three channels (22k).wav"
    soundfile.write(path, wave, 22050, subtype="PCM_16")
    data, rate = audio.load_audio(path)
    assert rate == 22050 and data.shape == wave.shape and data.dtype == np.float32
    assert audio.waveform_to_examples(data, rate).shape == (2, 1, 96, 64)


def test_real_avagd_mp3_clips_decode():
    clips = sorted(sample_dir().glob("*/*/*.mp3"))
    assert clips
    for clip in clips:
        data, rate = audio.load_audio(clip)
        start, end = map(float, re.search(r"_([\d.]+)_([\d.]+)\.mp3$", clip.name).groups())
        assert rate == 44100 and data.shape[1] == 2
        assert data.shape[0] / rate == pytest.approx(end - start, abs=0.1)
        examples = audio.waveform_to_examples(data, rate)
        samples = max(16000, round(data.shape[0] * 16000 / rate))
        frames = 1 + (samples - 400) // 160
        assert examples.shape[0] == 1 + (frames - 96) // 96
        assert torch.isfinite(examples).all()
