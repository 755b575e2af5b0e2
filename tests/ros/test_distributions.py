"""The ROS 2 distributions this package is set up for: scripts/setup.sh per distribution, the keys of package.xml
a ROS install resolves with rosdep, a colcon workspace build, and the Python 3.10 syntax a Humble-era interpreter
needs (README, "Install")."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

import pytest

from conftest import REPO
from ros_imports import uses_ros

SETUP = REPO / "scripts" / "setup.sh"
DISTROS = {"jazzy": "7", "kilted": "9"}  # distribution -> rclpy major version of its PyPI wheels


def ros_distro_sh(expression: str) -> str:
    """`expression` expanded after sourcing scripts/ros_distro.sh (setup.sh's list and default)."""
    script = f'source "{REPO}/scripts/ros_distro.sh"; echo {expression}'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=True).stdout.strip()

# Every key of package.xml and of interfaces/*/package.xml, and where ros/rosdistro defines it (looked up on its
# snapshot of 2026-08-22, commit 8468e88): ROS packages in {humble,jazzy,kilted}/distribution.yaml (released into
# all three), system keys in rosdep/python.yaml or rosdep/base.yaml. A new dependency is looked up there and added
# here; one rosdep cannot resolve stops `rosdep install`, and with it the README's install.
ROSDEP_KEYS = {
    **dict.fromkeys(["rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "diagnostic_msgs", "lifecycle_msgs",
                     "visualization_msgs", "audio_common_msgs", "tf2_msgs", "launch", "launch_ros",
                     "ament_index_python", "ament_cmake", "rosidl_default_generators", "rosidl_default_runtime",
                     "action_msgs", "builtin_interfaces"],  # these two, like lifecycle_msgs, from rcl_interfaces
                    "distribution.yaml"),
    **dict.fromkeys(["python3-numpy", "python3-opencv", "python3-soundfile", "python3-yaml", "python3-tqdm",
                     "python3-pytest"], "rosdep/python.yaml"),
    "portaudio": "rosdep/base.yaml",
}
# Built in the same workspace (`--from-paths ... --ignore-src` skips them)
WORKSPACE_PACKAGES = {"avag_interfaces"}
DEPEND_TAGS = ("depend", "build_depend", "buildtool_depend", "exec_depend", "test_depend", "build_export_depend")


def package_keys(path: Path) -> set[str]:
    root = ET.parse(path).getroot()
    return {element.text for tag in DEPEND_TAGS for element in root.findall(tag)}


def test_every_package_xml_key_is_one_rosdep_resolves():
    keys = set().union(*(package_keys(path) for path in [REPO / "package.xml",
                                                         *REPO.glob("interfaces/*/package.xml")]))
    assert keys - WORKSPACE_PACKAGES == set(ROSDEP_KEYS)


def test_the_model_stack_is_left_to_pip_and_numpy_to_the_distribution():
    """rosdep has no torchaudio key and would give the distribution's CPU torch; a ROS install's venv keeps the
    distribution's numpy 1.x, against which its message packages are compiled."""
    keys = package_keys(REPO / "package.xml")
    assert not {key for key in keys if "torch" in key or key.endswith("-pip")}
    ml = {line.split("==")[0] for line in (REPO / "requirements" / "ml.txt").read_text().splitlines()
          if line and not line.startswith("#")}
    assert {"torch", "torchaudio"} <= ml and not {name for name in ml if "numpy" in name or "opencv" in name}


def test_requirements_txt_is_the_default_distributions_environment():
    assert ros_distro_sh("$ROS_DISTROS").split() == list(DISTROS)
    lines = [line for line in (REPO / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert lines == ["-r requirements/python.txt", f"-r requirements/{ros_distro_sh('$DEFAULT_ROS_DISTRO')}.txt"]
    for distro in DISTROS:
        pins = (REPO / "requirements" / f"{distro}.txt").read_text()
        assert "rclpy==" in pins and "rosidl-default-generators==" in pins


def test_the_ros_marker_follows_imports_through_this_repositorys_modules():
    """tests/ros_imports.py, on tests of this suite: ROS through ros_support (which imports rclpy), through an
    avag_ros module (avag_ros.messages.grounding imports messages), none through avag_ros.depth.geometry (numpy only), and
    none where the only ROS name is avag_ros.demo's weights, taken from conftest."""
    assert uses_ros("test_lifecycle_requests", "test_a_transition_the_state_lacks_is_refused_with_an_answer", [])
    assert uses_ros("test_grounding_message", "test_masks_confidences_and_sound_fields_without_depth", [])
    assert not uses_ros("test_geometry", "test_erosion_keeps_the_pixels_whose_whole_disk_is_in_the_mask", [])
    assert not uses_ros("test_losses", "test_dice_hand_computed", ["tmp_path"])
    assert not uses_ros("test_export", "test_random_weights_agree_with_eager_pytorch_at_256", ["random_export"])


def run_setup(tmp_path: Path, venv: Path, **env) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "ROS_DISTRO"}
    return subprocess.run(["bash", str(SETUP)], env={**environment, "VENV": str(venv), **env}, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)


@pytest.mark.parametrize("held, asked", [("jazzy", "kilted"), ("kilted", "jazzy")])
def test_setup_refuses_another_distribution_in_a_venv_before_changing_it(tmp_path, held, asked):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "ros-distro").write_text(f"{held}\n")
    result = run_setup(tmp_path, venv, ROS_DISTRO=asked)
    assert result.returncode == 1
    assert f"{venv} holds ROS 2 {held}" in result.stderr
    assert f"rm -rf {venv} && ROS_DISTRO={asked} VENV={venv} bash scripts/setup.sh" in result.stderr
    assert sorted(p.name for p in venv.iterdir()) == ["ros-distro"]  # nothing installed, nothing half-built


@pytest.mark.parametrize("distro, message", [
    ("humble", "humble has no PyPI wheels, and Humble is not supported: docs/install.md"),
    ("rolling", "ROS_DISTRO may be one of: jazzy kilted"),
])
def test_setup_names_what_it_can_set_up_for_a_distribution_it_cannot(tmp_path, distro, message):
    venv = tmp_path / "venv"
    result = run_setup(tmp_path, venv, ROS_DISTRO=distro)
    assert result.returncode == 1 and message in result.stderr
    assert not venv.exists()


@pytest.mark.ros  # on each distribution's venv: each rclpy's mapping
def test_a_venv_without_marker_is_known_by_its_rclpy(tmp_path):
    """How setup.sh and build_interfaces.sh tell a venv made another way (a requirements.txt install): by its rclpy.
    Here: this interpreter's, behind a `python` of a made-up venv."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    major = version("ros-rclpy").split(".")[0]
    expected = next(distro for distro, rclpy in DISTROS.items() if rclpy == major)
    assert ros_distro_sh(f'$(venv_ros_distro "{venv}")') == expected


def python_310_violations(paths: list[Path]) -> list[str]:
    """What in these files needs a Python newer than 3.10: vermin reads the syntax and the standard library's
    members; it misses PEP 646's unpacking in a subscript or a *args annotation (3.11), read here from the AST.
    vermin takes torch's `.long()` and a `file` name for Python 2's builtins, which says nothing of 3.10."""
    found = []
    vermin = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"]  # it has no __main__
    result = subprocess.run([*vermin, "-t=3.10-", "--violations", "--no-tips", "--no-parse-comments",
                             "--exclude", "long", "--exclude", "file", *map(str, paths)],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        found.append(result.stdout + result.stderr)
    files = [p for path in paths for p in ([path] if path.is_file() else sorted(path.rglob("*.py")))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Subscript):
                items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
                if any(isinstance(item, ast.Starred) for item in items):
                    found.append(f"{path}:{node.lineno}: unpacking in a subscript (3.11)")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.args.vararg is not None \
                    and isinstance(node.args.vararg.annotation, ast.Starred):
                found.append(f"{path}:{node.lineno}: unpacked *args annotation (3.11)")
    return found


def test_the_python_310_check_finds_what_3_10_cannot_run(tmp_path):
    late = {"groups.py": "try:\n    pass\nexcept* ValueError:\n    pass\n", "toml.py": "import tomllib\n",
            "self.py": "from typing import Self\n", "subscript.py": "x = a[*b]\n",
            "varargs.py": "def f(*args: *Ts):\n    pass\n"}
    for name, code in late.items():
        (tmp_path / name).write_text(code)
        assert python_310_violations([tmp_path / name]), name
    (tmp_path / "fine.py").write_text("match x:\n    case 1:\n        y: int | None = x.long()\n")
    assert python_310_violations([tmp_path / "fine.py"]) == []


def test_the_code_keeps_to_python_3_10():
    """Humble's Python (and the oldest setup.py declares): what a robot or a training machine runs."""
    paths = [REPO / name for name in ("avag_core", "avag_ros", "launch", "training", "bench", "setup.py")]
    assert python_310_violations(paths) == []


@pytest.mark.slow
def test_colcon_builds_the_package_and_its_interfaces_as_a_workspace(tmp_path):
    """README's workspace build (`python -m colcon build --paths ...` with the venv's interpreter) over the PyPI
    wheels of this venv as the underlay, standing in for /opt/ros: the overlay holds the node's executables,
    started by this interpreter, the launch and config files, and avag_interfaces, which shadows the venv's own."""
    source = tmp_path / "src" / "avag_ros"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv*", "build", "install", "log",
                                                                "__pycache__", "*.egg-info", "demo_output"))
    env = {**os.environ, "AMENT_PREFIX_PATH": sys.prefix, "CMAKE_PREFIX_PATH": sys.prefix}
    build = subprocess.run(
        [sys.executable, "-m", "colcon", "build", "--paths", "src/avag_ros", "src/avag_ros/interfaces/avag_interfaces",
         # what the PyPI wheels need besides: scripts/build_interfaces.sh says why
         "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}",
         f"-DCMAKE_PROJECT_INCLUDE={REPO / 'scripts' / 'cmake' / 'drop_missing_include_dirs.cmake'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    install = tmp_path / "install"
    for executable in ("grounding_node", "sample_player"):
        first_line = (install / "avag_ros" / "lib" / "avag_ros" / executable).read_text().splitlines()[0]
        assert first_line == f"#!{sys.executable}"
    share = install / "avag_ros" / "share" / "avag_ros"
    assert (share / "launch" / "grounding.launch.py").is_file() and (share / "config" / "grounding.yaml").is_file()
    probe = ("import avag_interfaces.msg; from ament_index_python.packages import get_package_share_directory as s; "
             "print(avag_interfaces.msg.__file__); print(s('avag_ros'))")
    sourced = subprocess.run(["bash", "-c", f'source install/setup.bash && "{sys.executable}" -c "{probe}"'],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert sourced.returncode == 0, sourced.stderr
    interfaces, share_found = sourced.stdout.split()
    assert interfaces.startswith(str(install / "avag_interfaces")) and Path(share_found) == share
    player = subprocess.run(["bash", "-c", "source install/setup.bash && install/avag_ros/lib/avag_ros/sample_player "
                             "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert player.returncode == 0 and "usage" in player.stdout, player.stderr
