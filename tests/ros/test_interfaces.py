"""The interface packages in interfaces/: their fields against the upstream definitions, and the built types
published, subscribed and served across processes over real Fast DDS."""
import os
import subprocess
import sys
import textwrap
import time

import pytest

audio_msgs = pytest.importorskip("audio_common_msgs.msg", reason="scripts/build_interfaces.sh builds it")
tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="scripts/build_interfaces.sh builds it")
avag_msgs = pytest.importorskip("avag_interfaces.msg", reason="scripts/build_interfaces.sh builds it")
avag_srvs = pytest.importorskip("avag_interfaces.srv", reason="scripts/build_interfaces.sh builds it")

from ros_support import ros_domain  # noqa: E402


# Written from ros-drivers/audio_common (branch ros2, audio_common_msgs/msg/*.msg) and ros2/geometry2
# (tf2_msgs/msg/TFMessage.msg): these are wire formats, so names, types and order must match exactly.
UPSTREAM_FIELDS = {
    audio_msgs.AudioData: [("data", "sequence<uint8>")],
    audio_msgs.AudioDataStamped: [("header", "std_msgs/Header"), ("audio", "audio_common_msgs/AudioData")],
    audio_msgs.AudioInfo: [("channels", "uint8"), ("sample_rate", "uint32"), ("sample_format", "string"),
                           ("bitrate", "uint32"), ("coding_format", "string")],
    tf2_msgs.TFMessage: [("transforms", "sequence<geometry_msgs/TransformStamped>")],
}

# Issue 23's specification of our own interfaces, with issue 30's event, audio span and 3D frame
OUR_FIELDS = {
    avag_msgs.AffordanceGrounding: [
        ("header", "std_msgs/Header"), ("function_mask", "sensor_msgs/Image"),
        ("dependency_mask", "sensor_msgs/Image"), ("function_confidence", "float"),
        ("dependency_confidence", "float"), ("sound_event_active", "boolean"), ("audio_level_db", "float"),
        ("event_id", "uint64"), ("event_onset", "builtin_interfaces/Time"),
        ("audio_start", "builtin_interfaces/Time"), ("audio_end", "builtin_interfaces/Time"),
        ("depth_frame_id", "string"), ("function_point_valid", "boolean"), ("function_point", "geometry_msgs/Point"),
        ("function_pose_valid", "boolean"), ("function_pose", "geometry_msgs/Pose"),
        ("dependency_point_valid", "boolean"), ("dependency_point", "geometry_msgs/Point")],
    avag_srvs.GroundAffordance.Request: [("audio_info", "audio_common_msgs/AudioInfo"),
                                         ("audio", "audio_common_msgs/AudioData"), ("image", "sensor_msgs/Image")],
    avag_srvs.GroundAffordance.Response: [("success", "boolean"), ("message", "string"),
                                          ("grounding", "avag_interfaces/AffordanceGrounding")],
}


@pytest.mark.parametrize("kind, fields", [*UPSTREAM_FIELDS.items(), *OUR_FIELDS.items()],
                         ids=lambda value: getattr(value, "__name__", ""))
def test_fields_match_the_definitions(kind, fields):
    assert list(kind.get_fields_and_field_types().items()) == fields


# Runs in its own process: publishes a grounding and a transform, and serves GroundAffordance by answering with
# what it was asked, so that the test can see every request field arrive and every response field come back.
PEER = textwrap.dedent("""
    import rclpy
    from audio_common_msgs.msg import AudioDataStamped
    from avag_interfaces.msg import AffordanceGrounding
    from avag_interfaces.srv import GroundAffordance
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    def ground(request, response):
        response.success = request.audio_info.sample_format == "S16LE" and len(request.audio.data) > 0
        response.message = f"{request.audio_info.sample_rate} Hz, {len(request.audio.data)} bytes"
        response.grounding.function_mask = request.image
        response.grounding.audio_level_db = -float(request.audio_info.channels)
        response.grounding.function_point_valid = True
        response.grounding.function_pose.position.z = 0.75
        return response

    rclpy.init()
    node = rclpy.create_node("interface_peer")
    node.create_service(GroundAffordance, "ground", ground)
    groundings = node.create_publisher(AffordanceGrounding, "grounding", 10)
    transforms = node.create_publisher(TFMessage, "/tf", 10)
    audio = node.create_publisher(AudioDataStamped, "audio_stamped", 10)

    def publish():
        grounding = AffordanceGrounding(function_confidence=0.25, sound_event_active=True,
                                        dependency_point_valid=True)
        grounding.header.frame_id = "camera"
        grounding.dependency_point.x = 1.5
        grounding.function_mask.height, grounding.function_mask.width = 2, 3
        grounding.function_mask.encoding, grounding.function_mask.step = "mono8", 3
        grounding.function_mask.data = bytes([0, 255, 0, 255, 0, 255])
        groundings.publish(grounding)
        transform = TransformStamped(child_frame_id="affordance_function")
        transform.header.frame_id = "camera_depth_optical_frame"
        transform.transform.rotation.w = 1.0
        transform.transform.translation.y = -0.5
        transforms.publish(TFMessage(transforms=[transform]))
        sample = AudioDataStamped()
        sample.header.stamp.sec = 7
        sample.audio.data = bytes(range(10))
        audio.publish(sample)

    node.create_timer(0.1, publish)
    rclpy.spin(node)
""")


def test_built_types_publish_subscribe_and_serve_across_processes():
    from rclpy.node import Node

    with ros_domain() as (context, add):
        listener = add(Node("listener", context=context))
        received = {"grounding": [], "/tf": [], "audio_stamped": []}
        for topic, kind in (("grounding", avag_msgs.AffordanceGrounding), ("/tf", tf2_msgs.TFMessage),
                            ("audio_stamped", audio_msgs.AudioDataStamped)):
            listener.create_subscription(kind, topic, received[topic].append, 10)
        client = listener.create_client(avag_srvs.GroundAffordance, "ground")
        env = {**os.environ, "ROS_DOMAIN_ID": str(context.get_domain_id())}
        peer = subprocess.Popen([sys.executable, "-c", PEER], env=env, stderr=subprocess.PIPE, text=True)
        try:
            assert client.wait_for_service(timeout_sec=60), "the service never appeared"
            request = avag_srvs.GroundAffordance.Request()
            request.audio_info = audio_msgs.AudioInfo(channels=2, sample_rate=44100, sample_format="S16LE",
                                                      coding_format="wave")
            request.audio.data = bytes(400)
            request.image.height, request.image.width, request.image.encoding = 1, 4, "mono8"
            request.image.step, request.image.data = 4, bytes([1, 2, 3, 4])
            future = client.call_async(request)
            deadline = time.monotonic() + 30
            while not (future.done() and all(received.values())) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert future.done(), "no answer from the service"
        finally:
            peer.terminate()
            peer.wait(timeout=20)
        response = future.result()
        assert response.success and response.message == "44100 Hz, 400 bytes"
        assert bytes(response.grounding.function_mask.data) == bytes([1, 2, 3, 4])
        assert response.grounding.audio_level_db == -2.0 and response.grounding.function_pose.position.z == 0.75
        grounding = received["grounding"][0]
        assert (grounding.header.frame_id, grounding.function_confidence, grounding.dependency_point.x) == \
            ("camera", 0.25, 1.5)
        assert grounding.sound_event_active and grounding.dependency_point_valid
        assert not grounding.function_point_valid
        assert bytes(grounding.function_mask.data) == bytes([0, 255, 0, 255, 0, 255])
        transform = received["/tf"][0].transforms[0]
        assert (transform.child_frame_id, transform.header.frame_id, transform.transform.translation.y) == \
            ("affordance_function", "camera_depth_optical_frame", -0.5)
        sample = received["audio_stamped"][0]
        assert sample.header.stamp.sec == 7 and bytes(sample.audio.data) == bytes(range(10))
