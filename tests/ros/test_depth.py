"""3D targets from an aligned depth image, over real DDS: known planes, both encodings, holes, bad pairings, sizes,
empty masks, a slow model; and each case where AffordanceGrounding.msg says a *_valid is false.

Every expected value is computed in the test (depth_truth), independently of avag_ros.depth.geometry, from the mask the
node published and the depth this test sent, by the definition in docs/3d-targets.md.
"""
import itertools
import math
import threading
import time

import numpy as np
import pytest
from avag_interfaces.msg import AffordanceGrounding
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped, PoseStamped
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from avag_core import build_model
from avag_core.checkpoints.weights import save_checkpoint
from depth_truth import expected_point
from ros_support import Probe, grounding_node, ros_domain, small_checkpoint, write_tone

WIDTH, HEIGHT = 96, 72
# Not centred, fx != fy: an error that swaps or centres them shows.
K = {"fx": 110.0, "fy": 104.0, "cx": 41.3, "cy": 30.6}
ERODE_PX = 3
OUTPUTS = {"affordance/function_mask": Image, "affordance/function_point": PointStamped,
           "affordance/dependency_point": PointStamped, "affordance/function_pose": PoseStamped,
           "affordance/function_cloud": PointCloud2, "affordance/markers": MarkerArray,
           "affordance/grounding": AffordanceGrounding, "/diagnostics": DiagnosticArray}
DEPTH_PARAMETERS = {"depth.enabled": True, "depth.erode_px": ERODE_PX, "depth.min_points": 20,
                    "depth.max_cloud_points": 500, "threshold": 0.01}  # random weights: a threshold that keeps most


@pytest.fixture(scope="module")
def files(module_folder):
    return {"checkpoint": small_checkpoint(module_folder / "b0_64px.pt"),
            "tone": write_tone(module_folder / "tone.wav")}


def plane_depth(normal, distance, width=WIDTH, height=HEIGHT, k=K) -> np.ndarray:
    """Depth (m) of the plane {X : normal . X = -distance} seen through K: z = -distance / (normal . ray)."""
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    rays = np.stack([(u - k["cx"]) / k["fx"], (v - k["cy"]) / k["fy"], np.ones((height, width))], axis=-1)
    return -distance / (rays @ np.asarray(normal))


def tilted_normal(degrees: float) -> np.ndarray:
    """A plane facing the camera (normal toward it, -z), tilted about the camera's x axis."""
    a = math.radians(degrees)
    return np.array([0.0, -math.sin(a), -math.cos(a)])


def depth_message(depth_m, encoding, header) -> Image:
    if encoding == "16UC1":
        data = np.nan_to_num(np.round(depth_m * 1000), nan=0).astype("<u2")
    else:
        data = depth_m.astype("<f4")
    return Image(header=header, height=data.shape[0], width=data.shape[1], encoding=encoding, is_bigendian=False,
                 step=data.strides[0], data=data.tobytes())


def camera_info(header, width=WIDTH, height=HEIGHT, k=K, distortion=("plumb_bob", ())) -> CameraInfo:
    info = CameraInfo(header=header, width=width, height=height, distortion_model=distortion[0])
    info.k = [k["fx"], 0.0, k["cx"], 0.0, k["fy"], k["cy"], 0.0, 0.0, 1.0]
    info.d = list(distortion[1])
    return info


class Camera:
    """Publishes a colour image with its depth and CameraInfo, as an RGB-D driver does."""

    def __init__(self, probe: Probe):
        from rclpy.qos import qos_profile_sensor_data
        self.probe = probe
        self.depth = probe.create_publisher(Image, "depth/image", qos_profile_sensor_data)
        self.info = probe.create_publisher(CameraInfo, "depth/camera_info", qos_profile_sensor_data)
        self.colour = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8)
        self.sent_depth: dict[tuple[int, int], np.ndarray] = {}

    def publish(self, depth_m, encoding="32FC1", depth_offset_s=0.0, info=True, info_size=None,
                distortion=("plumb_bob", ())):
        header = self.probe.header("camera_color_optical_frame")
        nanoseconds = header.stamp.sec * 10**9 + header.stamp.nanosec + int(depth_offset_s * 1e9)
        depth_header = Header(frame_id="camera_depth_optical_frame")
        depth_header.stamp.sec, depth_header.stamp.nanosec = divmod(nanoseconds, 10**9)
        if info:
            width, height = info_size or (depth_m.shape[1], depth_m.shape[0])
            self.info.publish(camera_info(depth_header, width, height, scaled_k(width, height), distortion))
        self.depth.publish(depth_message(depth_m, encoding, depth_header))
        self.sent_depth[(header.stamp.sec, header.stamp.nanosec)] = depth_m
        time.sleep(0.02)  # depth first, as it usually arrives before the frame's inference ends
        self.probe.publisher.publish(self._colour_message(header))

    def _colour_message(self, header):
        from avag_ros.messages.images import rgb_to_image
        return rgb_to_image(self.colour, "rgb8", header)


def scaled_k(width, height) -> dict:
    sx, sy = width / WIDTH, height / HEIGHT
    return {"fx": K["fx"] * sx, "fy": K["fy"] * sy, "cx": (K["cx"] + 0.5) * sx - 0.5, "cy": (K["cy"] + 0.5) * sy - 0.5}


def mask_of(msg: Image) -> np.ndarray:
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width] > 127


def stamp_key(msg):
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def quaternion_z_axis(q) -> np.ndarray:
    x, y, z, w = q.x, q.y, q.z, q.w
    return np.array([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)])


def vector(value) -> tuple[float, ...]:
    return (value.x, value.y, value.z) + ((value.w,) if hasattr(value, "w") else ())


def assert_no_pose(grounding):
    """AffordanceGrounding.msg: function_pose_valid false, and the pose all zero (no identity quaternion)."""
    assert not grounding.function_pose_valid
    assert vector(grounding.function_pose.position) + vector(grounding.function_pose.orientation) == (0.0,) * 7


def assert_no_3d(grounding, depth_frame_id=""):
    """AffordanceGrounding.msg's rule for a frame without 3D: every *_valid false and its values all zero; the depth
    frame named only when depth was paired."""
    assert grounding.depth_frame_id == depth_frame_id
    assert_no_pose(grounding)
    assert not grounding.function_point_valid and not grounding.dependency_point_valid
    assert vector(grounding.function_point) == vector(grounding.dependency_point) == (0.0,) * 3


def three_d_diagnostics(probe) -> dict:
    for array in reversed(probe.received["/diagnostics"]):
        for status in array.status:
            if status.name.endswith(": 3D"):
                return {kv.key: kv.value for kv in status.values} | {"_message": status.message}
    return {}


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_point_pose_and_cloud_on_a_tilted_plane_with_holes(files, encoding):
    normal = tilted_normal(25.0)
    depth = plane_depth(normal, 0.9)
    holes = np.random.default_rng(1).random(depth.shape)
    depth[holes < 0.1] = 0.0 if encoding == "16UC1" else np.nan  # no measurement, as drivers mark it
    depth[holes > 0.97] = 9.0  # beyond depth.max_m
    with ros_domain() as (context, add):
        add(grounding_node(context, files["checkpoint"], files["tone"], **DEPTH_PARAMETERS))
        probe = add(Probe(context, OUTPUTS))
        camera = Camera(probe)
        assert probe.wait_for("affordance/function_pose", 2, timeout=60,
                              publish=lambda: camera.publish(depth, encoding))
        assert probe.wait_for("affordance/markers") and probe.wait_for("affordance/function_cloud")
        sent = camera.sent_depth[stamp_key(probe.received["affordance/function_point"][0])]
        if encoding == "16UC1":  # what the node received: millimetres, 0 for the holes
            sent = np.where(np.isfinite(sent), np.round(np.nan_to_num(sent) * 1000) / 1000, 0.0)
        masks = {stamp_key(m): mask_of(m) for m in probe.received["affordance/function_mask"]}
        point_msg = probe.received["affordance/function_point"][0]
        assert point_msg.header.frame_id == "camera_depth_optical_frame"
        mask = masks[stamp_key(point_msg)]
        assert mask.sum() > 200  # the test means something only if the region is large
        published = np.array([point_msg.point.x, point_msg.point.y, point_msg.point.z])
        np.testing.assert_allclose(published, expected_point(mask, sent, K, ERODE_PX), atol=1e-3)

        pose = next(p for p in probe.received["affordance/function_pose"] if stamp_key(p) == stamp_key(point_msg))
        position = pose.pose.position
        np.testing.assert_allclose([position.x, position.y, position.z], published, atol=1e-6)
        z_axis = quaternion_z_axis(pose.pose.orientation)
        angle = math.degrees(math.acos(np.clip(z_axis @ normal, -1, 1)))
        assert angle < 2.0, f"approach axis is {angle:.2f} degrees from the true normal"

        cloud = probe.received["affordance/function_cloud"][0]
        points = np.frombuffer(cloud.data, np.float32).reshape(-1, 3)
        assert cloud.width == len(points) <= 500 and [f.name for f in cloud.fields] == ["x", "y", "z"]
        assert np.abs(points @ normal + 0.9).max() < 0.01  # every point on the plane

        markers = probe.received["affordance/markers"][0].markers
        assert {m.header.frame_id for m in markers} == {"camera_depth_optical_frame"}
        arrow = next(m for m in markers if m.type == m.ARROW and m.action == m.ADD)
        start, end = (np.array([p.x, p.y, p.z]) for p in arrow.points)
        assert np.allclose(end, published, atol=1e-6) and (end - start) @ normal < 0  # pointing into the surface


def test_a_depth_image_of_another_size_is_placed_through_its_camera_info(files):
    depth = plane_depth(tilted_normal(10.0), 1.2, WIDTH // 2, HEIGHT // 2, scaled_k(WIDTH // 2, HEIGHT // 2))
    with ros_domain() as (context, add):
        add(grounding_node(context, files["checkpoint"], files["tone"], **DEPTH_PARAMETERS))
        probe = add(Probe(context, OUTPUTS))
        camera = Camera(probe)
        assert probe.wait_for("affordance/function_point", timeout=60, publish=lambda: camera.publish(depth))
        point_msg = probe.received["affordance/function_point"][0]
        mask = {stamp_key(m): mask_of(m) for m in probe.received["affordance/function_mask"]}[stamp_key(point_msg)]
        published = np.array([point_msg.point.x, point_msg.point.y, point_msg.point.z])
        truth = expected_point(mask, depth, scaled_k(WIDTH // 2, HEIGHT // 2), ERODE_PX)
        np.testing.assert_allclose(published, truth, atol=1e-3)


# One case per counter in the default tier; the other rejections, each also named by a unit test of its rule
# (test_geometry, test_depth_buffer), through DDS in the slow tier.
@pytest.mark.parametrize("case, counter, message", [
    # 0.1 s: over depth.max_offset_s, yet under half the publishing period, so no later frame's depth is nearer
    ("depth 0.1 s older", "frames_without_depth", "0.100 s from the colour frame"),
    ("no CameraInfo", "frames_without_camera_info", "no CameraInfo received"),
    pytest.param("CameraInfo of neither size", "depth_rejected",
                 "the depth image is 48x36 but its CameraInfo describes 50x50", marks=pytest.mark.slow),
    # A raw, unaligned depth topic remapped in, with the colour camera's CameraInfo: once taken for a scaled copy.
    ("CameraInfo of the colour image", "depth_rejected", "the depth image is 48x24 but its CameraInfo describes "
                                                         "96x72"),
    pytest.param("another field of view", "depth_rejected",
                 "the depth image is 48x24, the colour image 96x72: another aspect ratio", marks=pytest.mark.slow),
    pytest.param("unknown encoding", "depth_rejected", "unsupported depth encoding '8UC1'", marks=pytest.mark.slow),
    pytest.param("unknown distortion model", "depth_rejected", "cannot undo lens distortion 'kannala_brandt'",
                 marks=pytest.mark.slow),
])
def test_a_frame_without_usable_depth_keeps_its_masks_and_is_counted(files, capfd, case, counter, message):
    depth = plane_depth(tilted_normal(0.0), 1.0)
    publish = {
        "depth 0.1 s older": lambda camera: camera.publish(depth, depth_offset_s=-0.1),
        "no CameraInfo": lambda camera: camera.publish(depth, info=False),
        "CameraInfo of neither size": lambda camera: camera.publish(depth[::2, ::2], info_size=(50, 50)),
        "CameraInfo of the colour image": lambda camera: camera.publish(depth[::3, ::2], info_size=(WIDTH, HEIGHT)),
        "another field of view": lambda camera: camera.publish(depth[::3, ::2]),
        "unknown encoding": lambda camera: camera.publish(depth, encoding="8UC1"),
        "unknown distortion model": lambda camera: camera.publish(depth, distortion=("kannala_brandt", (0.1, 0.0))),
    }[case]
    started = time.monotonic()
    with ros_domain() as (context, add):
        add(grounding_node(context, files["checkpoint"], files["tone"], **DEPTH_PARAMETERS))
        probe = add(Probe(context, OUTPUTS))
        camera = Camera(probe)
        assert probe.wait_for("affordance/function_mask", 3, timeout=60, publish=lambda: publish(camera))
        assert probe.count("affordance/function_point") == 0 and probe.count("affordance/function_pose") == 0
        count = probe.count("/diagnostics")
        assert probe.wait_for("/diagnostics", count + 1, timeout=5)
        values = three_d_diagnostics(probe)
        assert int(values[counter]) > 0 and values["pairs_made"] == "0", values
        assert message in values["_message"], values
        assert probe.count("affordance/grounding") > 0
        for grounding in probe.received["affordance/grounding"]:
            assert_no_3d(grounding)
    log = capfd.readouterr().err
    assert message in log, log
    assert log.count("no 3D for this frame") <= time.monotonic() - started + 1  # at most once a second


def test_sample_player_streams_depth_and_camera_info_from_files(files, tmp_path):
    """`sample_player --image IMG --depth DEPTH.png --camera-info CAMERA.yaml` as a separate process."""
    import os
    import subprocess
    import sys

    import cv2
    import yaml

    image, depth_png, calibration = tmp_path / "frame.png", tmp_path / "depth.png", tmp_path / "camera.yaml"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8))
    depth = plane_depth(tilted_normal(15.0), 0.8)
    cv2.imwrite(str(depth_png), np.round(depth * 1000).astype(np.uint16))
    calibration.write_text(yaml.safe_dump({"image_width": WIDTH, "image_height": HEIGHT, "camera_name": "test",
                                           "camera_matrix": {"rows": 3, "cols": 3, "data": [
                                               K["fx"], 0.0, K["cx"], 0.0, K["fy"], K["cy"], 0.0, 0.0, 1.0]}}))
    with ros_domain() as (context, add):
        add(grounding_node(context, files["checkpoint"], files["tone"], **DEPTH_PARAMETERS))
        probe = add(Probe(context, OUTPUTS))
        env = {**os.environ, "ROS_DOMAIN_ID": str(context.get_domain_id())}
        player = subprocess.Popen([sys.executable, "-m", "avag_ros.sample_player", "--image", str(image), "--depth",
                                   str(depth_png), "--camera-info", str(calibration), "--rate", "10"], env=env)
        try:
            assert probe.wait_for("affordance/function_pose", timeout=60)
        finally:
            player.terminate()
            player.wait(timeout=20)
        pose = probe.received["affordance/function_pose"][0]
        angle = math.degrees(math.acos(np.clip(quaternion_z_axis(pose.pose.orientation) @ tilted_normal(15.0), -1, 1)))
        assert angle < 2.0 and pose.header.frame_id == "camera"


def test_an_empty_mask_keeps_the_frame_and_is_counted(files, capfd):
    """A blank scene: no region to place, yet every frame's masks and overlay are published."""
    depth = plane_depth(tilted_normal(0.0), 1.0)
    parameters = DEPTH_PARAMETERS | {"threshold": 0.99}  # random weights stay far below it: empty masks
    with ros_domain() as (context, add):
        add(grounding_node(context, files["checkpoint"], files["tone"], **parameters))
        probe = add(Probe(context, OUTPUTS | {"affordance/overlay": Image}))
        camera = Camera(probe)
        assert probe.wait_for("affordance/function_mask", 3, timeout=60, publish=lambda: camera.publish(depth))
        assert probe.wait_for("affordance/overlay", 2, timeout=10, publish=lambda: camera.publish(depth))
        assert not any(mask_of(m).any() for m in probe.received["affordance/function_mask"])
        count = probe.count("/diagnostics")
        assert probe.wait_for("/diagnostics", count + 1, timeout=5)
        values = three_d_diagnostics(probe)
        assert int(values["regions_without_enough_points"]) >= 2 and int(values["pairs_made"]) > 0, values
        assert "region is empty" in values["_message"], values
        assert probe.count("affordance/function_point") == 0
        assert probe.count("affordance/grounding") > 0
        for grounding in probe.received["affordance/grounding"]:  # paired, so the depth frame is named
            assert_no_3d(grounding, depth_frame_id="camera_depth_optical_frame")
    assert "inference failed" not in capfd.readouterr().err


def test_a_region_on_one_line_has_a_point_and_no_pose(files):
    """Depth on one image row only: the region's valid points lie on a line, which fits no plane. The point is valid,
    the pose is not (all zero, and no pose topic), as AffordanceGrounding.msg says."""
    depth = plane_depth(tilted_normal(0.0), 1.0)
    row = HEIGHT // 2
    depth[np.arange(HEIGHT) != row] = np.nan  # no measurement anywhere else
    with ros_domain() as (context, add):
        add(grounding_node(context, files["checkpoint"], files["tone"], **DEPTH_PARAMETERS | {"depth.min_points": 10}))
        probe = add(Probe(context, OUTPUTS))
        camera = Camera(probe)
        assert probe.wait_for("affordance/function_point", 2, timeout=60, publish=lambda: camera.publish(depth))
        probe.wait_for("affordance/grounding", probe.count("affordance/function_mask"), timeout=10)
        masks = {stamp_key(m): mask_of(m) for m in probe.received["affordance/function_mask"]}
        pointed = {stamp_key(p) for p in probe.received["affordance/function_point"]}
        checked = 0
        for grounding in probe.received["affordance/grounding"]:
            if stamp_key(grounding) in pointed:
                truth = expected_point(masks[stamp_key(grounding)], depth, K, ERODE_PX)
                assert grounding.function_point_valid and grounding.depth_frame_id == "camera_depth_optical_frame"
                np.testing.assert_allclose(vector(grounding.function_point), truth, atol=1e-3)
                assert_no_pose(grounding)
                checked += 1
        assert checked > 0
        assert probe.count("affordance/function_pose") == 0


@pytest.mark.parametrize("case, parameters", [
    ("depth off", {"depth.enabled": False}),
    # No sound: publish_when_silent sends every frame's empty masks, not grounded on anything, with depth on and fine
    ("silent frames", {"publish_when_silent": True}),
])
def test_frames_without_depth_or_without_a_sound_have_no_3d(files, module_folder, case, parameters):
    depth = plane_depth(tilted_normal(0.0), 1.0)
    audio = write_tone(module_folder / "silence.wav", amplitude=0.0) if case == "silent frames" else files["tone"]
    with ros_domain() as (context, add):
        add(grounding_node(context, files["checkpoint"], audio, **DEPTH_PARAMETERS | parameters))
        probe = add(Probe(context, OUTPUTS))
        camera = Camera(probe)
        assert probe.wait_for("affordance/grounding", 3, timeout=60, publish=lambda: camera.publish(depth))
        for grounding in probe.received["affordance/grounding"]:
            assert_no_3d(grounding)
            assert grounding.sound_event_active == (case == "depth off")
        assert probe.count("affordance/function_point") == 0


@pytest.fixture(scope="module")
def slow_checkpoint(module_folder):
    """The paper's b5 preset, random weights: seconds per frame on a CPU, at 64 px already (its 512 px would take
    minutes per frame on this test machine); any model slower than the ring's half second shows the same."""
    path = module_folder / "b5_64px.pt"
    save_checkpoint(path, build_model("avagformer_b5", image_size=64))
    return path


@pytest.mark.slow  # the b5 preset: seconds per frame
def test_a_slow_model_gets_3d_for_every_frame_from_a_60_hz_depth_stream(files, slow_checkpoint):
    """An RGB-D camera's 60 Hz depth, its colour at 6 Hz with the stamps of every tenth depth image. By the time a
    frame's inference ends, dozens of depth images have come after its own."""
    depth = plane_depth(tilted_normal(10.0), 1.0)
    stop = threading.Event()
    with ros_domain() as (context, add):
        add(grounding_node(context, slow_checkpoint, files["tone"], device="cpu", **DEPTH_PARAMETERS))
        probe = add(Probe(context, OUTPUTS))
        camera = Camera(probe)

        def stream() -> None:
            for tick in itertools.count():
                if stop.wait(1 / 60):
                    return
                header = probe.header("camera_color_optical_frame")
                camera.info.publish(camera_info(header))
                camera.depth.publish(depth_message(depth, "32FC1", header))
                if tick % 10 == 0:
                    probe.publisher.publish(camera._colour_message(header))

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        try:
            assert probe.wait_for("affordance/function_mask", 2, timeout=150)
        finally:
            stop.set()
            streamer.join(timeout=5)
        masks = [m for m in probe.received["affordance/function_mask"] if mask_of(m).any()]
        assert len(masks) >= 2
        # A mask's point is published right after it; give the last one time to arrive.
        probe.wait_for("affordance/function_point", len(masks), timeout=10)
        points = {stamp_key(p) for p in probe.received["affordance/function_point"]}
        missing = [stamp_key(m) for m in masks if stamp_key(m) not in points]
        assert not missing, f"{len(missing)} of {len(masks)} masks got no 3D point; 3D: {three_d_diagnostics(probe)}"
