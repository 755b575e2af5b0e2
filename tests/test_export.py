"""ONNX export and the onnxruntime / OpenVINO backends, on the real runtimes, against eager PyTorch."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import soundfile
import torch

from avag_core import AffordancePredictor, build_model
from avag_core.data.synthetic import CATEGORIES, SAMPLE_RATE, render_scene, synthesize_sound
from avag_core.image import save_png
from avag_core.inference.export import export_onnx
from avag_core.inference.manifest import MANIFEST_NAME, graph_signatures

from conftest import DEMO_CHECKPOINT, LIGHT_AUDIO, REPO, SMALL_IMAGE, small_model

EXPORTED = ("onnxruntime", "openvino")
# What "the same model" means across backends: probabilities within 1e-4 in fp32, and identical masks wherever
# the probability is not within 1e-4 of the threshold.
TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("AVAG_ROS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "avag_ros_cache"))


def scene_and_sounds(seed=0, size=240):
    """A synthetic scene of three objects and the sounds of two of them, at the sample rate they were made."""
    rng = np.random.default_rng(seed)
    categories = [CATEGORIES[0], CATEGORIES[1], CATEGORIES[2]]
    scene = render_scene(rng, size=size, categories=categories)
    sounds = [synthesize_sound(rng, c.sound, seconds) for c, seconds in zip(categories[:2], (2.0, 0.7))]
    return scene.image[:, : size - 17], sounds  # not square, so the resize back is exercised


def assert_same_predictions(reference, candidate, threshold=0.5):
    for expected, got in zip(reference, candidate, strict=True):
        for name in ("function_prob", "dependency_prob"):
            difference = np.abs(getattr(expected, name) - getattr(got, name)).max()
            assert difference <= TOLERANCE, f"{name} differs by {difference:.2e}"
        decided = np.abs(expected.function_prob - threshold) > TOLERANCE
        assert np.array_equal(expected.function_mask[decided], got.function_mask[decided])


@pytest.fixture(scope="module", params=["avagformer_b0", pytest.param("avagformer_b5", marks=pytest.mark.slow)])
def random_export(request, module_folder):
    torch.manual_seed(0)
    model = build_model(request.param, image_size=256).eval()
    return model, export_onnx(model, module_folder / request.param)


@pytest.mark.parametrize("backend", EXPORTED)
def test_random_weights_agree_with_eager_pytorch_at_256(random_export, backend):
    model, folder = random_export
    image, sounds = scene_and_sounds()
    eager = AffordancePredictor.from_model(model, device="cpu")
    exported = AffordancePredictor.from_checkpoint(folder, device="cpu", backend=backend)
    assert_same_predictions(eager.predict_many(image, sounds, SAMPLE_RATE),
                            exported.predict_many(image, sounds, SAMPLE_RATE))
    # Random heads give near-constant probabilities, so also compare every part's raw output, relative to
    # its scale (a random VGGish's embeddings are below 0.01).
    pixels = eager.prepare_image(image)
    windows = eager.prepare_audio(sounds[0], SAMPLE_RATE)
    with torch.inference_mode():
        parts = [(b.encode_image(pixels), b.embed_audio(windows)) for b in (eager.backend, exported.backend)]
        logits = [b.decode(visual, audio[None]) for b, (visual, audio) in zip((eager.backend, exported.backend),
                                                                              parts)]
    for expected, got in zip([*parts[0][0], parts[0][1], *logits[0]], [*parts[1][0], parts[1][1], *logits[1]]):
        scale = float(expected.abs().max())
        assert expected.std() > 0 and float((expected - got).abs().max()) <= TOLERANCE * scale


@pytest.mark.parametrize("backend", EXPORTED)
def test_trained_checkpoint_agrees_with_eager_pytorch_and_is_exported_once(backend, tmp_path_factory):
    image, sounds = scene_and_sounds(seed=3)
    eager = AffordancePredictor.from_checkpoint(DEMO_CHECKPOINT, device="cpu").predict_many(image, sounds,
                                                                                           SAMPLE_RATE)
    assert any(p.function_mask.mean() > 0.01 for p in eager)  # a trained model: real masks to compare
    exported = AffordancePredictor.from_checkpoint(DEMO_CHECKPOINT, device="cpu", backend=backend)
    assert_same_predictions(eager, exported.predict_many(image, sounds, SAMPLE_RATE))

    manifest = exported.backend.folder / MANIFEST_NAME
    assert exported.backend.folder.parent.parent == tmp_path_factory.getbasetemp() / "avag_ros_cache"
    written = manifest.stat().st_mtime_ns
    again = AffordancePredictor.from_checkpoint(DEMO_CHECKPOINT, device="cpu", backend=backend)
    assert again.backend.folder == exported.backend.folder and manifest.stat().st_mtime_ns == written


def test_manifest_describes_the_graphs(random_export):
    model, folder = random_export
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["config"] == model.config.to_dict()
    assert manifest["versions"]["onnx"] == onnx.__version__ and manifest["versions"]["opset"] == 18
    assert len(manifest["normalisation"]["mean"]) == 3 and manifest["threshold"] == 0.5
    for name, signature in graph_signatures(model.config).items():
        graph = onnx.load(folder / signature.file, load_external_data=False)
        assert [i.name for i in graph.graph.input] == list(signature.inputs) == list(manifest["graphs"][name]["inputs"])
        assert [o.name for o in graph.graph.output] == list(signature.outputs)


def test_export_leaves_the_model_as_it_was(tmp_path):
    model = small_model(**LIGHT_AUDIO).eval()
    pixels = torch.randn(1, 3, SMALL_IMAGE, SMALL_IMAGE)
    with torch.no_grad():
        before = model.encode_image(pixels)
        export_onnx(model, tmp_path / "onnx")
        after = model.encode_image(pixels)
    assert not any(m.training for m in model.modules())
    for a, b in zip(before, after):
        assert torch.equal(a, b)


def copy_export(folder, target):
    target.mkdir()
    for path in folder.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


@pytest.mark.parametrize("backend", EXPORTED)
@pytest.mark.parametrize("truncated", ["head.onnx", "head.onnx.data"])
def test_truncated_graph_or_weights_is_a_clear_error(small_export, tmp_path, backend, truncated):
    broken = copy_export(small_export, tmp_path / "broken")
    path = broken / truncated
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"{backend} cannot load the ONNX graph .*head.onnx"):
        AffordancePredictor.from_checkpoint(broken, device="cpu", backend=backend)


@pytest.mark.parametrize("backend", EXPORTED)
def test_foreign_graph_is_a_clear_error(small_export, tmp_path, backend):
    foreign = copy_export(small_export, tmp_path / "foreign")
    (foreign / "head.onnx").write_bytes((foreign / "audio_encoder.onnx").read_bytes())  # reads its .data too
    with pytest.raises(ValueError, match="head.onnx does not match its manifest: its inputs are \\['log_mel'\\]"):
        AffordancePredictor.from_checkpoint(foreign, device="cpu", backend=backend)


@pytest.fixture(scope="module")
def export_at_twice_the_size(module_folder):
    return export_onnx(build_model("avagformer_b0", image_size=SMALL_IMAGE * 2, **LIGHT_AUDIO),
                       module_folder / "twice_the_size")


@pytest.mark.parametrize("backend", EXPORTED)
def test_graph_for_another_image_size_is_a_clear_error(small_export, export_at_twice_the_size, tmp_path, backend):
    other = export_at_twice_the_size
    mixed = copy_export(small_export, tmp_path / "mixed")
    for name in ("image_encoder.onnx", "image_encoder.onnx.data"):
        (mixed / name).write_bytes((other / name).read_bytes())
    with pytest.raises(ValueError, match="pixels has shape \\[1, 3, 128, 128\\], the model config needs "
                                         "\\[1, 3, 64, 64\\]"):
        AffordancePredictor.from_checkpoint(mixed, device="cpu", backend=backend)


def test_folders_and_checkpoints_go_to_the_right_backend(small_export, tmp_path):
    with pytest.raises(ValueError, match="torch backend needs the .pt checkpoint"):
        AffordancePredictor.from_checkpoint(small_export, backend="torch")
    with pytest.raises(ValueError, match="avagformer.json is missing"):
        AffordancePredictor.from_checkpoint(tmp_path, backend="onnxruntime")
    with pytest.raises(ValueError, match="checkpoint not found"):
        AffordancePredictor.from_checkpoint(tmp_path / "missing.pt", device="cpu", backend="openvino")
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'"):
        AffordancePredictor.from_checkpoint(small_export, backend="tensorflow")


@pytest.mark.parametrize("backend, kwargs, message", [
    ("onnxruntime", {"device": "tpu"}, "invalid device 'tpu' for onnxruntime"),
    ("onnxruntime", {"precision": "bf16"}, "needs its TensorRT provider"),
    ("openvino", {"device": "cuda"}, "invalid device 'cuda' for openvino"),
    ("openvino", {"device": "cpu", "precision": "fp16"}, "needs device gpu"),
])
def test_bad_device_or_precision_fails_before_any_export(backend, kwargs, message, tmp_path, monkeypatch):
    monkeypatch.setenv("AVAG_ROS_CACHE_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=message):
        AffordancePredictor.from_checkpoint(DEMO_CHECKPOINT, backend=backend, **kwargs)
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only onnxruntime")
def test_cuda_without_a_gpu_onnxruntime_names_the_package(small_export):
    with pytest.raises(ValueError, match="install onnxruntime-gpu"):
        AffordancePredictor.from_checkpoint(small_export, device="cuda", backend="onnxruntime")


@pytest.mark.parametrize("module", ["onnxruntime", "openvino"])
def test_missing_runtime_package_is_a_clear_error(small_export, module):
    # A fresh interpreter in which the package cannot be imported, as on a machine without it.
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from avag_core import AffordancePredictor\n"
            f"AffordancePredictor.from_checkpoint({str(small_export)!r}, backend={module!r})")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"ValueError: backend {module!r} needs the Python package {module}" in result.stderr
    assert f"pip install {module}" in result.stderr


@pytest.mark.slow  # two interpreters, a VGGish export and its checks
def test_export_cli_writes_checked_graphs_and_predict_cli_runs_them(tmp_path):
    out = tmp_path / "export"
    result = subprocess.run([sys.executable, "-m", "avag_core.export", "--model", "avagformer_b0",
                             "--image-size", "64", "--out", out], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["audio_encoder.onnx", "audio_encoder.onnx.data",
                                                       "avagformer.json", "head.onnx", "head.onnx.data",
                                                       "image_encoder.onnx", "image_encoder.onnx.data"]
    for graph in out.glob("*.onnx"):
        onnx.checker.check_model(str(graph), full_check=True)
    assert json.loads((out / MANIFEST_NAME).read_text())["source"] == {"preset": "avagformer_b0",
                                                                        "weights": "random"}
    image, sounds = scene_and_sounds(size=96)
    image_path, audio_path = tmp_path / "scene.png", tmp_path / "sound.wav"
    save_png(image_path, image)
    soundfile.write(audio_path, sounds[0], SAMPLE_RATE)
    for backend in EXPORTED:
        result = subprocess.run([sys.executable, "-m", "avag_core.predict", "--image", image_path, "--audio",
                                 audio_path, "--checkpoint", out, "--backend", backend, "--device", "cpu",
                                 "--out", tmp_path / backend], cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / backend / "function_mask.png").is_file()
    result = subprocess.run([sys.executable, "-m", "avag_core.export", "--model", "avagformer_b0", "--opset", "13",
                             "--out", tmp_path / "old"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "opset 13 is too old" in result.stderr


def test_export_replaces_an_older_export_in_place(small_export, tmp_path):
    folder = copy_export(small_export, tmp_path / "onnx")
    export_onnx(build_model("avagformer_b0", image_size=SMALL_IMAGE * 2, **LIGHT_AUDIO), folder)
    assert not [p for p in tmp_path.iterdir() if p.name != "onnx"]  # the staging folder is gone
    predictor = AffordancePredictor.from_checkpoint(folder, device="cpu", backend="onnxruntime")
    assert predictor.config.image_size == SMALL_IMAGE * 2
