"""The launch file and the default parameter file."""
import ast
import importlib.util

import pytest
import yaml

from avag_ros.parameters import LAUNCH_ARGUMENTS, SPECS, node_logger_name, parse_text

from conftest import REPO

LAUNCH_FILE = REPO / "launch" / "grounding.launch.py"
LAUNCH_ONLY_ARGUMENTS = {"params_file", "image_topic", "depth_topic", "camera_info_topic", "namespace", "log_level"}
EXPECTED_ARGUMENTS = LAUNCH_ONLY_ARGUMENTS | set(LAUNCH_ARGUMENTS)
# What users set most (issue 10), each with a text as typed on the command line.
TYPED = {"checkpoint": "/models/avag.pt", "backend": "openvino", "model": "avagformer_b5", "device": "cpu",
         "precision": "fp32",
         "use_compressed": "true", "threshold": "0.7", "max_rate_hz": "2", "publish_overlay": "False",
         "audio_source": "file", "audio_file": "/sounds/peel.wav", "use_sim_time": "true", "depth_enabled": "true",
         "audio_device": "2", "audio_sample_rate": "48000", "reuse_max_change": "0"}


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
                     and any(getattr(t, "id", "") == "LAUNCH_ONLY" for t in node.targets))
    assert {key.value for key in arguments.value.keys} == LAUNCH_ONLY_ARGUMENTS
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert "LAUNCH_ARGUMENTS" in names and "LifecycleNode" in names and "Node" not in names
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


def test_every_launch_argument_sets_a_declared_parameter_with_the_right_type():
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from avag_ros.grounding_node import GroundingNode

    assert set(TYPED) == set(LAUNCH_ARGUMENTS)
    assert {spec.name for spec in SPECS} | {"use_sim_time"} >= set(LAUNCH_ARGUMENTS.values())
    values = {LAUNCH_ARGUMENTS[argument]: parse_text(LAUNCH_ARGUMENTS[argument], text)
              for argument, text in TYPED.items()}
    assert values["threshold"] == 0.7 and values["max_rate_hz"] == 2.0 and values["use_compressed"] is True
    assert values["publish_overlay"] is False and values["checkpoint"] == "/models/avag.pt"
    context = Context()
    rclpy.init(context=context)
    try:  # rclpy refuses an override whose type differs from the declared parameter's
        node = GroundingNode(context=context, parameter_overrides=[
            Parameter("autostart", value=False), *(Parameter(k, value=v) for k, v in values.items())])
        assert node.settings.threshold == 0.7 and node.settings.audio_file == "/sounds/peel.wav"
        assert node.settings.max_rate_hz == 2.0 and node.get_parameter("use_sim_time").value is True
        assert node.settings.backend == "openvino"
        # A device index stays a string (the microphone source takes digits as an index)
        assert node.settings.audio_device == "2" and node.settings.audio_sample_rate == 48000
        assert node.settings.reuse_max_change == 0.0
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


@pytest.mark.parametrize("parameter, text, message", [
    ("threshold", "high", "takes a number"), ("use_compressed", "yes please", "takes true or false"),
    ("audio.sample_rate", "16k", "takes an integer"),
    ("threshold", "5.0", "is out of range: it takes 0.01 to 0.99, got 5.0"),
    ("audio.channels", "0", "is out of range: it takes 1 to 32"),
    ("model", "avagformer_b9", "must be one of avagformer_b0, avagformer_b2, avagformer_b5"),
])
def test_the_launch_file_refuses_a_bad_argument_naming_the_parameter_and_its_rule(parameter, text, message):
    with pytest.raises(ValueError, match=f"parameter '{parameter}' {message}"):
        parse_text(parameter, text)


def test_an_integer_for_a_double_is_taken():
    assert parse_text("max_rate_hz", "0") == 0.0 and isinstance(parse_text("max_rate_hz", "0"), float)


@pytest.mark.parametrize("namespace, logger", [("", "affordance_grounding"), ("robot1", "robot1.affordance_grounding"),
                                               ("/robots/left/", "robots.left.affordance_grounding")])
def test_log_level_is_scoped_to_the_nodes_logger(namespace, logger):
    assert node_logger_name(namespace) == logger
