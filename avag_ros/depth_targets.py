"""The node's 3D side: pair each colour frame with an aligned depth image, turn the masks into points, an approach
pose and clouds in the camera's optical frame, and publish them. Nothing here stops the node or the 2D masks: a
frame that cannot be given 3D is counted, logged at most once a second and reported in /diagnostics.

Pairing: each colour frame takes the depth image nearest to it in stamp, within `depth.max_offset_s`: what
message_filters' ApproximateTime policy would pair for one frame (it has no wheel here). The choice is made while
the frame waits and is inferred, not after: a frame pins the best depth image so far when it enters the node, and
the pin moves to any nearer one that arrives until the frame's 3D is done. So a slow model loses no depth to the
ring, which holds the last DEPTH_BUFFER images only for frames that arrive after their depth.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped, PoseStamped
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from .conversions import (affordance_markers, camera_info_intrinsics, depth_image, point_stamped,
                          points_to_cloud, pose_stamped)
from .geometry import DepthImage, Intrinsics, RegionGeometry, even_subsample, region_geometry
from .qos import output_qos, sensor_qos

# Depth images kept for a colour frame still to come: its depth usually arrives first, by a few milliseconds.
# Half a second at 60 Hz; the frames waiting for the model keep theirs in pins, not here (memory stays bounded:
# a 640x480 16UC1 image is 600 KiB).
DEPTH_BUFFER = 30
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


class DepthPin:
    """The depth image nearest in stamp to one pending colour frame, among those seen so far."""

    __slots__ = ("stamp_ns", "offset_ns", "image")

    def __init__(self, stamp_ns: int) -> None:
        self.stamp_ns = stamp_ns
        self.offset_ns: int | None = None
        self.image: Image | None = None

    def offer(self, stamp_ns: int, image: Image) -> None:
        offset_ns = abs(stamp_ns - self.stamp_ns)
        if self.offset_ns is None or offset_ns < self.offset_ns:
            self.offset_ns, self.image = offset_ns, image


class DepthBuffer:
    """The last depth images, the pins of the colour frames the node holds, and the latest CameraInfo; filled by
    subscription callbacks, read by the inference thread."""

    def __init__(self, capacity: int = DEPTH_BUFFER) -> None:
        self._images: deque[tuple[int, Image]] = deque(maxlen=capacity)
        self._pins: list[DepthPin] = []  # one per colour frame waiting or being inferred: two at most in the node
        self._info: CameraInfo | None = None
        self._lock = threading.Lock()

    def add_image(self, msg: Image) -> None:
        stamp_ns = Time.from_msg(msg.header.stamp).nanoseconds
        with self._lock:
            self._images.append((stamp_ns, msg))
            for pin in self._pins:
                pin.offer(stamp_ns, msg)

    def set_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._info = msg

    def pin(self, stamp_ns: int) -> DepthPin:
        """Start pairing the colour frame of `stamp_ns`; the caller releases the pin when done with the frame."""
        pin = DepthPin(stamp_ns)
        with self._lock:
            for image_stamp_ns, image in self._images:
                pin.offer(image_stamp_ns, image)
            self._pins.append(pin)
        return pin

    def release(self, pin: DepthPin) -> None:
        with self._lock:
            if pin in self._pins:
                self._pins.remove(pin)

    def pair(self, pin: DepthPin, max_offset_s: float) -> tuple[Image, CameraInfo]:
        with self._lock:
            image, offset_ns, info = pin.image, pin.offset_ns, self._info
        if info is None:
            raise DepthUnavailable("frames_without_camera_info", "no CameraInfo received on depth/camera_info yet")
        if image is None:
            raise DepthUnavailable("frames_without_depth", "no depth image received on depth/image yet")
        if offset_ns > max_offset_s * 1e9:
            raise DepthUnavailable("frames_without_depth",
                                   f"the nearest depth image is {offset_ns / 1e9:.3f} s from the colour frame "
                                   f"(depth.max_offset_s is {max_offset_s:g} s)")
        return image, info


def depth_grid_intrinsics(info: Intrinsics, depth_shape: tuple[int, int],
                          colour_shape: tuple[int, int]) -> Intrinsics:
    """The intrinsics of the depth image's grid. A CameraInfo describes the image it comes with: its size must be
    the depth image's (or unset, 0x0, for a depth image of the colour image's size). A depth image of another
    size than the colour image must cover the same field of view: the same aspect ratio, within one pixel."""
    (depth_h, depth_w), (colour_h, colour_w) = depth_shape, colour_shape
    if (info.width, info.height) == (0, 0) and depth_shape == colour_shape:
        return replace(info, width=depth_w, height=depth_h)
    if (info.width, info.height) != (depth_w, depth_h):
        raise DepthUnavailable("depth_rejected", f"the depth image is {depth_w}x{depth_h} but its CameraInfo "
                                            f"describes {info.width}x{info.height}: depth/camera_info must be the "
                                            "depth image's own")
    if depth_shape != colour_shape and abs(colour_h * depth_w / colour_w - depth_h) > 1:
        raise DepthUnavailable("depth_rejected", f"the depth image is {depth_w}x{depth_h}, the colour image "
                                            f"{colour_w}x{colour_h}: another aspect ratio, so not the same field "
                                            "of view, and the mask cannot be placed on the depth image")
    return info


class DepthTargets:
    """Subscribes to depth/image and depth/camera_info, publishes the 3D outputs, counts what failed."""

    def __init__(self, node, settings: DepthSettings, qos_overrides) -> None:
        self.node, self.settings = node, settings
        self.buffer = DepthBuffer()
        self.counts = {"pairs_made": 0, "frames_without_depth": 0, "frames_without_camera_info": 0,
                       "depth_rejected": 0, "regions_without_enough_points": 0}
        self.last_problem = ""
        # The x axis of the last published pose: the next one keeps its sign, so a still scene's pose does not spin
        self._last_pose_x: np.ndarray | None = None
        self._lock = threading.Lock()
        self._subscriptions = [
            node.create_subscription(Image, "depth/image", self.buffer.add_image, sensor_qos(),
                                     qos_overriding_options=qos_overrides),
            node.create_subscription(CameraInfo, "depth/camera_info", self.buffer.set_info, sensor_qos(),
                                     qos_overriding_options=qos_overrides),
        ]
        outputs = {f"affordance/{region}_point": PointStamped for region in REGIONS}
        outputs.update({f"affordance/{region}_cloud": PointCloud2 for region in REGIONS})
        outputs.update({"affordance/function_pose": PoseStamped, "affordance/markers": MarkerArray})
        self._publishers = {topic: node.create_lifecycle_publisher(kind, topic, output_qos(),
                                                                   qos_overriding_options=qos_overrides)
                            for topic, kind in outputs.items()}

    def destroy(self) -> None:
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        for publisher in self._publishers.values():
            self.node.destroy_lifecycle_publisher(publisher)

    def _count(self, kind: str, problem: str = "") -> None:
        with self._lock:
            self.counts[kind] += 1
            if problem:
                self.last_problem = problem

    def locate(self, header: Header, masks: dict[str, np.ndarray],
               pin: DepthPin) -> tuple[Header, dict[str, RegionGeometry | None]]:
        """The 3D of one colour frame: its header (stamp), its masks by region, the depth pin it took. Returns the
        header the 3D values go out with (the colour stamp, the depth image's frame) and each region's geometry
        (None: too few valid pixels); raises DepthUnavailable when the frame gets no 3D. Publishes nothing."""
        depth_msg, info = self.buffer.pair(pin, self.settings.max_offset_s)
        try:
            depth = depth_image(depth_msg)
            intrinsics = camera_info_intrinsics(info)
        except ValueError as error:
            raise DepthUnavailable("depth_rejected", str(error)) from None
        intrinsics = depth_grid_intrinsics(intrinsics, depth.shape, masks["function"].shape)
        return Header(stamp=header.stamp, frame_id=depth_msg.header.frame_id), self._regions(masks, depth, intrinsics)

    def publish(self, header: Header, masks: dict[str, np.ndarray],
                pin: DepthPin) -> tuple[Header, dict[str, RegionGeometry | None]] | None:
        """Publishes the 3D of one colour frame (locate), counting what failed; returns what `locate` did, None
        when the frame got no 3D."""
        settings = self.settings
        try:
            out, regions = self.locate(header, masks, pin)
        except DepthUnavailable as error:
            self._count(error.kind, str(error))
            self.node.get_logger().warning(f"no 3D for this frame: {error}", throttle_duration_sec=1.0)
            return None
        self._count("pairs_made")
        for region, geometry in regions.items():
            if geometry is None:
                problem = (f"the {region} region has fewer than {settings.min_points} pixels with valid depth"
                           if masks[region].any() else f"the {region} region is empty")
                self._count("regions_without_enough_points", problem)
                continue
            self._publishers[f"affordance/{region}_point"].publish(point_stamped(geometry.point, out))
            clouds = self._publishers[f"affordance/{region}_cloud"]
            if clouds.get_subscription_count() > 0:  # clouds and markers are built only for someone who listens
                clouds.publish(points_to_cloud(even_subsample(geometry.points, settings.max_cloud_points), out))
            if geometry.rotation is not None:
                self._publishers["affordance/function_pose"].publish(pose_stamped(geometry.point,
                                                                                  geometry.rotation, out))
                self._last_pose_x = geometry.rotation[:, 0]
        markers = self._publishers["affordance/markers"]
        if markers.get_subscription_count() > 0:
            markers.publish(affordance_markers(regions, out))
        return out, regions

    def _regions(self, masks: dict[str, np.ndarray], depth: DepthImage,
                 intrinsics: Intrinsics) -> dict[str, RegionGeometry | None]:
        settings = self.settings
        regions = {}
        for region in REGIONS:
            try:
                regions[region] = region_geometry(masks[region], depth, intrinsics, erode_px=settings.erode_px,
                                                  min_m=settings.min_m, max_m=settings.max_m,
                                                  min_points=settings.min_points, with_pose=region == "function",
                                                  previous_x=self._last_pose_x)
            except ValueError as error:  # a distortion model the geometry cannot undo
                raise DepthUnavailable("depth_rejected", str(error)) from None
        return regions

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

