"""3D targets as messages: a region's point, approach pose and cloud, RViz markers and TF frames, each built from
what a RegionGeometry (avag_ros.depth.geometry) carries, never by calling back into the geometry."""
from __future__ import annotations

import sys

import numpy as np
from geometry_msgs.msg import Point, PointStamped, Pose, PoseStamped, Quaternion, TransformStamped, Vector3
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from ..depth.geometry import RegionGeometry


def xyz(values: np.ndarray) -> dict[str, float]:
    """A 3D vector as the x, y, z fields of a message: the one place where numpy values become message floats."""
    x, y, z = (float(v) for v in values)
    return {"x": x, "y": y, "z": z}


def point(values: np.ndarray) -> Point:
    return Point(**xyz(values))


def orientation(quaternion: tuple[float, float, float, float]) -> Quaternion:
    x, y, z, w = quaternion
    return Quaternion(x=x, y=y, z=z, w=w)


def point_stamped(values: np.ndarray, header: Header) -> PointStamped:
    return PointStamped(header=header, point=point(values))


def pose_stamped(region: RegionGeometry, header: Header) -> PoseStamped:
    """The region's approach pose; the region must have one (`quaternion` not None)."""
    return PoseStamped(header=header, pose=Pose(position=point(region.point),
                                                orientation=orientation(region.quaternion)))


_XYZ_FIELDS = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
               for i, name in enumerate("xyz")]


def points_to_cloud(points: np.ndarray, header: Header) -> PointCloud2:
    """[N, 3] -> PointCloud2 with x, y, z float32, unorganised (height 1)."""
    data = np.ascontiguousarray(points, dtype=np.float32)
    return PointCloud2(header=header, height=1, width=len(data), fields=_XYZ_FIELDS,
                       is_bigendian=sys.byteorder == "big", point_step=12, row_step=12 * len(data),
                       data=data.tobytes(), is_dense=True)


# RViz colours: the overlay's (function red-orange, dependency blue).
_MARKER_COLOURS = {"function": ColorRGBA(r=1.0, g=0.35, b=0.1, a=1.0),
                   "dependency": ColorRGBA(r=0.2, g=0.45, b=1.0, a=1.0)}
APPROACH_ARROW_M = 0.10


def affordance_markers(regions: dict[str, RegionGeometry | None], header: Header,
                       lifetime_s: float = 1.0) -> MarkerArray:
    """RViz markers: a sphere at each region's point, a text label above it, and for a region with a pose the
    approach arrow, from APPROACH_ARROW_M out along the surface normal to the point. A region without geometry
    deletes its markers."""
    markers = []
    for index, (name, region) in enumerate(regions.items()):
        ids = range(3 * index, 3 * index + 3)
        if region is None:
            markers += [Marker(header=header, ns="affordance", id=i, action=Marker.DELETE) for i in ids]
            continue
        markers.append(_marker(ids[0], Marker.SPHERE, region.point, (0.03, 0.03, 0.03), header, name, lifetime_s))
        label = region.point - np.array([0.0, 0.06, 0.0])  # above it in the image (the optical frame's y is down)
        text = _marker(ids[1], Marker.TEXT_VIEW_FACING, label, (0.0, 0.0, 0.03), header, name, lifetime_s)
        text.text = name
        markers.append(text)
        if region.rotation is not None:
            arrow = _marker(ids[2], Marker.ARROW, np.zeros(3), (0.01, 0.02, 0.03), header, name, lifetime_s)
            start = region.point + APPROACH_ARROW_M * region.rotation[:, 2]
            arrow.points = [point(start), point(region.point)]
            markers.append(arrow)
        else:
            markers.append(Marker(header=header, ns="affordance", id=ids[2], action=Marker.DELETE))
    return MarkerArray(markers=markers)


def _marker(marker_id: int, kind: int, position: np.ndarray, scale: tuple[float, float, float], header: Header,
            name: str, lifetime_s: float) -> Marker:
    marker = Marker(header=header, ns="affordance", id=marker_id, type=kind, action=Marker.ADD,
                    color=_MARKER_COLOURS[name])
    marker.pose.position = point(position)
    marker.pose.orientation.w = 1.0
    marker.scale.x, marker.scale.y, marker.scale.z = scale
    marker.lifetime.sec = int(lifetime_s)
    marker.lifetime.nanosec = int((lifetime_s % 1) * 1e9)
    return marker


def transforms(regions: dict[str, RegionGeometry | None], header: Header, prefix: str):
    """tf2_msgs/TFMessage: `<prefix>function` at the function pose, `<prefix>dependency` at the dependency point
    with the identity rotation, both children of header.frame_id (the depth image's optical frame) at header's
    stamp. A region without geometry (or a function region without a pose) gets no frame; None when none has."""
    from tf2_msgs.msg import TFMessage

    frames = []
    function, dependency = regions.get("function"), regions.get("dependency")
    if function is not None and function.quaternion is not None:
        frames.append(_transform(header, prefix + "function", function.point, orientation(function.quaternion)))
    if dependency is not None:
        frames.append(_transform(header, prefix + "dependency", dependency.point, Quaternion(w=1.0)))
    return TFMessage(transforms=frames) if frames else None


def _transform(header: Header, child: str, translation: np.ndarray, rotation: Quaternion) -> TransformStamped:
    transform = TransformStamped(header=Header(stamp=header.stamp, frame_id=header.frame_id), child_frame_id=child)
    transform.transform.translation = Vector3(**xyz(translation))
    transform.transform.rotation = rotation
    return transform
