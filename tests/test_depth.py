"""3D targets from an aligned depth image, over real DDS: known planes, both encodings, holes, bad pairings.

Every expected value is computed here, independently of avag_ros.geometry, from the mask the node published and
the depth this test sent, by the definition in the README ("3D targets").
"""
import math
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped, PoseStamped
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from ros_support import Probe, grounding_node, ros_domain, small_checkpoint, write_tone

WIDTH, HEIGHT = 96, 72
# Not centred, fx != fy: an error that swaps or centres them shows.
K = {"fx": 110.0, "fy": 104.0, "cx": 41.3, "cy": 30.6}
ERODE_PX = 3
OUTPUTS = {"affordance/function_mask": Image, "affordance/function_point": PointStamped,
           "affordance/dependency_point": PointStamped, "affordance/function_pose": PoseStamped,
           "affordance/function_cloud": PointCloud2, "affordance/markers": MarkerArray,
           "/diagnostics": DiagnosticArray}
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


def camera_info(header, width=WIDTH, height=HEIGHT, k=K) -> CameraInfo:
    info = CameraInfo(header=header, width=width, height=height, distortion_model="plumb_bob")
    info.k = [k["fx"], 0.0, k["cx"], 0.0, k["fy"], k["cy"], 0.0, 0.0, 1.0]
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

    def publish(self, depth_m, encoding="32FC1", depth_offset_s=0.0, info=True, info_size=None):
        header = self.probe.header("camera_color_optical_frame")
        nanoseconds = header.stamp.sec * 10**9 + header.stamp.nanosec + int(depth_offset_s * 1e9)
        depth_header = Header(frame_id="camera_depth_optical_frame")
        depth_header.stamp.sec, depth_header.stamp.nanosec = divmod(nanoseconds, 10**9)
        if info:
            width, height = info_size or (depth_m.shape[1], depth_m.shape[0])
            self.info.publish(camera_info(depth_header, width, height, scaled_k(width, height)))
        self.depth.publish(depth_message(depth_m, encoding, depth_header))
        self.sent_depth[(header.stamp.sec, header.stamp.nanosec)] = depth_m
        time.sleep(0.02)  # depth first, as it usually arrives before the frame's inference ends
        self.probe.publisher.publish(self._colour_message(header))

    def _colour_message(self, header):
        from avag_ros.conversions import rgb_to_image
        return rgb_to_image(self.colour, "rgb8", header)


def scaled_k(width, height) -> dict:
    sx, sy = width / WIDTH, height / HEIGHT
    return {"fx": K["fx"] * sx, "fy": K["fy"] * sy, "cx": (K["cx"] + 0.5) * sx - 0.5, "cy": (K["cy"] + 0.5) * sy - 0.5}


def eroded(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels whose whole disk of `radius` is in the mask, outside the image counting as outside."""
    padded = np.pad(mask, radius, constant_values=False)
    out = np.ones_like(mask)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy <= radius * radius:
                out &= padded[radius + dy:radius + dy + mask.shape[0], radius + dx:radius + dx + mask.shape[1]]
    return out


def expected_point(mask: np.ndarray, depth_m: np.ndarray, k: dict, min_m=0.1, max_m=5.0) -> np.ndarray:
    if mask.shape != depth_m.shape:  # the depth pixel takes the mask pixel under its centre
        rows = ((np.arange(depth_m.shape[0]) + 0.5) * mask.shape[0] / depth_m.shape[0]).astype(int)
        columns = ((np.arange(depth_m.shape[1]) + 0.5) * mask.shape[1] / depth_m.shape[1]).astype(int)
        mask = mask[rows][:, columns]
    core = eroded(mask, ERODE_PX)
    core = core if core.any() else mask
    v, u = np.nonzero(core & np.isfinite(depth_m) & (depth_m >= min_m) & (depth_m <= max_m))
    z = depth_m[v, u].astype(np.float64)
    return np.median(np.stack([(u - k["cx"]) * z / k["fx"], (v - k["cy"]) * z / k["fy"], z], axis=1), axis=0)


def mask_of(msg: Image) -> np.ndarray:
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width] > 127


def stamp_key(msg):
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def quaternion_z_axis(q) -> np.ndarray:
    x, y, z, w = q.x, q.y, q.z, q.w
    return np.array([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)])


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
        np.testing.assert_allclose(published, expected_point(mask, sent, K), atol=1e-3)

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
        np.testing.assert_allclose(published, expected_point(mask, depth, scaled_k(WIDTH // 2, HEIGHT // 2)),
                                   atol=1e-3)


@pytest.mark.parametrize("case, counter, message", [
    # 0.1 s: over depth.max_offset_s, yet under half the publishing period, so no later frame's depth is nearer
    ("depth 0.1 s older", "frames_without_depth", "0.100 s from the colour frame"),
    ("no CameraInfo", "frames_without_camera_info", "no CameraInfo received"),
    ("CameraInfo of neither size", "depth_rejected", "the depth image is 48x36, the colour image 96x72, and the "
                                                     "CameraInfo (50x50) describes neither"),
    ("unknown encoding", "depth_rejected", "unsupported depth encoding '8UC1'"),
])
def test_a_frame_without_usable_depth_keeps_its_masks_and_is_counted(files, capfd, case, counter, message):
    depth = plane_depth(tilted_normal(0.0), 1.0)
    publish = {
        "depth 0.1 s older": lambda camera: camera.publish(depth, depth_offset_s=-0.1),
        "no CameraInfo": lambda camera: camera.publish(depth, info=False),
        "CameraInfo of neither size": lambda camera: camera.publish(depth[::2, ::2], info_size=(50, 50)),
        "unknown encoding": lambda camera: camera.publish(depth, encoding="8UC1"),
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
