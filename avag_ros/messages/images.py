"""sensor_msgs <-> numpy, with numpy and OpenCV only (cv_bridge is not needed).

Every function raises ValueError with a message that names what is wrong with a message.
"""
from __future__ import annotations

import sys

import cv2
import numpy as np
from geometry_msgs.msg import Point, Point32, PointStamped, PolygonStamped, Pose, PoseStamped, Quaternion
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from ..depth.geometry import DepthImage, Intrinsics, RegionGeometry, quaternion

# encoding -> (bytes per pixel, converter from the packed HxWxC array to RGB). OpenCV rather than numpy
# fancy indexing: a 640x480 bgr8 swap takes 0.07 ms instead of 3 ms, which matters on the inference path.
_RGB = {
    "rgb8": (3, lambda a: a),
    "bgr8": (3, lambda a: cv2.cvtColor(a, cv2.COLOR_BGR2RGB)),
    "rgba8": (4, lambda a: cv2.cvtColor(a, cv2.COLOR_RGBA2RGB)),
    "bgra8": (4, lambda a: cv2.cvtColor(a, cv2.COLOR_BGRA2RGB)),
    "mono8": (1, lambda a: cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)),
    "mono16": (2, None),  # handled with its byte order below
    "yuv422_yuy2": (2, lambda a: cv2.cvtColor(a, cv2.COLOR_YUV2RGB_YUY2)),
    "yuyv": (2, lambda a: cv2.cvtColor(a, cv2.COLOR_YUV2RGB_YUY2)),
    "yuv422": (2, lambda a: cv2.cvtColor(a, cv2.COLOR_YUV2RGB_UYVY)),  # ROS's yuv422 is UYVY
}
SUPPORTED_ENCODINGS = tuple(sorted(_RGB))


def check_image(msg: Image) -> None:
    """Raise ValueError if a sensor_msgs/Image cannot be converted. Reads no pixel, so the image callback can
    afford it: a malformed message is rejected on arrival and never displaces a good frame waiting for the model."""
    encoding = msg.encoding.lower()
    if encoding not in _RGB:
        raise ValueError(f"unsupported image encoding '{msg.encoding}'; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    height, width, step = msg.height, msg.width, msg.step
    if height == 0 or width == 0:
        raise ValueError(f"image has zero size ({width}x{height})")
    row_bytes = width * _RGB[encoding][0]
    if step < row_bytes:
        raise ValueError(f"image step {step} is smaller than width x bytes per pixel ({row_bytes}) for {encoding}")
    if (encoding.startswith("yuv") or encoding == "yuyv") and width % 2:
        raise ValueError(f"{encoding} needs an even width, got {width}")
    if len(msg.data) != step * height:
        raise ValueError(f"image data has {len(msg.data)} bytes, expected step x height = {step * height}")


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> HxWx3 uint8 RGB. Rows may be padded (step > width x bytes per pixel)."""
    check_image(msg)
    encoding = msg.encoding.lower()
    height, width, step = msg.height, msg.width, msg.step
    pixel_bytes, convert = _RGB[encoding]
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)[:, :width * pixel_bytes]
    if encoding == "mono16":
        order = ">" if msg.is_bigendian else "<"
        gray = np.ascontiguousarray(rows).view(f"{order}u2").reshape(height, width)
        return cv2.cvtColor((gray >> 8).astype(np.uint8), cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(convert(rows.reshape(height, width, pixel_bytes)))


# What compressed_image_transport sends. Each format begins and ends with fixed markers; a truncated file lacks
# its end, which OpenCV would otherwise decode into a partly grey picture without complaint.
_MARKERS = {"jpeg": (b"\xff\xd8\xff", b"\xff\xd9"), "png": (b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82")}


def check_compressed(msg: CompressedImage) -> None:
    """Raise ValueError unless a CompressedImage holds a whole JPEG or PNG. Reads only the ends of the data."""
    if not msg.data:
        raise ValueError(f"compressed image (format '{msg.format}') has no data")
    head, tail = bytes(msg.data[:8]), bytes(msg.data[-8:])
    for name, (start, end) in _MARKERS.items():
        if head.startswith(start):
            if not tail.endswith(end):
                raise ValueError(f"compressed image is a truncated {name} ({len(msg.data)} bytes, no end marker)")
            return
    raise ValueError(f"compressed image (format '{msg.format}', {len(msg.data)} bytes) is neither JPEG nor PNG")


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> HxWx3 uint8 RGB."""
    check_compressed(msg)
    image = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode compressed image (format '{msg.format}', {len(msg.data)} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def mask_to_image(mask: np.ndarray, header: Header) -> Image:
    """bool HxW -> mono8 with 0 and 255."""
    return _image(np.multiply(mask, 255, dtype=np.uint8), "mono8", header)


def probability_to_image(prob: np.ndarray, header: Header) -> Image:
    return _image(np.ascontiguousarray(prob, dtype=np.float32), "32FC1", header)


def rgb_to_bgr8(rgb: np.ndarray, header: Header) -> Image:
    return _image(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "bgr8", header)


def _image(array: np.ndarray, encoding: str, header: Header) -> Image:
    msg = Image(header=header, height=array.shape[0], width=array.shape[1], encoding=encoding,
                is_bigendian=sys.byteorder == "big")
    msg.step = array.strides[0]
    msg.data = array.tobytes()
    return msg


def rgb_to_image(rgb: np.ndarray, encoding: str, header: Header) -> Image:
    """HxWx3 RGB -> rgb8 or bgr8 message (used by the sample player and tests)."""
    if encoding == "rgb8":
        return _image(np.ascontiguousarray(rgb), "rgb8", header)
    if encoding == "bgr8":
        return rgb_to_bgr8(rgb, header)
    raise ValueError(f"cannot publish encoding {encoding!r}; use rgb8 or bgr8")


def largest_region_polygon(mask: np.ndarray, header: Header) -> PolygonStamped:
    """Outline of the largest connected region, in pixel coordinates (x right, y down); empty if none."""
    polygon = PolygonStamped(header=header)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if contours:
        largest = max(contours, key=cv2.contourArea)
        polygon.polygon.points = [Point32(x=float(x), y=float(y), z=0.0) for x, y in largest[:, 0]]
    return polygon


# Depth encodings RGB-D drivers publish for aligned depth: (numpy dtype, metres per unit). mono16 is 16UC1 under
# another name (some drivers use it).
DEPTH_ENCODINGS = {"16UC1": ("u2", 0.001), "mono16": ("u2", 0.001), "32FC1": ("f4", 1.0)}


def depth_image(msg: Image) -> DepthImage:
    """sensor_msgs/Image depth (16UC1 millimetres or 32FC1 metres) -> its values as they are (no copy unless the
    byte order differs) and their unit; 0 and NaN stay as they are (no measurement), for the geometry to ignore."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"unsupported depth encoding '{msg.encoding}'; supported: {', '.join(DEPTH_ENCODINGS)}")
    kind, scale = DEPTH_ENCODINGS[msg.encoding]
    height, width, step = msg.height, msg.width, msg.step
    if height == 0 or width == 0:
        raise ValueError(f"depth image has zero size ({width}x{height})")
    row_bytes = width * np.dtype(kind).itemsize
    if step < row_bytes or len(msg.data) != step * height:
        raise ValueError(f"depth image {width}x{height} {msg.encoding}: step {step} and {len(msg.data)} bytes of "
                         f"data do not fit (need step >= {row_bytes} and step x height bytes)")
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    rows = np.frombuffer(msg.data, np.uint8).reshape(height, step)[:, :row_bytes]
    values = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
    return DepthImage(values if dtype.isnative else values.astype(dtype.newbyteorder("=")), scale)


def metres_to_depth_image(depth_m: np.ndarray, encoding: str, header: Header) -> Image:
    """HxW metres -> 16UC1 millimetres (NaN and beyond 65.535 m become 0, no measurement) or 32FC1 metres."""
    if encoding == "16UC1":
        millimetres = np.round(np.nan_to_num(depth_m, nan=0.0, posinf=0.0, neginf=0.0) * 1000)
        return _image(np.where((millimetres > 0) & (millimetres < 65536), millimetres, 0).astype(np.uint16),
                      "16UC1", header)
    if encoding == "32FC1":
        return _image(np.ascontiguousarray(depth_m, dtype=np.float32), "32FC1", header)
    raise ValueError(f"cannot publish depth as {encoding!r}; use 16UC1 or 32FC1")


def intrinsics_to_camera_info(intrinsics: Intrinsics, header: Header) -> CameraInfo:
    """A rectified pinhole CameraInfo (no distortion, P = [K | 0])."""
    info = CameraInfo(header=header, width=intrinsics.width, height=intrinsics.height, distortion_model="plumb_bob")
    info.d = [0.0] * 5
    info.k = [intrinsics.fx, 0.0, intrinsics.cx, 0.0, intrinsics.fy, intrinsics.cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [intrinsics.fx, 0.0, intrinsics.cx, 0.0, 0.0, intrinsics.fy, intrinsics.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def camera_info_intrinsics(msg: CameraInfo) -> Intrinsics:
    """K, size and distortion of the image a CameraInfo comes with (width and height 0 when the driver left them
    unset)."""
    fx, _, cx, _, fy, cy = (float(v) for v in msg.k[:6])
    if fx <= 0 or fy <= 0:
        raise ValueError(f"CameraInfo on frame '{msg.header.frame_id}' has no intrinsics (K = {list(msg.k)})")
    return Intrinsics(fx, fy, cx, cy, int(msg.width), int(msg.height), msg.distortion_model,
                      tuple(float(c) for c in msg.d))


def point_stamped(point: np.ndarray, header: Header) -> PointStamped:
    return PointStamped(header=header, point=Point(x=float(point[0]), y=float(point[1]), z=float(point[2])))


def pose_stamped(point: np.ndarray, rotation: np.ndarray, header: Header) -> PoseStamped:
    x, y, z, w = quaternion(rotation)
    return PoseStamped(header=header, pose=Pose(position=point_stamped(point, header).point,
                                                orientation=Quaternion(x=x, y=y, z=z, w=w)))


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
            arrow.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in (start, region.point)]
            markers.append(arrow)
        else:
            markers.append(Marker(header=header, ns="affordance", id=ids[2], action=Marker.DELETE))
    return MarkerArray(markers=markers)


def _marker(marker_id: int, kind: int, position: np.ndarray, scale: tuple[float, float, float], header: Header,
            name: str, lifetime_s: float) -> Marker:
    marker = Marker(header=header, ns="affordance", id=marker_id, type=kind, action=Marker.ADD,
                    color=_MARKER_COLOURS[name])
    marker.pose.position = Point(x=float(position[0]), y=float(position[1]), z=float(position[2]))
    marker.pose.orientation.w = 1.0
    marker.scale.x, marker.scale.y, marker.scale.z = scale
    marker.lifetime.sec = int(lifetime_s)
    marker.lifetime.nanosec = int((lifetime_s % 1) * 1e9)
    return marker
