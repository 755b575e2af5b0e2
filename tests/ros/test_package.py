"""The repo is one ament_python package that colcon and pip can both install, with its `python -m` entries."""
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile

from avag_ros.data import DEMO_CHECKPOINT
from conftest import REPO
from conftest import DEMO_CHECKPOINT as CHECKOUT_DEMO_CHECKPOINT

# The model's stack (torch and the rest) is not among them: pip installs it into a venv (test_distributions.py).
REQUIRED_RUN_DEPENDENCIES = {"rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "diagnostic_msgs",
                             "lifecycle_msgs", "launch", "launch_ros", "python3-numpy"}


def test_package_xml_is_format_3_ament_python_with_run_dependencies():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "avag_ros"
    assert root.find("export/build_type").text == "ament_python"
    run_deps = {e.text for e in root.findall("exec_depend")} | {e.text for e in root.findall("depend")}
    assert REQUIRED_RUN_DEPENDENCIES <= run_deps


def test_wheel_installs_packages_and_ros_share_files(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO),
                    "-w", str(tmp_path)], check=True, capture_output=True, cwd=tmp_path, timeout=300)
    (wheel,) = tmp_path.glob("avag_ros-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = "avag_ros-0.1.0.data/data/share/"
    assert f"{data}ament_index/resource_index/packages/avag_ros" in names
    assert f"{data}avag_ros/package.xml" in names
    for pattern in ("launch/*.launch.py", "config/*.yaml"):
        for path in REPO.glob(pattern):
            assert f"{data}avag_ros/{path.parent.name}/{path.name}" in names
    assert "avag_core/modeling/avagformer.py" in names and "avag_ros/__init__.py" in names
    for folder in ("audio", "depth", "messages", "runtime", "tools", "data"):  # packages only with an __init__.py
        assert f"avag_ros/{folder}/__init__.py" in names, folder
    assert "avag_ros/data/demo_avagformer_b0.pt" in names and "avag_ros/data/demo_avagformer_b0.md" in names


def test_demo_weights_are_small_and_say_how_they_were_trained():
    weights = DEMO_CHECKPOINT
    assert weights == CHECKOUT_DEMO_CHECKPOINT  # what the ROS-free tests read is the package's file
    assert weights.stat().st_size <= 25 * 2**20
    record = weights.with_suffix(".md").read_text()
    assert "training/train.py" in record and "mIoU_f" in record


def test_importing_the_packages_leaves_every_python_m_entry_unimported():
    """runpy warns ('found in sys.modules') when a package's import already ran the module `-m` is about to run."""
    entries = ["avag_core.convert_released", "avag_core.export", "avag_core.predict", "avag_ros.demo",
               "avag_ros.grounding_node", "avag_ros.sample_player"]
    code = f"import sys, avag_core, avag_ros; print([m for m in {entries!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    export = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "avag_core.export", "--help"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert export.returncode == 0 and "sys.modules" not in export.stderr, export.stderr
