"""avag_ros.messages.grounding on its own: the combined AffordanceGrounding and the TF frames, against values
computed here (pixel loops, a rotation built from angles, quaternion rotation written out by hand)."""
import math

import numpy as np
import pytest
from std_msgs.msg import Header

from avag_ros.depth.geometry import RegionGeometry
from avag_ros.messages.grounding import Heard, grounding_message, mask_confidence
from avag_ros.messages.targets import transforms
from avag_ros.parameters import spec
from avag_ros.runtime.qos import tf_qos

pytest.importorskip("avag_interfaces.msg", reason="interfaces not built (scripts/build_interfaces.sh)")
pytest.importorskip("tf2_msgs.msg", reason="interfaces not built (scripts/build_interfaces.sh)")

RNG = np.random.default_rng(3)
NO_POINTS = np.zeros((0, 3))  # the messages here carry no cloud


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cz, sz, cy, sy, cx, sx = (math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll),
                              math.sin(roll))
    z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return z @ y @ x


def rotate_by_quaternion(q, vector) -> np.ndarray:
    """v' = q v q*, written out with the Hamilton product."""
    def product(a, b):
        (ax, ay, az, aw), (bx, by, bz, bw) = a, b
        return (aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz)
    x, y, z, w = q
    rotated = product(product((x, y, z, w), (*vector, 0.0)), (-x, -y, -z, w))
    return np.array(rotated[:3])


def header() -> Header:
    out = Header(frame_id="camera_color_optical_frame")
    out.stamp.sec, out.stamp.nanosec = 1234, 567
    return out


def looped_mean(mask, prob) -> float:
    total, count = 0.0, 0
    for row in range(mask.shape[0]):
        for column in range(mask.shape[1]):
            if mask[row, column]:
                total += float(prob[row, column])
                count += 1
    return total / count if count else 0.0


def test_confidence_is_the_mean_probability_inside_the_mask_and_zero_when_empty():
    prob = RNG.random((9, 13)).astype(np.float32)
    mask = prob > 0.6
    assert mask_confidence(mask, prob) == pytest.approx(looped_mean(mask, prob), abs=1e-6)
    assert mask_confidence(np.zeros_like(mask), prob) == 0.0
    assert mask_confidence(mask, None) == 0.0


def test_masks_confidences_and_sound_fields_without_depth():
    function_prob, dependency_prob = RNG.random((2, 7, 11)).astype(np.float32)
    function_mask, dependency_mask = function_prob > 0.5, dependency_prob > 0.9
    message = grounding_message(header(), function_mask, dependency_mask, function_prob, dependency_prob,
                                True, -23.5)
    assert message.header == header()
    for image, mask in ((message.function_mask, function_mask), (message.dependency_mask, dependency_mask)):
        assert (image.encoding, image.height, image.width, image.header) == ("mono8", 7, 11, header())
        expected = bytes(255 if mask[r, c] else 0 for r in range(7) for c in range(11))
        assert bytes(image.data) == expected
    assert message.function_confidence == pytest.approx(looped_mean(function_mask, function_prob), abs=1e-6)
    assert message.dependency_confidence == pytest.approx(looped_mean(dependency_mask, dependency_prob), abs=1e-6)
    assert message.sound_event_active and message.audio_level_db == -23.5
    assert not message.function_point_valid and not message.dependency_point_valid
    assert not message.function_pose_valid and message.depth_frame_id == ""
    assert message.function_pose.orientation.w == 0.0  # no pose: no valid quaternion either
    assert message.event_id == 0 and message.audio_end.sec == 0 and message.audio_end.nanosec == 0


def test_the_event_and_the_audio_span_on_the_node_clock():
    heard = Heard(event_id=7, onset_ns=12_950_000_000, start_ns=12_900_000_000, end_ns=13_874_999_999)
    empty = np.zeros((3, 3), bool)
    message = grounding_message(header(), empty, empty, None, None, True, -30.0, heard)
    assert message.event_id == 7
    assert (message.event_onset.sec, message.event_onset.nanosec) == (12, 950_000_000)
    assert (message.audio_start.sec, message.audio_start.nanosec) == (12, 900_000_000)
    assert (message.audio_end.sec, message.audio_end.nanosec) == (13, 874_999_999)


def test_3d_values_and_valid_flags():
    turn = rotation(0.4, -0.3, 1.1)
    regions = {"function": RegionGeometry(np.array([0.1, -0.2, 0.9]), NO_POINTS, turn, NO_POINTS),
               "dependency": RegionGeometry(np.array([-0.3, 0.05, 1.4]), NO_POINTS, None, NO_POINTS)}
    empty = np.zeros((4, 4), bool)
    message = grounding_message(header(), empty, empty, None, None, False, -120.0, regions=regions,
                                depth_frame_id="camera_depth_optical_frame")
    assert message.function_point_valid and message.dependency_point_valid and message.function_pose_valid
    assert message.depth_frame_id == "camera_depth_optical_frame"
    assert (message.function_point.x, message.function_point.y, message.function_point.z) == (0.1, -0.2, 0.9)
    assert message.function_pose.position == message.function_point
    q = message.function_pose.orientation
    for axis in np.eye(3):
        assert np.allclose(rotate_by_quaternion((q.x, q.y, q.z, q.w), axis), turn @ axis, atol=1e-9)
    assert (message.dependency_point.x, message.dependency_point.y, message.dependency_point.z) == (-0.3, 0.05, 1.4)
    assert message.function_confidence == 0.0 and message.dependency_confidence == 0.0

    regions["function"] = RegionGeometry(np.array([0.1, -0.2, 0.9]), NO_POINTS, None, NO_POINTS)  # fits no plane
    message = grounding_message(header(), empty, empty, None, None, False, -120.0, regions=regions)
    assert message.function_point_valid and not message.function_pose_valid
    assert (message.function_point.x, message.function_point.y, message.function_point.z) == (0.1, -0.2, 0.9)
    position, q = message.function_pose.position, message.function_pose.orientation
    assert (position.x, position.y, position.z, q.x, q.y, q.z, q.w) == (0.0,) * 7  # no pose: all of it zero

    regions["function"] = None
    message = grounding_message(header(), empty, empty, None, None, False, -120.0, regions=regions)
    assert not message.function_point_valid and not message.function_pose_valid and message.dependency_point_valid


def test_tf_frames_are_the_function_pose_and_the_dependency_point():
    turn = rotation(-1.2, 0.2, 0.5)
    regions = {"function": RegionGeometry(np.array([0.4, 0.1, 1.2]), NO_POINTS, turn, NO_POINTS),
               "dependency": RegionGeometry(np.array([0.0, -0.1, 0.8]), NO_POINTS, None, NO_POINTS)}
    depth_header = Header(stamp=header().stamp, frame_id="camera_depth_optical_frame")
    message = transforms(regions, depth_header, "robot_")
    function, dependency = message.transforms
    for transform in (function, dependency):
        assert transform.header.frame_id == "camera_depth_optical_frame"
        assert transform.header.stamp == header().stamp
    assert (function.child_frame_id, dependency.child_frame_id) == ("robot_function", "robot_dependency")
    moved = function.transform.translation
    assert (moved.x, moved.y, moved.z) == (0.4, 0.1, 1.2)
    q = function.transform.rotation
    for axis in np.eye(3):
        assert np.allclose(rotate_by_quaternion((q.x, q.y, q.z, q.w), axis), turn @ axis, atol=1e-9)
    q = dependency.transform.rotation
    assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)
    moved = dependency.transform.translation
    assert (moved.x, moved.y, moved.z) == (0.0, -0.1, 0.8)


def test_regions_without_geometry_or_pose_get_no_frame():
    point_only = RegionGeometry(np.array([0.4, 0.1, 1.2]), NO_POINTS, None, NO_POINTS)
    prefix = spec("tf.prefix").default
    assert transforms({"function": None, "dependency": None}, header(), prefix) is None
    assert transforms({"function": point_only, "dependency": None}, header(), prefix) is None
    frames = transforms({"function": None, "dependency": point_only}, header(), prefix).transforms
    assert [frame.child_frame_id for frame in frames] == ["affordance_dependency"]


def test_tf_qos_is_what_tf2_broadcasters_offer():
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    profile = tf_qos()
    assert (profile.depth, profile.reliability, profile.durability) == (100, ReliabilityPolicy.RELIABLE,
                                                                        DurabilityPolicy.VOLATILE)
    assert tf_qos() is not profile


@pytest.mark.parametrize("prefix, valid", [("affordance_", True), ("", True), ("left/affordance_", True),
                                           ("/affordance_", False), ("my frame", False), ("a//b", False)])
def test_a_tf_prefix_that_cannot_begin_a_frame_name_is_refused_with_depth_only(prefix, valid):
    from avag_ros.parameters import SPECS, check_together, settings_from

    values = {spec.name: spec.default for spec in SPECS} | {"tf.prefix": prefix, "depth.enabled": True}
    reason = check_together(settings_from(values))
    assert (reason is None) == valid, reason
    if not valid:
        assert reason.startswith("parameter 'tf.prefix'") and repr(prefix) in reason
    assert check_together(settings_from(values | {"depth.enabled": False})) is None
