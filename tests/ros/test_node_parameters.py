"""Parameter values as users type them, through the real node: integers for doubles, bad start-up values, log
levels, and what the node says about them."""
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from sensor_msgs.msg import Image

from ros_support import Probe, grounding_node, grounding_node_command, ros_domain, small_checkpoint, write_tone


@pytest.fixture(scope="module")
def files(module_folder):
    return {"checkpoint": small_checkpoint(module_folder / "b0_64px.pt"),
            "tone": write_tone(module_folder / "tone.wav")}


def set_over_the_service(probe, name, value) -> bool:
    """What `ros2 param set /affordance_grounding NAME VALUE` does."""
    client = probe.create_client(SetParameters, "/affordance_grounding/set_parameters")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()]))
    deadline = time.monotonic() + 10
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    return future.result().results[0].successful


def test_an_integer_for_a_double_is_taken_at_start_up_and_at_run_time(files):
    with ros_domain() as (context, add):
        node = add(grounding_node(context, files["checkpoint"], files["tone"], max_rate_hz=0,
                                  **{"audio.min_level_db": -40}))
        probe = add(Probe(context, {"affordance/function_mask": Image}))
        assert node._state_machine.current_state[1] == "active"
        assert node.settings.max_rate_hz == 0.0 and isinstance(node.settings.max_rate_hz, float)
        assert node.settings.audio_min_level_db == -40.0
        assert node.get_parameter("max_rate_hz").type_ == Parameter.Type.DOUBLE
        assert set_over_the_service(probe, "max_rate_hz", 2)
        assert node.settings.max_rate_hz == 2.0 and node.get_parameter("max_rate_hz").type_ == Parameter.Type.DOUBLE
        assert not set_over_the_service(probe, "max_rate_hz", "fast")


def test_an_audio_device_index_given_as_a_number_is_taken_as_its_text(files):
    """`ros2 run ... -p audio.device:=2` gives the integer 2 to a string parameter: the device with index 2."""
    with ros_domain() as (context, add):
        node = add(grounding_node(context, files["checkpoint"], files["tone"], **{"audio.device": 2}))
        assert node.get_parameter("audio.device").value == "2" and node.settings.audio_device == "2"
        assert node._state_machine.current_state[1] == "active" and not node._refused_parameters


def test_a_refused_start_up_value_leaves_the_node_unconfigured_until_it_is_fixed(files, capfd):
    with ros_domain() as (context, add):
        node = add(grounding_node(context, files["checkpoint"], files["tone"], threshold=5.0))
        assert node._state_machine.current_state[1] == "unconfigured" and node.predictor is None
        log = capfd.readouterr().err
        assert "cannot configure: parameter 'threshold' is out of range: it takes 0.01 to 0.99, got 5.0" in log, log
        assert node.get_parameter("threshold").value == 0.5  # the default stands meanwhile
        assert node.set_parameters([Parameter("threshold", value=0.6)])[0].successful
        assert node.trigger_configure() == rclpy.lifecycle.TransitionCallbackReturn.SUCCESS


def start_node(files, domain, *arguments) -> subprocess.Popen:
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(grounding_node_command(files["checkpoint"], files["tone"], *arguments),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(node: subprocess.Popen) -> str:
    node.send_signal(signal.SIGINT)
    try:
        node.wait(timeout=20)
    finally:
        if node.poll() is None:
            node.kill()
    return node.stdout.read()


def test_bad_values_on_the_command_line_do_not_kill_the_process(files):
    """`ros2 run avag_ros grounding_node --ros-args -p threshold:=5.0 ...` used to die in the constructor."""
    with ros_domain() as (context, add):
        probe = add(Probe(context, {"/diagnostics": DiagnosticArray}))
        node = start_node(files, context.get_domain_id(), "-p", "threshold:=5.0", "-p", "audio.sample_rate:=fast",
                          "-p", "max_rate_hz:=0")
        try:
            assert probe.wait_for("/diagnostics", 2, timeout=60)
            status = probe.received["/diagnostics"][-1].status[0]
            values = {kv.key: kv.value for kv in status.values}
            assert status.level == b"\x02" and values["lifecycle_state"] == "unconfigured"
            assert node.poll() is None
        finally:
            output = stop(node)
    assert node.returncode == 0, output
    assert "parameter 'threshold' is out of range: it takes 0.01 to 0.99, got 5.0" in output, output
    assert "parameter 'audio.sample_rate' takes an integer, got 'fast'" in output
    assert "max_rate_hz" not in output and "Traceback" not in output


@pytest.mark.parametrize("scoped", [True, False])
def test_log_level_debug_can_be_scoped_to_the_nodes_logger(files, scoped):
    """What the launch file's log_level passes (`--log-level affordance_grounding:=debug`) against a bare
    `--log-level debug`, which turns on rcl's and the middleware's debug output as well."""
    level = "affordance_grounding:=debug" if scoped else "debug"
    with ros_domain() as (context, add):
        probe = add(Probe(context, {"affordance/function_mask": Image}))
        node = start_node(files, context.get_domain_id(), "--log-level", level)
        try:
            image = np.full((30, 40, 3), 128, np.uint8)
            assert probe.wait_for("affordance/function_mask", timeout=60, publish=lambda: probe.publish_rgb(image))
        finally:
            output = stop(node)
    debug = [line for line in output.splitlines() if line.startswith("[DEBUG]")]
    ours = [line for line in debug if "[affordance_grounding]" in line]
    assert any("configuring with" in line for line in ours) and any("model" in line for line in ours), output
    if scoped:
        assert debug == ours, [line for line in debug if line not in ours][:5]
    else:
        assert len(debug) > len(ours)


def answer(future, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert future.done(), "no answer from the node's parameter services"
    return future.result()


def test_a_depth_range_that_configure_refuses_is_refused_at_run_time_too(files, capfd):
    """`ros2 param set /affordance_grounding depth.min_m 6.0` with depth.max_m 5.0 used to be taken."""
    contradiction = "parameters 'depth.min_m', 'depth.max_m': 6 m is not below 5 m"
    with ros_domain() as (context, add):
        refused = add(grounding_node(context, files["checkpoint"], files["tone"],
                                     **{"depth.enabled": True, "depth.min_m": 6.0}))
        assert refused._state_machine.current_state[1] == "unconfigured"
        assert f"cannot configure: {contradiction}" in capfd.readouterr().err
    with ros_domain() as (context, add):
        node = add(grounding_node(context, files["checkpoint"], files["tone"], **{"depth.enabled": True}))
        probe = add(Probe(context, {}))
        client = AsyncParameterClient(probe, "/affordance_grounding")
        assert client.wait_for_services(timeout_sec=10)

        def values_over_the_service() -> list[float]:
            reply = answer(client.get_parameters(["depth.min_m", "depth.max_m"]))
            return [value.double_value for value in reply.values]

        result = answer(client.set_parameters([Parameter("depth.min_m", value=6.0)])).results[0]
        assert not result.successful and result.reason == contradiction
        result = answer(client.set_parameters([Parameter("depth.max_m", value=0.1)])).results[0]
        assert not result.successful and result.reason == ("parameters 'depth.min_m', 'depth.max_m': 0.1 m is not "
                                                           "below 0.1 m")
        assert values_over_the_service() == [0.1, 5.0]
        # Both past each other at once: judged by the pair they leave, not one at a time against the old one.
        result = answer(client.set_parameters_atomically([Parameter("depth.min_m", value=6.0),
                                                          Parameter("depth.max_m", value=8.0)]))
        assert result.result.successful, result.result.reason
        assert values_over_the_service() == [6.0, 8.0]
        assert (node._outputs.depth.settings.min_m, node._outputs.depth.settings.max_m) == (6.0, 8.0)
        assert answer(client.set_parameters([Parameter("depth.min_m", value=7.5)])).results[0].successful
        assert values_over_the_service() == [7.5, 8.0]
