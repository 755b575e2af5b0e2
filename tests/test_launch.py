"""The launch file and the default parameter file."""
import ast
import importlib.util

import pytest
import yaml

from avag_ros.parameters import SPECS

from conftest import REPO

LAUNCH_FILE = REPO / "launch" / "grounding.launch.py"
EXPECTED_ARGUMENTS = {"params_file", "checkpoint", "image_topic", "audio_source", "namespace", "use_sim_time"}


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def test_default_parameter_file_matches_the_declared_parameters():
    params = yaml.safe_load((REPO / "config" / "grounding.yaml").read_text())["/**/affordance_grounding"]["ros__parameters"]
    assert flatten(params) == {spec.name: spec.default for spec in SPECS}


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="launch_ros is not installed (no PyPI wheel); checked statically instead")
def test_launch_description_with_launch_ros():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument

    spec = importlib.util.spec_from_file_location("grounding_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    declared = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert declared == EXPECTED_ARGUMENTS


def test_launch_file_declares_its_arguments_and_points_at_the_installed_config():
    # Static check that runs without `launch`: the file parses, declares the documented arguments, starts the
    # installed executable, and its default parameter file is one setup.py installs.
    tree = ast.parse(LAUNCH_FILE.read_text())
    arguments = next(node for node in ast.walk(tree) if isinstance(node, ast.Assign)
                     and any(getattr(t, "id", "") == "ARGUMENTS" for t in node.targets))
    assert {key.value for key in arguments.value.keys} == EXPECTED_ARGUMENTS
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert {"avag_ros", "grounding_node", "config", "grounding.yaml", "image"} <= strings
    setup = (REPO / "setup.py").read_text()
    assert '"config/*.yaml"' in setup and '"launch/*.launch.py"' in setup
    assert "grounding_node = avag_ros.grounding_node:main" in setup


def test_parameter_file_loads_into_a_namespaced_node(tmp_path):
    import rclpy
    from rclpy.context import Context

    from avag_ros.grounding_node import GroundingNode

    changed = tmp_path / "grounding.yaml"
    changed.write_text((REPO / "config" / "grounding.yaml").read_text().replace("threshold: 0.5", "threshold: 0.7"))
    context = Context()
    rclpy.init(context=context, args=["--ros-args", "--params-file", str(changed)])
    try:
        node = GroundingNode(context=context, namespace="robot1",
                             parameter_overrides=[rclpy.parameter.Parameter("autostart", value=False)])
        assert node.settings.threshold == 0.7 and node.settings.audio_source == "microphone"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
