"""The node's 3D side: pair each colour frame with an aligned depth image, turn the masks into points, an approach
pose and clouds in the camera's optical frame, and publish them. Nothing here stops the node or the 2D masks: a
frame that cannot be given 3D is counted, logged at most once a second and reported in /diagnostics.

Pairing: each colour frame takes the depth image nearest to it in stamp, within `depth.max_offset_s`, from the last
DEPTH_BUFFER depth images; what message_filters' ApproximateTime policy would pair for one frame (it has no wheel
here, and the node needs the pairing only for the frames it infers on, which arrive later than their depth).
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped, PoseStamped
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from .conversions import (affordance_markers, camera_info_intrinsics, depth_image, point_stamped,
                          points_to_cloud, pose_stamped)
from .geometry import Intrinsics, even_subsample, region_geometry

DEPTH_BUFFER = 30  # 1 s of a 30 Hz depth stream, more than a frame's inference takes
REGIONS = ("function", "dependency")


@dataclass(frozen=True)
class DepthSettings:
    max_offset_s: float
    min_points: int
    min_m: float
    max_m: float
    max_cloud_points: int
    erode_px: int


class DepthUnavailable(ValueError):
    """A colour frame gets no 3D; `kind` is the counter it goes to."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class DepthBuffer:
    """The last depth images and the latest CameraInfo, filled by subscription callbacks, read by the inference
    thread."""

    def __init__(self, capacity: int = DEPTH_BUFFER) -> None:
        self._images: deque[tuple[int, Image]] = deque(maxlen=capacity)
        self._info: CameraInfo | None = None
        self._lock = threading.Lock()

    def add_image(self, msg: Image) -> None:
        with self._lock:
            self._images.append((Time.from_msg(msg.header.stamp).nanoseconds, msg))

    def set_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._info = msg

    def pair(self, stamp_ns: int, max_offset_s: float) -> tuple[Image, CameraInfo]:
        with self._lock:
            images, info = list(self._images), self._info
        if info is None:
            raise DepthUnavailable("frames_without_camera_info", "no CameraInfo received on depth/camera_info yet")
        if not images:
            raise DepthUnavailable("frames_without_depth", "no depth image received on depth/image yet")
        offset_ns, image = min(((abs(t - stamp_ns), m) for t, m in images), key=lambda pair: pair[0])
        if offset_ns > max_offset_s * 1e9:
            raise DepthUnavailable("frames_without_depth",
                                   f"the nearest depth image is {offset_ns / 1e9:.3f} s from the colour frame "
                                   f"(depth.max_offset_s is {max_offset_s:g} s)")
        return image, info


def depth_grid_intrinsics(info: Intrinsics, depth_shape: tuple[int, int],
                          colour_shape: tuple[int, int]) -> Intrinsics:
    """The intrinsics of the depth image's grid, from a CameraInfo that describes it or the colour image it is
    aligned to; anything else is an error naming the sizes."""
    (depth_h, depth_w), (colour_h, colour_w) = depth_shape, colour_shape
    described = (info.width, info.height)
    if described == (depth_w, depth_h) or (described == (0, 0) and depth_shape == colour_shape):
        return Intrinsics(info.fx, info.fy, info.cx, info.cy, depth_w, depth_h)
    if described == (colour_w, colour_h):
        return info.scaled_to(depth_w, depth_h)
    raise DepthUnavailable("depth_rejected", f"the depth image is {depth_w}x{depth_h}, the colour image {colour_w}x"
                                        f"{colour_h}, and the CameraInfo ({info.width}x{info.height}) describes "
                                        "neither, so the mask cannot be placed on the depth image")


class DepthTargets:
    """Subscribes to depth/image and depth/camera_info, publishes the 3D outputs, counts what failed."""

    def __init__(self, node, settings: DepthSettings, qos_overrides) -> None:
        self.node, self.settings = node, settings
        self.buffer = DepthBuffer()
        self.counts = {"pairs_made": 0, "frames_without_depth": 0, "frames_without_camera_info": 0,
                       "depth_rejected": 0, "regions_without_enough_points": 0}
        self.last_problem = ""
        self._lock = threading.Lock()
        self._subscriptions = [
            node.create_subscription(Image, "depth/image", self.buffer.add_image, _sensor_qos(),
                                     qos_overriding_options=qos_overrides),
            node.create_subscription(CameraInfo, "depth/camera_info", self.buffer.set_info, _sensor_qos(),
                                     qos_overriding_options=qos_overrides),
        ]
        outputs = {f"affordance/{region}_point": PointStamped for region in REGIONS}
        outputs.update({f"affordance/{region}_cloud": PointCloud2 for region in REGIONS})
        outputs.update({"affordance/function_pose": PoseStamped, "affordance/markers": MarkerArray})
        self._publishers = {topic: node.create_publisher(kind, topic, QoSProfile(depth=5),
                                                         qos_overriding_options=qos_overrides)
                            for topic, kind in outputs.items()}

    def destroy(self) -> None:
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        for publisher in self._publishers.values():
            self.node.destroy_publisher(publisher)

    def _count(self, kind: str, problem: str = "") -> None:
        with self._lock:
            self.counts[kind] += 1
            if problem:
                self.last_problem = problem

    def publish(self, header: Header, masks: dict[str, np.ndarray]) -> None:
        """3D for one colour frame: its header (stamp), its masks by region."""
        settings = self.settings
        try:
            depth_msg, info = self.buffer.pair(Time.from_msg(header.stamp).nanoseconds, settings.max_offset_s)
            try:
                depth = depth_image(depth_msg)
                intrinsics = camera_info_intrinsics(info)
            except ValueError as error:
                raise DepthUnavailable("depth_rejected", str(error)) from None
            intrinsics = depth_grid_intrinsics(intrinsics, depth.shape, masks["function"].shape)
        except DepthUnavailable as error:
            self._count(error.kind, str(error))
            self.node.get_logger().warning(f"no 3D for this frame: {error}", throttle_duration_sec=1.0)
            return
        self._count("pairs_made")
        out = Header(stamp=header.stamp, frame_id=depth_msg.header.frame_id)
        regions = {}
        for region in REGIONS:
            regions[region] = region_geometry(masks[region], depth, intrinsics, erode_px=settings.erode_px,
                                              min_m=settings.min_m, max_m=settings.max_m,
                                              min_points=settings.min_points, with_pose=region == "function")
            geometry = regions[region]
            if geometry is None:
                if masks[region].any():  # an empty mask is no failure of the depth
                    self._count("regions_without_enough_points",
                                f"the {region} region has fewer than {settings.min_points} pixels with valid depth")
                continue
            self._publishers[f"affordance/{region}_point"].publish(point_stamped(geometry.point, out))
            clouds = self._publishers[f"affordance/{region}_cloud"]
            if clouds.get_subscription_count() > 0:  # clouds and markers are built only for someone who listens
                clouds.publish(points_to_cloud(even_subsample(geometry.points, settings.max_cloud_points), out))
            if geometry.rotation is not None:
                self._publishers["affordance/function_pose"].publish(pose_stamped(geometry.point,
                                                                                  geometry.rotation, out))
        markers = self._publishers["affordance/markers"]
        if markers.get_subscription_count() > 0:
            markers.publish(affordance_markers(regions, out))

    def diagnostic_status(self, name: str) -> DiagnosticStatus:
        with self._lock:
            counts, problem = dict(self.counts), self.last_problem
        failed = counts["frames_without_depth"] + counts["frames_without_camera_info"] + counts["depth_rejected"]
        if failed and not counts["pairs_made"]:
            level, message = DiagnosticStatus.WARN, f"no frame paired with depth yet: {problem}"
        elif problem:
            level, message = DiagnosticStatus.OK, f"{counts['pairs_made']} frames paired; last problem: {problem}"
        else:
            level, message = DiagnosticStatus.OK, f"{counts['pairs_made']} frames paired"
        return DiagnosticStatus(level=level, name=name, message=message,
                                values=[KeyValue(key=k, value=str(v)) for k, v in counts.items()])


def _sensor_qos() -> QoSProfile:
    """A fresh sensor-data profile (best effort): rclpy writes QoS overrides into the profile it is given."""
    return QoSProfile(history=qos_profile_sensor_data.history, depth=5,
                      reliability=qos_profile_sensor_data.reliability,
                      durability=qos_profile_sensor_data.durability)
