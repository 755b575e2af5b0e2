"""3D publishing: each region's point, approach pose and cloud in the depth camera's optical frame, from a colour
frame's masks and the depth image its pin holds (avag_ros.depth.pairing), and the RViz markers. Nothing here stops
the node or the 2D masks: a frame that cannot be given 3D is counted, logged at most once a second and reported in
/diagnostics.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped, PoseStamped
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from ..messages.depth import camera_info_intrinsics, depth_image
from ..messages.targets import affordance_markers, point_stamped, points_to_cloud, pose_stamped
from ..runtime.qos import output_qos
from .geometry import DepthImage, Intrinsics, RegionGeometry, region_geometry
from .pairing import DepthPin, DepthUnavailable, depth_grid_intrinsics

REGIONS = ("function", "dependency")


@dataclass(frozen=True)
class DepthSettings:
    max_offset_s: float
    min_points: int
    min_m: float
    max_m: float
    max_cloud_points: int
    erode_px: int


class DepthTargets:
    """Publishes the 3D outputs from configure to cleanup, and counts what failed."""

    def __init__(self, node, settings: DepthSettings, qos_overrides) -> None:
        self.node, self.settings = node, settings
        self.counts = {"pairs_made": 0, "frames_without_depth": 0, "frames_without_camera_info": 0,
                       "depth_rejected": 0, "regions_without_enough_points": 0}
        self.last_problem = ""
        # The x axis of the last published pose: the next one keeps its sign, so a still scene's pose does not spin
        self._last_pose_x: np.ndarray | None = None
        self._lock = threading.Lock()
        outputs = {f"affordance/{region}_point": PointStamped for region in REGIONS}
        outputs.update({f"affordance/{region}_cloud": PointCloud2 for region in REGIONS})
        outputs.update({"affordance/function_pose": PoseStamped, "affordance/markers": MarkerArray})
        self._publishers = {topic: node.create_lifecycle_publisher(kind, topic, output_qos(),
                                                                   qos_overriding_options=qos_overrides)
                            for topic, kind in outputs.items()}

    def destroy(self) -> None:
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
        depth_msg, info = pin.pair(self.settings.max_offset_s)
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
                clouds.publish(points_to_cloud(geometry.cloud, out))
            if geometry.rotation is not None:
                self._publishers["affordance/function_pose"].publish(pose_stamped(geometry, out))
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
                                                  previous_x=self._last_pose_x,
                                                  max_cloud_points=settings.max_cloud_points)
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

