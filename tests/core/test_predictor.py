import numpy as np
import pytest
import torch

from avag_core import AffordancePredictor
from avag_core.audio import audio_to_model_input
from avag_core.inference.backends import BACKENDS

from conftest import LIGHT_AUDIO, small_model


@pytest.fixture(scope="module", params=BACKENDS)
def predictor(request, small_export):
    """Every test that takes this fixture runs on every backend: they must behave identically. None is about VGGish
    (test_export covers exporting it), so the light audio encoder spares an export of 288 MB; the exported backends
    share the session's export of that same model."""
    if request.param == "torch":
        return AffordancePredictor.from_model(small_model(**LIGHT_AUDIO), device="cpu")
    return AffordancePredictor.from_checkpoint(small_export, device="cpu", backend=request.param)


def tone(seconds=1.5, rate=22050, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def random_image(height, width, channels=3, seed=0):
    shape = (height, width) if channels is None else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_predict_returns_maps_at_the_images_own_odd_size(predictor):
    result = predictor.predict(random_image(333, 517), tone(), 22050)
    for prob, mask in ((result.function_prob, result.function_mask),
                       (result.dependency_prob, result.dependency_mask)):
        assert prob.shape == mask.shape == (333, 517)
        assert prob.dtype == np.float32 and mask.dtype == np.bool_
        assert prob.min() >= 0 and prob.max() <= 1
        assert np.array_equal(mask, prob > 0.5)


@pytest.mark.parametrize("channels", [None, 1, 4])
def test_gray_and_rgba_are_converted(predictor, channels):
    rgb = random_image(40, 56)
    image = rgb[..., 0] if channels is None else (rgb[..., :1] if channels == 1
                                                  else np.concatenate([rgb, rgb[..., :1]], axis=2))
    assert predictor.predict(image, tone(), 22050).function_prob.shape == (40, 56)
    if channels == 4:  # alpha is dropped: same as the RGB image
        expected = predictor.predict(rgb, tone(), 22050).function_prob
        np.testing.assert_array_equal(predictor.predict(image, tone(), 22050).function_prob, expected)


@pytest.mark.parametrize("image, message", [
    (np.zeros((32, 32, 2), np.uint8), "HxWx4"),
    (np.zeros((32, 32, 3), np.float32), "uint8"),
    (np.zeros((0, 32, 3), np.uint8), "empty"),
    (np.zeros((2, 32, 32, 3), np.uint8), "shape"),
])
def test_bad_images_raise(predictor, image, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict(image, tone(), 22050)


@pytest.mark.parametrize("audio, rate, message", [
    (np.zeros(0, np.float32), 16000, "empty"),
    (np.full(8000, np.nan, np.float32), 16000, "NaN"),
    (np.zeros(50, np.float32), 16000, "too short"),
    (tone(), 0, "sample rate"),
])
def test_bad_audio_raises(predictor, audio, rate, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict(random_image(32, 32), audio, rate)


def test_predict_many_equals_separate_predictions(predictor):
    image = random_image(70, 90, seed=2)
    sounds = [tone(1.2, 16000, 300.0), tone(3.1, 44100, 2000.0), np.random.default_rng(1).normal(0, 0.1, 20000)]
    rates = [16000, 44100, 16000]
    together = predictor.predict_many(image, sounds, rates)
    for sound, rate, joint in zip(sounds, rates, together):
        alone = predictor.predict(image, sound, rate)
        np.testing.assert_allclose(joint.function_prob, alone.function_prob, atol=1e-5)
        np.testing.assert_allclose(joint.dependency_prob, alone.dependency_prob, atol=1e-5)
    with pytest.raises(ValueError, match="sample rates"):
        predictor.predict_many(image, sounds, [16000])


def test_audio_cache_reuses_windows_and_matches_model(predictor):
    predictor.audio_cache = type(predictor.audio_cache)()
    sound = np.random.default_rng(7).normal(0, 0.1, 40000).astype(np.float32)  # 2.5 s: two windows
    predictor.predict(random_image(32, 32), sound, 16000)
    assert len(predictor.audio_cache) == 3  # two real windows and the padding window
    predictor.predict(random_image(32, 32), sound, 16000)
    assert len(predictor.audio_cache) == 3
    windows = audio_to_model_input(sound, 16000, predictor.config.num_audio_windows)
    cached = predictor.audio_cache.embed(predictor.backend.embed_audio, windows)
    with torch.no_grad():
        direct = small_model(**LIGHT_AUDIO).eval().embed_audio(windows[None])[0]
    assert torch.allclose(cached, direct, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"precision": "fp8"}, "precision"),
    ({"precision": "fp16", "device": "cpu"}, "needs a CUDA device"),
    ({"device": "tpu"}, "device"),
    ({"threshold": 1.5}, "threshold"),
])
def test_bad_predictor_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AffordancePredictor.from_model(small_model(**LIGHT_AUDIO), **{"device": "cpu", **kwargs})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_precisions_agree_with_cpu(precision):
    image, sound = random_image(96, 128, seed=5), tone()
    cpu = AffordancePredictor.from_model(small_model(), device="cpu").predict(image, sound, 22050)
    gpu = AffordancePredictor.from_model(small_model(), device="cuda", precision=precision).predict(image, sound,
                                                                                                   22050)
    tolerance = 1e-3 if precision == "fp32" else 5e-2
    np.testing.assert_allclose(gpu.function_prob, cpu.function_prob, atol=tolerance)


def test_a_model_is_taken_directly_and_anything_else_is_named():
    model = small_model(**LIGHT_AUDIO).eval()
    direct = AffordancePredictor(model)
    assert direct.backend.name == "torch" and direct.device.type in ("cpu", "cuda")
    expected = AffordancePredictor.from_model(model, device=direct.device).predict(random_image(40, 50), tone(), 22050)
    np.testing.assert_array_equal(direct.predict(random_image(40, 50), tone(), 22050).function_prob,
                                  expected.function_prob)
    with pytest.raises(TypeError, match="from_model, from_checkpoint or from_preset"):
        AffordancePredictor("avagformer.pt")


def test_an_unknown_preset_is_reported_before_any_random_weights_warning(caplog):
    with pytest.raises(ValueError, match="unknown model preset 'avagformer_b9'"):
        AffordancePredictor.from_preset("avagformer_b9")
    assert "RANDOM" not in caplog.text
