"""Shared fixtures. `../shared` exists on developer machines and in CI only: tests that need it skip without it."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avag_core import build_model
from ros_imports import uses_ros

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO.parent / "shared" / "data" / "avagd-sample"
# avag_ros.demo.DEMO_CHECKPOINT, named without importing the demo, which imports rclpy: tests that only load the
# weights need no ROS (and so are not marked `ros`).
DEMO_CHECKPOINT = REPO / "avag_ros" / "data" / "demo_avagformer_b0.pt"

# Small enough for CPU tests: b0 backbone at 64x64, so the head runs at 8x8, 4x4 and 2x2.
SMALL_IMAGE = 64
# For tests not about VGGish: the light audio encoder, 41 MB of model where VGGish alone is 288 MB to export.
LIGHT_AUDIO = {"audio_encoder": "log_mel_cnn", "freeze_audio_encoder": False}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by markers
def pytest_collection_modifyitems(items) -> None:
    """Marks `ros` every test that uses ROS (the rule: tests/ros_imports.py): CI runs those on its second ROS 2
    distribution too, with `-m ros`."""
    for item in items:
        if isinstance(item, pytest.Function) and REPO / "tests" in item.path.parents and uses_ros(
                item.path.stem, item.originalname, item.fixturenames):
            item.add_marker(pytest.mark.ros)


def sample_dir() -> Path:
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"AVAGD sample not found at {SAMPLE_DIR} (../shared is only on developer and CI machines)")
    return SAMPLE_DIR


def small_model(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("avagformer_b0", image_size=SMALL_IMAGE, **overrides)


@pytest.fixture(scope="module")
def module_folder(tmp_path_factory, request):
    """Files shared by one test module, removed when the module is done. A checkpoint with VGGish is about 316 MB
    (VGGish alone is 288 MB), so keeping every module's files to the end of the run filled CI's disk."""
    folder = tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def small_export(tmp_path_factory):
    """small_model(**LIGHT_AUDIO) exported once for the session, for tests that only read an export folder (several
    seconds an export); tests that write to one or remove from one make their own."""
    from avag_core.inference.export import export_onnx
    return export_onnx(small_model(**LIGHT_AUDIO), tmp_path_factory.mktemp("small_export"))


@pytest.fixture(scope="session")
def tiny_model():
    return small_model().eval()


def run_script(name: str, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run training/<name> the way a user does, in a subprocess."""
    return subprocess.run([sys.executable, str(REPO / "training" / name), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def call_script(name: str, *args) -> subprocess.CompletedProcess:
    """training/<name>'s main() in this process, with what it prints and its exit code as run_script returns them:
    for its argument and input checks, without a second interpreter importing torch (seconds each)."""
    module_name = f"training_{Path(name).stem}"
    spec = importlib.util.spec_from_file_location(module_name, REPO / "training" / name)
    script = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = script  # as the import system does, for what looks its module up while it runs
    spec.loader.exec_module(script)
    argv = list(map(str, args))
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = script.main(argv)
        except SystemExit as stop:  # argparse's errors; the interpreter's rule for the other kinds of code
            code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="session")
def synthetic_index(tmp_path_factory):
    """A tiny synthetic dataset prepared the way users prepare AVAGD: train, val and unseen index files."""
    root = tmp_path_factory.mktemp("synthetic")
    assert run_script("make_synthetic.py", "--out", root / "data", "--num", "48", "--seed", "2", "--size", "64",
                      "--clips-per-category", "3").returncode == 0
    result = run_script("prepare_dataset.py", "--root", root / "data", "--out", root / "index",
                        "--pairs-per-image", "1")
    assert result.returncode == 0, result.stderr
    return root / "index"
