"""Shared fixtures. `../shared` exists on developer machines and in CI only: tests that need it skip without it."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import math
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
# The demo's weights as the checkout holds them: avag_ros.data names them for the package, but the ROS-free tests
# import nothing of avag_ros (tests/test_imports.py), and tests/ros/test_package.py checks that both are one file.
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


# A small checkpoint in the released code's format (pvt_v2_b0, 2 encoder layers, 300 queries, 256 px), real inputs
# and what the released model returned for them (tests/core/test_released.py); the node runs it in tests/ros.
RELEASED_REFERENCE = REPO.parent / "shared" / "reference" / "released_avagformer"
RELEASED_FILES = ("best.pth", "last.pth", "vggish-10086976.pth")


def released_reference(name: str) -> Path:
    if not RELEASED_REFERENCE.is_dir():
        pytest.skip(f"released reference not found at {RELEASED_REFERENCE} (../shared is only on developer and CI "
                    "machines)")
    return RELEASED_REFERENCE / name


def vggish_by_rule() -> dict[str, torch.Tensor]:
    """The vggish.* tensors the reference outputs were computed with (its README's rule), in keys.tsv order: the
    reference file leaves them out, and a real released file carries them."""
    rows = [line.rstrip("\n").split("\t") for line in released_reference("keys.tsv").read_text().splitlines()[1:]]
    tensors = {}
    for index, (key, shape, _) in enumerate(row for row in rows if row[0].startswith("vggish.")):
        dims = [int(d) for d in shape.split("x")]
        torch.manual_seed(1000 + index)
        t = torch.randn(dims)
        tensors[key] = t * math.sqrt(2 / math.prod(dims[1:])) if len(dims) >= 2 else t * 0.1
    return tensors


def write_released(folder: Path, names: tuple[str, ...] = RELEASED_FILES) -> Path:
    """Into `folder`, those of RELEASED_FILES named: both formats the released train.py writes, complete (with
    VGGish), best.pth (model.module.state_dict()) and last.pth (with DDP's prefixes and the optimiser), and the
    VGGish file on its own."""
    state = {**torch.load(released_reference("released_model.pth"), weights_only=True), **vggish_by_rule()}
    if "best.pth" in names:
        torch.save(state, folder / "best.pth")
    if "last.pth" in names:
        parameter = torch.nn.Parameter(torch.zeros(3))
        optimizer = torch.optim.AdamW([parameter])
        parameter.grad = torch.ones(3)
        optimizer.step()  # so that the saved optimiser state holds moment tensors, as a real one does
        torch.save({"net": {f"module.{k}": v for k, v in state.items()}, "optimizer": optimizer.state_dict(),
                    "epoch": 4, "best_epoch": 3, "global_step": 120, "miou_list": [0.41, 0.43], "max_miou": 0.43},
                   folder / "last.pth")
    if "vggish-10086976.pth" in names:
        torch.save({k[len("vggish."):]: v for k, v in vggish_by_rule().items()}, folder / "vggish-10086976.pth")
    return folder


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
def quantized_demo(tmp_path_factory):
    """The demo checkpoint exported with int8 graphs calibrated on the synthetic task, once for the session: the
    accuracy tests (tests/core) and the node's int8 run (tests/ros) read it. Minutes of calibration: slow tier."""
    folder = tmp_path_factory.mktemp("quantized") / "demo"
    result = subprocess.run([sys.executable, "-m", "avag_core.export", "--checkpoint", str(DEMO_CHECKPOINT),
                             "--out", str(folder), "--quantize", "int8", "--calibration", "synthetic"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


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
