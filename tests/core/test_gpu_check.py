"""The GPU check (bench/gpu_check.sh) as far as a CPU machine can run it: its dry run, what it carries, how it
installs. The GPU machine reaches no registry and takes at most 64 MiB with a command, so a wrong import, a missing
wheel or a path mistake has to show up here, not on the day a GPU is lent."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402  (bench/ is no package)

TRAVEL_LIMIT = 64 * 2**20  # the device tool's limit on all that travels: the working tree plus carried folders
WHEEL_FOLDER = REPO / ".gpu-wheels"
DEAD_INDEX = "http://127.0.0.1:9/simple"  # nothing listens there: an index lookup would leave its mark in pip's stderr
INFERENCE_ROWS = ["eager fp32", "eager bf16", "eager fp16", "compile bf16", "compile bf16 + CUDA graphs"]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """The developer's fetched folder, or (in CI, where it is git-ignored and absent) one fetched now by the
    documented command: PyPI is reachable there, and the three wheels are 1.5 MiB."""
    if WHEEL_FOLDER.is_dir():
        return WHEEL_FOLDER
    folder = tmp_path_factory.mktemp("gpu-wheels")
    done = subprocess.run(["bash", str(REPO / "scripts" / "fetch_gpu_wheels.sh"), str(folder)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture(scope="module")
def dry_run(wheels, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu-check-out")
    env = {**os.environ, "PYTHON": sys.executable, "PIP_INDEX_URL": DEAD_INDEX, "PIP_RETRIES": "0",
           "PIP_TIMEOUT": "2"}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out),
                           "--wheels", str(wheels)], capture_output=True, text=True, timeout=900, env=env, cwd="/")
    return done, out


def rows_by_name(out: Path) -> dict[str, dict]:
    return {row["row"]: row for row in json.loads((out / "gpu_check.json").read_text())["rows"]}


@pytest.mark.slow  # the dry run takes minutes
def test_dry_run_passes_with_every_row_and_every_cuda_row_skipped(dry_run):
    done, out = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = rows_by_name(out)
    inference = [f"{preset} 512 px {row}" for preset in ("avagformer_b5", "avagformer_b0") for row in INFERENCE_ROWS]
    assert sorted(rows) == sorted(["wheels", "imports", "environment", "cuda_tests", "training", *inference])
    for name in ("wheels", "imports", "environment"):
        assert rows[name]["status"] == "ok", rows[name]
    for name in ("cuda_tests", "training", *inference):
        assert rows[name]["status"] == "skipped", rows[name]
    assert rows["environment"]["tensorrt"].startswith("absent")
    table = (out / "gpu_check.md").read_text()
    assert all(f"| {name} | {rows[name]['status']} |" in table for name in rows)


@pytest.mark.slow  # the dry run takes minutes
def test_dry_run_installs_exactly_the_listed_wheels_for_python_3_12(dry_run):
    row = rows_by_name(dry_run[1])["wheels"]
    assert row["installed"] == ["soundfile==0.14.0", "cffi==2.1.1", "pycparser==3.12"]
    assert "Looking in links" in row["pip_log"]
    assert DEAD_INDEX.split("/")[2] not in row["pip_log"], "pip looked at an index: the install needs --no-index"


@pytest.mark.slow  # the dry run takes minutes
def test_dry_run_finds_what_the_gpu_rows_import_on_the_machine_or_carried(dry_run):
    row = rows_by_name(dry_run[1])["imports"]
    # avag_core.audio imports soundfile at module level, which the machine lacks: it must be among the checked
    # modules (and pass only because it is carried); ROS must not be anywhere near these files.
    assert "soundfile" in row["third_party_modules"] and "torch" in row["third_party_modules"]
    assert not {"rclpy", "sounddevice", "openvino", "nncf"} & set(row["third_party_modules"])


@pytest.mark.slow  # the dry run takes minutes
def test_dry_run_selects_the_cuda_tests_that_need_no_ros_and_parses_the_training_command(dry_run):
    rows = rows_by_name(dry_run[1])
    assert sorted(rows["cuda_tests"]["tests"]) == [
        f"tests/core/test_predictor.py::test_cuda_precisions_agree_with_cpu[{p}]" for p in ("bf16", "fp16", "fp32")]
    assert rows["training"]["config"] == {"model": "avagformer_b0", "image_size": 256, "precision": "bf16",
                                          "device": "cuda", "max_steps": 300, "batch_size": 8}
    probe = rows["avagformer_b0 512 px eager fp32"]["cpu_probe_b0_64px_fp32"]
    assert probe["status"] == "ok" and probe["model_ms"] > 0 and probe["predict_640x480_ms"] > 0


def test_what_travels_stays_under_64_mib():
    """The wheel list records each file's size, so this bounds the carried folder without downloading it (CI
    has no such folder); where the folder exists, its files must be exactly the listed ones, byte for byte."""
    listed = {line.split()[2]: (int(line.split()[3]), digest) for line, digest in zip(
        re.findall(r"^# wheel: .+$", (REPO / "scripts" / "gpu_wheels.txt").read_text(), re.M),
        re.findall(r"--hash=sha256:([0-9a-f]{64})", (REPO / "scripts" / "gpu_wheels.txt").read_text()))}
    if WHEEL_FOLDER.is_dir():
        found = {p.name: (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()) for p in WHEEL_FOLDER.iterdir()}
        assert found == listed
    tree = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout.split("\0")
    tree_bytes = sum((REPO / name).stat().st_size for name in tree if name and (REPO / name).is_file())
    carried = sum(size for size, _ in listed.values())
    assert tree_bytes + carried < TRAVEL_LIMIT, f"{tree_bytes} B of tree and {carried} B of wheels"


def test_the_check_installs_from_the_carried_folder_only():
    command = gpu_check.wheel_install_command(Path("/carried"), Path("/site"))
    assert command[command.index("install") - 1] == "pip" and "--no-index" in command
    assert command[command.index("--find-links") + 1] == "/carried"
    sources = (REPO / "bench" / "gpu_check.py").read_text() + (REPO / "bench" / "gpu_check.sh").read_text()
    assert len(re.findall(r"\binstall\b[\"']?,", sources)) == 1 and "pip install" not in sources
    assert not re.search(r"index-url|--extra-index|\btensorrt-cu|onnxruntime-gpu", sources)


def test_module_level_imports_leave_out_imports_inside_functions(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text("import numpy.linalg\nfrom torch import nn\ntry:\n    import yaml\nexcept ImportError:\n"
                      "    pass\nfrom . import local\n\ndef later():\n    import rclpy\n")
    assert gpu_check.module_level_imports(source) == {"numpy", "torch", "yaml"}


def test_a_carried_wheel_that_needs_a_package_the_machine_lacks_is_named(tmp_path):
    with zipfile.ZipFile(tmp_path / "needs_ros-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("needs_ros-1.0.dist-info/METADATA", "Name: needs-ros\nRequires-Dist: numpy>=1\n"
                       "Requires-Dist: rclpy; python_version >= '3'\nRequires-Dist: nncf; extra == \"int8\"\n")
    assert gpu_check.unmet_requirements(tmp_path) == ["needs_ros-1.0-py3-none-any.whl: rclpy; python_version >= '3'"]
