"""The grounding node over real rclpy and Fast DDS on loopback."""
import gc
import math
import threading
import time
import weakref

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PolygonStamped
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

from avag_core.checkpoints.build import load_model
from avag_core.inference.export import export_onnx
from conftest import write_released
from ros_support import (Probe, grounding_node, grounding_node_command, interrupt, ros_domain, small_checkpoint,
                         write_tone)
from test_conversions import message as encoded_message

OUTPUTS = {"affordance/function_mask": Image, "affordance/dependency_mask": Image,
           "affordance/function_region": PolygonStamped, "affordance/overlay": Image,
           "affordance/function_probability": Image, "/diagnostics": DiagnosticArray}


@pytest.fixture(scope="module")
def files(module_folder):
    silence = module_folder / "silence.wav"
    write_tone(silence, amplitude=0.0)
    return {"checkpoint": small_checkpoint(module_folder / "b0_64px.pt"),
            "tone": write_tone(module_folder / "tone.wav"), "silence": silence}


def rgb_image(height=48, width=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def mask_array(msg: Image) -> np.ndarray:
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width]


def diagnostics_values(probe) -> dict[str, str]:
    status = probe.received["/diagnostics"][-1].status[0]
    return {kv.key: kv.value for kv in status.values} | {"_level": status.level, "_message": status.message}


def test_end_to_end_masks_keep_header_size_and_values(files):
    with ros_domain() as (context, add):
        add(grounding_node(context, files["checkpoint"], files["tone"], publish_probabilities=True))
        probe = add(Probe(context, OUTPUTS))
        sent = {}

        def publish():
            msg = probe.publish_rgb(rgb_image(37, 53), frame_id="camera_optical")
            sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg

        assert probe.wait_for("affordance/dependency_mask", 2, publish=publish)
        function = probe.received["affordance/function_mask"][0]
        dependency = next(m for m in probe.received["affordance/dependency_mask"]
                          if m.header.stamp == function.header.stamp)
        assert (function.header.stamp.sec, function.header.stamp.nanosec) in sent
        for msg in (function, dependency):
            assert msg.header.frame_id == "camera_optical"
            assert (msg.encoding, msg.height, msg.width) == ("mono8", 37, 53)
            assert set(np.unique(mask_array(msg))) <= {0, 255}
        assert probe.wait_for("affordance/function_region") and probe.wait_for("affordance/overlay")
        assert probe.received["affordance/function_region"][0].header.frame_id == "camera_optical"
        overlay = probe.received["affordance/overlay"][0]
        assert (overlay.encoding, overlay.height, overlay.width) == ("bgr8", 37, 53)
        prob = probe.received["affordance/function_probability"][0]
        assert prob.encoding == "32FC1"
        values = np.frombuffer(prob.data, np.float32)
        assert values.size == 37 * 53 and values.min() >= 0 and values.max() <= 1


def test_every_encoding_with_row_padding_reaches_the_model(files):
    # One node for all of them: each encoding comes at its own width, so a mask of that width answers that encoding.
    with ros_domain() as (context, add):
        add(grounding_node(context, files["checkpoint"], files["tone"]))
        probe = add(Probe(context, OUTPUTS))
        for index, encoding in enumerate(["rgb8", "bgr8", "mono8", "rgba8", "bgra8", "mono16", "yuv422_yuy2", "yuyv"]):
            width = 40 + 2 * index  # even, as the 4:2:2 encodings pack pixels in pairs
            sent = encoded_message(encoding, rgb_image(30, width), padding=3)
            answered = lambda: probe.first("affordance/function_mask", lambda m: m.width == width)  # noqa: E731
            assert probe.wait_until(answered, publish=lambda: probe.publisher.publish(sent)), encoding
            assert answered().height == 30, encoding


def test_compressed_input_and_corrupt_jpeg(files):
    import cv2
    with ros_domain() as (context, add):
        node = add(grounding_node(context, files["checkpoint"], files["tone"], use_compressed=True))
        probe = add(Probe(context, OUTPUTS, image_topic="image/compressed", image_type=CompressedImage))

        def publish(data):
            msg = CompressedImage(header=probe.header(), format="jpeg", data=data)
            probe.publisher.publish(msg)

        probe.wait_for("affordance/function_mask", timeout=3, publish=lambda: publish(b"\xff\xd8 broken jpeg"))
        assert probe.count("affordance/function_mask") == 0 and node.stats.rejected > 0
        good = cv2.imencode(".jpg", rgb_image(50, 70))[1].tobytes()
        assert probe.wait_for("affordance/function_mask", publish=lambda: publish(good))
        assert probe.received["affordance/function_mask"][0].width == 70


def test_bad_messages_are_logged_and_the_next_good_image_is_served(files):
    with ros_domain() as (context, add):
        node = add(grounding_node(context, files["checkpoint"], files["tone"]))
        probe = add(Probe(context, OUTPUTS))
        good = encoded_message("rgb8", rgb_image(20, 30))
        short = encoded_message("rgb8", rgb_image(20, 30))
        short.data = bytes(short.data)[:100]
        unknown = encoded_message("rgb8", rgb_image(20, 30))
        unknown.encoding = "bayer_grbg16"
        zero_width = encoded_message("rgb8", rgb_image(20, 30))
        zero_width.width = 0
        for bad in (short, unknown, zero_width):
            rejected = node.stats.rejected
            deadline = time.monotonic() + 10
            while node.stats.rejected == rejected and time.monotonic() < deadline:
                probe.publisher.publish(bad)
                time.sleep(0.1)
            assert node.stats.rejected > rejected
        assert probe.count("affordance/function_mask") == 0
        assert probe.wait_for("affordance/function_mask", publish=lambda: probe.publisher.publish(good))

        # NaN samples from the audio source: frames are skipped, then serving resumes once they age out.
        rejected = node.stats.rejected
        node.audio_source.buffer.write(np.full(800, np.nan, np.float32), 0)
        deadline = time.monotonic() + 10
        while node.stats.rejected == rejected and time.monotonic() < deadline:
            probe.publisher.publish(good)
            time.sleep(0.05)
        assert node.stats.rejected > rejected
        served = probe.count("affordance/function_mask")
        assert probe.wait_for("affordance/function_mask", served + 1, timeout=20,
                              publish=lambda: probe.publisher.publish(good))


def test_silence_publishes_nothing_or_empty_masks(files):
    for publish_when_silent in (False, True):
        with ros_domain() as (context, add):
            add(grounding_node(context, files["checkpoint"], files["silence"],
                               publish_when_silent=publish_when_silent))
            probe = add(Probe(context, OUTPUTS))
            got = probe.wait_for("affordance/function_mask", timeout=4 if not publish_when_silent else 30,
                                 publish=lambda: probe.publish_rgb(rgb_image()))
            assert got == publish_when_silent
            if got:
                assert not mask_array(probe.received["affordance/function_mask"][0]).any()
            assert probe.wait_for("/diagnostics")
            assert diagnostics_values(probe)["sound_event_active"] == "False"


@pytest.mark.slow  # endurance: 20 s of a 60 Hz flood
def test_image_flood_keeps_memory_and_latency_bounded(files):
    """60 Hz of 225 KiB images into a node that infers slower. The node runs as its own process and its current
    RSS is read from /proc, so neither this process's peak (earlier tests) nor the probe's copies of the masks
    count; from 8 s into the flood on, a queue would grow by the unprocessed images (about 10 MB a second)."""
    import os
    import subprocess

    with ros_domain() as (context, add):
        probe = add(Probe(context, {"affordance/function_mask": Image, "/diagnostics": DiagnosticArray}))
        env = {**os.environ, "ROS_DOMAIN_ID": str(context.get_domain_id())}
        node = subprocess.Popen(grounding_node_command(files["checkpoint"], files["tone"], "-p", "max_rate_hz:=0.0"),
                                env=env, stderr=subprocess.PIPE, text=True)
        image = rgb_image(240, 320)  # under Fast DDS's 512 KiB shared-memory segment: every image arrives
        stop = threading.Event()

        def flood():
            next_time = time.monotonic()
            while not stop.is_set():
                probe.publish_rgb(image)
                next_time += 1 / 60
                time.sleep(max(0.0, next_time - time.monotonic()))

        publisher = threading.Thread(target=flood)
        try:
            assert probe.wait_for("affordance/function_mask", timeout=90, publish=lambda: probe.publish_rgb(image))
            publisher.start()
            time.sleep(8)
            early, rss_early_mb = diagnostics_values(probe), current_rss_mb(node.pid)
            time.sleep(12)
            late, rss_late_mb = diagnostics_values(probe), current_rss_mb(node.pid)
        finally:
            stop.set()
            if publisher.is_alive():
                publisher.join()
            log = interrupt(node)
    assert node.returncode == 0 and "Traceback" not in log, log
    assert float(late["input_rate_hz"]) > 30  # the flood really arrived
    assert int(late["frames_dropped"]) > int(early["frames_dropped"]) > 0  # older images were dropped, not queued
    # A queue would add seconds of waiting per second of flood; the newest-only worker stays flat.
    assert float(late["latency_median_ms"]) < 2 * float(early["latency_median_ms"]) + 500
    assert rss_late_mb - rss_early_mb < 20, (rss_early_mb, rss_late_mb)


def current_rss_mb(pid: int) -> float:
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines())
    return int(status["VmRSS"].split()[0]) / 1024


def test_lifecycle_transitions(files):
    with ros_domain() as (context, add):
        # A keyframe 0.3 s old is renewed: the renewal thread starts within the first configuration
        node = add(grounding_node(context, files["checkpoint"], files["tone"], autostart=False,
                                  **{"reuse.max_age_s": 0.3}))
        probe = add(Probe(context, OUTPUTS))
        assert node._state_machine.current_state[1] == "unconfigured" and node.predictor is None
        assert node.trigger_configure() == rclpy.lifecycle.TransitionCallbackReturn.SUCCESS
        assert node._state_machine.current_state[1] == "inactive" and node.predictor is not None
        assert not probe.wait_for("affordance/function_mask", timeout=2,
                                  publish=lambda: probe.publish_rgb(rgb_image()))
        node.trigger_activate()
        assert probe.wait_for("affordance/function_mask", publish=lambda: probe.publish_rgb(rgb_image()))
        inference_threads = inference_thread_ids()
        assert len(inference_threads) == 1
        assert probe.wait_until(renewal_thread_ids, publish=lambda: probe.publish_rgb(rgb_image()), period=0.05)
        renewal_threads = renewal_thread_ids()
        node.trigger_deactivate()
        assert node._state_machine.current_state[1] == "inactive"
        time.sleep(0.5)
        before = probe.count("affordance/function_mask")
        probe.wait_for("affordance/function_mask", before + 1, timeout=2,
                       publish=lambda: probe.publish_rgb(rgb_image()))
        assert probe.count("affordance/function_mask") == before
        model = weakref.ref(node.predictor.backend.model)
        node.trigger_cleanup()
        assert node._state_machine.current_state[1] == "unconfigured" and node.predictor is None
        # Cleanup frees the model before a configure loads the next: nothing live holds it, not the inference
        # thread either (avag_ros.runtime.threads.ReusedThread); collected here too, in case the diagnostics timer's
        # callback held the predictor for the moment of cleanup's own collection.
        gc.collect()
        assert model() is None
        assert node.trigger_configure() == rclpy.lifecycle.TransitionCallbackReturn.SUCCESS
        node.trigger_activate()
        before = probe.count("affordance/function_mask")
        assert probe.wait_for("affordance/function_mask", before + 1, publish=lambda: probe.publish_rgb(rgb_image()))
        # The same threads, hence the same malloc arenas, as before the cycle (avag_ros.runtime.memory).
        assert inference_thread_ids() == inference_threads and renewal_thread_ids() == renewal_threads


def inference_thread_ids() -> list[int]:
    return [thread.native_id for thread in threading.enumerate() if thread.name == "affordance_inference"]


def renewal_thread_ids() -> list[int]:
    return [thread.native_id for thread in threading.enumerate() if "renewal" in thread.name]


def test_parameters_are_validated_and_dynamic_ones_apply(files):
    with ros_domain() as (context, add):
        node = add(grounding_node(context, files["checkpoint"], files["tone"]))
        for name, value, reason in (("threshold", 1.5, "range"), ("max_rate_hz", -1.0, "range"),
                                    ("model", "avagformer_b5", "read-only"), ("audio.source", "file", "read-only")):
            result = node.set_parameters([Parameter(name, value=value)])[0]
            assert not result.successful and reason in result.reason.lower(), (name, result.reason)
        assert node.set_parameters([Parameter("threshold", value=0.8)])[0].successful
        assert node.predictor.threshold == 0.8 and node.settings.threshold == 0.8
        assert node.set_parameters([Parameter("audio.min_level_db", value=-30.0)])[0].successful
        assert node.settings.audio_min_level_db == -30.0


def test_missing_checkpoint_leaves_the_node_up_but_unconfigured(files, tmp_path, capfd):
    with ros_domain() as (context, add):
        node = add(grounding_node(context, tmp_path / "missing.pt", files["tone"]))
        probe = add(Probe(context, OUTPUTS))
        assert node._state_machine.current_state[1] == "unconfigured"
        assert "parameter 'checkpoint'" in capfd.readouterr().err
        assert probe.wait_for("/diagnostics")
        values = diagnostics_values(probe)
        assert values["_level"] == b"\x02" and values["lifecycle_state"] == "unconfigured"


@pytest.mark.parametrize("backend, checkpoint_kind", [("onnxruntime", "pt"), ("openvino", "export folder")])
def test_exported_backends_run_end_to_end(files, tmp_path, monkeypatch, backend, checkpoint_kind):
    monkeypatch.setenv("AVAG_ROS_CACHE_DIR", str(tmp_path / "cache"))
    checkpoint = files["checkpoint"]
    if checkpoint_kind == "export folder":
        checkpoint = export_onnx(load_model(checkpoint), tmp_path / "onnx")
    with ros_domain() as (context, add):
        node = add(grounding_node(context, checkpoint, files["tone"], backend=backend, publish_probabilities=True))
        probe = add(Probe(context, OUTPUTS))
        assert node._state_machine.current_state[1] == "active"
        assert probe.wait_for("affordance/function_probability", 2,
                              publish=lambda: probe.publish_rgb(rgb_image(37, 53)))
        prob = probe.received["affordance/function_probability"][0]
        assert (prob.height, prob.width) == (37, 53)
        assert probe.wait_for("/diagnostics")
        assert diagnostics_values(probe)["device"] == f"{backend} (CPU)"
    if checkpoint_kind == "pt":  # exported once, into the cache
        assert len(list((tmp_path / "cache" / "onnx").iterdir())) == 1


@pytest.mark.slow  # int8 calibration
def test_the_node_runs_int8_from_a_quantized_export(quantized_demo, tmp_path):
    with ros_domain() as (context, add):
        node = add(grounding_node(context, quantized_demo, write_tone(tmp_path / "tone.wav"), backend="openvino",
                                  precision="int8"))
        probe = add(Probe(context, {"affordance/function_mask": Image}))
        assert node._state_machine.current_state[1] == "active"
        image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), np.uint8)
        assert probe.wait_for("affordance/function_mask", timeout=60, publish=lambda: probe.publish_rgb(image))


def test_the_node_runs_a_released_checkpoint_and_says_so(tmp_path, capfd):
    released = write_released(tmp_path, ("last.pth",))
    tone = write_tone(tmp_path / "tone.wav")
    with ros_domain() as (context, add):
        node = add(grounding_node(context, released / "last.pth", tone))
        probe = add(Probe(context, {"affordance/function_mask": Image}))
        assert node._state_machine.current_state[1] == "active"
        log = capfd.readouterr().err
        assert "[affordance_grounding]" in log and "checkpoint of the released AVAGFormer code" in log, log
        image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), np.uint8)
        assert probe.wait_for("affordance/function_mask", timeout=60, publish=lambda: probe.publish_rgb(image))
        assert probe.received["affordance/function_mask"][0].width == 80


def test_a_backend_that_cannot_run_on_the_device_leaves_the_node_unconfigured(files, capfd):
    with ros_domain() as (context, add):
        node = add(grounding_node(context, files["checkpoint"], files["tone"], backend="openvino", device="cuda"))
        assert node._state_machine.current_state[1] == "unconfigured"
        assert "parameters 'backend', 'device', 'precision': invalid device 'cuda' for openvino" in \
            capfd.readouterr().err


def test_broken_microphone_is_reported_once_and_the_node_keeps_running(files, capfd):
    with ros_domain() as (context, add):
        node = add(grounding_node(context, files["checkpoint"], files["tone"], **{
            "audio.source": "microphone", "audio.device": "no such microphone", "audio.retry_s": 0.5}))
        probe = add(Probe(context, OUTPUTS))
        assert node._state_machine.current_state[1] == "active"
        assert probe.wait_for("/diagnostics", 3, timeout=10)  # 3 s: six retries
        values = diagnostics_values(probe)
        assert values["_level"] == b"\x01" and "failed to open" in values["audio_health"]
        assert node._worker.running()
        errors = [line for line in capfd.readouterr().err.splitlines() if "audio source failed" in line]
        assert len(errors) == 1, errors


def test_diagnostics_report_the_sound_event_before_any_image(files):
    with ros_domain() as (context, add):
        add(grounding_node(context, files["checkpoint"], files["tone"]))
        probe = add(Probe(context, OUTPUTS))
        assert probe.wait_for("/diagnostics", 3, timeout=10)
        values = diagnostics_values(probe)
        assert values["sound_event_active"] == "True" and float(values["audio_level_db"]) > -50, values


def test_node_diagnostics_report_reuse_on_a_still_stream(files):
    frame = np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    with ros_domain() as (context, add):
        # a long max_age_s: on a busy machine one frame may take longer than the default
        node = add(grounding_node(context, files["checkpoint"], files["tone"], **{"reuse.max_age_s": 600.0}))
        probe = add(Probe(context, {"affordance/function_mask": Image, "/diagnostics": DiagnosticArray}))
        assert probe.wait_for("affordance/function_mask", 4, publish=lambda: probe.publish_rgb(frame))
        masks = probe.count("affordance/function_mask")
        count = probe.count("/diagnostics")
        assert probe.wait_for("/diagnostics", count + 1, timeout=5)  # published after those masks were decided
        status = probe.received["/diagnostics"][-1].status[0]
        values = {kv.key: kv.value for kv in status.values}
        # every mask but the first keyframe's came from reuse; frames decided since can only add reuses
        assert float(values["reuse_ratio"]) >= (masks - 1) / masks - 0.01
        assert values["view_change"] == "0.00" and math.isfinite(float(values["keyframe_age_s"]))
        assert node.set_parameters([Parameter("reuse.max_change", value=0.0)])[0].successful  # off at run time
        masks = probe.count("affordance/function_mask")
        assert probe.wait_for("affordance/function_mask", masks + 2, publish=lambda: probe.publish_rgb(frame))
        assert not node.predictor.view_reuse.last_reused


def test_raw_images_too_large_for_the_default_transport_are_warned_about_once(files, capfd, monkeypatch):
    monkeypatch.delenv("FASTDDS_BUILTIN_TRANSPORTS", raising=False)
    with ros_domain() as (context, add):
        add(grounding_node(context, files["checkpoint"], files["tone"]))
        probe = add(Probe(context, OUTPUTS))
        image = rgb_image(480, 640)  # 900 KiB as rgb8
        assert probe.wait_for("affordance/function_mask", 2, timeout=60, publish=lambda: probe.publish_rgb(image))
        warnings = [line for line in capfd.readouterr().err.splitlines() if "shared-memory segment" in line]
        assert len(warnings) == 1 and "FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA" in warnings[0], warnings


def test_node_and_sample_player_as_separate_processes(files, tmp_path):
    """`python -m avag_ros.grounding_node` and the sample player CLI, talking over DDS between processes."""
    import os
    import signal
    import subprocess
    import sys

    import cv2

    image = tmp_path / "frame (1).png"
    cv2.imwrite(str(image), rgb_image(60, 80))
    with ros_domain() as (context, add):
        probe = add(Probe(context, OUTPUTS))
        env = {**os.environ, "ROS_DOMAIN_ID": str(context.get_domain_id())}
        node = subprocess.Popen(grounding_node_command(files["checkpoint"], files["tone"],
                                                       "-r", "image:=camera/image_raw"),
                                env=env, stderr=subprocess.PIPE, text=True)
        player = subprocess.Popen([sys.executable, "-m", "avag_ros.sample_player", "--image", str(image),
                                   "--rate", "10", "--ros-args", "-r", "image:=camera/image_raw"], env=env)
        try:
            assert probe.wait_for("affordance/function_mask", timeout=60)
            msg = probe.received["affordance/function_mask"][0]
            assert (msg.width, msg.height, msg.header.frame_id) == (80, 60, "camera")
        finally:
            player.terminate()
            node.send_signal(signal.SIGINT)  # what Ctrl-C and ros2 launch send
            for process in (player, node):
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()  # never leave a node spinning after the test
                    raise
        assert "Traceback" not in node.stderr.read() and node.returncode == 0


def test_camera_qos_defaults_to_best_effort_depth_1_and_can_be_overridden(files):
    from rclpy.qos import ReliabilityPolicy
    with ros_domain() as (context, add):
        overridden = add(grounding_node(context, files["checkpoint"], files["tone"], **{
            "qos_overrides./image.subscription.reliability": "reliable",
            "qos_overrides./image.subscription.depth": 3}))
        info = overridden.get_subscriptions_info_by_topic("/image")[0].qos_profile  # as DDS sees it
        assert info.reliability == ReliabilityPolicy.RELIABLE
        assert overridden._image_subscription.qos_profile.depth == 3
    with ros_domain() as (context, add):  # created later in the same process: the override must not carry over
        default = add(grounding_node(context, files["checkpoint"], files["tone"]))
        info = default.get_subscriptions_info_by_topic("/image")[0].qos_profile
        assert info.reliability == ReliabilityPolicy.BEST_EFFORT
        assert default._image_subscription.qos_profile.depth == 1


def test_a_matched_camera_that_delivers_nothing_is_reported(files):
    """Large raw images lost by best-effort DDS look like silence to the node; diagnostics must say why."""
    from avag_ros.diagnostics import SILENT_CAMERA_S
    with ros_domain() as (context, add):
        add(grounding_node(context, files["checkpoint"], files["tone"]))
        probe = add(Probe(context, OUTPUTS))  # its image publisher matches the node but sends nothing yet
        time.sleep(SILENT_CAMERA_S + 0.5)
        count = probe.count("/diagnostics")
        assert probe.wait_for("/diagnostics", count + 1, timeout=5)
        values = diagnostics_values(probe)
        assert values["_level"] == b"\x01" and values["image_publishers"] == "1", str(values)
        assert "LARGE_DATA" in values["_message"] and values["image_topic"] == "/image"
        assert probe.wait_for("affordance/function_mask", publish=lambda: probe.publish_rgb(rgb_image()))
        count = probe.count("/diagnostics")
        assert probe.wait_for("/diagnostics", count + 1, timeout=5)
        assert diagnostics_values(probe)["_level"] == b"\x00"


@pytest.fixture(scope="module")
def slow_checkpoint(module_folder):
    """b0 at 256 px: a few hundred ms per frame on the CPU, so a signal almost surely lands mid-inference."""
    return small_checkpoint(module_folder / "b0_256px.pt", image_size=256)


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "lifecycle shutdown"])
def test_node_process_shuts_down_quietly_while_inferring(files, slow_checkpoint, how):
    """Ctrl-C, `ros2 launch`'s SIGTERM and a lifecycle shutdown, each while frames are being processed: exit
    code 0, and neither an ERROR line nor a traceback (rclpy's own handlers used to kill the context under the
    inference thread, which then logged a false 'inference failed')."""
    import os
    import signal
    import subprocess

    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    with ros_domain() as (context, add):
        probe = add(Probe(context, OUTPUTS))
        env = {**os.environ, "ROS_DOMAIN_ID": str(context.get_domain_id()), "PYTHONUNBUFFERED": "1"}
        node = subprocess.Popen(grounding_node_command(slow_checkpoint, files["tone"], "-p", "max_rate_hz:=0.0"),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stop_publishing = threading.Event()

        def stream():  # the camera keeps going until the node is gone
            while not stop_publishing.wait(0.05):
                probe.publish_rgb(rgb_image(120, 160))

        camera = threading.Thread(target=stream, daemon=True)
        camera.start()
        try:
            assert probe.wait_for("affordance/function_mask", count=3, timeout=60)
            if how == "lifecycle shutdown":
                client = probe.create_client(ChangeState, "/affordance_grounding/change_state")
                assert client.wait_for_service(timeout_sec=10)
                request = ChangeState.Request()
                request.transition.id = Transition.TRANSITION_ACTIVE_SHUTDOWN
                future = client.call_async(request)
            else:
                node.send_signal(getattr(signal, how))
            node.wait(timeout=30)
        finally:
            stop_publishing.set()
            camera.join()
            if node.poll() is None:
                node.kill()  # never leave a node spinning after the test
        output = node.stdout.read()
        assert node.returncode == 0, output
        assert "[ERROR]" not in output and "Traceback" not in output, output
        if how == "lifecycle shutdown" and future.done():  # the reply may be lost as the node exits
            assert future.result().success


def test_sim_time_without_clock_keeps_diagnostics_flowing_and_flags_the_stamps(files):
    with ros_domain() as (context, add):
        add(grounding_node(context, files["checkpoint"], files["tone"], use_sim_time=True))
        probe = add(Probe(context, OUTPUTS))  # stamps with wall time; nobody publishes /clock
        assert probe.wait_for("/diagnostics", 2, timeout=5)  # the steady 1 Hz timer fires without /clock
        assert probe.wait_for("affordance/function_mask", publish=lambda: probe.publish_rgb(rgb_image()))
        count = probe.count("/diagnostics")
        assert probe.wait_for("/diagnostics", count + 1, timeout=5)
        values = diagnostics_values(probe)
        assert values["latency_clock"] == "ROS sim time (/clock)"
        assert float(values["latency_median_ms"]) < 0  # reported as measured, and flagged:
        assert values["_level"] == b"\x01" and "ahead of the node's ROS sim time" in values["_message"]
        assert "/clock is not moving" in values["_message"]
